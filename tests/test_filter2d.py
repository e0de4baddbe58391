"""The plane kernel (kernels/filter2d.py) that runs large one-channel-per-output 2-D filters:
checked against the plain-loop reference on small planes (the size threshold lowered so
the kernel runs), against the im2col method and SciPy/OpenCV on large ones."""

from __future__ import annotations

import numpy as np
import pytest
from reference import conv_reference

from cnnkit import ops


@pytest.fixture
def planes(monkeypatch):
    """Every eligible call takes the plane kernel; counts the calls."""
    calls = []
    original = ops._plane_forward

    def spy(plan, bias, flops):
        calls.append(plan.w5.shape)
        return original(plan, bias, flops)

    monkeypatch.setattr(ops, "_PLANE_POSITIONS", 0)
    monkeypatch.setattr(ops, "_plane_forward", spy)
    return calls


def check(got, x, w, **kw):
    want = conv_reference(x, w, **kw)
    scale = conv_reference(np.abs(x), np.abs(w), **{k: v for k, v in kw.items() if k != "bias"})
    if kw.get("bias") is not None:
        scale = scale + np.abs(kw["bias"])[None, :, None, None]
    eps = np.finfo(got.dtype).eps
    assert got.shape == want.shape
    assert np.all(np.abs(got - want) <= 2 * w[0, 0].size * eps * (scale + 1e-300))


@pytest.mark.parametrize(
    "x_hw, k_hw",
    [
        ((13, 17), (3, 3)),
        ((12, 16), (4, 6)),  # even kernel: "same" pads asymmetrically
        ((9, 40), (1, 5)),
        ((40, 9), (5, 1)),
        ((8, 30), (1, 1)),
        ((21, 33), (11, 11)),  # 11 taps a row: two column pieces
        ((10, 50), (3, 21)),  # three pieces
        ((2, 3), (5, 7)),  # image smaller than the kernel
        ((1, 1), (3, 3)),
        ((7, 31), (2, 10)),
    ],
)
@pytest.mark.parametrize("padding", [0, "same", (1, 4)])
def test_plane_kernel_matches_the_reference(x_hw, k_hw, padding, rng, planes):
    x = rng.standard_normal((1, 1, *x_hw)).astype(np.float32)
    w = rng.standard_normal((1, 1, *k_hw)).astype(np.float32)
    pads = padding if isinstance(padding, tuple) else (padding, padding)
    if padding != "same" and any(n + 2 * p < k for n, p, k in zip(x_hw, pads, k_hw)):
        with pytest.raises(ValueError, match="kernel larger"):
            ops.conv2d(x, w, padding=padding)
        return
    got = ops.conv2d(x, w, padding=padding, method="loop")
    assert planes, "the plane kernel did not run"
    assert got.dtype == np.float32
    check(got, x, w, padding=padding)


@pytest.mark.parametrize("pad_mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plane_kernel_padding_modes_bias_dtypes(pad_mode, dtype, rng, planes):
    x = rng.standard_normal((2, 3, 11, 14)).astype(dtype)
    w = rng.standard_normal((6, 1, 3, 5)).astype(dtype)  # depthwise, two outputs per channel
    b = rng.standard_normal(6).astype(dtype)
    got = ops.conv2d(x, w, b, padding=2, groups=3, pad_mode=pad_mode)
    assert len(planes) == 1 and got.dtype == dtype
    check(got, x, w, bias=b, padding=2, groups=3, pad_mode=pad_mode)


def test_plane_kernel_keeps_other_convolutions_off(rng, planes):
    x = rng.standard_normal((1, 2, 12, 12)).astype(np.float32)
    ops.conv2d(x, rng.standard_normal((1, 2, 3, 3)), method="loop")  # two input channels
    ops.conv2d(x[:, :1], rng.standard_normal((1, 1, 3, 3)), stride=2, method="loop")
    ops.conv2d(x[:, :1], rng.standard_normal((1, 1, 3, 3)), dilation=2, method="loop")
    ops.conv1d(x[:, :1, 0], rng.standard_normal((1, 1, 3)), method="loop")
    assert planes == []


def test_plane_kernel_propagates_nan_and_inf(rng, planes):
    x = rng.standard_normal((1, 1, 9, 20)).astype(np.float32)
    x[0, 0, 4, 10] = np.nan
    x[0, 0, 0, 0] = np.inf
    w = np.abs(rng.standard_normal((1, 1, 3, 3))).astype(np.float32)
    got = ops.conv2d(x, w, padding=1)
    want = conv_reference(x, w, padding=1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


@pytest.mark.parametrize(
    "k, dtype",
    # each piece shape and dtype compiles once (about 1 s): float64 on one of them
    [(3, np.float32), (3, np.float64), (7, np.float32), (11, np.float32), (13, np.float32)],
)
def test_large_planes_match_im2col_and_scipy(k, dtype, rng, monkeypatch):
    calls = []
    original = ops._plane_forward
    monkeypatch.setattr(ops, "_plane_forward", lambda *a: calls.append(1) or original(*a))
    x = rng.standard_normal((1, 1, 203, 190)).astype(dtype)
    w = rng.standard_normal((1, 1, k, k)).astype(dtype)
    got = ops.conv2d(x, w, padding=k // 2)
    assert calls == [1]
    other = ops.conv2d(x, w, padding=k // 2, method="im2col")
    tol = 50 * k * np.finfo(dtype).eps * float(np.abs(other).max())
    np.testing.assert_allclose(got, other, rtol=0, atol=tol)
    ndimage = pytest.importorskip("scipy.ndimage")
    want = ndimage.correlate(
        x[0, 0].astype(np.float64), w[0, 0].astype(np.float64), mode="constant"
    )
    np.testing.assert_allclose(got[0, 0], want, rtol=0, atol=tol)


def test_large_plane_matches_opencv(rng):
    cv2 = pytest.importorskip("cv2")
    x = rng.standard_normal((1, 1, 256, 301)).astype(np.float32)
    w = rng.standard_normal((1, 1, 5, 5)).astype(np.float32)
    want = cv2.filter2D(x[0, 0], -1, w[0, 0], borderType=cv2.BORDER_CONSTANT)
    got = ops.conv2d(x, w, padding=2)
    np.testing.assert_allclose(got[0, 0], want, rtol=0, atol=1e-5 * float(np.abs(want).max()))


def test_threads_split_rows_alike(rng, monkeypatch):
    x = rng.standard_normal((1, 1, 301, 257)).astype(np.float32)
    w = rng.standard_normal((1, 1, 7, 7)).astype(np.float32)
    monkeypatch.setattr(ops, "_THREADED_PLANE_FLOPS", 0)
    monkeypatch.setattr(ops._threads, "worker_count", lambda: 1)
    one = ops.conv2d(x, w, padding=3)
    monkeypatch.setattr(ops._threads, "worker_count", lambda: 3)
    three = ops.conv2d(x, w, padding=3)
    np.testing.assert_array_equal(one, three)


@pytest.mark.parametrize("kh", [1, 2, 3, 5, 7, 9, 11, 13, 25])
@pytest.mark.parametrize("kw", [1, 3, 4, 9, 10, 11, 21, 25])
def test_kernel_pieces_cover_the_kernel_once(kh, kw):
    seen = np.zeros((kh, kw), int)
    pieces = ops._kernel_pieces(kh, kw)
    for r0, r1, c0, c1 in pieces:
        assert c1 - c0 <= ops._PIECE_WIDTH and r1 - r0 <= ops._PIECE_WIDTH
        assert (r1 - r0) * (c1 - c0) <= max(ops._PIECE_TAPS, c1 - c0)
        seen[r0:r1, c0:c1] += 1
    np.testing.assert_array_equal(seen, 1)


def test_threads_split_planes_alike(rng, planes, monkeypatch):
    x = rng.standard_normal((2, 3, 19, 23)).astype(np.float32)
    w = rng.standard_normal((3, 1, 5, 4)).astype(np.float32)
    monkeypatch.setattr(ops, "_THREADED_PLANE_FLOPS", 0)
    monkeypatch.setattr(ops._threads, "worker_count", lambda: 1)
    one = ops.conv2d(x, w, padding="same", groups=3)
    monkeypatch.setattr(ops._threads, "worker_count", lambda: 4)  # 6 planes over 4 threads
    four = ops.conv2d(x, w, padding="same", groups=3)
    np.testing.assert_array_equal(one, four)
    check(four, x, w, padding="same", groups=3)
    assert len(planes) == 2


@pytest.mark.parametrize(
    ("shape", "k", "threaded"),
    [
        ((1, 1, 512, 512), 5, False),  # 13 MFLOP on wide rows: one thread is faster
        ((1, 1, 1024, 1024), 3, True),  # 19 MFLOP on wide rows
        ((1, 32, 112, 112), 3, False),  # 7 MFLOP on narrow rows
        ((1, 64, 64, 64), 5, True),  # 13 MFLOP on narrow rows, which run at half the speed
    ],
)
def test_plane_threads_only_for_long_calls(rng, monkeypatch, shape, k, threaded):
    seen = []
    real = ops._over_planes
    monkeypatch.setattr(ops._threads, "worker_count", lambda: 2)
    monkeypatch.setattr(ops, "_over_planes", lambda *a: seen.append(a[-1]) or real(*a))
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((shape[1], 1, k, k)).astype(np.float32)
    ops.conv2d(x, w, padding=k // 2, groups=shape[1])
    assert seen == [2 if threaded else 1]
