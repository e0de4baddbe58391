"""conv1d/2d/3d and their gradients against the plain-loop reference, PyTorch and scipy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from reference import conv_reference, numerical_gradient

from cnnkit import ops

METHODS = ("loop", "im2col")


@pytest.fixture(params=["loop", "loop_rows", "im2col"])
def method(request, monkeypatch):
    """Each kernel family: the loop method's flattened-plane kernels (stride 1, short rows),
    its row kernels (forced by disabling the flat path), and im2col + GEMM."""
    if request.param == "loop_rows":
        monkeypatch.setattr(ops, "_FLAT_MAX_WIDTH", 0)
        monkeypatch.setattr(ops, "_ROW_BLOCK", 3)  # rows split into column blocks, too
        return "loop"
    return request.param


PAD_MODES = ("zeros", "reflect", "replicate", "circular")
CONV = {1: ops.conv1d, 2: ops.conv2d, 3: ops.conv3d}


def _operands(rng, x_shape, w_shape, bias=True, dtype=np.float64):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype) if bias else None
    return x, w, b


def _check(rng, x_shape, w_shape, method, **kw):
    x, w, b = _operands(rng, x_shape, w_shape)
    y = CONV[len(x_shape) - 2](x, w, b, method=method, **kw)
    expected = conv_reference(x, w, b, **kw)
    assert y.shape == expected.shape
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- forward grid
PADDINGS_2D = [0, 1, (1, 2), ((0, 1), (2, 0)), "valid", "same", "full"]


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("padding", PADDINGS_2D, ids=str)
def test_conv2d_padding_and_modes(rng, method, pad_mode, padding):
    # grouped, strided, dilated, non-square, one odd and one even kernel side
    _check(
        rng,
        (2, 4, 7, 9),
        (6, 2, 3, 2),
        method,
        stride=(2, 1),
        padding=padding,
        dilation=(1, 2),
        groups=2,
        pad_mode=pad_mode,
    )


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("dilation", [1, 2, (2, 1)], ids=str)
@pytest.mark.parametrize("stride", [1, 2, (2, 3)], ids=str)
@pytest.mark.parametrize("w_shape", [(4, 3, 3, 4), (4, 3, 3, 3), (2, 3, 7, 3)], ids=str)
def test_conv2d_stride_dilation_flip(rng, method, flip, dilation, stride, w_shape):
    # 3x3 and 7x3 kernels take the fused nine-tap pass of the flat kernel at stride 1
    _check(
        rng,
        (2, 3, 15, 10),
        w_shape,
        method,
        stride=stride,
        padding=1,
        dilation=dilation,
        flip=flip,
    )


SHAPES_2D = [
    ((1, 1, 8, 8), (1, 1, 3, 3), 1),  # the lecture's single-channel filter
    ((2, 3, 6, 5), (2, 3, 2, 2), 1),  # even kernel
    ((1, 2, 5, 7), (3, 2, 5, 1), 1),  # column kernel
    ((2, 4, 6, 6), (4, 1, 3, 3), 4),  # depthwise
    ((1, 6, 5, 4), (9, 2, 1, 1), 3),  # grouped 1x1
    ((3, 2, 4, 4), (2, 2, 4, 4), 1),  # kernel == input: 1x1 output
    ((2, 2, 6, 9), (3, 2, 2, 5), 1),  # wide rows: 3 + 2 fused taps
    ((1, 2, 4, 12), (2, 2, 1, 7), 1),  # 3 + 3 + 1 fused taps
]


@pytest.mark.parametrize("x_shape,w_shape,groups", SHAPES_2D, ids=str)
def test_conv2d_shapes_and_groups(rng, method, x_shape, w_shape, groups):
    _check(rng, x_shape, w_shape, method, groups=groups)
    _check(rng, x_shape, w_shape, method, groups=groups, padding="same", pad_mode="circular")


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize(
    "stride,padding,dilation",
    [(1, 0, 1), (2, 2, 1), (3, "same", 2), (1, "full", 1), (2, ((0, 3),), 1)],
)
def test_conv1d_grid(rng, method, pad_mode, stride, padding, dilation):
    _check(
        rng,
        (2, 4, 11),
        (4, 2, 3),
        method,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=2,
        pad_mode=pad_mode,
    )


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"stride": (1, 2, 2), "padding": 1},
        {"padding": "same", "dilation": (2, 1, 1), "pad_mode": "reflect"},
        {"padding": ((1, 0), (0, 2), (1, 1)), "pad_mode": "circular", "flip": True},
        {"groups": 2, "padding": "full", "pad_mode": "replicate"},
    ],
    ids=str,
)
def test_conv3d_grid(rng, method, kw):
    _check(rng, (2, 2, 4, 5, 6), (4, 2 // kw.get("groups", 1), 2, 3, 2), method, **kw)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_preserved_and_float32_accuracy(rng, nd, method, dtype):
    x, w, b = _operands(rng, (2, 3) + (6,) * nd, (4, 3) + (3,) * nd, dtype=dtype)
    y = CONV[nd](x, w, b, padding=1, method=method)
    assert y.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, conv_reference(x, w, b, padding=1), rtol=tol, atol=tol)


def test_int_input_becomes_float32_and_float64_wins(rng):
    x = rng.integers(-3, 4, (1, 1, 5, 5))
    w = np.ones((1, 1, 3, 3), np.float32)
    assert ops.conv2d(x, w).dtype == np.float32
    np.testing.assert_array_equal(ops.conv2d(x, w), conv_reference(x, w))
    assert ops.conv2d(x.astype(np.float32), w.astype(np.float64)).dtype == np.float64


@pytest.mark.parametrize("method", ["auto", *METHODS])
def test_methods_agree_on_a_layer(rng, method):
    x, w, b = _operands(rng, (3, 8, 10, 10), (16, 8, 3, 3), dtype=np.float32)
    y = ops.conv2d(x, w, b, padding=1, method=method)
    np.testing.assert_allclose(y, conv_reference(x, w, b, padding=1), rtol=1e-4, atol=1e-4)


def test_choose_method_rule():
    assert ops.choose_method(1, 9, 1) == "loop"  # single-channel filtering
    assert ops.choose_method(1, 9, 32, groups=32) == "loop"  # depthwise
    assert ops.choose_method(3, 9, 8, n_batch=1) == "loop"  # RGB filter bank, one image
    # ... unless it is small: one image's GEMM on one thread still beats the threaded loop
    assert ops.choose_method(3, 9, 16, n_batch=1, n_positions=224 * 224) == "im2col"
    assert ops.choose_method(3, 9, 8, n_batch=16) == "im2col"
    assert ops.choose_method(64, 9, 64) == "im2col"  # a deep layer


@pytest.mark.parametrize("workers,expected", [(2, "loop"), (1, "im2col")])
def test_choose_method_large_single_image(monkeypatch, workers, expected):
    """A large single image goes to the loop only when the loop has threads to use."""
    monkeypatch.setattr(ops._threads, "worker_count", lambda: workers)
    assert ops.choose_method(3, 9, 16, n_batch=1, n_positions=512 * 512) == expected
    assert ops.choose_method(3, 9, 16, n_batch=1, n_positions=64 * 64) == "im2col"


def test_input_not_modified(rng):
    x, w, b = _operands(rng, (1, 2, 6, 6), (2, 2, 3, 3))
    x0, w0 = x.copy(), w.copy()
    for method in METHODS:
        ops.conv2d(x, w, b, padding=1, pad_mode="reflect", flip=True, method=method)
        ops.conv2d_backward(np.ones((1, 2, 6, 6)), x, w, padding=1, flip=True, method=method)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


def test_non_contiguous_input(rng):
    x, w, _ = _operands(rng, (2, 3, 8, 12), (2, 3, 3, 3))
    xs = x[:, :, ::2, ::3]
    np.testing.assert_allclose(ops.conv2d(xs, w), conv_reference(xs, w), atol=1e-12)


def test_large_batch_is_chunked(rng, monkeypatch):
    # a tiny budget forces one sample per GEMM chunk, plus a partial last chunk path
    monkeypatch.setattr(ops, "_COLS_BUDGET", 1)
    x, w, b = _operands(rng, (3, 2, 5, 5), (3, 2, 3, 3))
    y = ops.conv2d(x, w, b, method="im2col")
    np.testing.assert_allclose(y, conv_reference(x, w, b), atol=1e-12)
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = ops.conv2d_backward(gy, x, w, method="im2col")
    gx2, gw2, gb2 = ops.conv2d_backward(gy, x, w, method="loop")
    np.testing.assert_allclose(gx, gx2, atol=1e-12)
    np.testing.assert_allclose(gw, gw2, atol=1e-12)


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("stacked", [False, True])
def test_im2col_weight_gradient_layouts(rng, monkeypatch, stacked, groups, chunked):
    """Both weight-gradient layouts (one GEMM over the chunk; per-sample GEMMs summed) give
    the finite differences' numbers, chunked and split over threads."""
    from cnnkit.kernels import threads

    monkeypatch.setattr(ops, "_SMALL_WEIGHT_GRAD", 10**9 if stacked else 0)
    monkeypatch.setattr(ops, "_THREADED_FLOPS", 0)
    monkeypatch.setattr(threads, "worker_count", lambda: 2)
    if chunked:
        monkeypatch.setattr(ops, "_COLS_BUDGET", 1)
    kw = {"padding": (1, 2), "stride": (1, 2), "groups": groups}
    x, w, _ = _operands(rng, (5, 4, 6, 7), (6, 4 // groups, 3, 2), bias=False)
    gy = rng.standard_normal(ops.conv2d(x, w, method="loop", **kw).shape)
    gx, gw, gb = ops.conv2d_backward(gy, x, w, method="im2col", **kw)
    num_w = numerical_gradient(lambda v: np.sum(gy * ops.conv2d(x, v, method="loop", **kw)), w)
    num_x = numerical_gradient(lambda v: np.sum(gy * ops.conv2d(v, w, method="loop", **kw)), x)
    np.testing.assert_allclose(gw, num_w, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gx, num_x, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, gy.sum(axis=(0, 2, 3)), atol=1e-12)
    none, gw_only, _ = ops.conv2d_backward(gy, x, w, method="im2col", need_input_grad=False, **kw)
    assert none is None
    np.testing.assert_allclose(gw_only, gw, atol=1e-12)


def test_weight_gradient_layout_threshold(rng, monkeypatch):
    """LeNet-5's first layer (R * O = 25 * 6) takes per-sample GEMMs for dL/dw, its second
    (150 * 16) the one GEMM."""
    calls = []
    real = np.matmul

    def spy(a, b, *args, **kwargs):
        calls.append(np.ndim(a))
        return real(a, b, *args, **kwargs)

    monkeypatch.setattr(ops.np, "matmul", spy)
    x, w, _ = _operands(rng, (2, 1, 12, 12), (6, 1, 5, 5), bias=False)
    ops.conv2d_backward(rng.standard_normal((2, 6, 8, 8)), x, w, method="im2col")
    assert calls == [3, 2]  # the stacked dL/dw, then dL/dcols
    calls.clear()
    x, w, _ = _operands(rng, (2, 6, 14, 14), (16, 6, 5, 5), bias=False)
    ops.conv2d_backward(rng.standard_normal((2, 16, 10, 10)), x, w, method="im2col")
    assert calls == [2]  # dL/dcols; dL/dw went through the @ operator


# ----------------------------------------------------------------------------- outside oracles
def _torch_conv(torch, x, w, b, nd, stride, padding, dilation, groups, pad_mode):
    import torch.nn.functional as F

    pads = padding
    flat = []
    for lo, hi in reversed(pads):
        flat += [lo, hi]
    mode = {"zeros": "constant"}.get(pad_mode, pad_mode)
    xt = F.pad(x, flat, mode=mode) if any(flat) else x
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[nd]
    return conv(xt, w, b, stride=stride, dilation=dilation, groups=groups)


TORCH_CASES = [
    (1, (2, 4, 13), (6, 2, 4), 2, 1, ((2, 1),), 2, "zeros"),
    (1, (2, 3, 10), (2, 3, 3), 1, 2, ((1, 1),), 1, "reflect"),
    (2, (2, 4, 9, 8), (4, 2, 3, 3), (1, 2), (2, 1), ((1, 1), (2, 2)), 2, "zeros"),
    (2, (1, 3, 7, 9), (5, 3, 2, 3), 2, 1, ((0, 1), (1, 1)), 1, "replicate"),
    (2, (2, 2, 6, 6), (2, 1, 3, 3), 1, 1, ((1, 1), (1, 1)), 2, "circular"),
    (2, (2, 3, 8, 7), (4, 3, 3, 3), 1, (1, 2), ((2, 2), (2, 2)), 1, "reflect"),
    (3, (1, 2, 5, 6, 5), (3, 2, 3, 2, 3), (1, 2, 1), 1, ((1, 1), (0, 1), (1, 1)), 1, "zeros"),
    (3, (2, 2, 4, 5, 4), (2, 1, 2, 2, 2), 1, (2, 1, 1), ((1, 1),) * 3, 2, "circular"),
]


@pytest.mark.parametrize("case", TORCH_CASES, ids=lambda c: f"{c[0]}d-{c[-1]}-{c[2]}")
def test_against_torch_forward_and_autograd(rng, method, case):
    torch = pytest.importorskip("torch")
    nd, xs, ws, stride, dilation, pads, groups, pad_mode = case
    x, w, b = _operands(rng, xs, ws)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    yt = _torch_conv(torch, xt, wt, bt, nd, stride, pads, dilation, groups, pad_mode)
    kw = dict(stride=stride, padding=pads, dilation=dilation, groups=groups, pad_mode=pad_mode)
    y = CONV[nd](x, w, b, method=method, **kw)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    if nd == 3:
        return
    gy = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(gy))
    backward = ops.conv1d_backward if nd == 1 else ops.conv2d_backward
    gx, gw, gb = backward(gy, x, w, method=method, **kw)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_against_torch_float32_layer(rng, method):
    torch = pytest.importorskip("torch")
    x, w, b = _operands(rng, (4, 6, 12, 12), (8, 6, 5, 5), dtype=np.float32)
    yt = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), padding=2)
    y = ops.conv2d(x, w, b, padding=2, method=method)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, yt.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "pad_mode,ndimage_mode",
    [("zeros", "constant"), ("reflect", "mirror"), ("replicate", "nearest"), ("circular", "wrap")],
)
def test_single_channel_against_scipy_ndimage(rng, method, pad_mode, ndimage_mode):
    ndimage = pytest.importorskip("scipy.ndimage")
    img = rng.standard_normal((11, 14))
    k = rng.standard_normal((3, 5))
    y = ops.conv2d(img[None, None], k[None, None], padding=(1, 2), pad_mode=pad_mode, method=method)
    expected = ndimage.correlate(img, k, mode=ndimage_mode)
    np.testing.assert_allclose(y[0, 0], expected, rtol=1e-12, atol=1e-12)
    true_conv = ops.conv2d(
        img[None, None], k[None, None], padding=(1, 2), pad_mode=pad_mode, flip=True, method=method
    )
    np.testing.assert_allclose(
        true_conv[0, 0], ndimage.convolve(img, k, mode=ndimage_mode), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("mode", ["valid", "full", "same"])
def test_single_channel_against_scipy_signal(rng, method, mode):
    signal = pytest.importorskip("scipy.signal")
    img = rng.standard_normal((9, 12))
    k = rng.standard_normal((3, 3))  # odd: scipy's "same" centring matches ours
    y = ops.conv2d(img[None, None], k[None, None], padding=mode, method=method)[0, 0]
    np.testing.assert_allclose(y, signal.correlate2d(img, k, mode=mode), atol=1e-12)
    yf = ops.conv2d(img[None, None], k[None, None], padding=mode, flip=True, method=method)[0, 0]
    np.testing.assert_allclose(yf, signal.convolve2d(img, k, mode=mode), atol=1e-12)


# ----------------------------------------------------------------------------- gradients
def _fd_check(rng, nd, method, **kw):
    """Finite differences of L = sum(G * conv(x, w, b)) in float64."""
    conv = CONV[nd]
    backward = ops.conv1d_backward if nd == 1 else ops.conv2d_backward
    groups = kw.get("groups", 1)
    xs = (2, 2 * groups) + ((7,) if nd == 1 else (4, 5))
    ws = (2 * groups, 2) + ((3,) if nd == 1 else (3, 2))
    x, w, b = _operands(rng, xs, ws)
    g = rng.standard_normal(conv(x, w, b, method=method, **kw).shape)
    gx, gw, gb = backward(g, x, w, method=method, **kw)
    num_x = numerical_gradient(lambda v: np.sum(g * conv(v, w, b, method=method, **kw)), x)
    num_w = numerical_gradient(lambda v: np.sum(g * conv(x, v, b, method=method, **kw)), w)
    num_b = numerical_gradient(lambda v: np.sum(g * conv(x, w, v, method=method, **kw)), b)
    np.testing.assert_allclose(gx, num_x, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gw, num_w, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(gb, num_b, rtol=1e-6, atol=1e-7)
    _, gw_only, gb_only = backward(g, x, w, method=method, need_input_grad=False, **kw)
    assert _ is None
    np.testing.assert_allclose(gw_only, gw, atol=1e-12)


GRAD_CASES = [
    {},
    {"stride": 2, "padding": 1},
    {"padding": "same", "dilation": 2, "flip": True},
    {"groups": 2, "padding": "full"},
    {"padding": ((2, 0), (0, 1)), "stride": (1, 2)},
]


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("case", GRAD_CASES, ids=str)
def test_conv2d_gradients_finite_differences(rng, method, pad_mode, case):
    if pad_mode != "zeros" and case.get("padding") == "full":
        case = {**case, "padding": 1}
    _fd_check(rng, 2, method, pad_mode=pad_mode, **case)


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize(
    "case", [{}, {"stride": 2, "padding": 2, "flip": True}, {"groups": 2, "padding": "same"}]
)
def test_conv1d_gradients_finite_differences(rng, method, pad_mode, case):
    _fd_check(rng, 1, method, pad_mode=pad_mode, **case)


@pytest.mark.parametrize("nd", [1, 2])
def test_flip_gradient_is_flipped_correlation_gradient(rng, nd):
    x, w, _ = _operands(rng, (1, 2) + (6,) * nd, (3, 2) + (3,) * nd)
    g = rng.standard_normal(CONV[nd](x, w).shape)
    backward = ops.conv1d_backward if nd == 1 else ops.conv2d_backward
    flipped = w[(Ellipsis,) + (slice(None, None, -1),) * nd]
    gx_t, gw_t, _ = backward(g, x, w, flip=True)
    gx_c, gw_c, _ = backward(g, x, flipped)
    np.testing.assert_allclose(gx_t, gx_c, atol=1e-12)
    np.testing.assert_allclose(gw_t, gw_c[(Ellipsis,) + (slice(None, None, -1),) * nd], atol=1e-12)


# ----------------------------------------------------------------------------- NaN / inf
def test_nan_propagates_to_exactly_the_windows_that_see_it(rng, method):
    x, w, _ = _operands(rng, (1, 1, 6, 6), (1, 1, 3, 3), bias=False)
    x[0, 0, 2, 3] = np.nan
    y = ops.conv2d(x, w, padding=1, method=method)
    seen = np.zeros((6, 6), bool)
    for i, j in itertools.product(range(6), range(6)):
        seen[i, j] = abs(i - 2) <= 1 and abs(j - 3) <= 1
    np.testing.assert_array_equal(np.isnan(y[0, 0]), seen)


def test_inf_propagates(method):
    x = np.ones((1, 1, 5, 5))
    x[0, 0, 0, 0] = np.inf
    w = np.ones((1, 1, 2, 2))
    y = ops.conv2d(x, w, method=method)
    assert np.isposinf(y[0, 0, 0, 0]) and np.isfinite(y[0, 0, 1:, 1:]).all()
    w[0, 0, 0, 0] = 0.0  # inf * 0 is NaN under IEEE, as in a plain loop
    assert np.isnan(ops.conv2d(x, w, method=method)[0, 0, 0, 0])


def test_im2col_threaded_parts_agree(rng, monkeypatch):
    # force the batch split over 3 threads, with chunks smaller than a part
    from cnnkit.kernels import threads

    monkeypatch.setattr(ops, "_THREADED_FLOPS", 0)
    monkeypatch.setattr(ops, "_COLS_BUDGET", 1)
    monkeypatch.setattr(threads, "worker_count", lambda: 3)
    x, w, b = _operands(rng, (5, 4, 6, 5), (6, 2, 3, 3))
    kw = {"padding": 1, "groups": 2, "stride": (1, 2)}
    y = ops.conv2d(x, w, b, method="im2col", **kw)
    np.testing.assert_allclose(y, conv_reference(x, w, b, **kw), atol=1e-12)
    gy = rng.standard_normal(y.shape)
    got = ops.conv2d_backward(gy, x, w, method="im2col", **kw)
    monkeypatch.setattr(threads, "worker_count", lambda: 1)
    expected = ops.conv2d_backward(gy, x, w, method="loop", **kw)
    for a, e in zip(got, expected):
        np.testing.assert_allclose(a, e, atol=1e-12)


def test_blas_thread_count_restored():
    from cnnkit.kernels import threads

    blas = threads._openblas()
    if blas is None:
        pytest.skip("numpy is not linked to OpenBLAS")
    setter, getter = blas
    before = getter()
    with threads.single_threaded_blas():
        assert getter() == 1
    assert getter() == before


def _every_kernel(rng):
    """Outputs of every kernel family on one small problem (shared arrays, fixed seed)."""
    x, w, b = _operands(rng, (3, 4, 7, 9), (6, 2, 3, 2))
    out = []
    for kw in ({"padding": 1, "groups": 2}, {"stride": (2, 1), "groups": 2, "dilation": 2}):
        for method in METHODS:
            y = ops.conv2d(x, w, b, method=method, **kw)
            out += [y, *ops.conv2d_backward(np.cos(y), x, w, method=method, **kw)]
    y, idx = ops.max_pool2d(x, 3, 2, 1, ceil_mode=True, return_indices=True)
    out += [y, idx, ops.max_pool2d_backward(y, x, 3, 2, 1, True)]
    a = ops.avg_pool2d(x, 3, 2, 1, ceil_mode=True)
    out += [a, ops.avg_pool2d_backward(a, x, 3, 2, 1, True)]
    cols = ops.im2col(x, 3, padding=1)
    out += [cols, ops.col2im(cols, x.shape, 3, padding=1)]
    return out


def test_threaded_task_split_matches_one_thread(monkeypatch):
    from cnnkit.kernels import threads

    serial = _every_kernel(np.random.default_rng(7))
    monkeypatch.setattr(ops, "_THREADED_FLOPS", 0)
    monkeypatch.setattr(threads, "worker_count", lambda: 3)
    split = _every_kernel(np.random.default_rng(7))
    assert len(serial) == len(split) == 23
    for a, e in zip(split, serial):
        np.testing.assert_allclose(a, e, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("pad_mode,pad", [("circular", 4), ("reflect", 3), ("replicate", 6)])
def test_largest_allowed_padding(rng, method, pad_mode, pad):
    # circular may wrap the whole signal (pad == size), reflect up to size - 1
    x, w, b = _operands(rng, (2, 2, 4), (3, 2, 3))
    y = ops.conv1d(x, w, b, padding=pad, pad_mode=pad_mode, method=method)
    np.testing.assert_allclose(
        y, conv_reference(x, w, b, padding=pad, pad_mode=pad_mode), atol=1e-12
    )
    g = rng.standard_normal(y.shape)
    kw = {"padding": pad, "pad_mode": pad_mode, "method": method}
    gx, _, _ = ops.conv1d_backward(g, x, w, **kw)
    num = numerical_gradient(lambda v: np.sum(g * ops.conv1d(v, w, b, **kw)), x)
    np.testing.assert_allclose(gx, num, rtol=1e-6, atol=1e-7)


def test_half_and_long_double_inputs(rng):
    x = rng.standard_normal((1, 1, 5, 5))
    w = np.ones((1, 1, 3, 3))
    assert ops.conv2d(x.astype(np.float16), w.astype(np.float16)).dtype == np.float32
    assert ops.conv2d(x.astype(np.longdouble), w).dtype == np.float64


def test_threads_work_in_a_forked_child(rng, monkeypatch):
    import multiprocessing

    from cnnkit.kernels import threads

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    monkeypatch.setattr(ops, "_THREADED_FLOPS", 0)
    x, w, b = _operands(rng, (4, 2, 6, 6), (6, 2, 3, 3))
    expected = ops.conv2d(x, w, b, method="im2col")  # the parent's workers now exist
    assert threads._workers
    with multiprocessing.get_context("fork").Pool(1) as pool:
        # without the fix the child waits forever on the parent's dead pool threads
        got = pool.apply_async(ops.conv2d, (x, w, b), {"method": "im2col"}).get(timeout=60)
    np.testing.assert_allclose(got, expected)


def test_blas_pinning_nests_across_threads():
    import threading

    from cnnkit.kernels import threads

    blas = threads._openblas()
    if blas is None:
        pytest.skip("numpy is not linked to OpenBLAS")
    setter, getter = blas
    before = getter()
    inside, release = threading.Event(), threading.Event()

    def other():
        with threads.single_threaded_blas():
            inside.set()
            release.wait(10)

    worker = threading.Thread(target=other)
    worker.start()
    inside.wait(10)
    with threads.single_threaded_blas():
        assert getter() == 1
    assert getter() == 1  # the other thread is still inside
    release.set()
    worker.join()
    assert getter() == before


def _weight_grad_reference(gy, x, kernel, padding):
    """dL/dw by one sum per tap over the taps' true windows (stride 1, zero padding)."""
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n_out, (kh, kw) = gy.shape[1], kernel
    gw = np.zeros((n_out, x.shape[1], kh, kw))
    for o, c, a, b in itertools.product(range(n_out), range(x.shape[1]), range(kh), range(kw)):
        window = xp[:, c, a : a + gy.shape[2], b : b + gy.shape[3]]
        gw[o, c, a, b] = np.sum(gy[:, o] * window)
    return gw


@pytest.mark.parametrize("padding", [0, 1])
def test_inf_input_reaches_only_the_weight_taps_that_see_it(rng, method, padding):
    x = rng.standard_normal((2, 2, 5, 6))
    x[1, 0, 0, 5] = np.inf  # top-right corner: only the last kernel column ever sees it
    w = rng.standard_normal((3, 2, 3, 3))
    gy = rng.uniform(0.5, 1.0, (2, 3, 3 + 2 * padding, 4 + 2 * padding))
    _, gw, _ = ops.conv2d_backward(gy, x, w, padding=padding, method=method)
    with np.errstate(invalid="ignore"):
        expected = _weight_grad_reference(gy, x, (3, 3), padding)
    np.testing.assert_array_equal(np.isfinite(gw), np.isfinite(expected))
    assert np.isfinite(gw).sum() > 0 and not np.isfinite(gw).all()
    np.testing.assert_allclose(gw[np.isfinite(gw)], expected[np.isfinite(expected)], rtol=1e-12)


def test_inf_weight_reaches_only_the_inputs_under_its_tap(rng, method):
    x = rng.standard_normal((1, 1, 5, 6))
    w = rng.standard_normal((1, 1, 3, 3))
    w[0, 0, 0, 0] = np.inf
    gy = rng.uniform(0.5, 1.0, (1, 1, 3, 4))
    gx, _, _ = ops.conv2d_backward(gy, x, w, method=method)
    seen = np.zeros((5, 6), bool)
    seen[:3, :4] = True  # the (0, 0) tap touches x[i, j] for every output (i, j)
    np.testing.assert_array_equal(np.isposinf(gx[0, 0]), seen)
    assert np.isfinite(gx[0, 0][~seen]).all()


def _random_case(seed):
    """A random valid convolution: dims, channels, groups, kernel, stride, dilation, padding."""
    r = np.random.default_rng(seed)
    nd = int(r.integers(1, 4))
    groups = int(r.choice([1, 1, 2, 3]))
    cg, og = int(r.integers(1, 3)), int(r.integers(1, 3))
    kernel = tuple(int(k) for k in r.integers(1, 4, nd))
    stride = tuple(int(s) for s in r.integers(1, 3, nd))
    dilation = tuple(int(d) for d in r.integers(1, 3, nd))
    pads = tuple((int(a), int(b)) for a, b in r.integers(0, 3, (nd, 2)))
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    sizes = tuple(int(max(sp, 3) + r.integers(0, 5)) for sp in spans)
    pad_mode = str(r.choice(["zeros", "reflect", "replicate", "circular"]))
    x_shape = (int(r.integers(1, 3)), cg * groups, *sizes)
    w_shape = (og * groups, cg, *kernel)
    kw = dict(stride=stride, padding=pads, dilation=dilation, groups=groups, pad_mode=pad_mode)
    return nd, x_shape, w_shape, kw, bool(r.integers(0, 2))


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(60))
def test_random_configurations_against_torch(method, seed):
    torch = pytest.importorskip("torch")
    nd, xs, ws, kw, flip = _random_case(seed)
    rng = np.random.default_rng(seed)
    x, w, b = _operands(rng, xs, ws)
    wt_np = w[(Ellipsis,) + (slice(None, None, -1),) * nd] if flip else w
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(wt_np.copy(), requires_grad=True)  # copy: torch rejects negative strides
    yt = _torch_conv(
        torch, xt, wt, torch.tensor(b), nd, kw["stride"], kw["padding"], kw["dilation"],
        kw["groups"], kw["pad_mode"],
    )  # fmt: skip
    y = CONV[nd](x, w, b, flip=flip, method=method, **kw)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    if nd == 3:
        return
    gy = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(gy))
    backward = ops.conv1d_backward if nd == 1 else ops.conv2d_backward
    gx, gw, gb = backward(gy, x, w, flip=flip, method=method, **kw)
    expected_gw = wt.grad.numpy()
    if flip:
        expected_gw = expected_gw[(Ellipsis,) + (slice(None, None, -1),) * nd]
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, expected_gw, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gb, gy.sum(axis=(0, *range(2, gy.ndim))), rtol=1e-12)


@pytest.mark.parametrize("nd", [1, 2])
@pytest.mark.parametrize("kw", [{"padding": 1}, {"stride": 2, "padding": "same", "groups": 2}])
def test_float32_gradients_match_float64(rng, method, nd, kw):
    # training runs in float32: same gradients (to float32 rounding), dtype kept
    x, w, _ = _operands(rng, (4, 4) + (9,) * nd, (6, 4 // kw.get("groups", 1)) + (3,) * nd)
    backward = ops.conv1d_backward if nd == 1 else ops.conv2d_backward
    gy = rng.standard_normal(CONV[nd](x, w, **kw).shape)
    exact = backward(gy, x, w, method=method, **kw)
    single = backward(*(a.astype(np.float32) for a in (gy, x, w)), method=method, **kw)
    for s, e in zip(single, exact):
        assert s.dtype == np.float32
        np.testing.assert_allclose(s, e, rtol=1e-4, atol=1e-4 * np.abs(e).max())


@pytest.mark.parametrize("quad", [True, False], ids=["flat4", "flat1"])
@pytest.mark.parametrize(
    "x_shape,w_shape,kw",
    [
        ((2, 3, 9, 8), (8, 3, 3, 3), {"padding": 1}),  # 3-tap rows
        ((2, 2, 9, 10), (4, 2, 5, 5), {"padding": 2}),  # 3 + 2 taps per row
        ((1, 2, 7, 9), (4, 2, 2, 4), {"padding": ((1, 0), (2, 1))}),  # even: 3 + 1, 2
        ((2, 3, 10, 9), (4, 3, 1, 6), {"dilation": (2, 1), "padding": "same"}),  # 3 + 3
        ((2, 4, 11, 8), (8, 2, 3, 2), {"dilation": 2, "groups": 2, "padding": "full"}),
        ((1, 6, 6, 7), (12, 2, 3, 1), {"groups": 3, "pad_mode": "circular", "padding": 1}),
        ((2, 4, 6, 6), (12, 2, 3, 3), {"groups": 2, "stride": 2}),  # strided: row kernel
    ],
    ids=str,
)
def test_flat_kernels_one_and_four_channels_per_pass(rng, quad, x_shape, w_shape, kw):
    # stride-1 layers whose groups have 4k output channels take conv_forward_flat4 unless it
    # is switched off; both must match the reference (odd/even kernels, dilation, groups)
    def loop_conv2d(x, w, b):
        plan = ops._plan_conv(
            2,
            x,
            w,
            b,
            kw.get("stride", 1),
            kw.get("padding", 0),
            kw.get("dilation", 1),
            kw.get("groups", 1),
            kw.get("pad_mode", "zeros"),
            False,
            "loop",
        )
        y5 = ops._loop_forward(plan, four_channels=quad)
        return y5.reshape(plan.out5[:2] + plan.out5[3:])

    x, w, b = _operands(rng, x_shape, w_shape)
    y = loop_conv2d(x, w, b)
    expected = conv_reference(x, w, b, **kw)
    assert y.shape == expected.shape
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    x, w, b = _operands(rng, x_shape, w_shape, dtype=np.float32)
    y = loop_conv2d(x, w, b)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, conv_reference(x, w, b, **kw), rtol=1e-4, atol=1e-4)
    if quad:  # the public entry point takes the same path
        np.testing.assert_array_equal(ops.conv2d(x, w, b, method="loop", **kw), y)


@pytest.mark.parametrize("padding", [0, 1, "same"], ids=str)
def test_flat_four_channel_kernel_3d(rng, padding):
    # volumes: every depth plane of the padded input has its own slack after its cells
    _check(rng, (2, 2, 4, 5, 6), (8, 1, 2, 3, 3), "loop", padding=padding, groups=2)
    _check(rng, (1, 3, 5, 4, 7), (4, 3, 3, 2, 4), "loop", padding=padding, dilation=(2, 1, 1))


@pytest.mark.parametrize("batch", [5, 2], ids=["pad-per-thread", "tasks-split"])
def test_flat_four_channel_kernel_threaded(rng, monkeypatch, batch):
    # batch >= threads: each thread pads and convolves its own samples; otherwise the input
    # is padded first and the tasks are split
    from cnnkit.kernels import threads

    monkeypatch.setattr(ops, "_THREADED_FLOPS", 0)
    monkeypatch.setattr(threads, "worker_count", lambda: 3)
    _check(rng, (batch, 3, 6, 7), (8, 3, 3, 3), "loop", padding=1)
    _check(rng, (batch, 2, 9, 5), (4, 2, 5, 2), "loop", padding=(2, 0))
