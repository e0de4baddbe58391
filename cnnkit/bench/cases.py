"""Benchmark cases: operations on fixed shapes, their FLOPs, their memory, and the suites."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from cnnkit.geometry import conv_output_size, format_shape
from cnnkit.memory import human_bytes

# The textbook numpy peer materialises the whole patch matrix; beyond this it is skipped
# (named in a note) so that one peer does not dominate the suite's time and memory.
NUMPY_PEER_CAP = 512 * 2**20


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
    weights: str = ""  # a named separable kernel (SEPARABLE); random weights when empty

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields (what a worker process receives)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        """The inverse of :meth:`to_dict`."""
        tuples = ("x_shape", "w_shape", "kernel", "stride", "padding")
        fields = {k: (tuple(v) if k in tuples and v is not None else v) for k, v in data.items()}
        return cls(**fields)

    @property
    def is_conv(self) -> bool:
        return self.op in ("conv2d", "conv1d", "conv2d_backward")

    @property
    def peer_op(self) -> str:
        return self.group if self.group in ("filter", "separable") else self.op

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
        x = format_shape(self.x_shape)
        k = self.kernel[1] if self.op == "conv1d" or self.kernel[0] == self.kernel[1] else None
        ktxt = f"k{k}" if k else f"k{self.kernel[0]}x{self.kernel[1]}"
        s = self.stride[1]
        p = self.padding[1]
        extra = (f" s{s}" if s != 1 else "") + (f" p{p}" if p else "")
        if self.group == "filter":
            return f"{self.x_shape[2]}x{self.x_shape[3]} {ktxt}"
        if self.group == "separable":
            return f"{self.x_shape[2]}x{self.x_shape[3]} {self.weights} {ktxt}"
        if self.is_conv:
            return f"{x} -> {self.w_shape[0]} {ktxt}{extra}"  # type: ignore[index]
        return f"{x} {ktxt}{extra}"


def conv_case(
    name: str, group: str, x: tuple[int, ...], out: int, k: int, pad: int, stride: int = 1
) -> Case:
    """A convolution case: ``x`` is NCHW (or NCL for 1-D), ``out`` channels, ``k x k`` kernel.

    ``group == "backward"`` makes it the backward pass (input and weight gradients).
    """
    if len(x) == 3:
        return Case(name, group, "conv1d", x, (out, x[1], 1, k), (1, k), (1, stride), (0, pad))
    op = "conv2d_backward" if group == "backward" else "conv2d"
    return Case(name, group, op, x, (out, x[1], k, k), (k, k), (stride, stride), (pad, pad))


def pool_case(name: str, op: str, x: tuple[int, ...], k: int, stride: int, pad: int = 0) -> Case:
    """A pooling case (``op`` is ``max_pool2d`` or ``avg_pool2d``)."""
    return Case(name, "pool", op, x, None, (k, k), (stride, stride), (pad, pad))


def _gaussian(sigma: float) -> np.ndarray:
    radius = math.ceil(3 * sigma)
    g = np.exp(-(np.arange(-radius, radius + 1) ** 2) / (2 * sigma**2))
    return g / g.sum()


# Separable kernels as (column, row) factors: the 2-D kernel is their outer product.
SEPARABLE: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "gauss1": (_gaussian(1.0), _gaussian(1.0)),
    "gauss2": (_gaussian(2.0), _gaussian(2.0)),
    "gauss4": (_gaussian(4.0), _gaussian(4.0)),
    "box5": (np.full(5, 0.2), np.full(5, 0.2)),
    "sobel": (np.array([1.0, 2.0, 1.0]), np.array([1.0, 0.0, -1.0])),
}


def separable_case(name: str, size: int, weights: str) -> Case:
    """A single-image filter with the named separable kernel (:data:`SEPARABLE`)."""
    k = len(SEPARABLE[weights][0])
    return Case(
        name,
        "separable",
        "conv2d",
        (1, 1, size, size),
        (1, 1, k, k),
        (k, k),
        (1, 1),
        (k // 2, k // 2),
        weights,
    )


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
    one chunk per thread). The backward pass needs the buffer twice (the patches for the
    weight gradient and the patch gradient folded back by col2im). Pooling has none (0).
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


def memory_needed(case: Case, budget: int | None = None) -> dict[str, int]:
    """Bytes the harness allocates for ``case``: arrays, float64 oracle, patch matrix.

    ``budget`` is cnnkit's im2col chunk budget; the textbook numpy peer, which builds the
    whole batch, is skipped above :data:`NUMPY_PEER_CAP`.
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
            shown = {k: human_bytes(v, table=True) for k, v in need.items()}
            raise ValueError(
                f"case {case.name} ({case.label()}) needs about "
                f"{human_bytes(total, table=True)} (im2col buffer {shown['im2col']}, arrays "
                f"{shown['arrays']}, float64 oracle {shown['oracle']}) but the limit is half of "
                f"the {human_bytes(available, table=True)} available; choose smaller sizes, "
                "kernels or batch"
            )


# The reference conv layers the speed targets are set on (LeNet-5 c1/c2, a CIFAR layer; see
# docs/PERFORMANCE.md, "Speed targets"); padding keeps the spatial size.
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
        A suite of a few seconds: one image size, two kernels, the LeNet layers, one pooling
        case, one 1-D case and one backward case.
    sizes, kernels : sequences of int, optional
        Image sides and (odd) kernel sides of the single-image filter cases.
    channels, batch : sequences of int, optional
        Extra conv layers ``(b, c, 32, 32) -> c, k3 p1`` for every pair, next to the fixed
        LeNet and CIFAR layers (forward and, in the full suite, backward).

    Returns
    -------
    list of Case
    """
    base = QUICK if quick else DEFAULTS
    sizes = tuple(sizes) if sizes else base["sizes"]
    kernels = tuple(kernels) if kernels else base["kernels"]
    # An explicit channels or batch alone still gives extra layers (default for the other).
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
            cases.append(conv_case(f"filter_{s}_k{k}", "filter", (1, 1, s, s), 1, k, k // 2))
    anchors = ["lenet_c1", "lenet_c2"] if quick else list(ANCHOR_LAYERS)
    layers = {name: ANCHOR_LAYERS[name] for name in anchors}
    for b in batch:
        for c in channels:
            layers[f"conv_b{b}_c{c}"] = ((b, c, 32, 32), c, 3, 1)
    for name, (x, o, k, p) in layers.items():
        cases.append(conv_case(name, "conv2d", x, o, k, p))
    if quick:
        cases.append(conv_case("conv1d_b8_c16", "conv1d", (8, 16, 1024), 16, 7, 3))
        cases.append(pool_case("maxpool_lenet", "max_pool2d", (64, 6, 28, 28), 2, 2))
        x, o, k, p = ANCHOR_LAYERS["lenet_c2"]
        cases.append(conv_case("lenet_c2_bwd", "backward", x, o, k, p))
        return cases
    for s in (1024, 2048):
        for weights in SEPARABLE:
            cases.append(separable_case(f"sep_{s}_{weights}", s, weights))
    cases.append(conv_case("signal_1m_k9", "conv1d", (1, 1, 2**20), 1, 9, 4))
    cases.append(conv_case("signal_1m_k31", "conv1d", (1, 1, 2**20), 1, 31, 15))
    cases.append(conv_case("conv1d_b32_c16", "conv1d", (32, 16, 4096), 16, 7, 3))
    cases.append(pool_case("maxpool_lenet", "max_pool2d", (64, 6, 28, 28), 2, 2))
    cases.append(pool_case("avgpool_lenet", "avg_pool2d", (64, 6, 28, 28), 2, 2))
    cases.append(pool_case("maxpool_cifar_k3s2", "max_pool2d", (32, 64, 32, 32), 3, 2, 1))
    cases.append(pool_case("avgpool_cifar", "avg_pool2d", (32, 64, 32, 32), 2, 2))
    for name, (x, o, k, p) in layers.items():
        cases.append(conv_case(f"{name}_bwd", "backward", x, o, k, p))
    return cases


def _check_ints(name: str, values: Sequence[int], minimum: int) -> None:
    bad = [v for v in values if v < minimum]
    if bad:
        raise ValueError(f"{name} must be >= {minimum}, got {bad[0]}")


def choose_cases(
    patterns: Sequence[str] | None = None,
    *,
    quick: bool = False,
    **suite: Sequence[int] | None,
) -> list[Case]:
    """The cases a run times: the suite of :func:`build_suite` (``quick``, and ``suite``:
    its ``sizes``, ``kernels``, ``channels`` and ``batch``), or the cases ``patterns`` name
    (:func:`select_cases`), looked up in the full suite and then the quick one, so that a
    named case is found even when the quick suite lacks it."""
    if not patterns:
        return build_suite(quick=quick, **suite)
    pool = build_suite(quick=False, **suite)
    names = {c.name for c in pool}
    pool += [c for c in build_suite(quick=True, **suite) if c.name not in names]
    return select_cases(pool, patterns)


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
