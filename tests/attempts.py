"""Repeating a call until a pool worker has joined it.

A worker joins a team task when it gets to it. On a cold kernel cache its wait loop is
still compiling at first, for seconds, so a number of tries is no bound; time is.
"""

from __future__ import annotations

import time
from collections.abc import Iterator


def attempts(seconds: float = 60.0) -> Iterator[int]:
    """0, 1, 2, ... until ``seconds`` have passed (at least one); the caller breaks out
    once a worker took part."""
    end = time.monotonic() + seconds
    k = 0
    while k == 0 or time.monotonic() < end:
        yield k
        k += 1
