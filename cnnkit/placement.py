"""Where an output or scratch array starts, so that its stores do not 4K-alias the loads
of the array it is computed from.

A core compares a load's address with the stores still in flight by the address's low 12
bits first. A load that matches a store to another page in those bits (an offset that is a
multiple of 4 KiB apart) waits until the store is resolved. A filter's sliding window
loads input a little ahead of the output it stores; when the output array starts 0-256
bytes past the input modulo 4 KiB and the rows are 1-2 KiB multiples long (512, 1024,
2048 px of float32), nearly every load waits. Measured on one thread, 1024x1024 k3:
260 us with the output 1 KiB past the input, 440 us 64 bytes past; 512x512 k5 and the
separable filters alike (docs/PERFORMANCE.md). Where an array lands is up to the
allocator, so the same call ran at either speed from one process to the next.

:func:`empty_apart` and :func:`apart` place a new array, within one page of slack, where
its rows keep the most distance from the window, for every array it streams against.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

PAGE = 4096
#: Offsets (bytes, output minus input, modulo :data:`PAGE`) that ran slow: from this many
#: bytes before the input to ...
WINDOW_BEFORE = 64
#: ... this many after it.
WINDOW_AFTER = 320
#: Starts are tried on cache-line boundaries.
LINE = 64
# Shorter periods than twice the window leave no start clear of it.
_SHORTEST = 2 * (WINDOW_BEFORE + WINDOW_AFTER)


def row_bytes(a: np.ndarray) -> int:
    """The distance between rows of ``a``: its second-to-last stride, or 0 for a 1-D array
    (one row: only where it starts counts)."""
    return abs(a.strides[-2]) if a.ndim >= 2 else 0


def _distance(offset: int, period: int) -> int:
    """How far ``offset`` (mod ``period``) lies outside the slow window, in bytes (0 inside)."""
    u = (offset + WINDOW_BEFORE) % period
    width = WINDOW_BEFORE + WINDOW_AFTER
    return 0 if u < width else min(u - width, period - u)


def best_start(address: int, rows: int, peers: Sequence[tuple[int, int, int]]) -> int:
    """The byte offset from ``address`` (a multiple of :data:`LINE` below :data:`PAGE`) at
    which an array with rows ``rows`` bytes apart keeps the most distance from the window.

    ``peers`` are ``(address, rows, sign)``: an array this one streams against, with its
    row spacing; ``sign`` is 1 when this one is stored while the peer is loaded, -1 when
    this one is loaded and the peer stored. Any row of one against any row of the other
    lies a multiple of ``gcd(PAGE, rows, peer rows)`` from the starts' offset: that
    period is what the distance is measured in. Periods shorter than twice the window
    leave no good start and are left out. 0 when no peer counts.
    """
    key = tuple(
        (sign * (peer - address) % PAGE, math.gcd(PAGE, rows, r), sign) for peer, r, sign in peers
    )
    return _best_start(key)


@functools.lru_cache(maxsize=4096)
def _best_start(peers: tuple[tuple[int, int, int], ...]) -> int:
    """:func:`best_start` for peers given as (their start minus this one's, times sign,
    modulo PAGE; period; sign)."""
    counted = [p for p in peers if p[1] >= _SHORTEST]
    if not counted:
        return 0
    best, score = 0, -1
    for start in range(0, PAGE, LINE):
        here = min(_distance(sign * start - gap, period) for gap, period, sign in counted)
        if here > score:
            best, score = start, here
    return best


def apart(
    buf: np.ndarray,
    size: int,
    rows: int,
    sources: Sequence[np.ndarray] = (),
    targets: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """``size`` elements of the 1-D ``buf`` (which must hold ``size`` elements and
    :data:`PAGE` bytes more), starting where an array with rows ``rows`` bytes apart can be
    stored while ``sources`` are loaded, and loaded while ``targets`` are stored, without
    4K aliasing (:func:`best_start`)."""
    if math.gcd(PAGE, rows) < _SHORTEST:  # no period can count: skip the look-up
        return buf[:size]
    peers = [(a.ctypes.data, row_bytes(a), 1) for a in sources]
    peers += [(a.ctypes.data, row_bytes(a), -1) for a in targets]
    start = best_start(buf.ctypes.data, rows, peers) // buf.itemsize
    return buf[start : start + size]


def empty_apart(shape: Sequence[int], dtype, *sources: np.ndarray) -> np.ndarray:
    """``np.empty(shape, dtype)``, C-contiguous, placed so that storing it while loading
    ``sources`` does not 4K-alias (a view into one page more than it needs)."""
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    buf = np.empty(size + PAGE // dtype.itemsize, dtype)
    rows = shape[-1] * dtype.itemsize if len(shape) >= 2 else 0
    return apart(buf, size, rows, sources).reshape(shape)
