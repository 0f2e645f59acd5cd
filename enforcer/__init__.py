"""netpol-enforcer: Kubernetes NetworkPolicy enforced with nftables or iptables in network namespaces.

The pipeline is the folder layout: load/ (manifests into the model) -> compiler/ (the model
into the per-pod IR, ir.py) -> backends/ (render, apply). views/ (verdict, trace, explain,
matrix, diff) reads the same IR the backends render. What every stage shares stays here:
model.py, ir.py, intervals.py, errors.py, netns.py and the netlink codec, and the entry
points (cli.py, pytest_plugin.py).
"""
__version__ = "0.1.0"
