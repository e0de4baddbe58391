"""Single-plane 2-D filtering: a stride-1, undilated cross-correlation of one image plane.

The weights arrive as a tuple of rows (a Numba ``UniTuple`` of ``UniTuple``), so the kernel
size is part of the compiled type: the taps of a row are unrolled, the weights live in
registers, and the column loop vectorises with the running sums held in registers across
the taps of a row. Each loaded input vector serves two output rows (kernel rows ``a`` and
``a - 1``). Zero padding is implicit: border rows skip taps outside the input and border
columns take a scalar loop, so no padded copy of the image is made.
"""

from __future__ import annotations

from numba import njit, uint64


@njit(cache=True, inline="always")
def _inner_columns(width, out_width, kw_n, pw):
    """Output columns ``[lo, hi)`` whose ``kw_n`` taps all lie inside ``[0, width)``."""
    lo = min(max(pw, 0), out_width)
    hi = max(min(width - kw_n + 1 + pw, out_width), lo)
    return lo, hi


@njit(cache=True, inline="always", fastmath={"contract"})
def _one_row(x, iy, wr, y, oh, lo, hi, pw, width):
    """``y[oh] += wr (*) x[iy]``: one kernel row on one output row."""
    for i in range(lo, hi):
        s = y[oh, uint64(i)]
        for b in range(len(wr)):
            s += wr[b] * x[iy, uint64(i + b - pw)]
        y[oh, uint64(i)] = s
    for i in range(lo):
        _border(x, iy, wr, y, oh, i, pw, width)
    for i in range(hi, y.shape[1]):
        _border(x, iy, wr, y, oh, i, pw, width)


@njit(cache=True, inline="always", fastmath={"contract"})
def _two_rows(x, iy, wr0, wr1, y, oh, lo, hi, pw, width):
    """``y[oh] += wr0 (*) x[iy]`` and ``y[oh + 1] += wr1 (*) x[iy]``, each load used twice."""
    for i in range(lo, hi):
        s0 = y[oh, uint64(i)]
        s1 = y[oh + 1, uint64(i)]
        for b in range(len(wr0)):
            v = x[iy, uint64(i + b - pw)]
            s0 += wr0[b] * v
            s1 += wr1[b] * v
        y[oh, uint64(i)] = s0
        y[oh + 1, uint64(i)] = s1
    for i in range(lo):
        _border(x, iy, wr0, y, oh, i, pw, width)
        _border(x, iy, wr1, y, oh + 1, i, pw, width)
    for i in range(hi, y.shape[1]):
        _border(x, iy, wr0, y, oh, i, pw, width)
        _border(x, iy, wr1, y, oh + 1, i, pw, width)


@njit(cache=True, inline="always", fastmath={"contract"})
def _border(x, iy, wr, y, oh, i, pw, width):
    s = y[oh, i]
    for b in range(len(wr)):
        ix = i + b - pw
        if 0 <= ix < width:
            s += wr[b] * x[iy, ix]
    y[oh, i] = s


@njit(cache=True, nogil=True, fastmath={"contract"})
def filter_rows(x, wt, bias, y, ph, pw, accumulate, t0, t1):  # pragma: no cover
    """Rows ``[t0, t1)`` of ``y[oh, ow] = bias + sum wt[a][b] * x[oh+a-ph, ow+b-pw]``.

    ``x`` (H, W) and ``y`` (OH, OW) are contiguous; taps outside ``x`` count as zero. With
    ``accumulate`` the sum is added to ``y`` instead (``bias`` unused): a wide kernel runs
    as several column pieces, since LLVM unrolls the taps of a row only up to about ten.
    """
    height, width = x.shape
    ow_n = y.shape[1]
    kh_n = len(wt)
    lo, hi = _inner_columns(width, ow_n, len(wt[0]), pw)
    if not accumulate:
        for oh in range(t0, t1):
            for i in range(ow_n):
                y[oh, uint64(i)] = bias
    oh = t0
    while oh + 1 < t1:  # output rows oh and oh + 1 share the input rows between them
        for a in range(kh_n + 1):
            iy = oh + a - ph
            if iy < 0 or iy >= height:
                continue
            if a == 0:
                _one_row(x, iy, wt[0], y, oh, lo, hi, pw, width)
            elif a == kh_n:
                _one_row(x, iy, wt[kh_n - 1], y, oh + 1, lo, hi, pw, width)
            else:
                _two_rows(x, iy, wt[a], wt[a - 1], y, oh, lo, hi, pw, width)
        oh += 2
    if oh < t1:
        for a in range(kh_n):
            iy = oh + a - ph
            if 0 <= iy < height:
                _one_row(x, iy, wt[a], y, oh, lo, hi, pw, width)
