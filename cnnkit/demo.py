"""``cnnkit filter --demo``: the lecture's filtering examples, computed and printed.

:func:`demo_steps` computes every example through :mod:`cnnkit.ops` and returns the
matrices; ``cnnkit filter --demo`` prints them as rich tables. No number in the walk-through is
typed in by hand: inputs are built here, results come from the ops, and every claim
("equal", "unchanged") is checked on the computed arrays before it is printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnkit import ops
from cnnkit.filters import BANK
from cnnkit.geometry import conv_output_size


@dataclass
class Step:
    """One stop of the walk-through: a title, a sentence, and captioned matrices."""

    title: str
    text: str
    matrices: list[tuple[str, np.ndarray]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)


def _c1(a: np.ndarray, w: np.ndarray, **kw: Any) -> np.ndarray:
    return ops.conv1d(a[None, None], w[None, None], **kw)[0, 0]


def _c2(x: np.ndarray, w: np.ndarray, **kw: Any) -> np.ndarray:
    return ops.conv2d(x[None, None], w[None, None], **kw)[0, 0]


def lecture_image(bright: float = 10.0, size: int = 8) -> np.ndarray:
    """The lecture's image: left half ``bright``, right half 0, one vertical edge."""
    x = np.zeros((size, size))
    x[:, : size // 2] = bright
    return x


def demo_steps() -> list[Step]:
    """Compute the walk-through. Returns the steps in the lecture's order."""
    img, edge = lecture_image(), BANK["vertical-edge"].build()
    return [
        _smoothing(),
        _correlation_vs_convolution(),
        _edge_detector(img, edge),
        *_padding_stride_dilation(img, edge),
        _pooling(),
    ]


def _smoothing() -> Step:
    """1. A 3-tap average on a short series."""
    series = np.array([3.0, 6.0, 0.0, 9.0, 3.0, 6.0, 12.0, 0.0, 6.0])
    avg = BANK["box"].build(size=3, ndim=1)
    smooth = _c1(series, avg)
    return Step(
        "1. A 3-tap average smooths a series",
        "Multiply the window elementwise with [1/3, 1/3, 1/3], sum, slide by one. "
        f"{len(series)} samples give {len(smooth)} averages (valid: L - k + 1).",
        [("a", series), ("kernel", avg), ("a filtered", smooth)],
        {"series": series, "kernel": avg, "result": smooth},
    )


def _correlation_vs_convolution() -> Step:
    """2. Sliding the kernel as it is, or flipped; which one commutes."""
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([1.0, 0.0, 2.0])
    corr = _c1(a, b)
    conv = _c1(a, b, flip=True)
    conv_ab = _c1(a, b, padding="full", flip=True)
    conv_ba = _c1(b, a, padding="full", flip=True)
    corr_ab = _c1(a, b, padding="full")
    corr_ba = _c1(b, a, padding="full")
    conv_commutes = bool(np.allclose(conv_ab, conv_ba))
    corr_commutes = bool(np.allclose(corr_ab, corr_ba))
    return Step(
        "2. Cross-correlation vs convolution",
        "CNN layers slide the kernel as it is (cross-correlation); true convolution flips "
        "it first. With full padding, convolution commutes: a*b == b*a is "
        f"{conv_commutes}; for cross-correlation it is {corr_commutes} "
        "(b against a gives the reversed result).",
        [
            ("a", a),
            ("b", b),
            ("cross-correlation a.b", corr),
            ("convolution a*b (flip)", conv),
            ("a*b full", conv_ab),
            ("b*a full", conv_ba),
            ("a.b full", corr_ab),
            ("b.a full", corr_ba),
        ],
        {
            "conv_commutes": conv_commutes,
            "corr_commutes": corr_commutes,
            "corr": corr,
            "conv": conv,
            "conv_ab": conv_ab,
            "conv_ba": conv_ba,
            "corr_ab": corr_ab,
            "corr_ba": corr_ba,
            "a": a,
            "b": b,
        },
    )


def _edge_detector(img: np.ndarray, edge: np.ndarray) -> Step:
    """3. The vertical-edge kernel on the lecture image, and transposed."""
    resp = _c2(img, edge)
    img_h = img.T.copy()
    resp_h = _c2(img_h, edge.T.copy())
    resp_h_wrong = _c2(img_h, edge)
    return Step(
        "3. A 3x3 edge detector on the 8x8 image",
        "The kernel responds only where the window straddles the vertical edge; flat "
        f"regions give 0. Peak response {resp.max():g}. Transposed, the kernel finds the "
        "horizontal edge of the transposed image, where the original kernel gives "
        f"{np.abs(resp_h_wrong).max():g} everywhere. The same image ships as "
        "sample_images/lecture_8x8.png: cnnkit filter sample_images/lecture_8x8.png "
        "-k vertical-edge prints this 6x6 map.",
        [
            ("image (8x8)", img),
            ("vertical-edge kernel", edge),
            ("response (6x6)", resp),
            ("horizontal edge image", img_h),
            ("kernel transposed", edge.T),
            ("response", resp_h),
        ],
        {
            "image": img,
            "kernel": edge,
            "response": resp,
            "response_h": resp_h,
            "response_h_wrong": resp_h_wrong,
        },
    )


def _padding_stride_dilation(img: np.ndarray, edge: np.ndarray) -> list[Step]:
    """4-6. The edge response with same padding, stride 2 and dilation 2."""
    resp = _c2(img, edge)
    steps: list[Step] = []
    same = _c2(img, edge, padding="same")
    n_valid = conv_output_size(8, 3)
    steps.append(
        Step(
            "4. Valid vs same padding",
            f"Valid: 8x8 -> {resp.shape[0]}x{resp.shape[1]} (8 - 3 + 1 = {n_valid}). Same: "
            f"one ring of zeros keeps {same.shape[0]}x{same.shape[1]}, but the zeros make an "
            "artificial edge at the border (the non-zero first column).",
            [("valid", resp), ("same (zero padding)", same)],
            {"valid": resp, "same": same},
        )
    )

    strided = _c2(img, edge, stride=2)
    steps.append(
        Step(
            "5. Stride 2",
            f"The window jumps two pixels: floor((8 - 3) / 2) + 1 = "
            f"{conv_output_size(8, 3, stride=2)} outputs per side, a downsampling like pooling.",
            [("stride 2", strided)],
            {"strided": strided},
        )
    )

    dilated = _c2(img, edge, dilation=2)
    steps.append(
        Step(
            "6. Dilation 2",
            "Holes between the taps: the 3x3 kernel spans 5x5 with the same 9 weights, so "
            f"8 - 5 + 1 = {conv_output_size(8, 3, dilation=2)} outputs per side and a wider "
            "response band.",
            [("dilation 2", dilated)],
            {"dilated": dilated},
        )
    )

    return steps


def _pooling() -> Step:
    """7. Max and average pooling, before and after a one-pixel shift."""
    x = np.array(
        [[9.0, 2.0, 3.0, 1.0], [1.0, 0.0, 5.0, 2.0], [0.0, 1.0, 8.0, 0.0], [6.0, 3.0, 1.0, 4.0]]
    )
    shifted = np.zeros_like(x)
    shifted[:, 1:] = x[:, :-1]
    mp = ops.max_pool2d(x[None, None], 2)[0, 0]
    ap = ops.avg_pool2d(x[None, None], 2)[0, 0]
    mp_s = ops.max_pool2d(shifted[None, None], 2)[0, 0]
    ap_s = ops.avg_pool2d(shifted[None, None], 2)[0, 0]
    max_same = bool(np.array_equal(mp, mp_s))
    avg_same = bool(np.array_equal(ap, ap_s))
    changed = int((x != shifted).sum())
    return Step(
        "7. Max and average pooling, and a one-pixel shift",
        "2x2 windows, stride 2. Shifting the input one pixel right changes "
        f"{changed} of {x.size} input values; the max-pooled answer unchanged: {max_same}, "
        f"the average-pooled one unchanged: {avg_same}. Each window's maximum stayed "
        "inside its window; a shift that moves a maximum across a window border would "
        "change it.",
        [
            ("input", x),
            ("max pool", mp),
            ("avg pool", ap),
            ("input shifted right", shifted),
            ("max pool", mp_s),
            ("avg pool", ap_s),
        ],
        {
            "max_same": max_same,
            "avg_same": avg_same,
            "x": x,
            "shifted": shifted,
            "mp": mp,
            "ap": ap,
            "mp_s": mp_s,
            "ap_s": ap_s,
        },
    )
