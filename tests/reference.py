"""Slow, obviously-correct oracles written straight from the definitions.

Nothing here shares code with cnnkit's kernels or its geometry module: output sizes are found
by sliding the window until it no longer fits, padding is an explicit index map, and every
output element is one plain sum over its window. Use small shapes.
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def _tuple(value, nd):
    return tuple(value) if isinstance(value, tuple | list) else (value,) * nd


def source_index(i: int, n: int, mode: str) -> int | None:
    """Which input cell padded position ``i`` (relative to the input start) copies."""
    if 0 <= i < n:
        return i
    if mode == "zeros":
        return None
    if mode == "replicate":
        return min(max(i, 0), n - 1)
    if mode == "circular":
        return i % n
    if mode == "reflect":
        # mirror without repeating the edge: -1 -> 1, n -> n - 2
        period = 2 * (n - 1)
        j = abs(i) % period if period else 0
        return j if j < n else period - j
    raise ValueError(mode)


def pad_reference(x: np.ndarray, pads, mode: str) -> np.ndarray:
    """Pad the spatial axes (2, 3, ...) of ``x`` by ``pads`` = ((before, after), ...)."""
    spatial = x.shape[2:]
    out_shape = x.shape[:2] + tuple(n + a + b for n, (a, b) in zip(spatial, pads))
    out = np.zeros(out_shape, x.dtype)
    for pos in itertools.product(*(range(s) for s in out_shape[2:])):
        src = [source_index(p - a, n, mode) for p, (a, _), n in zip(pos, pads, spatial)]
        if any(s is None for s in src):
            continue
        out[(slice(None), slice(None), *pos)] = x[(slice(None), slice(None), *src)]
    return out


def resolve_pads(padding, sizes, kernel, stride, dilation):
    """Padding argument -> ((before, after), ...), from the words' definitions."""
    nd = len(sizes)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "full":
            return tuple((d * (k - 1), d * (k - 1)) for k, d in zip(kernel, dilation))
        if padding == "same":
            pads = []
            for n, k, s, d in zip(sizes, kernel, stride, dilation):
                out = math.ceil(n / s)
                total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise ValueError(padding)
    if isinstance(padding, tuple | list) and all(isinstance(p, tuple | list) for p in padding):
        return tuple(tuple(p) for p in padding)
    return tuple((p, p) for p in _tuple(padding, nd))


def _count_windows(n_padded: int, span: int, stride: int) -> int:
    count, start = 0, 0
    while start + span <= n_padded:
        count += 1
        start += stride
    return count


def conv_reference(
    x,
    w,
    bias=None,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    pad_mode="zeros",
    flip=False,
):
    """N-D cross-correlation (convolution if ``flip``) by one sum per output element."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    nd = x.ndim - 2
    stride, dilation = _tuple(stride, nd), _tuple(dilation, nd)
    kernel = w.shape[2:]
    if flip:
        w = w[(Ellipsis,) + (slice(None, None, -1),) * nd]
    pads = resolve_pads(padding, x.shape[2:], kernel, stride, dilation)
    xp = pad_reference(x, pads, pad_mode)
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    out = [_count_windows(n, sp, s) for n, sp, s in zip(xp.shape[2:], spans, stride)]
    n_batch, n_in = x.shape[:2]
    n_out, cg = w.shape[:2]
    og = n_out // groups
    y = np.zeros((n_batch, n_out, *out))
    for n, o in itertools.product(range(n_batch), range(n_out)):
        g = o // og
        for pos in itertools.product(*(range(m) for m in out)):
            total = 0.0 if bias is None else float(bias[o])
            for c in range(cg):
                for tap in itertools.product(*(range(k) for k in kernel)):
                    src = tuple(p * s + t * d for p, s, t, d in zip(pos, stride, tap, dilation))
                    total += w[(o, c, *tap)] * xp[(n, g * cg + c, *src)]
            y[(n, o, *pos)] = total
    return y


def pool_output_reference(n, k, s, p, ceil_mode):
    """PyTorch's pooling length: floor (or ceil) division, minus a last window that would
    start in the right padding."""
    length = n + 2 * p - k
    out = (-(-length // s) if ceil_mode else length // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def pool_reference(
    x, kernel_size, stride=None, padding=0, ceil_mode=False, kind="max", count_include_pad=True
):
    """1-D/2-D max or average pooling by one loop per output element.

    Returns (y, indices) for max (indices flat within each plane), y for avg.
    """
    x = np.asarray(x, np.float64)
    nd = x.ndim - 2
    k = _tuple(kernel_size, nd)
    s = k if stride is None else _tuple(stride, nd)
    p = _tuple(padding, nd)
    sizes = x.shape[2:]
    out = [pool_output_reference(n, kk, ss, pp, ceil_mode) for n, kk, ss, pp in zip(sizes, k, s, p)]
    y = np.zeros(x.shape[:2] + tuple(out))
    idx = np.zeros(y.shape, np.int64)
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for pos in itertools.product(*(range(m) for m in out)):
            starts = [q * ss - pp for q, ss, pp in zip(pos, s, p)]
            cells, padded_cells = [], 0
            for tap in itertools.product(*(range(kk) for kk in k)):
                at = [a + t for a, t in zip(starts, tap)]
                if all(0 <= a < m for a, m in zip(at, sizes)):
                    cells.append(tuple(at))
                    padded_cells += 1
                elif all(-pp <= a < m + pp for a, m, pp in zip(at, sizes, p)):
                    padded_cells += 1
            if kind == "max":
                values = [x[(n, c, *cell)] for cell in cells]
                best = int(np.argmax(values))  # first maximum; NaN counts as the maximum
                y[(n, c, *pos)] = values[best]
                flat = 0
                for a, m in zip(cells[best], sizes):
                    flat = flat * m + a
                idx[(n, c, *pos)] = flat
            else:
                total = sum(x[(n, c, *cell)] for cell in cells)
                divisor = padded_cells if count_include_pad else len(cells)
                y[(n, c, *pos)] = total / divisor
    return (y, idx) if kind == "max" else y


def im2col_reference(x, kernel_size, stride=1, padding=0, dilation=1):
    """(C, H, W) -> (C*kh*kw, OH*OW): column ``i*OW + j`` is window (i, j), zero padded."""
    x = np.asarray(x, np.float64)
    kh, kw = _tuple(kernel_size, 2)
    sh, sw = _tuple(stride, 2)
    dh, dw = _tuple(dilation, 2)
    pads = resolve_pads(padding, x.shape[1:], (kh, kw), (sh, sw), (dh, dw))
    xp = pad_reference(x[None], pads, "zeros")[0]
    oh = _count_windows(xp.shape[1], dh * (kh - 1) + 1, sh)
    ow = _count_windows(xp.shape[2], dw * (kw - 1) + 1, sw)
    cols = np.zeros((x.shape[0] * kh * kw, oh * ow))
    for c, a, b, i, j in itertools.product(
        range(x.shape[0]), range(kh), range(kw), range(oh), range(ow)
    ):
        cols[(c * kh + a) * kw + b, i * ow + j] = xp[c, i * sh + a * dh, j * sw + b * dw]
    return cols


def col2im_reference(cols, input_shape, kernel_size, stride=1, padding=0, dilation=1):
    """Adjoint of :func:`im2col_reference`: add each column entry back where it came from."""
    c_n, h, w = input_shape
    kh, kw = _tuple(kernel_size, 2)
    sh, sw = _tuple(stride, 2)
    dh, dw = _tuple(dilation, 2)
    pads = resolve_pads(padding, (h, w), (kh, kw), (sh, sw), (dh, dw))
    oh = _count_windows(h + sum(pads[0]), dh * (kh - 1) + 1, sh)
    ow = _count_windows(w + sum(pads[1]), dw * (kw - 1) + 1, sw)
    x = np.zeros(input_shape)
    for c, a, b, i, j in itertools.product(range(c_n), range(kh), range(kw), range(oh), range(ow)):
        r, q = i * sh + a * dh - pads[0][0], j * sw + b * dw - pads[1][0]
        if 0 <= r < h and 0 <= q < w:
            x[c, r, q] += cols[(c * kh + a) * kw + b, i * ow + j]
    return x


def numerical_gradient(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar function ``f`` at ``x`` (float64)."""
    x = np.array(x, np.float64)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f(x)
        x[i] = old - eps
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad
