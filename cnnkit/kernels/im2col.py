"""Patch matrices (im2col) and their adjoint (col2im) on NCDHW arrays.

Layout: ``cols[r, n, l]`` with row ``r = ((c * KD + kd) * KH + kh) * KW + kw`` (channel
major, as ``w.reshape(O, -1)`` orders a weight) and ``l = (od * OH + oh) * OW + ow``. As a
matrix ``cols.reshape(R, N * L)`` it is the right operand of the convolution GEMM
``w.reshape(O, -1) @ cols``. Zero padding is implicit.
"""

from __future__ import annotations

from numba import njit, prange

from cnnkit.kernels.core import column_range


@njit(cache=True, parallel=True)
def im2col_fill(
    x, cols, kd_n, kh_n, kw_n, od_n, oh_n, ow_n, sd, sh, sw, pd, ph, pw, dd, dh, dw
):  # pragma: no cover
    """Fill ``cols`` (C*KD*KH*KW, N, OD*OH*OW) with the windows of ``x`` (N,C,D,H,W)."""
    n_batch, _, depth, height, width = x.shape
    n_rows = cols.shape[0]
    for t in prange(n_rows * n_batch):
        n = t % n_batch
        r = t // n_batch
        kw = r % kw_n
        q = r // kw_n
        kh = q % kh_n
        q = q // kh_n
        kd = q % kd_n
        c = q // kd_n
        off = kw * dw - pw
        lo, hi = column_range(off, sw, width, ow_n)
        dst = cols[r, n]
        for od in range(od_n):
            iz = od * sd + kd * dd - pd
            for oh in range(oh_n):
                base = (od * oh_n + oh) * ow_n
                iy = oh * sh + kh * dh - ph
                if iz < 0 or iz >= depth or iy < 0 or iy >= height:
                    for ow in range(ow_n):
                        dst[base + ow] = 0.0
                    continue
                xrow = x[n, c, iz, iy]
                for ow in range(lo):
                    dst[base + ow] = 0.0
                if sw == 1:
                    for ow in range(lo, hi):
                        dst[base + ow] = xrow[ow + off]
                else:
                    for ow in range(lo, hi):
                        dst[base + ow] = xrow[ow * sw + off]
                for ow in range(hi, ow_n):
                    dst[base + ow] = 0.0


@njit(cache=True, parallel=True)
def col2im_accumulate(
    cols, gx, kd_n, kh_n, kw_n, od_n, oh_n, ow_n, sd, sh, sw, pd, ph, pw, dd, dh, dw
):  # pragma: no cover
    """Add every entry of ``cols`` back to the input position it was copied from.

    ``gx`` (N,C,D,H,W) accumulates; overlapping windows sum. Parallel over (n, c) planes,
    which no two threads share.
    """
    n_batch, n_chan, depth, height, width = gx.shape
    taps = kd_n * kh_n * kw_n
    for t in prange(n_batch * n_chan):
        c = t % n_chan
        n = t // n_chan
        for kd in range(kd_n):
            for kh in range(kh_n):
                for kw in range(kw_n):
                    r = c * taps + (kd * kh_n + kh) * kw_n + kw
                    off = kw * dw - pw
                    lo, hi = column_range(off, sw, width, ow_n)
                    src = cols[r, n]
                    for od in range(od_n):
                        iz = od * sd + kd * dd - pd
                        if iz < 0 or iz >= depth:
                            continue
                        for oh in range(oh_n):
                            iy = oh * sh + kh * dh - ph
                            if iy < 0 or iy >= height:
                                continue
                            base = (od * oh_n + oh) * ow_n
                            grow = gx[n, c, iz, iy]
                            if sw == 1:
                                for ow in range(lo, hi):
                                    grow[ow + off] += src[base + ow]
                            else:
                                for ow in range(lo, hi):
                                    grow[ow * sw + off] += src[base + ow]
