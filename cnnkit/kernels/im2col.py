"""Patch matrices (im2col) and their adjoint (col2im) on NCDHW arrays.

Layout: ``cols[r, n, l]`` with row ``r = ((c * KD + kd) * KH + kh) * KW + kw`` (channel
major, as ``w.reshape(O, -1)`` orders a weight) and ``l = (od * OH + oh) * OW + ow``. As a
matrix ``cols.reshape(R, N * L)`` it is the right operand of the convolution GEMM
``w.reshape(O, -1) @ cols``. Zero padding is implicit. Inner-loop indices are uint64 so
Numba's negative-index check does not block vectorisation (see kernels/conv.py).

In the im2col convolution each thread fills the patch matrix of its own part of the batch
and multiplies it with a single-threaded GEMM (see :mod:`cnnkit.kernels.threads` for why).
"""

from __future__ import annotations

from numba import njit, uint64

from cnnkit.kernels.core import column_range


@njit(cache=True, nogil=True)
def im2col_fill(
    x, cols, kd_n, kh_n, kw_n, od_n, oh_n, ow_n, sd, sh, sw, pd, ph, pw, dd, dh, dw, t0, t1
):  # pragma: no cover
    """Fill ``cols`` (C*KD*KH*KW, N, OD*OH*OW) with the windows of ``x`` (N,C,D,H,W)."""
    n_batch, _, depth, height, width = x.shape
    for t in range(t0, t1):  # tasks: (row, n) pairs, cols.shape[0] * n_batch
        n = t % n_batch
        r = t // n_batch
        kw = r % kw_n
        q = r // kw_n
        kh = q % kh_n
        q = q // kh_n
        kd = q % kd_n
        c = q // kd_n
        lo, hi = column_range(kw * dw - pw, sw, width, ow_n)
        start = lo * sw + kw * dw - pw
        for od in range(od_n):
            iz = od * sd + kd * dd - pd
            for oh in range(oh_n):
                base = (od * oh_n + oh) * ow_n
                iy = oh * sh + kh * dh - ph
                if iz < 0 or iz >= depth or iy < 0 or iy >= height or hi <= lo:
                    for i in range(ow_n):
                        cols[r, n, uint64(base + i)] = 0.0
                    continue
                for i in range(lo):
                    cols[r, n, uint64(base + i)] = 0.0
                for i in range(hi, ow_n):
                    cols[r, n, uint64(base + i)] = 0.0
                inner = base + lo
                if sw == 1:
                    for i in range(hi - lo):
                        cols[r, n, uint64(inner + i)] = x[n, c, iz, iy, uint64(start + i)]
                else:
                    for i in range(hi - lo):
                        cols[r, n, uint64(inner + i)] = x[n, c, iz, iy, uint64(start + i * sw)]


@njit(cache=True, nogil=True)
def col2im_accumulate(
    cols, gx, kd_n, kh_n, kw_n, od_n, oh_n, ow_n, sd, sh, sw, pd, ph, pw, dd, dh, dw, t0, t1
):  # pragma: no cover
    """Add every entry of ``cols`` back to the input position it was copied from.

    ``gx`` (N,C,D,H,W) accumulates; overlapping windows sum. Tasks are (n, c) planes,
    which no two threads share.
    """
    n_batch, n_chan, depth, height, width = gx.shape
    taps = kd_n * kh_n * kw_n
    for t in range(t0, t1):  # tasks n_batch * n_chan
        c = t % n_chan
        n = t // n_chan
        for kd in range(kd_n):
            for kh in range(kh_n):
                for kw in range(kw_n):
                    r = c * taps + (kd * kh_n + kh) * kw_n + kw
                    lo, hi = column_range(kw * dw - pw, sw, width, ow_n)
                    start = lo * sw + kw * dw - pw
                    for od in range(od_n):
                        iz = od * sd + kd * dd - pd
                        if iz < 0 or iz >= depth:
                            continue
                        for oh in range(oh_n):
                            iy = oh * sh + kh * dh - ph
                            if iy < 0 or iy >= height:
                                continue
                            inner = (od * oh_n + oh) * ow_n + lo
                            if sw == 1:
                                for i in range(hi - lo):
                                    gx[n, c, iz, iy, uint64(start + i)] += cols[
                                        r, n, uint64(inner + i)
                                    ]
                            else:
                                for i in range(hi - lo):
                                    gx[n, c, iz, iy, uint64(start + i * sw)] += cols[
                                        r, n, uint64(inner + i)
                                    ]
