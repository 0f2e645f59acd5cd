"""Stage 2, compile: the loaded cluster into the per-pod IR (enforcer/ir.py).

``frontend.py`` is the front half, each step once (load, assign addresses, compile), for
the CLI, the lab and the daemon; ``ipam.py`` plans addresses (pure: pods, the lab's CIDRs
and gateways, several nodes' CIDRs); ``compile.py`` is the Compiler (indexed,
incremental), helped by ``selectors.py`` (label selector matching), ``labelindex.py``
(pods by label) and ``setwords.py`` (set names and element comments). Pure: no kernel.
The IR it produces is rendered and applied by backends/.
"""
