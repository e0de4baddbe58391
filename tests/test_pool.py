"""Pooling forward/backward against the plain-loop reference, PyTorch and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from reference import numerical_gradient, pool_reference

from cnnkit import ops

# (kernel_size, stride, padding) on a 7x9 input: square/non-square, overlapping windows,
# stride not dividing the input, maximal padding (kernel // 2).
GRID_2D = [
    (2, None, 0),
    (3, 2, 1),
    ((2, 3), (1, 2), (1, 0)),
    (3, 3, 1),
    ((3, 1), (2, 1), (1, 0)),
    (4, 3, 2),
]


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("k,s,p", GRID_2D, ids=str)
def test_max_pool2d_against_reference(rng, k, s, p, ceil_mode):
    x = rng.standard_normal((2, 3, 7, 9))
    y, idx = ops.max_pool2d(x, k, s, p, ceil_mode=ceil_mode, return_indices=True)
    ref_y, ref_idx = pool_reference(x, k, s, p, ceil_mode, "max")
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_array_equal(ops.max_pool2d(x, k, s, p, ceil_mode), y)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("k,s,p", GRID_2D, ids=str)
def test_avg_pool2d_against_reference(rng, k, s, p, ceil_mode, count_include_pad):
    x = rng.standard_normal((2, 3, 7, 9))
    y = ops.avg_pool2d(x, k, s, p, ceil_mode, count_include_pad)
    ref = pool_reference(x, k, s, p, ceil_mode, "avg", count_include_pad)
    np.testing.assert_allclose(y, ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("k,s,p", [(2, None, 0), (3, 2, 1), (4, 3, 2), (5, 1, 2)])
def test_pool1d_against_reference(rng, k, s, p, ceil_mode):
    x = rng.standard_normal((2, 3, 12))
    y, idx = ops.max_pool1d(x, k, s, p, ceil_mode, return_indices=True)
    ref_y, ref_idx = pool_reference(x, k, s, p, ceil_mode, "max")
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(idx, ref_idx)
    for cip in (True, False):
        avg = ops.avg_pool1d(x, k, s, p, ceil_mode, cip)
        np.testing.assert_allclose(avg, pool_reference(x, k, s, p, ceil_mode, "avg", cip))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_dtype_preserved(rng, dtype):
    x = rng.standard_normal((2, 2, 6, 6)).astype(dtype)
    assert ops.max_pool2d(x, 2).dtype == dtype
    assert ops.avg_pool2d(x, 2).dtype == dtype
    assert ops.max_pool1d(x[:, :, 0], 2).dtype == dtype
    assert ops.global_avg_pool(x).dtype == dtype
    gy = np.ones((2, 2, 3, 3), dtype)
    assert ops.max_pool2d_backward(gy, x, 2).dtype == dtype
    assert ops.avg_pool2d_backward(gy, x, 2).dtype == dtype


def test_max_pool_ties_pick_first():
    x = np.zeros((1, 1, 4, 4))
    y, idx = ops.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(idx[0, 0], [[0, 2], [8, 10]])
    g = ops.max_pool2d_backward(np.ones((1, 1, 2, 2)), x, 2)
    assert g.sum() == 4 and g[0, 0, 0, 0] == 1 and g[0, 0, 0, 1] == 0


# ----------------------------------------------------------------------------- PyTorch
TORCH_GRID = [
    (3, 2, 1, True),
    (3, 2, 1, False),
    ((2, 3), (2, 2), (1, 1), True),
    (2, 2, 0, True),
    (5, 3, 2, True),
]


@pytest.mark.parametrize("k,s,p,ceil_mode", TORCH_GRID, ids=str)
def test_pools_against_torch(rng, k, s, p, ceil_mode):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((2, 3, 8, 11))
    xt = torch.tensor(x, requires_grad=True)
    yt, it = F.max_pool2d(xt, k, s, p, ceil_mode=ceil_mode, return_indices=True)
    y, idx = ops.max_pool2d(x, k, s, p, ceil_mode, return_indices=True)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    gy = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(gy))
    np.testing.assert_allclose(
        ops.max_pool2d_backward(gy, x, k, s, p, ceil_mode, indices=idx), xt.grad.numpy()
    )
    for cip in (True, False):
        xt = torch.tensor(x, requires_grad=True)
        at = F.avg_pool2d(xt, k, s, p, ceil_mode=ceil_mode, count_include_pad=cip)
        a = ops.avg_pool2d(x, k, s, p, ceil_mode, cip)
        np.testing.assert_allclose(a, at.detach().numpy(), rtol=1e-12, atol=1e-12)
        at.backward(torch.tensor(gy))
        grad = ops.avg_pool2d_backward(gy, x, k, s, p, ceil_mode, cip)
        np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k,s,p,ceil_mode", [(3, 2, 1, True), (2, None, 0, False), (4, 3, 2, True)])
def test_pool1d_against_torch(rng, k, s, p, ceil_mode):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x = rng.standard_normal((2, 3, 13))
    yt, it = F.max_pool1d(torch.tensor(x), k, s, p, ceil_mode=ceil_mode, return_indices=True)
    y, idx = ops.max_pool1d(x, k, s, p, ceil_mode, return_indices=True)
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    for cip in (True, False):
        at = F.avg_pool1d(torch.tensor(x), k, s, p, ceil_mode=ceil_mode, count_include_pad=cip)
        np.testing.assert_allclose(ops.avg_pool1d(x, k, s, p, ceil_mode, cip), at.numpy())


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize(
    "k,s,p,ceil_mode", [(2, None, 0, False), (3, 2, 1, True), ((2, 3), 1, 0, False)]
)
def test_pool2d_gradients_finite_differences(rng, k, s, p, ceil_mode):
    x = rng.standard_normal((1, 2, 5, 6))
    y = ops.max_pool2d(x, k, s, p, ceil_mode)
    g = rng.standard_normal(y.shape)
    num = numerical_gradient(lambda v: np.sum(g * ops.max_pool2d(v, k, s, p, ceil_mode)), x)
    np.testing.assert_allclose(ops.max_pool2d_backward(g, x, k, s, p, ceil_mode), num, atol=1e-7)
    _, idx = ops.max_pool2d(x, k, s, p, ceil_mode, return_indices=True)
    np.testing.assert_array_equal(
        ops.max_pool2d_backward(g, x, k, s, p, ceil_mode, indices=idx),
        ops.max_pool2d_backward(g, x, k, s, p, ceil_mode),
    )
    for cip in (True, False):
        num = numerical_gradient(
            lambda v, c=cip: np.sum(g * ops.avg_pool2d(v, k, s, p, ceil_mode, c)), x
        )
        grad = ops.avg_pool2d_backward(g, x, k, s, p, ceil_mode, cip)
        np.testing.assert_allclose(grad, num, atol=1e-7)


def test_global_avg_pool_and_gradient(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    y = ops.global_avg_pool(x)
    expected = np.array([[x[n, c].sum() / 20 for c in range(3)] for n in range(2)])
    np.testing.assert_allclose(y, expected, rtol=1e-13)
    g = rng.standard_normal((2, 3))
    num = numerical_gradient(lambda v: np.sum(g * ops.global_avg_pool(v)), x)
    np.testing.assert_allclose(ops.global_avg_pool_backward(g, x.shape), num, atol=1e-8)
    np.testing.assert_allclose(ops.global_avg_pool(x[:, :, 0]), x[:, :, 0].mean(axis=2))


# ----------------------------------------------------------------------------- NaN / inf
def test_max_pool_propagates_nan_like_torch():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    y = ops.max_pool2d(x, 2)
    assert np.isnan(y[0, 0, 0, 0])
    assert np.isfinite(y[0, 0, 1]).all() and np.isfinite(y[0, 0, 0, 1])
    g = ops.max_pool2d_backward(np.ones((1, 1, 2, 2)), x, 2)
    assert g[0, 0, 0, 1] == 1  # the NaN is the window's "maximum" and takes its gradient
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(y, torch.nn.functional.max_pool2d(torch.tensor(x), 2).numpy())


def test_avg_pool_propagates_nan_and_inf():
    x = np.ones((1, 1, 4, 4))
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 3, 3] = np.inf
    y = ops.avg_pool2d(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and np.isposinf(y[0, 0, 1, 1])
    assert y[0, 0, 0, 1] == 1 and y[0, 0, 1, 0] == 1
    m = ops.max_pool2d(-x, 2)
    assert np.isnan(m[0, 0, 0, 0]) and m[0, 0, 1, 1] == -1


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(40))
def test_random_pool_configurations_against_torch(seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    r = np.random.default_rng(seed)
    nd = int(r.integers(1, 3))
    k = tuple(int(v) for v in r.integers(1, 5, nd))
    s = tuple(int(v) for v in r.integers(1, 4, nd))
    p = tuple(int(r.integers(0, kk // 2 + 1)) for kk in k)
    ceil_mode, cip = bool(r.integers(0, 2)), bool(r.integers(0, 2))
    x = r.standard_normal((2, 3, *(int(v) for v in r.integers(max(k), 12, nd))))
    xt = torch.tensor(x, requires_grad=True)
    tmax = F.max_pool1d if nd == 1 else F.max_pool2d
    tavg = F.avg_pool1d if nd == 1 else F.avg_pool2d
    yt, it = tmax(xt, k, s, p, ceil_mode=ceil_mode, return_indices=True)
    mine = ops.max_pool1d if nd == 1 else ops.max_pool2d
    y, idx = mine(x, k, s, p, ceil_mode, return_indices=True)
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    at = tavg(xt, k, s, p, ceil_mode=ceil_mode, count_include_pad=cip)
    avg = (ops.avg_pool1d if nd == 1 else ops.avg_pool2d)(x, k, s, p, ceil_mode, cip)
    np.testing.assert_allclose(avg, at.detach().numpy(), rtol=1e-12, atol=1e-12)
    if nd == 2:
        g = r.standard_normal(y.shape)
        (gx_max,) = torch.autograd.grad(yt, xt, torch.tensor(g))
        (gx_avg,) = torch.autograd.grad(at, xt, torch.tensor(g))
        np.testing.assert_allclose(ops.max_pool2d_backward(g, x, k, s, p, ceil_mode), gx_max)
        grad = ops.avg_pool2d_backward(g, x, k, s, p, ceil_mode, cip)
        np.testing.assert_allclose(grad, gx_avg, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 2, 7, 9), (3, 1, 2, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_2x2_stride_2_kernels_match_the_general_ones(rng, shape, dtype):
    from cnnkit.kernels import pool as kernels

    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, 0, :2] = x[0, 0, 1, 0]  # ties: the first in row-major order wins
    x[-1, -1, -1, -1] = np.nan
    y, idx = ops.max_pool2d(x, 2, return_indices=True)
    ref_y, ref_idx = pool_reference(x, 2, 2, 0, False, "max")
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(idx, ref_idx)
    oh, ow = shape[2] // 2, shape[3] // 2
    general = np.empty((*shape[:2], oh, ow), dtype), np.empty((*shape[:2], oh, ow), np.int64)
    kernels.max_pool_forward(x, *general, 2, 2, 2, 2, 0, 0, 0, shape[0] * shape[1])
    np.testing.assert_array_equal(y, general[0])
    np.testing.assert_array_equal(idx, general[1])
    x = rng.standard_normal(shape).astype(dtype)
    avg = ops.avg_pool2d(x, 2)
    expected = np.empty_like(avg)
    kernels.avg_pool_forward(x, expected, 2, 2, 2, 2, 0, 0, True, 0, shape[0] * shape[1])
    np.testing.assert_array_equal(avg, expected)
    gy = rng.standard_normal(avg.shape).astype(dtype)
    gx = ops.avg_pool2d_backward(gy, x, 2)
    expected = np.zeros_like(x)
    kernels.avg_pool_backward(gy, expected, 2, 2, 2, 2, 0, 0, True, 0, shape[0] * shape[1])
    np.testing.assert_array_equal(gx, expected)
