"""SIGTERM handled like Ctrl-C, and sections that a signal must not cut in half.

``docker stop``, systemd and ``timeout`` send SIGTERM, whose default action kills the process
on the spot: no ``finally`` runs, temporary files stay, a training run loses its last epoch.
:func:`install` makes SIGTERM raise :class:`Terminated`, a KeyboardInterrupt, so every
cleanup path that Ctrl-C takes (the writer's temporary files, the trainer's checkpoint) runs
for it too. :func:`deferred` holds both signals back while a checkpoint and its bookkeeping
are written, then delivers them.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (raised in the main thread by the handler :func:`install` sets)."""


# The signals received so far, oldest first (read by exit_code).
_received: list[int] = []


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    _received.append(signum)
    raise Terminated()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (no-op elsewhere)."""
    if _main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def exit_code(exc: BaseException | None = None) -> int:
    """The shell's exit status after an interruption: 143 for SIGTERM, 130 for Ctrl-C.

    ``exc`` is the exception that stopped the work; without it, the last signal received.
    """
    if exc is not None:
        term = isinstance(exc, Terminated)
    else:
        term = bool(_received) and _received[-1] == signal.SIGTERM
    return 128 + (signal.SIGTERM if term else signal.SIGINT)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back inside the block; raise the first one when it ends.

    Outside the main thread (where Python cannot set handlers) this does nothing.
    """
    if not _main_thread():
        yield
        return
    pending: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)
        _received.append(signum)

    old = {s: signal.signal(s, record) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if pending:
        if pending[0] == signal.SIGTERM:
            raise Terminated()
        raise KeyboardInterrupt()


__all__ = ["Terminated", "deferred", "exit_code", "install"]
