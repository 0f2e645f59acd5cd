"""Views: what the loaded cluster and its IR mean, in verdicts, words and pictures.

``verdict.py`` is the model's verdict (who may reach whom, the oracle the lab probes are
compared with); ``explain.py`` and ``reasons.py`` say why (``trace``, ``explain``);
``lint.py`` finds policies that do nothing; ``reachability.py`` is the matrix and its
comparison with probes; ``output.py`` and ``pictures.py`` print and draw it; ``diff.py``
compares two versions of a cluster. Pure: none of these touches the kernel.
"""
