"""Critical sections that a Ctrl-C or a SIGTERM cannot cut in half.

A signal turned into an exception (KeyboardInterrupt, or SystemExit from a SIGTERM
handler) can land between any two bytecodes. Some pairs of steps must not be separated:
a thread that entered a pod's namespace must come back out; a lab directory claimed must be
known as claimed, so the cleanup that follows removes it. ``deferred()`` holds SIGINT,
SIGTERM and SIGHUP for the length of such a block and delivers them when it ends, to the
handlers that were in place, so the interrupt still happens, a few microseconds later and
at a point where the cleanup sees a consistent state.

Python runs signal handlers in the main thread only: in any other thread an interrupt
cannot raise, and ``deferred()`` does nothing there.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_depth = 0  # nesting of deferred() in the main thread
_pending: list[int] = []
_saved: dict[int, object] = {}


def _record(signum: int, _frame) -> None:
    if signum not in _pending:
        _pending.append(signum)


@contextlib.contextmanager
def deferred(*, drop: bool = False) -> Iterator[None]:
    """Hold SIGINT/SIGTERM/SIGHUP until the block ends, then deliver them.

    ``drop=True`` forgets the held signals instead (for cleanup that runs because of an
    interrupt already: a second Ctrl-C must not cut the cleanup short, and there is nothing
    left for it to interrupt).
    """
    global _depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _depth == 0:
        _pending.clear()
        for s in SIGNALS:
            try:
                _saved[s] = signal.signal(s, _record)
            except (ValueError, OSError):  # pragma: no cover - not the main interpreter
                pass
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            for s, handler in _saved.items():
                # None: a handler set outside Python; the default is the closest we can do
                signal.signal(s, signal.SIG_DFL if handler is None else handler)  # type: ignore[arg-type]
            _saved.clear()
            held, _pending[:] = list(_pending), []
            if not drop:
                for s in held:
                    signal.raise_signal(s)  # the restored handler runs now
