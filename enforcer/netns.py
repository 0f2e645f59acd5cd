"""The one place that enters network namespaces.

Everything that must run inside a pod's namespace (a firewall tool, a server, a probe, a
netlink socket) goes through here, so there is exactly one piece of code to audit for the
lab's safety rule: we only ever touch namespaces we were given by name, never the host's.

Built on pyroute2: ``pyroute2.netns`` removes namespaces (bind mounts under /run/netns, as
``ip netns`` does; ``create`` is our own, fork-free), ``IPRoute(netns=...)`` configures links inside one.
"""
from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import threading
from typing import Callable, Generic, Iterator, Sequence, TypeVar

from enforcer import interrupts
from enforcer.errors import NetnsError

RUN_DIR = "/run/netns"


def path(name: str) -> str:
    return os.path.join(RUN_DIR, name)


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def inode(name: str) -> int | None:
    """The namespace's identity, None when there is none of that name. A name can be
    reused by a new namespace; the inode tells them apart, so anything kept per namespace
    (a socket, a context, an applied state) is keyed by it as well as by the name."""
    try:
        return os.stat(path(name)).st_ino
    except OSError:
        return None


H = TypeVar("H")


class Handles(Generic[H]):
    """One handle per namespace (a netlink socket, a libnftables context), made inside it
    on first use and kept: using it later is a send and a receive, no setns. A namespace
    re-created under the same name (new inode) gets a new handle; the old one is closed."""

    def __init__(self, make: Callable[[], H], close: Callable[[H], None] = lambda h: h.close()) -> None:
        self._make = make
        self._close = close
        self._held: dict[str, tuple[int, H]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> H:
        """The handle for ``name``; NetnsError when the namespace does not exist."""
        ino = inode(name)
        with self._lock:
            held = self._held.get(name)
            if held is not None and held[0] == ino:
                return held[1]
            if held is not None:
                del self._held[name]
                self._close(held[1])
            if ino is None:
                raise NetnsError(f"network namespace {name} does not exist")
            with entered(name):
                handle = self._make()
            self._held[name] = (ino, handle)
            return handle

    def forget(self, name: str) -> None:
        with self._lock:
            held = self._held.pop(name, None)
        if held is not None:
            self._close(held[1])

    def close(self) -> None:
        for name in list(self._held):
            self.forget(name)


def list_names(prefix: str = "") -> list[str]:
    try:
        return sorted(n for n in os.listdir(RUN_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def create(name: str) -> None:
    """Create namespace ``name`` as ``ip netns add`` does, without a child process.

    pyroute2's ``netns.create`` forks a helper; a Ctrl-C reaching that fork raised
    KeyboardInterrupt in a copy of the caller (seen as a second pytest run finishing inside
    ``lab up``). Here the calling thread unshares its own network namespace, bind-mounts it
    under /run/netns and returns home, with interrupts held for those few system calls.
    """
    if exists(name):
        raise NetnsError(f"network namespace {name} exists already")
    try:
        _share_run_dir()
        with interrupts.deferred():
            _create_here(name)
    except OSError as e:
        raise NetnsError(f"cannot create network namespace {name}: {e}") from e


_MS_BIND, _MS_REC, _MS_SHARED, _CLONE_NEWNET = 4096, 16384, 1 << 20, 0x40000000
_shared = False


def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _share_run_dir() -> None:
    """Make /run/netns a shared mount (once per process), as iproute2 does, so the bind
    mounts below reach every mount namespace."""
    global _shared
    if _shared:
        return
    os.makedirs(RUN_DIR, exist_ok=True)
    libc = _libc()
    if libc.mount(b"", RUN_DIR.encode(), b"none", _MS_SHARED | _MS_REC, None) != 0:
        _check(libc.mount(RUN_DIR.encode(), RUN_DIR.encode(), b"none", _MS_BIND | _MS_REC, None),
               f"bind-mount {RUN_DIR}")
        _check(libc.mount(b"", RUN_DIR.encode(), b"none", _MS_SHARED | _MS_REC, None), f"share {RUN_DIR}")
    _shared = True


def _create_here(name: str) -> None:
    libc = _libc()
    target = path(name)
    own = f"/proc/self/task/{_gettid()}/ns/net"
    home = os.open(own, os.O_RDONLY)
    try:
        os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        try:
            _check(libc.unshare(_CLONE_NEWNET), "unshare")
            try:
                _check(libc.mount(own.encode(), target.encode(), b"none", _MS_BIND, None), "mount")
            finally:
                _setns(home)
        except BaseException:
            try:
                os.unlink(target)
            except OSError:
                pass
            raise
    finally:
        os.close(home)


def remove(name: str) -> None:
    """Remove a namespace we created; a missing one is not an error (cleanup is idempotent)."""
    from pyroute2 import netns

    if not exists(name):
        return
    try:
        netns.remove(name)
    except OSError as e:
        raise NetnsError(f"cannot remove network namespace {name}: {e}") from e


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):  # Python >= 3.12
        os.setns(fd, os.CLONE_NEWNET)
        return
    import ctypes

    global _libc_held
    if _libc_held is None:  # loaded once: a CDLL a call was ~30 us, twice per entered()
        _libc_held = ctypes.CDLL(None, use_errno=True)
    if _libc_held.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


_libc_held = None


def run(name: str, argv: Sequence[str], *, input: str | bytes | None = None,
        check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run a command inside namespace ``name`` and capture its output."""
    if not exists(name):
        raise NetnsError(f"network namespace {name} does not exist")
    text = not isinstance(input, bytes)
    try:
        proc = subprocess.run(_in_netns(name, argv), input=input, capture_output=True, text=text,
                              timeout=timeout)
    except FileNotFoundError as e:
        raise NetnsError(f"{argv[0]}: not installed ({e})") from e
    except subprocess.TimeoutExpired as e:
        raise NetnsError(f"{' '.join(argv)} in {name}: timed out after {timeout}s") from e
    if check and proc.returncode != 0:
        err = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode(errors="replace")
        raise NetnsError(f"{' '.join(argv)} in {name} failed: {err.strip()}")
    return proc


def popen(name: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
    """Start a long-running process (a server) inside namespace ``name``."""
    if not exists(name):
        raise NetnsError(f"network namespace {name} does not exist")
    return subprocess.Popen(_in_netns(name, argv), **kwargs)


def run_entered(name: str, argv: Sequence[str], *, input: str | None = None,
                timeout: float = 30.0) -> subprocess.CompletedProcess:
    """``run`` without nsenter: the process is started by this thread while the thread is
    inside the namespace (a child is born in its parent thread's network namespace), so
    it costs one exec instead of two (nsenter's was ~2 ms of CPU a process, a pod's
    iptables cold apply runs two tools). The thread is home again before the tool ends:
    only the start happens inside. Never raises for an exit status (``check`` is the
    caller's)."""
    if not exists(name):
        raise NetnsError(f"network namespace {name} does not exist")
    argv = [_which(argv[0]), *argv[1:]]
    try:
        with entered(name):
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
    except FileNotFoundError as e:
        raise NetnsError(f"{argv[0]}: not installed ({e})") from e
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        proc.kill()
        proc.communicate()
        raise NetnsError(f"{' '.join(argv)} in {name}: timed out after {timeout}s") from e
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


@functools.lru_cache(maxsize=64)
def _which(tool: str) -> str:
    """A tool's path, looked up once: the child otherwise tries execve in each PATH
    directory in turn (ten failed calls a tool on this machine)."""
    return tool if "/" in tool else (shutil.which(tool) or tool)


def _in_netns(name: str, argv: Sequence[str]) -> list[str]:
    """argv run through nsenter: a preexec_fn would force Python into a full fork (measured
    6.6 ms per command); nsenter lets it use vfork/posix_spawn (2.4 ms)."""
    return ["nsenter", f"--net={path(name)}", "--", *argv]


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the block with the calling thread inside namespace ``name``, then come back.

    Sockets opened inside the block stay in that namespace after it ends: this is how a
    per-namespace netlink or libnftables handle is made once and kept.
    """
    if not exists(name):
        raise NetnsError(f"network namespace {name} does not exist")
    home = os.open(f"/proc/self/task/{_gettid()}/ns/net", os.O_RDONLY)
    inside = False
    try:
        fd = os.open(path(name), os.O_RDONLY)
        try:
            # An interrupt between entering and the ``finally`` that leaves would strand
            # the thread (and whatever cleanup runs next) inside the pod's namespace.
            with interrupts.deferred():
                _setns(fd)
                inside = True
        finally:
            os.close(fd)
        yield
    finally:
        if inside:
            with interrupts.deferred():
                _setns(home)
        os.close(home)


def _gettid() -> int:
    return getattr(os, "gettid", lambda: __import__("threading").get_native_id())()


def iproute(name: str):
    """A pyroute2 IPRoute bound to namespace ``name`` (use it as a context manager)."""
    if not exists(name):
        raise NetnsError(f"network namespace {name} does not exist")
    return held_iproute(netns=name)


_held_class = None


def held_iproute(**kwargs):
    """A pyroute2 IPRoute whose every request runs with interrupts held (interrupts.py).

    pyroute2's sync API runs each request on an asyncio loop, so a Ctrl-C landing during one
    is raised inside a pyroute2 coroutine. The coroutine is then closed with the exception
    still travelling, and on Python 3.11 that leaves a traceback entry whose line number is
    None: pytest crashes formatting it (TypeError in TracebackEntry.lineno, exit code 1
    instead of 2) and the loop's half-done coroutine is reported as "Exception ignored".
    Held, the interrupt is raised a request later (milliseconds), from our own frame.
    Dumps are read to the end inside the held block: a generator that holds interrupts
    between items would hold them while its caller runs.
    """
    global _held_class
    if _held_class is None:
        from pyroute2 import IPRoute

        class HeldIPRoute(IPRoute):
            def __init__(self, *a, **kw):
                with interrupts.deferred():  # a half-made IPRoute breaks its own __del__
                    super().__init__(*a, **kw)

            def _run_with_cleanup(self, func, *a, **kw):
                with interrupts.deferred():
                    return super()._run_with_cleanup(func, *a, **kw)

            def _generate_with_cleanup(self, func, *a, **kw):
                with interrupts.deferred():
                    return iter(list(super()._generate_with_cleanup(func, *a, **kw)))

            def close(self, *a, **kw):
                with interrupts.deferred():
                    return super().close(*a, **kw)

        _held_class = HeldIPRoute
    return _held_class(**kwargs)
