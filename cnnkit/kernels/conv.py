"""Direct ("loop") convolution on NCDHW arrays: forward, input gradient, weight gradient.

Every kernel loops over a task range ``[t0, t1)`` (rows of the array it writes, or weight
taps), so threads given disjoint ranges never write the same element. The innermost loop runs
along contiguous output columns (``y[ow] += w * x[ow * stride + off]``), which LLVM
vectorises. Zero padding is implicit (taps in the padding
are skipped); other padding modes are applied by the caller with ``np.pad``.

Inner-loop indices are cast to ``uint64`` (they are non-negative by construction): Numba
checks every signed index for negative wrap-around, and that check alone stops LLVM from
vectorising the loop (measured 11x slower on a 1024-column row). Indexing in place, rather
than through per-row slices, also keeps the per-row overhead low for small (8x8, 14x14)
feature maps.

``fastmath={"contract"}`` only allows fused multiply-add; NaN and inf keep IEEE semantics.
The weight gradient is a reduction, so it also allows ``reassoc`` (reordering the sum), which
does not change NaN/inf propagation either.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from cnnkit.kernels import load_lightly
from cnnkit.kernels.core import column_range, weight_tap


@njit(cache=True, inline="always")
def _clip(bounds, b0, b1):
    """``(lo, hi)`` restricted to the column block ``[b0, b1)`` (may become empty)."""
    lo = max(bounds[0], b0)
    return lo, max(min(bounds[1], b1), lo)


@njit(cache=True, inline="always", fastmath={"contract"})
def _edges(y, x, yrow, xrow, wv, off, lo, hi, inner_lo, inner_hi):
    """One tap on the columns of ``[lo, hi)`` outside the fused range ``[inner_lo, inner_hi)``."""
    n, o, od, oh = yrow
    m, ci, iz, iy = xrow
    for i in range(lo, min(hi, inner_lo)):
        y[n, o, od, oh, uint64(i)] += wv * x[m, ci, iz, iy, uint64(i + off)]
    for i in range(max(lo, inner_hi), hi):
        y[n, o, od, oh, uint64(i)] += wv * x[m, ci, iz, iy, uint64(i + off)]


@njit(cache=True, nogil=True, fastmath={"contract"})
def conv_forward(
    x, w, bias, y, groups, sd, sh, sw, pd, ph, pw, dd, dh, dw, block, t0, t1
):  # pragma: no cover
    """Write the cross-correlation of ``x`` (N,C,D,H,W) with ``w``, plus ``bias``, into ``y``.

    ``y`` (N,O,OD,OH,OW) may be uninitialised: each task starts its block at the bias, so
    the output is written once instead of being zero-filled first. A task is ``block``
    output columns of one output row: long rows (1-D signals) split over threads, and the
    part of the row being accumulated stays in L1.
    """
    n_batch, _, depth, height, width = x.shape
    n_out, cg, kd_n, kh_n, kw_n = w.shape
    od_n, oh_n, ow_n = y.shape[2], y.shape[3], y.shape[4]
    og = n_out // groups
    n_blocks = (ow_n + block - 1) // block
    for r in range(t0, t1):  # tasks n_batch * n_out * od_n * oh_n * n_blocks
        b = r % n_blocks
        t = r // n_blocks
        oh = t % oh_n
        t = t // oh_n
        od = t % od_n
        t = t // od_n
        o = t % n_out
        n = t // n_out
        c0 = (o // og) * cg
        b0 = b * block
        b1 = min(b0 + block, ow_n)
        for i in range(b0, b1):
            y[n, o, od, oh, uint64(i)] = bias[o]
        for c in range(cg):
            for kd in range(kd_n):
                iz = od * sd + kd * dd - pd
                if iz < 0 or iz >= depth:
                    continue
                for kh in range(kh_n):
                    iy = oh * sh + kh * dh - ph
                    if iy < 0 or iy >= height:
                        continue
                    kw = 0
                    # stride 1: three taps per pass over the row where all three are inside
                    # the input (one load/store of y per three FMAs); single taps at the edges
                    while sw == 1 and kw + 3 <= kw_n:
                        off0 = kw * dw - pw
                        off1 = off0 + dw
                        off2 = off1 + dw
                        lo0, hi0 = _clip(column_range(off0, 1, width, ow_n), b0, b1)
                        lo1, hi1 = _clip(column_range(off1, 1, width, ow_n), b0, b1)
                        lo2, hi2 = _clip(column_range(off2, 1, width, ow_n), b0, b1)
                        inner_lo = max(lo0, lo1, lo2)
                        inner_hi = max(min(hi0, hi1, hi2), inner_lo)
                        w0 = w[o, c, kd, kh, kw]
                        w1 = w[o, c, kd, kh, kw + 1]
                        w2 = w[o, c, kd, kh, kw + 2]
                        ci = c0 + c
                        yrow = (n, o, od, oh)
                        xrow = (n, ci, iz, iy)
                        _edges(y, x, yrow, xrow, w0, off0, lo0, hi0, inner_lo, inner_hi)
                        _edges(y, x, yrow, xrow, w1, off1, lo1, hi1, inner_lo, inner_hi)
                        _edges(y, x, yrow, xrow, w2, off2, lo2, hi2, inner_lo, inner_hi)
                        for i in range(inner_lo, inner_hi):
                            y[n, o, od, oh, uint64(i)] += (
                                w0 * x[n, ci, iz, iy, uint64(i + off0)]
                                + w1 * x[n, ci, iz, iy, uint64(i + off1)]
                                + w2 * x[n, ci, iz, iy, uint64(i + off2)]
                            )
                        kw += 3
                    while kw < kw_n:
                        lo, hi = _clip(column_range(kw * dw - pw, sw, width, ow_n), b0, b1)
                        start = lo * sw + kw * dw - pw
                        wv = w[o, c, kd, kh, kw]
                        if sw == 1:
                            for i in range(hi - lo):
                                y[n, o, od, oh, uint64(lo + i)] += (
                                    wv * x[n, c0 + c, iz, iy, uint64(start + i)]
                                )
                        else:
                            for i in range(hi - lo):
                                y[n, o, od, oh, uint64(lo + i)] += (
                                    wv * x[n, c0 + c, iz, iy, uint64(start + i * sw)]
                                )
                        kw += 1


@njit(cache=True, nogil=True, fastmath={"contract"})
def conv_backward_input(
    gy, w, gx, groups, sd, sh, sw, pd, ph, pw, dd, dh, dw, t0, t1
):  # pragma: no cover
    """Accumulate dL/dx into ``gx`` (N,C,D,H,W, zeroed by the caller).

    Each input row gathers from every output row whose window covers it; within the row the
    writes are a strided scatter that only this thread touches.
    """
    n_batch, n_in, depth, height, width = gx.shape
    n_out, cg, kd_n, kh_n, kw_n = w.shape
    od_n, oh_n, ow_n = gy.shape[2], gy.shape[3], gy.shape[4]
    og = n_out // groups
    for r in range(t0, t1):  # tasks n_batch * n_in * depth * height
        iy = r % height
        t = r // height
        iz = t % depth
        t = t // depth
        ci = t % n_in
        n = t // n_in
        g = ci // cg
        c = ci - g * cg
        for o in range(g * og, (g + 1) * og):
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
                        lo, hi = column_range(kw * dw - pw, sw, width, ow_n)
                        start = lo * sw + kw * dw - pw
                        wv = w[o, c, kd, kh, kw]
                        if sw == 1:
                            for i in range(hi - lo):
                                gx[n, ci, iz, iy, uint64(start + i)] += (
                                    wv * gy[n, o, od, oh, uint64(lo + i)]
                                )
                        else:
                            for i in range(hi - lo):
                                gx[n, ci, iz, iy, uint64(start + i * sw)] += (
                                    wv * gy[n, o, od, oh, uint64(lo + i)]
                                )


@njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def conv_backward_weight(
    gy, x, gw, groups, sd, sh, sw, pd, ph, pw, dd, dh, dw, t0, t1
):  # pragma: no cover
    """Write dL/dw into ``gw`` (O,C/groups,KD,KH,KW): one dot product per weight tap."""
    n_batch, _, depth, height, width = x.shape
    n_out, cg, kd_n, kh_n, kw_n = gw.shape
    od_n, oh_n, ow_n = gy.shape[2], gy.shape[3], gy.shape[4]
    og = n_out // groups
    for r in range(t0, t1):  # tasks: n_out * cg * kd_n * kh_n * kw_n weight taps
        o, c, kd, kh, kw = weight_tap(r, cg, kd_n, kh_n, kw_n)
        ci = (o // og) * cg + c
        lo, hi = column_range(kw * dw - pw, sw, width, ow_n)
        start = lo * sw + kw * dw - pw
        acc = gw.dtype.type(0.0)
        for n in range(n_batch):
            for od in range(od_n):
                iz = od * sd + kd * dd - pd
                if iz < 0 or iz >= depth:
                    continue
                for oh in range(oh_n):
                    iy = oh * sh + kh * dh - ph
                    if iy < 0 or iy >= height:
                        continue
                    if sw == 1:
                        for i in range(hi - lo):
                            acc += (
                                gy[n, o, od, oh, uint64(lo + i)]
                                * x[n, ci, iz, iy, uint64(start + i)]
                            )
                    else:
                        for i in range(hi - lo):
                            acc += (
                                gy[n, o, od, oh, uint64(lo + i)]
                                * x[n, ci, iz, iy, uint64(start + i * sw)]
                            )
        gw[o, c, kd, kh, kw] = acc


# Stride-1 convolutions on small feature maps (LeNet's 28x28, the digits' 8x8) spend more
# time starting short row loops than multiplying. With the input zero-padded to width Wp and
# the output computed at that same width ("wide" output, the extra Wp - OW columns per row are
# discarded by the caller), output position j = oh * Wp + ow reads input j + kh*dh*Wp + kw*dw
# for every oh, so each tap is one long contiguous loop over the whole plane.
# Arrays: xp (N, C, Dp, Hp*Wp) padded input; y / gy (N, O, OD, OH*Wp) wide output.


@njit(cache=True, nogil=True, fastmath={"contract"})
def conv_forward_flat(xp, w, bias, y, groups, wp, dd, dh, dw, block, t0, t1):  # pragma: no cover
    """Stride-1 forward on flattened planes into the wide ``y`` (uninitialised on entry)."""
    n_out, cg, kd_n, kh_n, kw_n = w.shape
    od_n = y.shape[2]
    length = y.shape[3] - (kw_n - 1) * dw  # later positions are discarded wide columns
    n_blocks = (length + block - 1) // block
    og = n_out // groups
    for r in range(t0, t1):  # tasks: (n, o, od, block)
        b = r % n_blocks
        t = r // n_blocks
        od = t % od_n
        t = t // od_n
        o = t % n_out
        n = t // n_out
        j0 = b * block
        m = min(j0 + block, length) - j0
        for i in range(m):
            y[n, o, od, uint64(j0 + i)] = bias[o]
        c0 = (o // og) * cg
        step = uint64(dw)
        row = uint64(dh * wp)
        for c in range(cg):
            for kd in range(kd_n):
                iz = od + kd * dd
                kh = 0
                # 3x3 kernels (the common case): all nine taps in one pass, one load and
                # store of y per nine FMAs; the store port, not the FMA units, is the limit.
                while kw_n == 3 and kh + 3 <= kh_n:
                    base = j0 + kh * dh * wp
                    a0 = w[o, c, kd, kh, 0]
                    a1 = w[o, c, kd, kh, 1]
                    a2 = w[o, c, kd, kh, 2]
                    b0 = w[o, c, kd, kh + 1, 0]
                    b1 = w[o, c, kd, kh + 1, 1]
                    b2 = w[o, c, kd, kh + 1, 2]
                    c0_ = w[o, c, kd, kh + 2, 0]
                    c1_ = w[o, c, kd, kh + 2, 1]
                    c2_ = w[o, c, kd, kh + 2, 2]
                    for i in range(m):
                        u = uint64(base + i)
                        v = u + row
                        q = v + row
                        y[n, o, od, uint64(j0 + i)] += (
                            a0 * xp[n, c0 + c, iz, u]
                            + a1 * xp[n, c0 + c, iz, u + step]
                            + a2 * xp[n, c0 + c, iz, u + step + step]
                            + b0 * xp[n, c0 + c, iz, v]
                            + b1 * xp[n, c0 + c, iz, v + step]
                            + b2 * xp[n, c0 + c, iz, v + step + step]
                            + c0_ * xp[n, c0 + c, iz, q]
                            + c1_ * xp[n, c0 + c, iz, q + step]
                            + c2_ * xp[n, c0 + c, iz, q + step + step]
                        )
                    kh += 3
                while kh < kh_n:
                    # otherwise three (or two) taps of a kernel row per pass
                    kw = 0
                    while kw + 3 <= kw_n:
                        base = j0 + kh * dh * wp + kw * dw
                        w0 = w[o, c, kd, kh, kw]
                        w1 = w[o, c, kd, kh, kw + 1]
                        w2 = w[o, c, kd, kh, kw + 2]
                        for i in range(m):
                            u = uint64(base + i)
                            y[n, o, od, uint64(j0 + i)] += (
                                w0 * xp[n, c0 + c, iz, u]
                                + w1 * xp[n, c0 + c, iz, u + step]
                                + w2 * xp[n, c0 + c, iz, u + step + step]
                            )
                        kw += 3
                    if kw + 2 <= kw_n:
                        base = j0 + kh * dh * wp + kw * dw
                        w0 = w[o, c, kd, kh, kw]
                        w1 = w[o, c, kd, kh, kw + 1]
                        for i in range(m):
                            u = uint64(base + i)
                            y[n, o, od, uint64(j0 + i)] += (
                                w0 * xp[n, c0 + c, iz, u] + w1 * xp[n, c0 + c, iz, u + step]
                            )
                        kw += 2
                    while kw < kw_n:
                        base = j0 + kh * dh * wp + kw * dw
                        wv = w[o, c, kd, kh, kw]
                        for i in range(m):
                            y[n, o, od, uint64(j0 + i)] += wv * xp[n, c0 + c, iz, uint64(base + i)]
                        kw += 1
                    kh += 1


# Many output channels: four of them per pass over the input plane. Each input vector loaded
# feeds four accumulator rows, so per FMA there are 3-4x fewer loads than one channel per pass
# (measured 1 thread, lenet_c2 kernel 3.4 -> 1.8 ms, cifar 55 -> 32 ms, lenet_c1 1.0 -> 0.7).
# The four accumulator blocks (4 x block floats, a scratch array of the call) stay in L1 and
# are copied to the real output columns of y when the task ends: y is written once, in its
# final layout, instead of a wide array the caller crops in a serial pass.


@njit(cache=True, nogil=True, fastmath={"contract"})
def conv_forward_flat4(xp, w, bias, y, groups, wp, dd, dh, dw, block, t0, t1):  # pragma: no cover
    """:func:`conv_forward_flat` for four output channels of one group per task.

    ``y`` is the final (N,O,OD,OH,OW) output (uninitialised on entry); the wide rows (width
    ``wp``) are accumulated in a scratch block and only their first OW columns are stored.
    Each flattened plane of ``xp`` needs 15 elements of slack after its Hp*Wp cells.
    Needs ``O / groups`` divisible by 4 (a task's channels share their input channels).
    """
    n_out, cg, kd_n, kh_n, kw_n = w.shape
    od_n, oh_n, ow_n = y.shape[2], y.shape[3], y.shape[4]
    length = oh_n * wp - (kw_n - 1) * dw  # the last real output is wide position length - 1
    acc = np.empty((4, (block + 15) // 16 * 16), y.dtype)
    n_blocks = (length + block - 1) // block
    og = n_out // groups
    n_quads = n_out // 4
    step = uint64(dw)
    for r in range(t0, t1):  # tasks: (n, o // 4, od, block)
        b = r % n_blocks
        t = r // n_blocks
        od = t % od_n
        t = t // od_n
        o = (t % n_quads) * 4
        n = t // n_quads
        j0 = b * block
        m = min(j0 + block, length) - j0
        # whole 16-lane vectors (no scalar remainder loop); lanes past m read the plane's
        # slack and are never stored
        mv = (m + 15) // 16 * 16
        for i in range(mv):
            acc[0, uint64(i)] = bias[o]
            acc[1, uint64(i)] = bias[o + 1]
            acc[2, uint64(i)] = bias[o + 2]
            acc[3, uint64(i)] = bias[o + 3]
        c0 = (o // og) * cg
        for c in range(cg):
            ci = c0 + c
            for kd in range(kd_n):
                iz = od + kd * dd
                for kh in range(kh_n):
                    # taps of a kernel row three at a time, then a pair, then singles
                    kw = 0
                    while kw + 3 <= kw_n:
                        base = j0 + kh * dh * wp + kw * dw
                        a0, a1, a2 = (
                            w[o, c, kd, kh, kw],
                            w[o, c, kd, kh, kw + 1],
                            w[o, c, kd, kh, kw + 2],
                        )
                        b0, b1, b2 = (
                            w[o + 1, c, kd, kh, kw],
                            w[o + 1, c, kd, kh, kw + 1],
                            w[o + 1, c, kd, kh, kw + 2],
                        )
                        e0, e1, e2 = (
                            w[o + 2, c, kd, kh, kw],
                            w[o + 2, c, kd, kh, kw + 1],
                            w[o + 2, c, kd, kh, kw + 2],
                        )
                        f0, f1, f2 = (
                            w[o + 3, c, kd, kh, kw],
                            w[o + 3, c, kd, kh, kw + 1],
                            w[o + 3, c, kd, kh, kw + 2],
                        )
                        for i in range(mv):
                            u = uint64(base + i)
                            x0 = xp[n, ci, iz, u]
                            x1 = xp[n, ci, iz, u + step]
                            x2 = xp[n, ci, iz, u + step + step]
                            j = uint64(i)
                            acc[0, j] += a0 * x0 + a1 * x1 + a2 * x2
                            acc[1, j] += b0 * x0 + b1 * x1 + b2 * x2
                            acc[2, j] += e0 * x0 + e1 * x1 + e2 * x2
                            acc[3, j] += f0 * x0 + f1 * x1 + f2 * x2
                        kw += 3
                    if kw + 2 <= kw_n:
                        base = j0 + kh * dh * wp + kw * dw
                        a0, a1 = w[o, c, kd, kh, kw], w[o, c, kd, kh, kw + 1]
                        b0, b1 = w[o + 1, c, kd, kh, kw], w[o + 1, c, kd, kh, kw + 1]
                        e0, e1 = w[o + 2, c, kd, kh, kw], w[o + 2, c, kd, kh, kw + 1]
                        f0, f1 = w[o + 3, c, kd, kh, kw], w[o + 3, c, kd, kh, kw + 1]
                        for i in range(mv):
                            u = uint64(base + i)
                            x0 = xp[n, ci, iz, u]
                            x1 = xp[n, ci, iz, u + step]
                            j = uint64(i)
                            acc[0, j] += a0 * x0 + a1 * x1
                            acc[1, j] += b0 * x0 + b1 * x1
                            acc[2, j] += e0 * x0 + e1 * x1
                            acc[3, j] += f0 * x0 + f1 * x1
                        kw += 2
                    if kw < kw_n:
                        base = j0 + kh * dh * wp + kw * dw
                        a0, b0 = w[o, c, kd, kh, kw], w[o + 1, c, kd, kh, kw]
                        e0, f0 = w[o + 2, c, kd, kh, kw], w[o + 3, c, kd, kh, kw]
                        for i in range(mv):
                            x0 = xp[n, ci, iz, uint64(base + i)]
                            j = uint64(i)
                            acc[0, j] += a0 * x0
                            acc[1, j] += b0 * x0
                            acc[2, j] += e0 * x0
                            acc[3, j] += f0 * x0
        # the block's wide rows, cut to their real columns
        for row in range(j0 // wp, (j0 + m - 1) // wp + 1):
            lo = max(j0, row * wp) - row * wp
            hi = min(j0 + m, row * wp + ow_n) - row * wp
            shift = row * wp - j0
            for k in range(4):
                for col in range(lo, hi):
                    y[n, o + k, od, row, uint64(col)] = acc[k, uint64(shift + col)]


@njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def conv_backward_weight_flat(gy, xp, gw, groups, wp, dd, dh, dw, t0, t1):  # pragma: no cover
    """Stride-1 dL/dw from ``gy`` (N,O,OD,OH,OW) and the flattened padded input.

    Only real output columns are summed: the wide layout's extra columns would pair a zero
    gradient with input cells this tap never sees, and 0 * inf would turn a finite gradient
    into NaN.
    """
    n_batch = xp.shape[0]
    n_out, cg, kd_n, kh_n, kw_n = gw.shape
    od_n, oh_n, ow_n = gy.shape[2], gy.shape[3], gy.shape[4]
    og = n_out // groups
    for r in range(t0, t1):  # tasks: n_out * cg * kd_n * kh_n * kw_n weight taps
        o, c, kd, kh, kw = weight_tap(r, cg, kd_n, kh_n, kw_n)
        ci = (o // og) * cg + c
        off = kh * dh * wp + kw * dw
        acc = gw.dtype.type(0.0)
        for n in range(n_batch):
            for od in range(od_n):
                iz = od + kd * dd
                for oh in range(oh_n):
                    base = off + oh * wp
                    for i in range(ow_n):
                        acc += gy[n, o, od, oh, uint64(i)] * xp[n, ci, iz, uint64(base + i)]
        gw[o, c, kd, kh, kw] = acc


@njit(cache=True, nogil=True, fastmath={"contract"})
def conv_backward_input_flat(gy, w, gxp, groups, wp, dd, dh, dw, t0, t1):  # pragma: no cover
    """Stride-1 dL/dxp (flattened, padded; zeroed by the caller) from ``gy`` (N,O,OD,OH,OW).

    Tasks are (n, c) planes: every write to a plane comes from its own task. As in the weight
    gradient, only real output columns contribute (an inf weight times a zero would be NaN).
    """
    n_in = gxp.shape[1]
    n_out, cg, kd_n, kh_n, kw_n = w.shape
    od_n, oh_n, ow_n = gy.shape[2], gy.shape[3], gy.shape[4]
    og = n_out // groups
    for r in range(t0, t1):  # tasks: (n, c) planes
        ci = r % n_in
        n = r // n_in
        g = ci // cg
        c = ci - g * cg
        for o in range(g * og, (g + 1) * og):
            for od in range(od_n):
                for kd in range(kd_n):
                    iz = od + kd * dd
                    for kh in range(kh_n):
                        for kw in range(kw_n):
                            off = kh * dh * wp + kw * dw
                            wv = w[o, c, kd, kh, kw]
                            for oh in range(oh_n):
                                base = off + oh * wp
                                for i in range(ow_n):
                                    gxp[n, ci, iz, uint64(base + i)] += (
                                        wv * gy[n, o, od, oh, uint64(i)]
                                    )


# Faster variants of the two flat gradients: one long loop per plane over the wide layout,
# whose extra columns carry a zero gradient. 0 * v is 0 only for finite v, so ops uses them
# only when the other factor is finite everywhere (x for dL/dw, w for dL/dx); otherwise the
# exact row-by-row kernels above.


@njit(cache=True, nogil=True, fastmath={"contract", "reassoc"})
def conv_backward_weight_wide(gyw, xp, gw, groups, wp, dd, dh, dw, t0, t1):  # pragma: no cover
    """Stride-1 dL/dw from the wide ``gyw`` (N,O,OD,OH*Wp, zero extra columns); finite ``xp``."""
    n_batch = xp.shape[0]
    n_out, cg, kd_n, kh_n, kw_n = gw.shape
    od_n = gyw.shape[2]
    length = gyw.shape[3] - (kw_n - 1) * dw
    og = n_out // groups
    for r in range(t0, t1):  # tasks: n_out * cg * kd_n * kh_n * kw_n weight taps
        o, c, kd, kh, kw = weight_tap(r, cg, kd_n, kh_n, kw_n)
        ci = (o // og) * cg + c
        off = kh * dh * wp + kw * dw
        acc = gw.dtype.type(0.0)
        for n in range(n_batch):
            for od in range(od_n):
                iz = od + kd * dd
                for i in range(length):
                    acc += gyw[n, o, od, uint64(i)] * xp[n, ci, iz, uint64(off + i)]
        gw[o, c, kd, kh, kw] = acc


@njit(cache=True, nogil=True, fastmath={"contract"})
def conv_backward_input_wide(gyw, w, gxp, groups, wp, dd, dh, dw, t0, t1):  # pragma: no cover
    """Stride-1 dL/dxp (flattened, padded, zeroed) from the wide ``gyw``; finite ``w``.

    Tasks are (n, c) planes: every write to a plane comes from its own task.
    """
    n_in = gxp.shape[1]
    n_out, cg, kd_n, kh_n, kw_n = w.shape
    od_n = gyw.shape[2]
    length = gyw.shape[3] - (kw_n - 1) * dw
    og = n_out // groups
    for r in range(t0, t1):  # tasks: (n, c) planes
        ci = r % n_in
        n = r // n_in
        g = ci // cg
        c = ci - g * cg
        for o in range(g * og, (g + 1) * og):
            for od in range(od_n):
                for kd in range(kd_n):
                    iz = od + kd * dd
                    for kh in range(kh_n):
                        for kw in range(kw_n):
                            off = kh * dh * wp + kw * dw
                            wv = w[o, c, kd, kh, kw]
                            for i in range(length):
                                gxp[n, ci, iz, uint64(off + i)] += wv * gyw[n, o, od, uint64(i)]


load_lightly(globals())
