"""Direct ("loop") convolution on NCDHW arrays: forward, input gradient, weight gradient.

Every kernel is parallel over rows of the array it writes, so no two threads write the same
element, and its innermost loop runs along contiguous output columns (``y[ow] += w *
x[ow * stride + off]``), which LLVM vectorises. Zero padding is implicit (taps in the padding
are skipped); other padding modes are applied by the caller with ``np.pad``.

``fastmath={"contract"}`` only allows fused multiply-add; NaN and inf keep IEEE semantics.
The weight gradient is a reduction, so it also allows ``reassoc`` (reordering the sum), which
does not change NaN/inf propagation either.
"""

from __future__ import annotations

from numba import njit, prange

from cnnkit.kernels.core import column_range


@njit(cache=True, parallel=True, fastmath={"contract"})
def conv_forward(x, w, y, groups, sd, sh, sw, pd, ph, pw, dd, dh, dw):  # pragma: no cover
    """Accumulate the cross-correlation of ``x`` (N,C,D,H,W) with ``w`` into ``y``.

    ``y`` (N,O,OD,OH,OW) must hold the bias (or zeros) on entry.
    """
    n_batch, _, depth, height, width = x.shape
    n_out, cg, kd_n, kh_n, kw_n = w.shape
    od_n, oh_n, ow_n = y.shape[2], y.shape[3], y.shape[4]
    og = n_out // groups
    for r in prange(n_batch * n_out * od_n * oh_n):
        oh = r % oh_n
        t = r // oh_n
        od = t % od_n
        t = t // od_n
        o = t % n_out
        n = t // n_out
        c0 = (o // og) * cg
        yrow = y[n, o, od, oh]
        for kd in range(kd_n):
            iz = od * sd + kd * dd - pd
            if iz < 0 or iz >= depth:
                continue
            for kh in range(kh_n):
                iy = oh * sh + kh * dh - ph
                if iy < 0 or iy >= height:
                    continue
                for kw in range(kw_n):
                    off = kw * dw - pw
                    lo, hi = column_range(off, sw, width, ow_n)
                    for c in range(cg):
                        wv = w[o, c, kd, kh, kw]
                        xrow = x[n, c0 + c, iz, iy]
                        if sw == 1:
                            for ow in range(lo, hi):
                                yrow[ow] += wv * xrow[ow + off]
                        else:
                            for ow in range(lo, hi):
                                yrow[ow] += wv * xrow[ow * sw + off]


@njit(cache=True, parallel=True, fastmath={"contract"})
def conv_backward_input(gy, w, gx, groups, sd, sh, sw, pd, ph, pw, dd, dh, dw):  # pragma: no cover
    """Accumulate dL/dx into ``gx`` (N,C,D,H,W, zeroed by the caller).

    Each input row gathers from every output row whose window covers it; within the row the
    writes are a strided scatter that only this thread touches.
    """
    n_batch, n_in, depth, height, width = gx.shape
    n_out, cg, kd_n, kh_n, kw_n = w.shape
    od_n, oh_n, ow_n = gy.shape[2], gy.shape[3], gy.shape[4]
    og = n_out // groups
    for r in prange(n_batch * n_in * depth * height):
        iy = r % height
        t = r // height
        iz = t % depth
        t = t // depth
        ci = t % n_in
        n = t // n_in
        g = ci // cg
        c = ci - g * cg
        gxrow = gx[n, ci, iz, iy]
        for kd in range(kd_n):
            zz = iz + pd - kd * dd
            if zz < 0 or zz % sd != 0:
                continue
            od = zz // sd
            if od >= od_n:
                continue
            for kh in range(kh_n):
                yy = iy + ph - kh * dh
                if yy < 0 or yy % sh != 0:
                    continue
                oh = yy // sh
                if oh >= oh_n:
                    continue
                for kw in range(kw_n):
                    off = kw * dw - pw
                    lo, hi = column_range(off, sw, width, ow_n)
                    for o in range(g * og, (g + 1) * og):
                        wv = w[o, c, kd, kh, kw]
                        gyrow = gy[n, o, od, oh]
                        if sw == 1:
                            for ow in range(lo, hi):
                                gxrow[ow + off] += wv * gyrow[ow]
                        else:
                            for ow in range(lo, hi):
                                gxrow[ow * sw + off] += wv * gyrow[ow]


@njit(cache=True, parallel=True, fastmath={"contract", "reassoc"})
def conv_backward_weight(gy, x, gw, groups, sd, sh, sw, pd, ph, pw, dd, dh, dw):  # pragma: no cover
    """Write dL/dw into ``gw`` (O,C/groups,KD,KH,KW): one dot product per weight tap."""
    n_batch, _, depth, height, width = x.shape
    n_out, cg, kd_n, kh_n, kw_n = gw.shape
    od_n, oh_n, ow_n = gy.shape[2], gy.shape[3], gy.shape[4]
    og = n_out // groups
    taps = kd_n * kh_n * kw_n
    for r in prange(n_out * cg * taps):
        kw = r % kw_n
        t = r // kw_n
        kh = t % kh_n
        t = t // kh_n
        kd = t % kd_n
        t = t // kd_n
        c = t % cg
        o = t // cg
        ci = (o // og) * cg + c
        off = kw * dw - pw
        lo, hi = column_range(off, sw, width, ow_n)
        acc = 0.0
        for n in range(n_batch):
            for od in range(od_n):
                iz = od * sd + kd * dd - pd
                if iz < 0 or iz >= depth:
                    continue
                for oh in range(oh_n):
                    iy = oh * sh + kh * dh - ph
                    if iy < 0 or iy >= height:
                        continue
                    xrow = x[n, ci, iz, iy]
                    gyrow = gy[n, o, od, oh]
                    if sw == 1:
                        for ow in range(lo, hi):
                            acc += gyrow[ow] * xrow[ow + off]
                    else:
                        for ow in range(lo, hi):
                            acc += gyrow[ow] * xrow[ow * sw + off]
        gw[o, c, kd, kh, kw] = acc
