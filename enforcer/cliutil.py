"""Settings every click command shares.

Each command carries them itself (not only the top group): click caches a command's help
option the first time it builds it, so a command invoked on its own once (in a test) would
otherwise lose ``-h`` for the rest of the process.
"""
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
