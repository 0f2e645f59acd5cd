"""Backends by name: the only way the CLI, the lab and the daemon reach a backend.

    get("nftables")         table inet netpol per pod, libnftables in-process (nft -f fallback)
    get("iptables")         the host's iptables (Debian 12: iptables-nft) via iptables-restore
                            --noflush, ipsets via ipset restore
    get("iptables-legacy")  legacy x_tables through python-iptables (libiptc); the rules are
                            what iptables-legacy-save shows
    get("fake")             in memory, for unit tests and --dry-run

Instances are kept per name (a backend keeps per-namespace handles, e.g. libnftables
contexts, worth reusing across calls).
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

from enforcer.errors import BackendUnavailable

if TYPE_CHECKING:  # the names are read at CLI start-up (--backend's choices): import nothing heavy
    from backends.base import Backend


def _nftables() -> Backend:
    from backends.nftables import NftablesBackend

    return NftablesBackend()


def _iptables() -> Backend:
    from backends.iptables import IptablesBackend

    return IptablesBackend(flavour="nft")


def _fake() -> Backend:
    from backends.base import FakeBackend

    return FakeBackend()


def _iptables_legacy() -> Backend:
    from backends.iptables import IptablesBackend

    return IptablesBackend(flavour="legacy")


_FACTORIES: dict[str, Callable[[], Backend]] = {
    "nftables": _nftables,
    "iptables": _iptables,
    "iptables-legacy": _iptables_legacy,
    "fake": _fake,
}
_instances: dict[str, Backend] = {}
_lock = threading.Lock()


def names() -> list[str]:
    return list(_FACTORIES)


def get(name: str, *, check: bool = True) -> Backend:
    """The backend called ``name``; with ``check`` its tools are probed first, and a missing
    one raises BackendUnavailable saying what to install. Rendering needs no check."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise BackendUnavailable(f"unknown backend {name!r}; choose one of: {', '.join(names())}")
    with _lock:
        backend = _instances.get(name)
        if backend is None:
            backend = _instances[name] = factory()
    if check:
        backend.check()
    return backend


def reset() -> None:
    """Forget the kept instances (closing any handles they hold); tests use it."""
    with _lock:
        held = list(_instances.values())
        _instances.clear()
    for b in held:
        close = getattr(b, "close", None)
        if close is not None:
            close()
