"""Benchmark suite: cnnkit's sliding-window loop against im2col + GEMM, and against peers.

The lecture says convolution is drawn as a sliding window but computed as a matrix product,
because matrix products are faster and scale better, at the price of memory. This module
measures that claim on the machine it runs on.

Methodology
-----------
* Every implementation (cnnkit's methods and the peers) is run once and checked against a
  float64 oracle (:func:`reference`, a loop over kernel taps written straight from the
  definition) *before* anything is timed. A wrong result is reported as ``WRONG`` and not timed.
* The tolerance is the classical bound for a float32 dot product of length ``K``
  (Higham, *Accuracy and Stability of Numerical Algorithms*, 2002, section 3.1)::

      |y - y_ref| <= 2 * K * eps32 * (|x| * |w|)  +  8 * eps32 * max(|x| * |w|)

  where ``|x| * |w|`` is the same operation applied to absolute values and ``K`` the
  reduction length (``C/groups * prod(kernel)`` forward, ``N * prod(out)`` for the weight
  gradient, ``O * prod(kernel)`` for the input gradient).
* Numba compilation is measured separately (first call on a tiny input) and excluded from the
  timings; each implementation gets a warm-up call, then ``repeat`` samples. A sample runs the
  call enough times to last about 10 ms (like ``timeit``'s autorange) and the median per-call
  time is reported.
* Threads are fixed for Numba (``numba.set_num_threads``), PyTorch (``torch.set_num_threads``),
  OpenCV (``cv2.setNumThreads``) and BLAS/OpenMP (``threadpoolctl.threadpool_limits`` when
  installed, otherwise the ``*_NUM_THREADS`` environment variables, which only act if set
  before numpy is imported; the report says which).
* FLOPs are ``2 * MACs``: ``2 * N * O * prod(out) * C/groups * prod(kernel)`` for a
  convolution (``2 * H * W * k * k`` for a single-image filter), twice that for the backward
  pass (input and weight gradients). Pooling counts one operation per window element
  (``N * C * prod(out) * prod(kernel)``). GFLOP/s is compared with a numpy sgemm measured in
  the same run (``2 * n**3`` FLOPs).
* Ratios ``vs <peer>`` are ``time(peer) / time(cnnkit)``: above 1 means cnnkit is faster.
* Time is wall-clock by default; the process CPU time is recorded next to it. On a shared
  machine, ``--threads 1 --clock cpu`` times the work itself, immune to other processes
  taking the core (with several threads CPU time also counts spinning threads, so it is
  refused). A load average above the core count is reported as a note.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import math
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnkit.geometry import conv_output_size

SCHEMA = "cnnkit-bench/1"
EPS32 = float(np.finfo(np.float32).eps)
CONV_METHODS = ("loop", "im2col", "auto")
PEERS = ("numpy", "scipy", "opencv", "torch")
# The textbook numpy peer materialises the whole patch matrix; beyond this it is skipped
# (named in a note) so that one peer does not dominate the suite's time and memory.
NUMPY_PEER_CAP = 512 * 2**20
SAMPLE_SECONDS = 0.01

PEER_MODULES = {"numpy": "numpy", "scipy": "scipy.ndimage", "opencv": "cv2", "torch": "torch"}
PEER_INSTALL = {
    "scipy": "pip install 'cnnkit[compare]'",
    "opencv": "pip install 'cnnkit[compare]'",
    "torch": "pip install torch --index-url https://download.pytorch.org/whl/cpu",
}
# Pause before each case once PyTorch is loaded (see run_suite): long enough for its OpenMP
# threads to stop spin-waiting (GNU OpenMP spins, Intel's KMP_BLOCKTIME defaults to 200 ms).
TORCH_IDLE_S = 0.3

# Which peers can compute which operation.
PEER_OPS = {
    "numpy": {"filter", "conv2d", "conv1d", "conv2d_backward", "max_pool2d", "avg_pool2d"},
    "scipy": {"filter"},
    "opencv": {"filter"},
    "torch": {"filter", "conv2d", "conv1d", "conv2d_backward", "max_pool2d", "avg_pool2d"},
}


# --------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Case:
    """One benchmark case: an operation on fixed shapes.

    ``op`` is one of ``conv2d``, ``conv1d``, ``conv2d_backward``, ``max_pool2d``,
    ``avg_pool2d``. A single-image filter is a ``conv2d`` on a ``(1, 1, H, W)`` input with
    ``group == "filter"``; 1-D cases are stored with a unit height so one code path serves both.
    """

    name: str
    group: str
    op: str
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...] | None = None
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)

    @property
    def is_conv(self) -> bool:
        return self.op in ("conv2d", "conv1d", "conv2d_backward")

    @property
    def peer_op(self) -> str:
        return "filter" if self.group == "filter" else self.op

    @property
    def x4(self) -> tuple[int, int, int, int]:
        """The input shape as NCHW (1-D inputs get H = 1)."""
        if len(self.x_shape) == 3:
            n, c, length = self.x_shape
            return (n, c, 1, length)
        return self.x_shape  # type: ignore[return-value]

    @property
    def out_hw(self) -> tuple[int, int]:
        _, _, h, w = self.x4
        kh, kw = self.kernel
        return (
            conv_output_size(h, kh, self.stride[0], self.padding[0]),
            conv_output_size(w, kw, self.stride[1], self.padding[1]),
        )

    @property
    def out_shape(self) -> tuple[int, ...]:
        n, c, _, _ = self.x4
        oh, ow = self.out_hw
        channels = self.w_shape[0] if self.w_shape else c
        if self.op == "conv1d":
            return (n, channels, ow)
        return (n, channels, oh, ow)

    @property
    def reduction(self) -> int:
        """Length of the dot product behind one forward output element."""
        kh, kw = self.kernel
        if self.is_conv:
            return self.x4[1] * kh * kw
        return kh * kw if self.op == "avg_pool2d" else 1

    def label(self) -> str:
        """Human-readable shapes, e.g. ``64x1x28x28 -> 16 k5 p2``."""
        x = "x".join(map(str, self.x_shape))
        k = self.kernel[1] if self.op == "conv1d" or self.kernel[0] == self.kernel[1] else None
        ktxt = f"k{k}" if k else f"k{self.kernel[0]}x{self.kernel[1]}"
        s = self.stride[1]
        p = self.padding[1]
        extra = (f" s{s}" if s != 1 else "") + (f" p{p}" if p else "")
        if self.group == "filter":
            return f"{self.x_shape[2]}x{self.x_shape[3]} {ktxt}"
        if self.is_conv:
            return f"{x} -> {self.w_shape[0]} {ktxt}{extra}"  # type: ignore[index]
        return f"{x} {ktxt}{extra}"


def flops(case: Case) -> int:
    """Floating-point operations of one call (``2 * MACs`` for convolutions).

    Notes
    -----
    Convolution: ``2 * N * O * OH * OW * C * kh * kw`` (``groups == 1`` in the suite); for a
    single-image filter with same-size output this is ``2 * H * W * k * k``. The backward
    pass computes the input and the weight gradient, each as many MACs as the forward pass,
    so it counts ``2 *`` the forward FLOPs. Pooling counts one comparison or addition per
    window element: ``N * C * OH * OW * kh * kw``.
    """
    n, c, _, _ = case.x4
    oh, ow = case.out_hw
    kh, kw = case.kernel
    if case.is_conv:
        o = case.w_shape[0]  # type: ignore[index]
        forward = 2 * n * o * oh * ow * c * kh * kw
        return 2 * forward if case.op == "conv2d_backward" else forward
    return n * c * oh * ow * kh * kw


def im2col_bytes(case: Case, itemsize: int = 4, budget: int | None = None) -> int:
    """Size of the patch matrix an im2col method materialises.

    ``N * (C * kh * kw) * (OH * OW) * itemsize`` for the whole batch (the textbook method).
    With ``budget`` (bytes), the batch is built in chunks of whole samples that fit in it
    (at least one sample), as cnnkit's im2col does (an estimate: cnnkit's backward may run
    one chunk per thread). The backward pass needs the buffer twice
    (the patches for the weight gradient and the patch gradient folded back by col2im).
    Pooling has no patch matrix (0).
    """
    if not case.is_conv:
        return 0
    n, c, _, _ = case.x4
    oh, ow = case.out_hw
    kh, kw = case.kernel
    per_sample = c * kh * kw * oh * ow * itemsize
    if case.op == "conv2d_backward":
        per_sample *= 2
    samples = n if budget is None else max(1, min(n, budget // per_sample))
    return samples * per_sample


def cnnkit_cols_budget(ops: Any = None) -> int | None:
    """The patch-matrix budget of cnnkit's im2col method (None: builds the whole batch)."""
    if ops is None:
        ops = sys.modules.get("cnnkit.ops")
    return getattr(ops, "_COLS_BUDGET", None)


def memory_needed(case: Case, budget: int | None = None) -> dict[str, int]:
    """Bytes the harness allocates for ``case``: arrays, float64 oracle, patch matrix.

    ``budget`` is cnnkit's im2col chunk budget (:func:`cnnkit_cols_budget`); the textbook
    numpy peer, which builds the whole batch, is skipped above :data:`NUMPY_PEER_CAP`.
    """
    n, c, h, w = case.x4
    x_bytes = n * c * h * w * 4
    out_bytes = math.prod(case.out_shape) * 4
    w_bytes = math.prod(case.w_shape) * 4 if case.w_shape else 0
    ph, pw = case.padding
    padded = n * c * (h + 2 * ph) * (w + 2 * pw)
    # The oracle keeps the padded input and its output in float64, twice (values and |values|).
    oracle = 2 * 8 * (padded + math.prod(case.out_shape) + (n * c * h * w))
    arrays = x_bytes + w_bytes + 3 * out_bytes
    if case.op == "conv2d_backward":
        arrays += 2 * x_bytes
    return {"arrays": arrays, "oracle": oracle, "im2col": im2col_bytes(case, budget=budget)}


def _conv(
    name: str, group: str, x: tuple[int, ...], out: int, k: int, pad: int, stride: int = 1
) -> Case:
    if len(x) == 3:
        return Case(name, group, "conv1d", x, (out, x[1], 1, k), (1, k), (1, stride), (0, pad))
    op = "conv2d_backward" if group == "backward" else "conv2d"
    return Case(name, group, op, x, (out, x[1], k, k), (k, k), (stride, stride), (pad, pad))


def _pool(name: str, op: str, x: tuple[int, ...], k: int, stride: int, pad: int = 0) -> Case:
    return Case(name, "pool", op, x, None, (k, k), (stride, stride), (pad, pad))


# The layers of ../shared/ANCHORS.md; padding keeps the spatial size.
ANCHOR_LAYERS = {
    "lenet_c1": ((64, 1, 28, 28), 16, 5, 2),
    "lenet_c2": ((64, 16, 14, 14), 32, 3, 1),
    "cifar": ((32, 64, 32, 32), 64, 3, 1),
}

DEFAULTS = {
    "sizes": (512, 1024, 2048),
    "kernels": (3, 5, 7, 11),
    "channels": (16, 64),
    "batch": (1, 8),
}
QUICK = {"sizes": (512,), "kernels": (3, 7), "channels": (), "batch": ()}


def build_suite(
    *,
    quick: bool = False,
    sizes: Sequence[int] | None = None,
    kernels: Sequence[int] | None = None,
    channels: Sequence[int] | None = None,
    batch: Sequence[int] | None = None,
) -> list[Case]:
    """The benchmark cases, in report order.

    Parameters
    ----------
    quick : bool
        A few-second suite: one image size, two kernels, the LeNet layers, small 1-D and
        pooling cases and one backward case.
    sizes, kernels : sequences of int, optional
        Image sides and (odd) kernel sides of the single-image filter cases.
    channels, batch : sequences of int, optional
        Extra conv layers ``(b, c, 32, 32) -> c, k3 p1`` for every pair, next to the fixed
        LeNet and CIFAR layers.

    Returns
    -------
    list of Case
    """
    base = QUICK if quick else DEFAULTS
    sizes = tuple(sizes) if sizes else base["sizes"]
    kernels = tuple(kernels) if kernels else base["kernels"]
    # An explicit --channels or --batch alone still gives extra layers (default for the other).
    if channels or batch:
        channels = tuple(channels) if channels else DEFAULTS["channels"]
        batch = tuple(batch) if batch else DEFAULTS["batch"]
    else:
        channels, batch = base["channels"], base["batch"]
    _check_ints("sizes", sizes, 1)
    _check_ints("kernels", kernels, 1)
    _check_ints("channels", channels, 1)
    _check_ints("batch", batch, 1)
    if any(k % 2 == 0 for k in kernels):
        raise ValueError(
            f"kernels must be odd (the filter keeps the image size with padding k // 2), "
            f"got {','.join(map(str, kernels))}"
        )
    for s in sizes:
        for k in kernels:
            if k > s:
                raise ValueError(f"kernel {k} is larger than the image size {s}")

    cases: list[Case] = []
    for s in sizes:
        for k in kernels:
            cases.append(_conv(f"filter_{s}_k{k}", "filter", (1, 1, s, s), 1, k, k // 2))
    anchors = ["lenet_c1", "lenet_c2"] if quick else list(ANCHOR_LAYERS)
    for name in anchors:
        x, o, k, p = ANCHOR_LAYERS[name]
        cases.append(_conv(name, "conv2d", x, o, k, p))
    for b in batch:
        for c in channels:
            cases.append(_conv(f"conv_b{b}_c{c}", "conv2d", (b, c, 32, 32), c, 3, 1))
    if quick:
        cases.append(_conv("signal_64k_k9", "conv1d", (1, 1, 2**16), 1, 9, 4))
        cases.append(_conv("conv1d_b8_c16", "conv1d", (8, 16, 1024), 16, 7, 3))
        cases.append(_pool("maxpool_lenet", "max_pool2d", (64, 6, 28, 28), 2, 2))
        cases.append(_pool("avgpool_lenet", "avg_pool2d", (64, 6, 28, 28), 2, 2))
        x, o, k, p = ANCHOR_LAYERS["lenet_c2"]
        cases.append(_conv("lenet_c2_bwd", "backward", x, o, k, p))
    else:
        cases.append(_conv("signal_1m_k9", "conv1d", (1, 1, 2**20), 1, 9, 4))
        cases.append(_conv("signal_1m_k31", "conv1d", (1, 1, 2**20), 1, 31, 15))
        cases.append(_conv("conv1d_b32_c16", "conv1d", (32, 16, 4096), 16, 7, 3))
        cases.append(_pool("maxpool_lenet", "max_pool2d", (64, 6, 28, 28), 2, 2))
        cases.append(_pool("maxpool_cifar_k3s2", "max_pool2d", (32, 64, 32, 32), 3, 2, 1))
        cases.append(_pool("avgpool_cifar", "avg_pool2d", (32, 64, 32, 32), 2, 2))
        for name, (x, o, k, p) in ANCHOR_LAYERS.items():
            cases.append(_conv(f"{name}_bwd", "backward", x, o, k, p))
    return cases


def _check_ints(name: str, values: Sequence[int], minimum: int) -> None:
    bad = [v for v in values if v < minimum]
    if bad:
        raise ValueError(f"--{name} must be >= {minimum}, got {bad[0]}")


def select_cases(cases: Sequence[Case], patterns: Sequence[str]) -> list[Case]:
    """Cases whose name (or group) matches any of ``patterns`` (exact names or globs).

    Raises
    ------
    ValueError
        A pattern matches nothing; the message lists the valid names.
    """
    if not patterns:
        return list(cases)
    chosen: list[Case] = []
    for pattern in patterns:
        hits = [c for c in cases if fnmatch.fnmatchcase(c.name, pattern) or c.group == pattern]
        if not hits:
            names = ", ".join(c.name for c in cases)
            raise ValueError(f"unknown case {pattern!r}; valid cases: {names}")
        chosen.extend(c for c in hits if c not in chosen)
    return [c for c in cases if c in chosen]


def meminfo_available() -> int | None:
    """``MemAvailable`` from /proc/meminfo in bytes (None where there is no /proc)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_memory(
    cases: Sequence[Case], available: int | None = None, budget: int | None = None
) -> None:
    """Refuse, before allocating anything, a case that needs over half the available RAM.

    Raises
    ------
    ValueError
        With the case, its estimated need (patch matrix and arrays) and the limit.
    """
    available = meminfo_available() if available is None else available
    if available is None:
        return
    limit = available // 2
    for case in cases:
        need = memory_needed(case, budget)
        total = sum(need.values())
        if total > limit:
            raise ValueError(
                f"case {case.name} ({case.label()}) needs about {fmt_bytes(total)} "
                f"(im2col buffer {fmt_bytes(need['im2col'])}, arrays {fmt_bytes(need['arrays'])}"
                f", float64 oracle {fmt_bytes(need['oracle'])}) but the limit is half of the "
                f"{fmt_bytes(available)} available; choose smaller --sizes/--kernels/--batch"
            )


def fmt_bytes(n: float) -> str:
    """``1536 -> '1.5 KiB'``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# Inputs and the float64 oracle


def make_inputs(case: Case, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 arrays for ``case``: ``x``, ``w`` (convolutions), ``gy`` (backward).

    Shapes are NCHW (NCL for 1-D) exactly as cnnkit and the peers receive them.
    """
    rng = np.random.default_rng(seed)
    arrays = {"x": rng.standard_normal(case.x_shape, dtype=np.float32)}
    if case.w_shape is not None:
        w = rng.standard_normal(case.w_shape, dtype=np.float32)
        if case.op == "conv1d":
            w = np.ascontiguousarray(w[:, :, 0, :])
        arrays["w"] = w
    if case.op == "conv2d_backward":
        arrays["gy"] = rng.standard_normal(case.out_shape, dtype=np.float32)
    return arrays


def _as4(a: np.ndarray) -> np.ndarray:
    return a[:, :, None, :] if a.ndim == 3 else a


def _taps(xp: np.ndarray, i: int, j: int, case: Case) -> np.ndarray:
    """The input values kernel tap (i, j) meets at every output position."""
    oh, ow = case.out_hw
    sh, sw = case.stride
    return xp[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]


def _pad(x: np.ndarray, case: Case, value: float = 0.0) -> np.ndarray:
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
    Returns a tuple of arrays shaped like the operation's outputs.
    """
    x = _as4(arrays["x"]).astype(np.float64)
    kh, kw = case.kernel
    if case.op in ("max_pool2d", "avg_pool2d"):
        is_max = case.op == "max_pool2d"
        xp = _pad(x, case, -np.inf if is_max else 0.0)
        y = None
        for i in range(kh):
            for j in range(kw):
                t = _taps(xp, i, j, case)
                if y is None:
                    y = t.copy()
                elif is_max:
                    np.maximum(y, t, out=y)
                else:
                    y += t
        assert y is not None
        return (y if is_max else y / (kh * kw),)

    w = _as4(arrays["w"]).astype(np.float64)
    o, c = w.shape[:2]
    n = x.shape[0]
    oh, ow = case.out_hw
    # Channels first, (C, N, H, W): one tap's patch is then a (C, N*OH*OW) matrix and the
    # sum over channels one matrix product per tap.
    xpc = np.ascontiguousarray(_pad(x, case).transpose(1, 0, 2, 3))
    if case.op != "conv2d_backward":
        y = np.zeros((o, n, oh, ow))
        tmp = np.empty((n, oh, ow)) if o == c == 1 else None
        for i in range(kh):
            for j in range(kw):
                patch = _taps(xpc, i, j, case)
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
            gw[:, :, i, j] = gyc @ _taps(xpc, i, j, case).reshape(c, -1).T
            view = gxpc[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
            view += (w[:, :, i, j].T @ gyc).reshape(c, n, oh, ow)
    ph, pw = case.padding
    gx = gxpc[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]].transpose(1, 0, 2, 3)
    return (np.ascontiguousarray(gx), gw, gy.sum(axis=(0, 2, 3)))


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


# --------------------------------------------------------------------------------------------
# Implementations: cnnkit's methods and the peers


def _ops_kwargs(case: Case) -> dict[str, Any]:
    if case.op == "conv1d":
        return {"stride": case.stride[1], "padding": case.padding[1]}
    return {"stride": case.stride, "padding": case.padding}


def cnnkit_impls(case: Case, ops: Any, arrays: dict[str, np.ndarray]) -> dict[str, Callable]:
    """cnnkit's implementations of ``case``: one per method for convolutions."""
    x = arrays["x"]
    kw = _ops_kwargs(case)
    if case.op in ("conv2d", "conv1d"):
        fn = getattr(ops, case.op)
        w = arrays["w"]
        return {m: (lambda m=m: (fn(x, w, method=m, **kw),)) for m in CONV_METHODS}
    if case.op == "conv2d_backward":
        w, gy = arrays["w"], arrays["gy"]
        return {
            m: (lambda m=m: tuple(ops.conv2d_backward(gy, x, w, method=m, **kw)))
            for m in CONV_METHODS
        }
    fn = getattr(ops, case.op)
    return {"cnnkit": lambda: (fn(x, case.kernel, case.stride, case.padding),)}


def numpy_im2col(xp: np.ndarray, case: Case) -> np.ndarray:
    """Textbook im2col in numpy: ``(N, C*kh*kw, OH*OW)`` patch columns of a padded input."""
    n, c = xp.shape[:2]
    kh, kw = case.kernel
    oh, ow = case.out_hw
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=xp.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = _taps(xp, i, j, case)
    return cols.reshape(n, c * kh * kw, oh * ow)


def numpy_impl(case: Case, arrays: dict[str, np.ndarray]) -> Callable:
    """The textbook peer: im2col + matmul (and col2im by tap sums for the input gradient)."""
    x4 = _as4(arrays["x"])
    if case.op in ("max_pool2d", "avg_pool2d"):
        from numpy.lib.stride_tricks import sliding_window_view

        is_max = case.op == "max_pool2d"
        sh, sw = case.stride

        def pool() -> tuple[np.ndarray, ...]:
            xp = _pad(x4, case, -np.inf if is_max else 0.0).astype(np.float32, copy=False)
            win = sliding_window_view(xp, case.kernel, axis=(2, 3))[:, :, ::sh, ::sw]
            return (win.max(axis=(4, 5)) if is_max else win.mean(axis=(4, 5), dtype=np.float32),)

        return pool

    w4 = _as4(arrays["w"])
    o = w4.shape[0]
    wmat = w4.reshape(o, -1)
    oh, ow = case.out_hw

    if case.op != "conv2d_backward":

        def forward() -> tuple[np.ndarray, ...]:
            y = np.matmul(wmat, numpy_im2col(_pad(x4, case), case))
            return (y.reshape(case.out_shape),)

        return forward

    gy = arrays["gy"]

    def backward() -> tuple[np.ndarray, ...]:
        xp = _pad(x4, case)
        cols = numpy_im2col(xp, case)
        g = gy.reshape(gy.shape[0], o, oh * ow)
        gw = np.einsum("nol,nkl->ok", g, cols, optimize=True).reshape(w4.shape)
        gcols = np.matmul(wmat.T, g).reshape(xp.shape[0], xp.shape[1], *case.kernel, oh, ow)
        gxp = np.zeros_like(xp)
        sh, sw = case.stride
        for i in range(case.kernel[0]):
            for j in range(case.kernel[1]):
                gxp[:, :, i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw] += gcols[
                    :, :, i, j
                ]
        ph, pw = case.padding
        gx = gxp[:, :, ph : ph + x4.shape[2], pw : pw + x4.shape[3]]
        return (gx, gw, gy.sum(axis=(0, 2, 3)))

    return backward


def peer_impl(peer: str, module: Any, case: Case, arrays: dict[str, np.ndarray]) -> Callable:
    """A peer's implementation of ``case`` (module is the imported peer library)."""
    if peer == "numpy":
        return numpy_impl(case, arrays)
    x = arrays["x"]
    if peer == "scipy":
        img, k = x[0, 0], arrays["w"][0, 0]
        return lambda: (module.correlate(img, k, mode="constant", cval=0.0)[None, None],)
    if peer == "opencv":
        img, k = x[0, 0], arrays["w"][0, 0]
        # filter2D computes correlation (no kernel flip), anchored at the kernel centre.
        return lambda: (module.filter2D(img, -1, k, borderType=module.BORDER_CONSTANT)[None, None],)
    if peer == "torch":
        return _torch_impl(module, case, arrays)
    raise ValueError(f"unknown peer {peer!r}")


def _torch_impl(torch: Any, case: Case, arrays: dict[str, np.ndarray]) -> Callable:
    functional = torch.nn.functional
    x = torch.from_numpy(arrays["x"])
    if case.op in ("max_pool2d", "avg_pool2d"):
        fn = getattr(functional, case.op)
        return lambda: (fn(x, case.kernel, case.stride, case.padding).numpy(),)
    w = torch.from_numpy(arrays["w"])
    if case.op == "conv1d":
        return lambda: (functional.conv1d(x, w, stride=case.stride[1], padding=case.padding[1]),)
    if case.op == "conv2d":
        return lambda: (functional.conv2d(x, w, stride=case.stride, padding=case.padding),)
    gy = torch.from_numpy(arrays["gy"])
    # The kernel autograd calls for Conv2d's backward, without the autograd bookkeeping.
    backward = torch.ops.aten.convolution_backward

    def run() -> tuple[Any, ...]:
        return tuple(
            backward(
                gy,
                x,
                w,
                [w.shape[0]],
                list(case.stride),
                list(case.padding),
                [1, 1],
                False,
                [0, 0],
                1,
                [True, True, True],
            )
        )

    return run


def _to_numpy(outputs: Iterable[Any]) -> list[np.ndarray]:
    return [o.detach().numpy() if hasattr(o, "detach") else np.asarray(o) for o in outputs]


@dataclass
class Peers:
    """Peer libraries that are importable (imported lazily on first use) and those missing."""

    wanted: tuple[str, ...] = PEERS
    modules: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    threads: int | None = None

    def __post_init__(self) -> None:
        for peer in self.wanted:
            name = PEER_MODULES[peer]
            try:
                found = importlib.util.find_spec(name.split(".")[0]) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                self.missing[peer] = f"{name.split('.')[0]} not installed ({PEER_INSTALL[peer]})"

    def available(self) -> list[str]:
        return [p for p in self.wanted if p not in self.missing]

    def get(self, peer: str) -> Any | None:
        """The imported module, or None when it is missing or fails to import."""
        if peer in self.missing:
            return None
        if peer not in self.modules:
            try:
                module = importlib.import_module(PEER_MODULES[peer])
            except Exception as exc:  # a broken install is a note, never a crash
                self.missing[peer] = f"import failed: {exc}".splitlines()[0]
                return None
            if self.threads:
                if peer == "torch":
                    module.set_num_threads(self.threads)
                elif peer == "opencv":
                    module.setNumThreads(self.threads)
            self.modules[peer] = module
        return self.modules[peer]


# --------------------------------------------------------------------------------------------
# Timing


def time_call(
    fn: Callable[[], Any],
    repeat: int,
    warmup: int = 1,
    first: float | None = None,
    budget: float | None = None,
) -> dict[str, float]:
    """Median per-call seconds of ``fn`` over ``repeat`` samples after ``warmup`` calls.

    A sample repeats the call ``number`` times so that it lasts about ``SAMPLE_SECONDS``
    (short calls are otherwise dominated by timer resolution and scheduling noise).
    ``first`` is the duration of an earlier call (it sizes ``number`` when ``warmup`` is 0);
    with ``budget`` (seconds), sampling stops once it is spent and at least 3 samples exist,
    so one slow peer does not dominate the suite.

    ``cpu`` is the median process CPU time per call (all threads). With one thread it is
    the work itself, unaffected by other processes taking the core (wall time is not); with
    several threads it also counts threads spinning at barriers.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    if warmup > 0 or first is None:
        first = math.inf
        for _ in range(max(warmup, 1)):
            t0 = time.perf_counter()
            fn()
            first = min(first, time.perf_counter() - t0)
    number = max(1, min(1000, math.ceil(SAMPLE_SECONDS / max(first, 1e-9))))
    samples: list[float] = []
    cpu: list[float] = []
    start = time.perf_counter()
    for _ in range(repeat):
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - t0) / number)
        cpu.append((time.process_time() - c0) / number)
        if budget is not None and len(samples) >= 3 and time.perf_counter() - start > budget:
            break
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "number": number,
        "samples": len(samples),
        "cpu": statistics.median(cpu),
    }


def measure_peak(n: int, repeat: int = 3, clock: str = "wall") -> dict[str, float]:
    """GFLOP/s of a float32 ``n x n`` matrix product in numpy (BLAS sgemm): this machine's peak.

    ``2 * n**3`` FLOPs per product, timed like everything else (:func:`time_call`), on the
    same ``clock``.
    """
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    timing = time_call(lambda: np.matmul(a, b, out=out), repeat)
    seconds = timing["cpu"] if clock == "cpu" else timing["median"]
    return {"n": n, "seconds": seconds, "gflops": 2 * n**3 / seconds / 1e9}


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (Linux reports KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


# --------------------------------------------------------------------------------------------
# Threads and machine


def fix_threads(threads: int) -> dict[str, str]:
    """Pin every library's thread pool to ``threads``; return how each one was fixed.

    BLAS and OpenMP: ``threadpoolctl.threadpool_limits`` when installed (kept for the life of
    the process), else the environment variables, which only take effect if set before numpy
    is imported (the CLI does that). PyTorch and OpenCV are set when they are imported
    (:class:`Peers`).
    """
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= threads <= limit:
        raise ValueError(f"--threads must be between 1 and {limit} (NUMBA_NUM_THREADS)")
    how: dict[str, str] = {}
    try:
        from threadpoolctl import threadpool_limits

        # Kept alive on the module so the limit lasts for the whole run.
        globals()["_THREADPOOL_LIMIT"] = threadpool_limits(limits=threads)
        how["blas"] = f"threadpoolctl ({threads})"
    except ImportError:
        value = os.environ.get("OPENBLAS_NUM_THREADS")
        how["blas"] = (
            f"OPENBLAS/OMP/MKL_NUM_THREADS={threads} set before numpy was imported"
            if value == str(threads)
            else "not fixed (no threadpoolctl, OPENBLAS_NUM_THREADS unset before numpy import)"
        )
    numba.set_num_threads(threads)
    how["numba"] = f"numba.set_num_threads({threads}), layer {numba.config.THREADING_LAYER}"
    return how


def cpu_model() -> str:
    """CPU model name and vector extensions from /proc/cpuinfo (platform fallback)."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    ext = [f for f in ("avx512f", "avx2", "fma") if f in flags]
    return f"{model} ({'+'.join(ext).upper()})" if ext else model


def blas_info() -> str:
    """The BLAS numpy runs on (threadpoolctl's runtime view, else numpy's build config)."""
    try:
        from threadpoolctl import threadpool_info

        libs = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
        # scipy, OpenCV and torch may load BLAS copies of their own: numpy's is the one
        # behind the sgemm peak and the numpy peer.
        libs.sort(key=lambda lib: "numpy" not in str(lib.get("filepath", "")))
        if libs:
            lib = libs[0]
            return (
                f"{lib.get('internal_api')} {lib.get('version')} "
                f"({lib.get('architecture')}, {lib.get('num_threads')} threads)"
            )
    except ImportError:
        pass
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        return "unknown"


def code_version() -> str:
    """cnnkit's version, plus the git commit (and ``-dirty``) when run from a checkout."""
    import subprocess

    from cnnkit import __version__

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__} ({out})" if out else __version__


def machine_info(threads: int) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, threads, versions, BLAS."""
    import numba

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "threads": threads,
        "cnnkit": code_version(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "blas": blas_info(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def busy_note(machine: dict[str, Any]) -> str | None:
    """A warning when other processes competed for the cores during the run.

    Parallel kernels suffer most: a thread that loses its core stalls the others at the
    next barrier, and spinning OpenMP runtimes make it worse.
    """
    load = machine.get("load_average")
    cores = machine.get("usable_cores") or 1
    if load and load[0] > 0.75 * cores:
        return (
            f"machine busy: load average {load[0]:.1f} on {cores} cores during the run; "
            "other processes competed for the CPU, so times (multi-threaded ones most) are "
            "inflated and noisy; rerun on an idle machine or compare with --threads 1"
        )
    return None


# --------------------------------------------------------------------------------------------
# Running


def measure_compile(ops: Any, cases: Sequence[Case]) -> list[dict[str, Any]]:
    """Seconds of the first call of each (operation, method) on a tiny input.

    That first call compiles the Numba kernels, or loads them from Numba's on-disk cache
    (``cache=True``) when an earlier run compiled them; either way it is a cost users feel
    once per process, and it is kept out of the timings.
    """
    tiny = {
        "conv2d": _conv("tiny", "conv2d", (1, 2, 6, 6), 2, 3, 1),
        "conv1d": _conv("tiny", "conv1d", (1, 2, 8), 2, 3, 1),
        "conv2d_backward": _conv("tiny", "backward", (1, 2, 6, 6), 2, 3, 1),
        "max_pool2d": _pool("tiny", "max_pool2d", (1, 2, 6, 6), 2, 2),
        "avg_pool2d": _pool("tiny", "avg_pool2d", (1, 2, 6, 6), 2, 2),
    }
    rows = []
    for op in dict.fromkeys(c.op for c in cases):
        case = tiny[op]
        impls = cnnkit_impls(case, ops, make_inputs(case))
        for method, fn in impls.items():
            if method == "auto":  # dispatches to the kernels timed just above
                continue
            t0 = time.perf_counter()
            try:
                fn()
                error = ""
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            rows.append(
                {"op": op, "method": method, "seconds": time.perf_counter() - t0, "error": error}
            )
    return rows


def run_case(
    case: Case,
    ops: Any,
    peers: Peers,
    repeat: int,
    peak_gflops: float | None,
    budget_s: float | None = None,
    clock: str = "wall",
) -> tuple[list[dict[str, Any]], list[str]]:
    """Check every implementation of ``case`` against the oracle, then time the correct ones.

    ``budget_s`` caps the sampling time per implementation (:func:`time_call`). With
    ``clock="cpu"`` the process CPU time per call is the time the rates and ratios use.
    Returns the result rows (cnnkit methods first, then peers) and notes (skipped peers).
    """
    notes: list[str] = []
    arrays = make_inputs(case)
    ref = reference(case, arrays)
    absref = reference(case, {k: np.abs(v) for k, v in arrays.items()})
    impls: list[tuple[str, str, Callable]] = [
        ("cnnkit", m, fn) for m, fn in cnnkit_impls(case, ops, arrays).items()
    ]
    for peer in peers.available():
        if case.peer_op not in PEER_OPS[peer]:
            continue
        if peer == "numpy" and im2col_bytes(case) > NUMPY_PEER_CAP:
            notes.append(
                f"numpy peer skipped for {case.name}: its im2col buffer would be "
                f"{fmt_bytes(im2col_bytes(case))} (> {fmt_bytes(NUMPY_PEER_CAP)})"
            )
            continue
        module = peers.get(peer)
        if module is not None:
            impls.append(("peer", peer, peer_impl(peer, module, case, arrays)))

    work = flops(case)
    budget = cnnkit_cols_budget(ops)
    # auto's buffer depends on the method it picks; the report shows loop's and im2col's.
    extra = {"im2col": im2col_bytes(case, budget=budget), "numpy": im2col_bytes(case)}
    picks = auto_choice(case, ops)
    if picks:
        extra["auto"] = extra.get(picks, 0)
    rows: list[dict[str, Any]] = []
    for kind, method, fn in impls:
        row: dict[str, Any] = {
            "case": case.name,
            "group": case.group,
            "op": case.op,
            "shape": case.label(),
            "method": method,
            "impl": kind,
            "flops": work,
            "extra_bytes": extra.get(method, 0),
            "status": "ok",
            "detail": "",
            "seconds": None,
            "gflops": None,
            "peak_share": None,
            "error_ratio": None,
            "samples": 0,
            "wall_seconds": None,
            "cpu_seconds": None,
        }
        try:
            t0 = time.perf_counter()
            outputs = fn()
            first = time.perf_counter() - t0
            ok, worst, why = check_outputs(case, _to_numpy(outputs), ref, absref)
        except Exception as exc:  # one broken method must not hide the others' numbers
            ok, worst, why = False, math.inf, f"{type(exc).__name__}: {exc}".splitlines()[0]
            row["status"] = "error"
        if method == "auto" and picks:
            row["detail"] = f"auto -> {picks}"
        if not ok:
            row["status"] = "error" if row["status"] == "error" else "WRONG"
            row["detail"] = why
        else:
            row["error_ratio"] = worst
            # A slow first call already warmed caches up; a second one would only cost time.
            warmup = 0 if first > 0.1 else 1
            timing = time_call(fn, repeat, warmup=warmup, first=first, budget=budget_s)
            row["wall_seconds"] = timing["median"]
            row["cpu_seconds"] = timing["cpu"]
            row["seconds"] = timing["cpu"] if clock == "cpu" else timing["median"]
            row["samples"] = timing["samples"]
            row["gflops"] = work / row["seconds"] / 1e9
            if peak_gflops:
                row["peak_share"] = row["gflops"] / peak_gflops
        row["rss_peak_bytes"] = peak_rss()
        rows.append(row)
    _add_ratios(rows)
    return rows, notes


def auto_choice(case: Case, ops: Any) -> str | None:
    """The method ``method="auto"`` picks for ``case``, when ops exposes ``choose_method``."""
    choose = getattr(ops, "choose_method", None)
    if not case.is_conv or choose is None:
        return None
    kh, kw = case.kernel
    try:
        return str(choose(case.x4[1], kh * kw, case.w_shape[0]))  # type: ignore[index]
    except Exception:
        return None


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """speedup_vs_loop and vs_<peer> = time(other) / time(this row), same case, same run."""
    times = {r["method"]: r["seconds"] for r in rows if r["seconds"]}
    for r in rows:
        r["speedup_vs_loop"] = None
        r["ratios"] = {}
        if not r["seconds"]:
            continue
        if "loop" in times:
            r["speedup_vs_loop"] = times["loop"] / r["seconds"]
        if r["impl"] == "cnnkit":
            for peer in PEERS:
                if peer in times:
                    r["ratios"][peer] = times[peer] / r["seconds"]


def run_suite(
    cases: Sequence[Case],
    *,
    ops: Any = None,
    repeat: int = 5,
    threads: int | None = None,
    peers: Peers | None = None,
    peak_n: int = 2048,
    progress: Callable[[str], None] | None = None,
    thread_control: dict[str, str] | None = None,
    budget_s: float | None = None,
    clock: str = "wall",
) -> dict[str, Any]:
    """Run ``cases`` and return the report (the JSON document).

    Parameters
    ----------
    cases : sequence of Case
    ops : module-like, optional
        Provides conv1d/conv2d/conv2d_backward/max_pool2d/avg_pool2d with cnnkit's
        signatures; defaults to :mod:`cnnkit.ops` (tests inject stand-ins).
    repeat : int
        Timed samples per implementation (median reported).
    threads : int, optional
        Reported thread count (fix them first with :func:`fix_threads`).
    peers : Peers, optional
        Peer libraries; defaults to all of :data:`PEERS` that are installed.
    peak_n : int
        Side of the sgemm that measures this machine's peak.
    progress : callable, optional
        Called with each case's name before it runs.
    budget_s : float, optional
        Sampling time per implementation after which at least 3 samples suffice (the
        default suite uses it; an explicit ``--repeat`` does not).
    clock : "wall" | "cpu"
        What ``seconds`` (and so GFLOP/s and every ratio) measures. ``"cpu"``, the process
        CPU time, is immune to other processes taking the core, but counts every thread
        (spinning ones too): it is only accepted with one thread.

    Returns
    -------
    dict
        ``schema``, ``machine``, ``settings``, ``peak``, ``compile``, ``peers``, ``notes``,
        ``results`` (one row per case and implementation) and ``summary``.
    """
    if repeat < 1:
        raise ValueError(f"--repeat must be >= 1, got {repeat}")
    if clock not in ("wall", "cpu"):
        raise ValueError(f"--clock must be wall or cpu, got {clock!r}")
    if clock == "cpu" and threads != 1:
        raise ValueError(
            "--clock cpu needs --threads 1 (CPU time adds up all threads, spinning ones too)"
        )
    if ops is None:
        ops = importlib.import_module("cnnkit.ops")
    check_memory(cases, budget=cnnkit_cols_budget(ops))
    threads = threads or os.cpu_count() or 1
    peers = peers or Peers(threads=threads)
    compile_rows = measure_compile(ops, cases)
    peak = measure_peak(peak_n, clock=clock)
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    for case in cases:
        if progress:
            progress(case.name)
        if "torch" in peers.modules:
            # PyTorch's OpenMP workers keep spinning for a while after its last call and take
            # the cores from whatever runs next: measured, lenet_c2's loop took 2.04 ms right
            # after a torch conv against 1.10 ms otherwise. Let them go idle before timing.
            time.sleep(TORCH_IDLE_S)
        rows, case_notes = run_case(case, ops, peers, repeat, peak["gflops"], budget_s, clock)
        results.extend(rows)
        notes.extend(case_notes)
    for peer, why in peers.missing.items():
        notes.insert(0, f"peer {peer} missing: {why}")
    machine = machine_info(threads)
    busy = busy_note(machine)
    if busy:
        notes.append(busy)
    return {
        "schema": SCHEMA,
        "machine": machine,
        "settings": {
            "repeat": repeat,
            "budget_s": budget_s,
            "clock": clock,
            "threads": threads,
            "thread_control": thread_control or {},
            "sample_seconds": SAMPLE_SECONDS,
            "dtype": "float32",
        },
        "peak": peak,
        "compile": compile_rows,
        "peers": {"available": peers.available(), "missing": dict(peers.missing)},
        "notes": notes,
        "results": results,
        "summary": summarize(results),
    }


# The speed targets (forward float32 unless named), as (cases, method, peer, ratio).
TARGETS = (
    (("filter_1024_k3", "filter_1024_k7"), "best", "opencv", 0.5),
    (("lenet_c1", "lenet_c2", "cifar"), "im2col", "torch", 0.8),
    (("lenet_c1", "lenet_c2", "cifar"), "loop", "torch", 0.3),
    (("lenet_c1_bwd", "lenet_c2_bwd", "cifar_bwd"), "im2col", "torch", 0.6),
)


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per case: how ``auto`` compares with the better of loop and im2col; the issue targets.

    ``auto_vs_best`` is ``time(best of loop, im2col) / time(auto)``; the target is >= 0.9
    (auto never more than 10 % slower than the better method).
    """
    by_case: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        by_case.setdefault(r["case"], {})[r["method"]] = r
    auto = []
    for name, rows in by_case.items():
        times = {m: rows[m]["seconds"] for m in ("loop", "im2col", "auto") if m in rows}
        if len(times) == 3 and all(times.values()):
            best = min(("loop", "im2col"), key=lambda m: times[m])
            ratio = times[best] / times["auto"]
            detail = rows["auto"].get("detail", "")
            picked = detail[8:] if detail.startswith("auto -> ") else None
            auto.append(
                {"case": name, "best": best, "picked": picked, "ratio": ratio, "ok": ratio >= 0.9}
            )
    targets = []
    for names, method, peer, goal in TARGETS:
        for name in names:
            rows = by_case.get(name)
            if not rows or peer not in rows or not rows[peer]["seconds"]:
                continue
            if method == "best":
                timed = [rows[m] for m in ("loop", "im2col", "auto") if m in rows]
                timed = [r for r in timed if r["seconds"]]
                if not timed:
                    continue
                row = min(timed, key=lambda r: r["seconds"])
            elif method in rows and rows[method]["seconds"]:
                row = rows[method]
            else:
                continue
            ratio = rows[peer]["seconds"] / row["seconds"]
            targets.append(
                {
                    "case": name,
                    "method": row["method"],
                    "peer": peer,
                    "ratio": ratio,
                    "target": goal,
                    "ok": ratio >= goal,
                }
            )
    wrong = [f"{r['case']}/{r['method']}" for r in results if r["status"] != "ok"]
    return {"auto_vs_best": auto, "targets": targets, "not_ok": wrong}


# --------------------------------------------------------------------------------------------
# Output: CSV, plot data


CSV_COLUMNS = (
    "case",
    "group",
    "op",
    "shape",
    "method",
    "impl",
    "status",
    "seconds",
    "wall_seconds",
    "cpu_seconds",
    "gflops",
    "peak_share",
    "flops",
    "extra_bytes",
    "rss_peak_bytes",
    "speedup_vs_loop",
    *(f"vs_{p}" for p in PEERS),
    "samples",
    "error_ratio",
    "detail",
)


def csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat dict per result row, keys :data:`CSV_COLUMNS` (empty string when absent)."""
    out = []
    for r in report["results"]:
        flat = {k: r.get(k) for k in CSV_COLUMNS}
        for p in PEERS:
            flat[f"vs_{p}"] = r["ratios"].get(p)
        out.append({k: "" if v is None else v for k, v in flat.items()})
    return out


def write_csv(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write :func:`csv_rows` atomically."""
    import csv

    from cnnkit.io import atomic_write

    with atomic_write(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows(report))


def write_json(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the report atomically as JSON (infinities become null)."""
    import json

    from cnnkit.io import atomic_write

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    with atomic_write(path, "w") as handle:
        json.dump(clean(report), handle, indent=2)
        handle.write("\n")


def plot_series(report: dict[str, Any]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """The filter cases as lines: GFLOP/s against image size (smallest kernel) and seconds
    against kernel size (the middle image size), one line per method or peer."""
    filt = [r for r in report["results"] if r["group"] == "filter" and r["seconds"]]
    parsed = []
    for r in filt:
        _, size, k = r["case"].split("_")
        parsed.append((int(size), int(k[1:]), r))
    if not parsed:
        return {"size": {}, "kernel": {}}
    kmin = min(k for _, k, _ in parsed)
    sizes = sorted({s for s, _, _ in parsed})
    smid = 1024 if 1024 in sizes else sizes[len(sizes) // 2]
    by_size: dict[str, list[tuple[float, float]]] = {}
    by_kernel: dict[str, list[tuple[float, float]]] = {}
    for s, k, r in sorted(parsed, key=lambda t: (t[0], t[1])):
        if k == kmin:
            by_size.setdefault(r["method"], []).append((s, r["gflops"]))
        if s == smid:
            by_kernel.setdefault(r["method"], []).append((k, r["seconds"]))
    return {
        "size": by_size,
        "kernel": by_kernel,
        "size_title": f"kernel {kmin}x{kmin}",
        "kernel_title": f"{smid}x{smid} image",
    }


# --------------------------------------------------------------------------------------------
# --explain: the lecture's im2col example


def explain_data(ops: Any = None, seed: int = 6) -> dict[str, np.ndarray]:
    """The lecture's example, small: four 3x3x3 kernels, a 3x5x5 RGB image.

    Returns
    -------
    dict
        ``kernels`` (4, 3, 3, 3), ``image`` (3, 5, 5), ``w_matrix`` (4, 27): each kernel
        flattened to a row; ``patches`` (27, 9): each 3x3x3 block of the image as a column
        (``cnnkit.im2col``); ``product`` (4, 9) = ``w_matrix @ patches``; ``maps``
        (4, 3, 3): the product's rows reshaped to the output maps; ``loop`` (4, 3, 3): the
        same convolution by the sliding-window loop (``cnnkit.conv2d(method="loop")``).

    Notes
    -----
    Small integers keep every product exact in float32, so ``maps == loop`` holds exactly.
    """
    if ops is None:
        ops = importlib.import_module("cnnkit.ops")
    rng = np.random.default_rng(seed)
    kernels = rng.integers(-1, 2, size=(4, 3, 3, 3)).astype(np.float32)
    image = rng.integers(0, 10, size=(3, 5, 5)).astype(np.float32)
    w_matrix = kernels.reshape(4, 27)
    patches = np.asarray(ops.im2col(image, 3))
    product = w_matrix @ patches
    side = conv_output_size(5, 3)
    maps = product.reshape(4, side, side)
    loop = np.asarray(ops.conv2d(image[None], kernels, method="loop"))[0]
    return {
        "kernels": kernels,
        "image": image,
        "w_matrix": w_matrix,
        "patches": patches,
        "product": product,
        "maps": maps,
        "loop": loop,
    }


# --------------------------------------------------------------------------------------------
# --train: training throughput against PyTorch

TRAIN_NETS = {
    # name: (input shape, batch, optimizer, learning rate); layers in _torch_net.
    "digits": ((1, 8, 8), 32, "adam", 3e-3),
    "lenet5": ((1, 28, 28), 64, "sgd", 1e-2),
}


def _torch_net(torch: Any, name: str) -> Any:
    nn = torch.nn
    if name == "digits":
        # conv16 k3 p1 - relu - maxpool2 - conv32 k3 p1 - relu - maxpool2 - fc10 (ANCHORS.md)
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 2 * 2, 10),
        )
    # LeNet-5 on 28x28 as cnnkit ships it (archs/lenet5.txt): tanh, average pooling.
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120),
        nn.Tanh(),
        nn.Linear(120, 84),
        nn.Tanh(),
        nn.Linear(84, 10),
    )


def torch_train_throughput(torch: Any, name: str, steps: int, warmup: int = 5) -> float:
    """Images per second of PyTorch training steps (forward, loss, backward, update)."""
    shape, batch, optimizer, lr = TRAIN_NETS[name]
    torch.manual_seed(0)
    model = _torch_net(torch, name)
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(batch, *shape)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t0)


def cnnkit_train_throughput(name: str, steps: int) -> tuple[float | None, str]:
    """cnnkit's images/s from ``cnnkit.train.train_throughput`` when the training module has
    it; otherwise ``(None, reason)``. The call is adapted to the parameter names it declares."""
    try:
        train = importlib.import_module("cnnkit.train")
    except ImportError:
        return None, "not available (cnnkit.train missing)"
    fn = getattr(train, "train_throughput", None)
    if fn is None:
        return None, "not available (cnnkit.train has no train_throughput)"
    import inspect

    _, batch, optimizer, lr = TRAIN_NETS[name]
    kwargs: dict[str, Any] = {}
    params = inspect.signature(fn).parameters
    for p in params:
        low = p.lower()
        if "batch" in low:
            kwargs[p] = batch
        elif "step" in low:
            kwargs[p] = steps
        elif "optim" in low:
            kwargs[p] = optimizer
        elif low in ("lr", "learning_rate"):
            kwargs[p] = lr
    first = next(iter(params), None)
    args = [] if first is None or first in kwargs else [name]
    try:
        value = fn(*args, **kwargs)
    except Exception as exc:
        return None, f"error: {type(exc).__name__}: {exc}".splitlines()[0]
    if isinstance(value, dict):
        value = next((v for k, v in value.items() if "image" in k or "per_s" in k), None)
    elif not isinstance(value, int | float):
        value = getattr(value, "images_per_s", None)
    if value is None:
        return None, "error: train_throughput returned no images/s"
    return float(value), ""


def train_bench(peers: Peers, quick: bool = False) -> list[dict[str, Any]]:
    """Training throughput rows: images/s for PyTorch and cnnkit, and cnnkit/PyTorch."""
    rows = []
    for name, (shape, batch, optimizer, _) in TRAIN_NETS.items():
        steps = (60 if quick else 200) if name == "digits" else (20 if quick else 60)
        torch = peers.get("torch")
        torch_ips = torch_train_throughput(torch, name, steps) if torch is not None else None
        ours, why = cnnkit_train_throughput(name, steps)
        rows.append(
            {
                "net": name,
                "input": "x".join(map(str, shape)),
                "batch": batch,
                "optimizer": optimizer,
                "steps": steps,
                "cnnkit_images_per_s": ours,
                "torch_images_per_s": torch_ips,
                "ratio": ours / torch_ips if ours and torch_ips else None,
                "note": why,
            }
        )
    return rows


def train_report(
    peers: Peers, threads: int, thread_control: dict[str, str], quick: bool = False
) -> dict[str, Any]:
    """The ``--train`` report: machine, settings, one row per network, notes."""
    rows = train_bench(peers, quick=quick)
    machine = machine_info(threads)
    notes = [f"peer {p} missing: {why}" for p, why in peers.missing.items()]
    busy = busy_note(machine)
    if busy:
        notes.append(busy)
    notes.append(
        "synthetic batches (random images and labels): throughput does not depend on the data;"
        " warm-up steps excluded"
    )
    return {
        "schema": SCHEMA,
        "machine": machine,
        "settings": {"threads": threads, "thread_control": thread_control, "quick": quick},
        "train": rows,
        "notes": notes,
    }
