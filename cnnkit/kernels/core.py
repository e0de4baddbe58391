"""Index arithmetic shared by the convolution, im2col and pooling kernels."""

from __future__ import annotations

from numba import njit

from cnnkit.kernels import load_lightly


@njit(cache=True, inline="always")
def column_range(off, stride, width, out_width):
    """Output columns ``ow`` whose tap ``ow * stride + off`` lands inside ``[0, width)``.

    Zero padding is implicit: the kernels skip taps that fall in the padding instead of
    reading a padded copy, which saves a copy of the input on every call.
    """
    lo = 0 if off >= 0 else (-off + stride - 1) // stride
    last = width - 1 - off
    hi = last // stride + 1 if last >= 0 else 0
    if hi > out_width:
        hi = out_width
    if lo > hi:
        lo = hi
    return lo, hi


@njit(cache=True, inline="always")
def weight_tap(r, cg, kd_n, kh_n, kw_n):
    """Task ``r`` of a weight-gradient split, as the tap ``(o, c, kd, kh, kw)`` it computes.

    Tasks enumerate the weight ``(O, C/groups, KD, KH, KW)`` in C order, so each task writes
    one weight and the split over threads needs no reduction.
    """
    kw = r % kw_n
    t = r // kw_n
    kh = t % kh_n
    t = t // kh_n
    kd = t % kd_n
    t = t // kd_n
    return t // cg, t % cg, kd, kh, kw


load_lightly(globals())
