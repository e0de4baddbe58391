"""Inputs and the float64 oracle every implementation is checked against before it is timed.

The tolerance is the classical bound for a float32 dot product of length ``K`` (Higham,
*Accuracy and Stability of Numerical Algorithms*, 2002, section 3.1)::

    |y - y_ref| <= 2 * K * eps32 * (|x| * |w|)  +  8 * eps32 * max(|x| * |w|)

where ``|x| * |w|`` is the same operation applied to absolute values and ``K`` the reduction
length (``C/groups * prod(kernel)`` forward, ``N * prod(out)`` for the weight gradient,
``O * prod(kernel)`` for the input gradient).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from cnnkit.bench.cases import SEPARABLE, Case

EPS32 = float(np.finfo(np.float32).eps)


def make_inputs(case: Case, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 arrays for ``case``: ``x``, ``w`` (convolutions), ``gy`` (backward).

    Shapes are NCHW (NCL for 1-D) exactly as cnnkit and the peers receive them. The same
    seed gives the same arrays in every process. A case with named ``weights`` gets that
    separable kernel instead of random weights.
    """
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.standard_normal(case.x_shape, dtype=np.float32)}
    if case.weights:
        col, row = SEPARABLE[case.weights]
        arrays["w"] = np.outer(col, row).astype(np.float32).reshape(case.w_shape)
    elif case.w_shape is not None:
        w = rng.standard_normal(case.w_shape, dtype=np.float32)
        if case.op == "conv1d":
            w = np.ascontiguousarray(w[:, :, 0, :])
        arrays["w"] = w
    if case.op == "conv2d_backward":
        arrays["gy"] = rng.standard_normal(case.out_shape, dtype=np.float32)
    return arrays


def as4(a: np.ndarray) -> np.ndarray:
    """An NCL array as NC1L (4-D arrays unchanged)."""
    return a[:, :, None, :] if a.ndim == 3 else a


def taps(xp: np.ndarray, i: int, j: int, case: Case) -> np.ndarray:
    """The input values kernel tap (i, j) meets at every output position."""
    oh, ow = case.out_hw
    sh, sw = case.stride
    return xp[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]


def pad(x: np.ndarray, case: Case, value: float = 0.0) -> np.ndarray:
    """``x`` with the case's padding on H and W, filled with ``value``."""
    ph, pw = case.padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def reference(case: Case, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """The float64 oracle: a loop over kernel taps written from the definition.

    Notes
    -----
    Cross-correlation (PyTorch's convolution), zero padding::

        y[n, o, h, w] = sum_{c, i, j} w[o, c, i, j] * x_pad[n, c, s*h + i, s*w + j]

    The backward pass returns ``(grad_x, grad_w, grad_b)``::

        grad_w[o, c, i, j] = sum_{n, h, w} gy[n, o, h, w] * x_pad[n, c, s*h + i, s*w + j]
        grad_x_pad[n, c, s*h + i, s*w + j] += sum_o w[o, c, i, j] * gy[n, o, h, w]

    Max pooling pads with -inf; average pooling counts the padding (``count_include_pad``).
    Named separable kernels are computed as two 1-D passes (:func:`_separable_reference`).
    Returns a tuple of arrays shaped like the operation's outputs.
    """
    x = as4(arrays["x"]).astype(np.float64)
    kh, kw = case.kernel
    if case.op in ("max_pool2d", "avg_pool2d"):
        is_max = case.op == "max_pool2d"
        xp = pad(x, case, -np.inf if is_max else 0.0)
        y = None
        for i in range(kh):
            for j in range(kw):
                t = taps(xp, i, j, case)
                if y is None:
                    y = t.copy()
                elif is_max:
                    np.maximum(y, t, out=y)
                else:
                    y += t
        assert y is not None
        return (y if is_max else y / (kh * kw),)

    if case.weights:
        return (_separable_reference(case, x, arrays["w"]),)
    w = as4(arrays["w"]).astype(np.float64)
    o, c = w.shape[:2]
    n = x.shape[0]
    oh, ow = case.out_hw
    # Channels first, (C, N, H, W): one tap's patch is then a (C, N*OH*OW) matrix and the
    # sum over channels one matrix product per tap.
    xpc = np.ascontiguousarray(pad(x, case).transpose(1, 0, 2, 3))
    if case.op != "conv2d_backward":
        y = np.zeros((o, n, oh, ow))
        tmp = np.empty((n, oh, ow)) if o == c == 1 else None
        for i in range(kh):
            for j in range(kw):
                patch = taps(xpc, i, j, case)
                if tmp is not None:  # single-channel filter: a scaled shifted image
                    y[0] += np.multiply(patch[0], w[0, 0, i, j], out=tmp)
                else:
                    y += (w[:, :, i, j] @ patch.reshape(c, -1)).reshape(y.shape)
        y = np.ascontiguousarray(y.transpose(1, 0, 2, 3))
        return (y[:, :, 0, :] if case.op == "conv1d" else y,)

    gy = arrays["gy"].astype(np.float64)
    gyc = np.ascontiguousarray(gy.transpose(1, 0, 2, 3)).reshape(o, -1)
    gw = np.empty_like(w)
    gxpc = np.zeros_like(xpc)
    sh, sw = case.stride
    for i in range(kh):
        for j in range(kw):
            gw[:, :, i, j] = gyc @ taps(xpc, i, j, case).reshape(c, -1).T
            view = gxpc[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
            view += (w[:, :, i, j].T @ gyc).reshape(c, n, oh, ow)
    ph, pw = case.padding
    gx = gxpc[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]].transpose(1, 0, 2, 3)
    return (np.ascontiguousarray(gx), gw, gy.sum(axis=(0, 2, 3)))


def _separable_reference(case: Case, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A named separable kernel's filter as a row pass then a column pass, in float64.

    The float64 factors differ from the float32 kernel the implementations get by its
    rounding, half an ulp per tap: a quarter of the tolerance's ``2 * K * eps32`` at K = 1,
    less for every larger K. Called with ``|w|`` (all taps >= 0), it uses ``|col|, |row|``.
    """
    col, row = SEPARABLE[case.weights]
    if np.all(w >= 0):
        col, row = np.abs(col), np.abs(row)
    xp = pad(x, case)
    oh, ow = case.out_hw
    rows = sum(row[j] * xp[:, :, :, j : j + ow] for j in range(len(row)))
    return sum(col[i] * rows[:, :, i : i + oh, :] for i in range(len(col)))


def reductions(case: Case) -> tuple[int, ...]:
    """Dot-product length behind each output of :func:`reference` (for the tolerance)."""
    if case.op != "conv2d_backward":
        return (case.reduction,)
    n = case.x4[0]
    oh, ow = case.out_hw
    kh, kw = case.kernel
    o = case.w_shape[0]  # type: ignore[index]
    return (o * kh * kw, n * oh * ow, n * oh * ow)


def check_outputs(
    case: Case,
    got: Sequence[np.ndarray],
    ref: Sequence[np.ndarray],
    absref: Sequence[np.ndarray],
) -> tuple[bool, float, str]:
    """Compare an implementation's outputs with the oracle within the float32 error bound.

    Returns
    -------
    ok : bool
    worst : float
        The largest ``|error| / bound`` over all outputs (<= 1 passes).
    why : str
        Empty when ok, else what was wrong (shape, NaN, or the error and its bound).
    """
    if len(got) != len(ref):
        return False, math.inf, f"{len(got)} outputs, expected {len(ref)}"
    worst = 0.0
    for k, (g, r, a, length) in enumerate(zip(got, ref, absref, reductions(case))):
        g = np.asarray(g)
        if g.shape != r.shape:
            return False, math.inf, f"output {k} has shape {g.shape}, expected {r.shape}"
        if not np.all(np.isfinite(g)):
            return False, math.inf, f"output {k} has NaN or inf"
        bound = 2 * length * EPS32 * a + 8 * EPS32 * (float(a.max()) if a.size else 0.0)
        err = np.abs(g.astype(np.float64) - r)
        ratio = float(np.max(err / np.maximum(bound, np.finfo(np.float64).tiny))) if g.size else 0
        if ratio > 1:
            at = int(np.argmax(err - bound))
            return (
                False,
                ratio,
                f"max error {float(err.flat[at]):.3g} > bound {float(bound.flat[at]):.3g}",
            )
        worst = max(worst, ratio)
    return True, worst, ""
