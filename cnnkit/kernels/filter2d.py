"""Single-plane 2-D filtering: a stride-1, undilated cross-correlation of one image plane.

:func:`piece_rows` takes a piece of the kernel as a tuple of rows (a Numba ``UniTuple`` of
``UniTuple``), so the piece's size is part of the compiled type: its taps are unrolled,
the weights live in registers, and the column loop vectorises with the running sums held
in registers across all the taps of the piece. Two output rows are computed together, so
each loaded input vector serves both. LLVM unrolls pieces of up to about ten columns and
thirty taps; cnnkit.ops cuts larger kernels into pieces, the first writing the output and
the others adding to it.

Zero padding is implicit: output rows and columns whose window leaves the input, which
are few, go to :func:`edge_rows`, which takes the weights as an array (compiled once per
dtype) and skips the taps outside the input, so no padded copy of the image is made.
"""

from __future__ import annotations

from numba import njit, uint64

from cnnkit.kernels import load_lightly


@njit(cache=True, inline="always")
def _inner(size, out_size, k, p):
    """Outputs ``[lo, hi)`` whose ``k`` taps, starting at ``out - p``, lie in ``[0, size)``."""
    lo = min(max(p, 0), out_size)
    hi = max(min(size - k + 1 + p, out_size), lo)
    return lo, hi


@njit(cache=True, nogil=True, fastmath={"contract"})
def edge_rows(x, w, bias, y, ph, pw, accumulate, t0, t1, c0, c1):  # pragma: no cover
    """Rows ``[t0, t1)``, columns ``[c0, c1)`` of ``y (+)= bias + x (*) w``, any position.

    Taps outside ``x`` are skipped. Whole rows take one pass along the row per tap, a few
    border columns one sum per output.
    """
    height, width = x.shape
    kh_n, kw_n = w.shape
    if c1 - c0 < 32:
        for oh in range(t0, t1):
            for i in range(c0, c1):
                s = y[oh, i] if accumulate else bias
                for a in range(kh_n):
                    iy = oh + a - ph
                    if 0 <= iy < height:
                        for b in range(kw_n):
                            ix = i + b - pw
                            if 0 <= ix < width:
                                s += w[a, b] * x[iy, ix]
                y[oh, i] = s
        return
    for oh in range(t0, t1):
        if not accumulate:
            for i in range(c0, c1):
                y[oh, uint64(i)] = bias
        for a in range(kh_n):
            iy = oh + a - ph
            if iy < 0 or iy >= height:
                continue
            for b in range(kw_n):
                lo, hi = _inner(width, c1, 1, pw - b)
                lo = max(lo, c0)
                wv = w[a, b]
                for i in range(lo, hi):
                    y[oh, uint64(i)] += wv * x[uint64(iy), uint64(i + b - pw)]


@njit(cache=True, inline="always", fastmath={"contract"})
def _two_rows(x, wt, bias, y, oh, iy, pw, lo, hi, accumulate):
    """Output rows ``oh`` and ``oh + 1`` on columns ``[lo, hi)``, from input rows ``iy``
    to ``iy + kh``: kernel row ``a`` meets input row ``iy + a`` for the first output row
    and ``iy + a + 1`` for the second, so every input load serves both."""
    kh_n = len(wt)
    for i in range(lo, hi):
        s0 = bias
        s1 = bias
        if accumulate:
            s0 = y[oh, uint64(i)]
            s1 = y[oh + 1, uint64(i)]
        for a in range(kh_n + 1):
            for b in range(len(wt[0])):
                v = x[uint64(iy + a), uint64(i + b - pw)]
                if a < kh_n:
                    s0 += wt[a][b] * v
                if a > 0:
                    s1 += wt[a - 1][b] * v
        y[oh, uint64(i)] = s0
        y[oh + 1, uint64(i)] = s1


@njit(cache=True, nogil=True, fastmath={"contract"})
def piece_rows(x, wt, w, bias, y, ph, pw, accumulate, t0, t1):  # pragma: no cover
    """Rows ``[t0, t1)`` of ``y[oh, ow] = bias + sum wt[a][b] * x[oh+a-ph, ow+b-pw]``.

    ``x`` (H, W) and ``y`` (OH, OW) are contiguous; taps outside ``x`` count as zero.
    ``w`` is ``wt`` as an array. With ``accumulate`` the sum is added to ``y`` instead and
    ``bias`` is unused.
    """
    height, width = x.shape
    oh_n, ow_n = y.shape
    lo, hi = _inner(width, ow_n, len(wt[0]), pw)
    row_lo, row_hi = _inner(height, oh_n, len(wt), ph)
    r0 = min(max(t0, row_lo), t1)  # rows [r0, r1) have their whole window inside x
    r1 = max(min(t1, row_hi), r0)
    r1 -= (r1 - r0) % 2
    edge_rows(x, w, bias, y, ph, pw, accumulate, t0, r0, 0, ow_n)
    for oh in range(r0, r1, 2):
        if accumulate:
            _two_rows(x, wt, bias, y, oh, oh - ph, pw, lo, hi, True)
        else:
            _two_rows(x, wt, bias, y, oh, oh - ph, pw, lo, hi, False)
    edge_rows(x, w, bias, y, ph, pw, accumulate, r0, r1, 0, lo)
    edge_rows(x, w, bias, y, ph, pw, accumulate, r0, r1, hi, ow_n)
    edge_rows(x, w, bias, y, ph, pw, accumulate, r1, t1, 0, ow_n)


load_lightly(globals())
