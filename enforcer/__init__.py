"""netpol-enforcer: Kubernetes NetworkPolicy enforced with nftables or iptables in network namespaces.

The pipeline is the folder layout: manifests (load) -> compile -> ir -> backends (render,
apply). verdict, trace and explain read the same IR the backends render.
"""
__version__ = "0.1.0"
