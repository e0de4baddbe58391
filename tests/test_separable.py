"""method="auto" runs rank-1 2-D filters (Gaussian, box, Sobel 5x5) as two 1-D loop passes:
checked against the plain-loop reference and the direct loop, and taken only for kernels
that really are outer products and large enough for two passes to pay."""

from __future__ import annotations

import numpy as np
import pytest
from reference import conv_reference

from cnnkit import ops


def gaussian(sigma: float) -> np.ndarray:
    r = int(np.ceil(3 * sigma))
    g = np.exp(-(np.arange(-r, r + 1) ** 2) / (2 * sigma**2))
    return np.outer(g, g) / g.sum() ** 2


KERNELS = {
    "gauss1": gaussian(1.0),
    "box5": np.ones((5, 5)) / 25,
    "sobel5": np.outer([1, 4, 6, 4, 1], [1, 2, 0, -2, -1]).astype(float),
    "wide": np.outer([1.0, -2.0, 0.5, 1.0], [0.5, 1.0, 2.0, -1.0, 3.0, 1.0]),
}


@pytest.fixture
def passes(monkeypatch):
    """Counts calls of the two-pass path."""
    calls = []
    original = ops._separable_forward

    def spy(plan):
        calls.append(plan.factors)
        return original(plan)

    monkeypatch.setattr(ops, "_separable_forward", spy)
    return calls


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("padding, pad_mode", [(0, "zeros"), ("same", "zeros"), (2, "reflect")])
def test_rank_one_filters_match_the_reference(name, padding, pad_mode, rng, passes):
    k = KERNELS[name]
    w = k[None, None].astype(np.float32)
    x = rng.standard_normal((2, 1, 13, 17)).astype(np.float32)
    got = ops.conv2d(x, w, padding=padding, pad_mode=pad_mode)
    assert len(passes) == 1  # the two-pass path ran
    want = conv_reference(x, w, padding=padding, pad_mode=pad_mode)
    scale = conv_reference(np.abs(x), np.abs(w), padding=padding, pad_mode=pad_mode)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.all(np.abs(got - want) <= 4 * w.size * np.finfo(np.float32).eps * (scale + 1e-30))
    direct = ops.conv2d(x, w, padding=padding, pad_mode=pad_mode, method="loop")
    assert len(passes) == 1  # an explicit method stays direct
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-5 * float(np.abs(direct).max()))


def test_depthwise_rank_one_with_bias_float64(rng, passes):
    cols = rng.standard_normal((3, 5))
    rows = rng.standard_normal((3, 4))
    w = np.einsum("oi,oj->oij", cols, rows)[:, None]
    bias = rng.standard_normal(3)
    x = rng.standard_normal((2, 3, 9, 8))
    factors = ops.rank_one_factors(w, 3)
    assert factors is not None
    np.testing.assert_allclose(np.einsum("oi,oj->oij", *factors), w[:, 0], rtol=1e-12)
    got = ops.conv2d(x, w, bias, padding=(1, 2), groups=3)
    assert len(passes) == 1
    want = conv_reference(x, w, bias, padding=(1, 2), groups=3)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_large_single_image_filter_matches_the_direct_loop(rng, passes):
    # 300x300 outputs take the fused plane passes, checked against the direct plane kernel
    w = gaussian(2.0)[None, None].astype(np.float32)
    x = rng.standard_normal((1, 1, 300, 300)).astype(np.float32)
    got = ops.conv2d(x, w, padding="same")
    assert len(passes) == 1
    direct = ops.conv2d(x, w, padding="same", method="loop")
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "w, groups",
    [
        (np.arange(9.0).reshape(1, 1, 3, 3) ** 2, 1),  # rank 2 (squares of 0..8)
        (np.ones((2, 1, 3, 3)), 1),  # two outputs share one input channel: not depthwise
        (np.ones((1, 2, 3, 3)), 1),  # two input channels per output
        (np.ones((1, 1, 1, 5)), 1),  # already 1-D
        (np.zeros((1, 1, 3, 3)), 1),  # no scale to factor
    ],
)
def test_kernels_that_are_not_rank_one_filters(w, groups):
    assert ops.rank_one_factors(w, groups) is None
    assert ops.separable_factors(w, groups) is None


def test_small_kernels_stride_and_dilation_keep_the_direct_path(rng, passes):
    sobel = np.outer([1.0, 2.0, 1.0], [1.0, 0.0, -1.0])[None, None]
    assert ops.rank_one_factors(sobel, 1) is not None  # rank 1, but 3x3: not worth two passes
    assert ops.separable_factors(sobel, 1) is None
    box = KERNELS["box5"][None, None]
    x = rng.standard_normal((1, 1, 12, 12))
    for w, kwargs in ((sobel, {}), (box, {"stride": 2}), (box, {"dilation": 2})):
        got = ops.conv2d(x, w, **kwargs)
        np.testing.assert_allclose(got, conv_reference(x, w, **kwargs), rtol=1e-10, atol=1e-12)
    assert passes == []


@pytest.fixture
def fused(monkeypatch):
    """Every rank-1 filter of the two-pass path takes the fused plane passes; counts them."""
    calls = []
    original = ops._separable_planes

    def spy(plan):
        calls.append(plan.factors)
        return original(plan)

    monkeypatch.setattr(ops, "_PLANE_POSITIONS", 0)
    monkeypatch.setattr(ops, "_SEPARABLE_BLOCK", 300)  # blocks of 8 or more rows
    monkeypatch.setattr(ops, "_separable_planes", spy)
    return calls


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize(
    "x_hw, padding, pad_mode",
    [
        ((75, 40), "same", "zeros"),  # several blocks of output rows, sharing input rows
        ((13, 17), 0, "zeros"),
        ((20, 11), (4, 1), "zeros"),
        ((3, 2), 3, "zeros"),  # image smaller than the kernel
        ((40, 33), 2, "reflect"),
        ((40, 33), "same", "circular"),
        ((40, 33), (3, 2), "replicate"),
    ],
)
def test_fused_passes_match_the_reference(name, x_hw, padding, pad_mode, rng, fused):
    k = KERNELS[name]
    w = k[None, None].astype(np.float32)
    x = rng.standard_normal((1, 1, *x_hw)).astype(np.float32)
    pads = padding if isinstance(padding, tuple) else (padding, padding)
    if padding != "same" and any(n + 2 * p < s for n, p, s in zip(x_hw, pads, k.shape)):
        return  # no output: the planner's error is tested elsewhere
    got = ops.conv2d(x, w, padding=padding, pad_mode=pad_mode)
    assert len(fused) == 1
    want = conv_reference(x, w, padding=padding, pad_mode=pad_mode)
    scale = conv_reference(np.abs(x), np.abs(w), padding=padding, pad_mode=pad_mode)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.all(np.abs(got - want) <= 4 * w.size * np.finfo(np.float32).eps * (scale + 1e-30))


def test_fused_passes_blocks_shorter_than_the_kernel(rng, fused):
    w = gaussian(2.0)[None, None]  # 13 rows: each 8-row block shares 12 input rows
    x = rng.standard_normal((1, 1, 37, 30))
    got = ops.conv2d(x, w, padding="same")
    assert len(fused) == 1
    np.testing.assert_allclose(got, conv_reference(x, w, padding="same"), rtol=1e-10, atol=1e-12)


def test_fused_passes_depthwise_bias_float64_threads(rng, fused, monkeypatch):
    cols = rng.standard_normal((3, 5))
    rows = rng.standard_normal((3, 4))
    w = np.einsum("oi,oj->oij", cols, rows)[:, None]
    bias = rng.standard_normal(3)
    x = rng.standard_normal((2, 3, 70, 21))
    want = conv_reference(x, w, bias, padding=(1, 2), groups=3)
    for workers in (1, 3):
        monkeypatch.setattr(ops._threads, "worker_count", lambda workers=workers: workers)
        monkeypatch.setattr(ops, "_THREADED_FLOPS", 0)
        got = ops.conv2d(x, w, bias, padding=(1, 2), groups=3)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert len(fused) == 2


@pytest.mark.parametrize("sigma", [1.0, 4.0])
def test_large_fused_filters_match_scipy_and_opencv(sigma, rng):
    g = gaussian(sigma)
    w = g[None, None].astype(np.float32)
    x = rng.standard_normal((1, 1, 300, 257)).astype(np.float32)
    got = ops.conv2d(x, w, padding="same")[0, 0]
    ndimage = pytest.importorskip("scipy.ndimage")
    want = ndimage.correlate(x[0, 0].astype(np.float64), g, mode="constant")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    cv2 = pytest.importorskip("cv2")
    r = np.ascontiguousarray(g[g.shape[0] // 2] / g[g.shape[0] // 2].sum(), np.float32)
    ocv = cv2.sepFilter2D(x[0, 0], -1, r, r, borderType=cv2.BORDER_CONSTANT)
    np.testing.assert_allclose(got, ocv, rtol=0, atol=1e-5)


def test_fused_passes_split_rows_over_threads(rng, fused, monkeypatch):
    w = gaussian(1.0)[None, None]
    x = rng.standard_normal((1, 1, 70, 21))
    monkeypatch.setattr(ops, "_THREADED_FLOPS", 0)
    monkeypatch.setattr(ops._threads, "worker_count", lambda: 1)
    one = ops.conv2d(x, w, padding="same")
    monkeypatch.setattr(ops._threads, "worker_count", lambda: 3)  # rows of one plane
    three = ops.conv2d(x, w, padding="same")
    np.testing.assert_array_equal(one, three)
    np.testing.assert_allclose(three, conv_reference(x, w, padding="same"), rtol=1e-10, atol=1e-12)
    assert len(fused) == 2
