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

The second half of the module, ``ElementSocket``, sends set element changes to nf_tables as a
raw netlink batch, without libnftables (see there why); the framing is ``enforcer.nfnetlink``'s.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
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


# ---------------------------------------------------------------------------------------
# Set element batches over a raw nf_tables netlink socket
#
# Adding one peer to a selector touches the same set in every pod that references it; going
# through libnftables costs ~0.6 ms per pod (it parses, then fetches the table's sets into
# its cache before it can add one element). The kernel needs only a batch of
# NEWSETELEM/DELSETELEM messages: a few microseconds. This is used for sets whose elements
# are plain keys (hash sets: addresses, address . protocol . port); interval sets, whose
# elements are pairs of interval ends, stay with libnftables.

import socket as _socket
import struct as _struct

from enforcer import nfnetlink as nfnl

NFT_MSG_NEWSETELEM, NFT_MSG_DELSETELEM = 12, 14
NFPROTO_INET = 1
NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_ELEMENTS = 1, 2, 3
NFTA_LIST_ELEM = 1
NFTA_SET_ELEM_KEY = 1
NFTA_DATA_VALUE = 1
PROTO_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}
# At most 40 bytes an element (an IPv6 address . protocol . port key with its headers):
# 1,000 of them stay well under the 64 KiB limit of one netlink attribute.
CHUNK = 1000
SO_SNDBUFFORCE = 32  # not in Python's socket module
BATCH_BUFFER = 16 << 20


def element_message(verb: str, seq: int, table: str, set_name: str, elements: list[str]) -> bytes:
    """One NEWSETELEM ("add") or DELSETELEM ("delete") message for ``elements`` of
    ``set_name`` in the inet table ``table``, asking for an acknowledgement."""
    elems = b"".join(nfnl.nested(NFTA_LIST_ELEM, nfnl.nested(NFTA_SET_ELEM_KEY,
                                                             nfnl.attr(NFTA_DATA_VALUE, element_key(e))))
                     for e in elements)
    payload = (nfnl.string(NFTA_SET_ELEM_LIST_TABLE, table) + nfnl.string(NFTA_SET_ELEM_LIST_SET, set_name)
               + nfnl.nested(NFTA_SET_ELEM_LIST_ELEMENTS, elems))
    kind = NFT_MSG_NEWSETELEM if verb == "add" else NFT_MSG_DELSETELEM
    flags = nfnl.NLM_F_REQUEST | nfnl.NLM_F_ACK | (nfnl.NLM_F_CREATE if verb == "add" else 0)
    return nfnl.nf_message(nfnl.type_of(nfnl.NFNL_SUBSYS_NFTABLES, kind), flags, seq, NFPROTO_INET, payload)


def element_key(text: str) -> bytes:
    """The kernel key of one element as nft writes it: "10.0.0.5", "fd00::5" or
    "10.0.0.5 . tcp . 80" (each field of a concatenation padded to 4 bytes)."""
    parts = [p.strip() for p in text.split(" . ")]
    addr = parts[0]
    key = _socket.inet_pton(_socket.AF_INET6 if ":" in addr else _socket.AF_INET, addr)
    if len(parts) == 3:
        key += bytes([PROTO_NUMBERS[parts[1]], 0, 0, 0]) + _struct.pack("!H", int(parts[2])) + b"\0\0"
    return key


class ElementSocket:
    """A netlink socket, opened inside a namespace and kept, that changes set elements
    of one table in one atomic batch."""

    def __init__(self) -> None:
        self._sock = nfnl.open_socket()
        # A whole batch goes in one send(): netlink refuses a message larger than the send
        # buffer (EMSGSIZE), and the default (~200 KiB) holds only a few thousand elements.
        try:
            self._sock.setsockopt(_socket.SOL_SOCKET, SO_SNDBUFFORCE, BATCH_BUFFER)
        except OSError:  # without CAP_NET_ADMIN: capped by net.core.wmem_max
            self._sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, BATCH_BUFFER)
        self._sock.settimeout(5)
        self._seq = 0
        self.lock = threading.Lock()

    def change(self, table: str, changes: list[tuple[str, str, list[str]]]) -> None:
        """Apply ``[(verb, set name, [element text])]`` (verb "add"/"delete") in one
        transaction. Raises NftError (nothing changed) when the kernel refuses any of it."""
        msgs = []
        seqs = []
        self._seq = (self._seq + 1) & 0x3FFFFFFF
        begin = self._seq
        # A netlink attribute's length is 16 bits: a set's elements go in messages of at
        # most CHUNK elements each (all in the same batch, so still one transaction).
        parts = [(verb, set_name, elements[i:i + CHUNK])
                 for verb, set_name, elements in changes for i in range(0, max(len(elements), 1), CHUNK)]
        for verb, set_name, elements in parts:
            self._seq += 1
            seqs.append(self._seq)
            msgs.append(element_message(verb, self._seq, table, set_name, elements))
        if not msgs:
            return
        self._seq += 1
        self._sock.send(nfnl.batch(msgs, begin, self._seq, nfnl.NFNL_SUBSYS_NFTABLES))
        pending = set(seqs)
        errors: list[str] = []
        while pending:
            try:
                data = self._sock.recv(65536)
            except _socket.timeout as e:
                raise NftError("no answer from nf_tables for a set element batch") from e
            for kind, seq, body in nfnl.split_messages(data):
                if kind != nfnl.NLMSG_ERROR:
                    continue
                err = nfnl.error_code(body)
                pending.discard(seq)
                if err and seq in seqs:
                    verb, set_name, elements = parts[seqs.index(seq)]
                    errors.append(f"{verb} element {table} {set_name} {{ {', '.join(elements)} }}: "
                                  f"{os.strerror(err)}")
                elif err:  # the batch itself was refused (e.g. no CAP_NET_ADMIN)
                    errors.append(f"set element batch: {os.strerror(err)}")
                    pending.clear()
        if errors:
            raise NftError("Error: " + "; ".join(errors))

    def close(self) -> None:
        self._sock.close()
