"""Stage 2, compile: the loaded cluster into the per-pod IR (enforcer/ir.py).

``frontend.py`` is the front half in one call (load, assign addresses, compile);
``ipam.py`` plans pod addresses (pure); ``compile.py`` is the Compiler (indexed,
incremental), helped by ``selectors.py`` (label selector matching), ``labelindex.py``
(pods by label) and ``setwords.py`` (set names and element comments). Pure: no kernel.
The IR it produces is rendered and applied by backends/.
"""
