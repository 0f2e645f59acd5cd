"""A small ctypes wrapper over libnftables.so.1, the library behind the ``nft`` command.

Why in-process: running ``nft -f`` costs a process start and a fresh ruleset cache per
call (~17 ms per pod measured); a library context kept per network namespace applies a
pod's whole table in ~1-2 ms and a set element change in well under a millisecond.

A context talks to the kernel through a netlink socket, and a socket belongs to the network
namespace its thread was in when the socket was opened. So a context for namespace N is
made while the thread is inside N (``enforcer.netns.entered``) and a harmless command is run
there at once, because some libnftables versions open the socket lazily on first use. After
that the context keeps acting on N from any namespace.

A context is not thread-safe: callers serialise use of one context (``Context.lock``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading

from enforcer.errors import BackendUnavailable

SONAME = "libnftables.so.1"

_lib: ctypes.CDLL | None = None
_lib_error: str | None = None
_lib_lock = threading.Lock()


def _load() -> ctypes.CDLL:
    """Load the library once and declare the few functions we use."""
    global _lib, _lib_error
    with _lib_lock:
        if _lib is not None:
            return _lib
        if _lib_error is not None:
            raise BackendUnavailable(_lib_error)
        try:
            lib = ctypes.CDLL(SONAME, use_errno=True)
        except OSError as e:
            found = ctypes.util.find_library("nftables")
            if not found:
                _lib_error = (f"{SONAME} not found ({e}); install libnftables1 "
                              "(apt-get install libnftables1) or use the nft command")
                raise BackendUnavailable(_lib_error) from e
            lib = ctypes.CDLL(found, use_errno=True)
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_free.restype = None
        for fn in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
            getattr(lib, fn).restype = ctypes.c_int
        for fn in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, fn).argtypes = [ctypes.c_void_p]
            getattr(lib, fn).restype = ctypes.c_char_p
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        _lib = lib
        return lib


def available() -> bool:
    try:
        _load()
        return True
    except BackendUnavailable:
        return False


class NftError(Exception):
    """A command the library refused; ``str()`` is nft's own error text."""


class Context:
    """One libnftables context with output and errors captured in buffers."""

    NFT_CTX_DEFAULT = 0

    def __init__(self) -> None:
        self._lib = _load()
        ptr = self._lib.nft_ctx_new(self.NFT_CTX_DEFAULT)
        if not ptr:
            raise BackendUnavailable("nft_ctx_new failed (out of memory?)")
        self._ctx: int | None = ptr
        # Without buffering, libnftables writes to our stdout/stderr; we want the text.
        if self._lib.nft_ctx_buffer_output(ptr) != 0 or self._lib.nft_ctx_buffer_error(ptr) != 0:
            self.close()
            raise BackendUnavailable("libnftables: cannot buffer output")
        self.lock = threading.Lock()

    def run(self, commands: str) -> str:
        """Run a buffer of nft commands as one transaction; return nft's output.

        Raises NftError with nft's message when the kernel (or the parser) refuses; then
        nothing of the buffer took effect.
        """
        if self._ctx is None:
            raise NftError("libnftables context is closed")
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
        out = self._lib.nft_ctx_get_output_buffer(self._ctx) or b""
        err = self._lib.nft_ctx_get_error_buffer(self._ctx) or b""
        if rc != 0:
            raise NftError(err.decode(errors="replace").strip() or f"nft failed (rc={rc})")
        return out.decode(errors="replace")

    def close(self) -> None:
        if self._ctx is not None:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None

    def __del__(self) -> None:  # contexts hold a socket; free it with the object
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "Context":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
