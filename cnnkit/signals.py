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
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (raised in the main thread by the handler :func:`install` sets)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install() -> None:
    """Make SIGTERM raise :class:`Terminated` in the main thread (no-op elsewhere)."""
    if _main_thread():
        signal.signal(signal.SIGTERM, _raise_terminated)


def exit_code(exc: BaseException | None) -> int:
    """The shell's exit status for a process stopped by ``exc``: 143 for SIGTERM, else 130."""
    return 128 + (signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back inside the block; raise the first one when it ends.

    Outside the main thread (where Python cannot set handlers) this does nothing.
    """
    if not _main_thread():
        yield
        return
    pending: list[int] = []

    def record(signum: int, frame: Any) -> None:
        pending.append(signum)

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
