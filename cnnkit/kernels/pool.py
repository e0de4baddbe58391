"""Max and average pooling on (N, C, H, W) arrays, forward and backward.

Tasks are the N*C planes (independent; ``[t0, t1)`` is a range of them).
Window bounds follow PyTorch: a window starts at ``o * stride - pad`` and is clipped to the
input; 1-D pooling is the H = 1 case.
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

from cnnkit.kernels import load_lightly


@njit(cache=True, nogil=True)
def max_pool_forward(x, y, idx, kh, kw, sh, sw, ph, pw, t0, t1):  # pragma: no cover
    """Window maxima into ``y`` and their flat ``h * W + w`` positions into ``idx``.

    NaN propagates: a NaN in a window is its maximum (PyTorch does the same); the index is
    that of the first NaN. Ties keep the first maximum in row-major order.
    """
    n_batch, n_chan, height, width = x.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    lowest = x.dtype.type(-np.inf)
    for p in range(t0, t1):  # tasks n_batch * n_chan
        n = p // n_chan
        c = p % n_chan
        for oh in range(oh_n):
            h0 = oh * sh - ph
            h1 = min(h0 + kh, height)
            h0 = max(h0, 0)
            for ow in range(ow_n):
                w0 = ow * sw - pw
                w1 = min(w0 + kw, width)
                w0 = max(w0, 0)
                best = lowest
                where = h0 * width + w0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        v = x[n, c, uint64(h), uint64(w)]
                        # The first NaN wins and stays (NaN > v is false for every v).
                        # Selects, not branches: on random data the running maximum changes
                        # unpredictably and mispredicted branches tripled the time.
                        better = (v > best) | ((v != v) & (best == best))
                        best = v if better else best
                        where = h * width + w if better else where
                y[n, c, oh, ow] = best
                idx[n, c, oh, ow] = where


@njit(cache=True, inline="always")
def _take_max(v, at, best, where):
    """One step of max_pool_forward's scan: the first NaN, else the first maximum."""
    better = (v > best) | ((v != v) & (best == best))
    return (v if better else best), (at if better else where)


@njit(cache=True, nogil=True)
def max_pool_forward_k2(x, y, idx, t0, t1):  # pragma: no cover
    """:func:`max_pool_forward` for 2x2 windows at stride 2 that lie inside ``x`` (no
    padding, no partial window): the same results, with a window's four taps written out
    so the loop over output columns vectorises (the layers of LeNet and most CNNs)."""
    n_batch, n_chan, height, width = x.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    for p in range(t0, t1):  # tasks n_batch * n_chan
        n = p // n_chan
        c = p % n_chan
        for oh in range(oh_n):
            r = uint64(2 * oh)
            r1 = r + uint64(1)
            for ow in range(ow_n):
                j = uint64(2 * ow)
                j1 = j + uint64(1)
                at = 2 * (oh * width + ow)
                best, where = x[n, c, r, j], at
                best, where = _take_max(x[n, c, r, j1], at + 1, best, where)
                best, where = _take_max(x[n, c, r1, j], at + width, best, where)
                best, where = _take_max(x[n, c, r1, j1], at + width + 1, best, where)
                y[n, c, uint64(oh), uint64(ow)] = best
                idx[n, c, uint64(oh), uint64(ow)] = where


@njit(cache=True, nogil=True)
def max_pool_backward(gy, idx, gx, t0, t1):  # pragma: no cover
    """Route each output gradient to the input position that held the maximum (``gx`` zeroed)."""
    n_batch, n_chan, oh_n, ow_n = gy.shape
    width = gx.shape[3]
    for p in range(t0, t1):  # tasks n_batch * n_chan
        n = p // n_chan
        c = p % n_chan
        for oh in range(oh_n):
            for ow in range(ow_n):
                k = idx[n, c, oh, ow]
                gx[n, c, k // width, k % width] += gy[n, c, oh, ow]


@njit(cache=True, inline="always")
def _avg_window(o, stride, pad, k, n, include_pad):
    """Clipped window ``[lo, hi)`` along one axis and its divisor factor (PyTorch's rule:
    with count_include_pad the window is clipped to the padded input, else to the input)."""
    lo = o * stride - pad
    hi = min(lo + k, n + pad)
    size = hi - lo
    lo = max(lo, 0)
    hi = min(hi, n)
    if not include_pad:
        size = hi - lo
    return lo, hi, size


@njit(cache=True, nogil=True)
def avg_pool_forward(x, y, kh, kw, sh, sw, ph, pw, include_pad, t0, t1):  # pragma: no cover
    """Window means into ``y``; the divisor counts padding cells iff ``include_pad``."""
    n_batch, n_chan, height, width = x.shape
    oh_n, ow_n = y.shape[2], y.shape[3]
    for p in range(t0, t1):  # tasks n_batch * n_chan
        n = p // n_chan
        c = p % n_chan
        for oh in range(oh_n):
            h0, h1, hs = _avg_window(oh, sh, ph, kh, height, include_pad)
            for ow in range(ow_n):
                w0, w1, ws = _avg_window(ow, sw, pw, kw, width, include_pad)
                acc = 0.0
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        acc += x[n, c, uint64(h), uint64(w)]
                y[n, c, oh, ow] = acc / (hs * ws)


@njit(cache=True, nogil=True)
def avg_pool_forward_k2(x, y, t0, t1):  # pragma: no cover
    """:func:`avg_pool_forward` for 2x2 windows at stride 2 inside ``x``: the same sums in
    the same order, written out (see :func:`max_pool_forward_k2`)."""
    n_chan = x.shape[1]
    oh_n, ow_n = y.shape[2], y.shape[3]
    for p in range(t0, t1):  # tasks n_batch * n_chan
        n = p // n_chan
        c = p % n_chan
        for oh in range(oh_n):
            r = 2 * oh
            for ow in range(ow_n):
                j = uint64(2 * ow)
                acc = 0.0 + x[n, c, r, j]
                acc += x[n, c, r, j + uint64(1)]
                acc += x[n, c, r + 1, j]
                acc += x[n, c, r + 1, j + uint64(1)]
                y[n, c, oh, ow] = acc / 4


@njit(cache=True, nogil=True)
def avg_pool_backward_k2(gy, gx, t0, t1):  # pragma: no cover
    """:func:`avg_pool_backward` for 2x2 windows at stride 2 inside ``gx``: windows do not
    overlap, so each covered cell is written once (cells no window covers stay as the
    caller's zeros)."""
    n_chan = gx.shape[1]
    oh_n, ow_n = gy.shape[2], gy.shape[3]
    for p in range(t0, t1):  # tasks n_batch * n_chan
        n = p // n_chan
        c = p % n_chan
        for oh in range(oh_n):
            r = 2 * oh
            for ow in range(ow_n):
                j = uint64(2 * ow)
                share = gy[n, c, oh, ow] / 4
                gx[n, c, r, j] = share
                gx[n, c, r, j + uint64(1)] = share
                gx[n, c, r + 1, j] = share
                gx[n, c, r + 1, j + uint64(1)] = share


@njit(cache=True, nogil=True)
def avg_pool_backward(gy, gx, kh, kw, sh, sw, ph, pw, include_pad, t0, t1):  # pragma: no cover
    """Spread each output gradient evenly over its window (``gx`` zeroed by the caller)."""
    n_batch, n_chan, height, width = gx.shape
    oh_n, ow_n = gy.shape[2], gy.shape[3]
    for p in range(t0, t1):  # tasks n_batch * n_chan
        n = p // n_chan
        c = p % n_chan
        for oh in range(oh_n):
            h0, h1, hs = _avg_window(oh, sh, ph, kh, height, include_pad)
            for ow in range(ow_n):
                w0, w1, ws = _avg_window(ow, sw, pw, kw, width, include_pad)
                share = gy[n, c, oh, ow] / (hs * ws)
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        gx[n, c, uint64(h), uint64(w)] += share


load_lightly(globals())
