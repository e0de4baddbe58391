"""Bad input raises one clear ValueError naming the argument, before any Numba kernel runs."""

from __future__ import annotations

import numpy as np
import pytest

from cnnkit import ops
from cnnkit.kernels import conv, im2col, pool

KERNELS = {
    conv: ("conv_forward", "conv_backward_input", "conv_backward_weight"),
    im2col: ("im2col_fill", "col2im_accumulate"),
    pool: ("max_pool_forward", "max_pool_backward", "avg_pool_forward", "avg_pool_backward"),
}


@pytest.fixture
def no_kernels(monkeypatch):
    """Any kernel call fails the test: validation must come first."""

    def boom(*args):
        raise AssertionError("a Numba kernel ran before validation")

    for module, names in KERNELS.items():
        for name in names:
            monkeypatch.setattr(module, name, boom)


X = np.ones((2, 4, 6, 6), np.float32)
W = np.ones((3, 4, 3, 3), np.float32)

CONV_ERRORS = [
    ({"x": np.ones((2, 3, 6, 6))}, r"channel mismatch: x has 3 channels"),
    ({"groups": 3}, r"groups=3 must divide the input channels"),
    ({"w": np.ones((3, 2, 3, 3)), "groups": 2}, r"groups=2 must divide the output channels"),
    ({"groups": 0}, r"groups must be an int >= 1"),
    ({"groups": 1.5}, r"groups must be an int"),
    ({"w": np.ones((3, 4, 7, 3))}, r"kernel larger than padded input in spatial dim 0"),
    ({"dilation": 3}, r"kernel larger than padded input"),
    ({"stride": 0}, r"stride must be >= 1"),
    ({"stride": -1}, r"stride must be >= 1"),
    ({"stride": (1, 2, 3)}, r"stride must be an int or a tuple of 2 ints"),
    ({"dilation": 0}, r"dilation must be >= 1"),
    ({"padding": -1}, r"padding must be >= 0"),
    ({"padding": "half"}, r"padding must be an int, a tuple, or one of"),
    ({"x": np.ones((0, 4, 6, 6))}, r"x must not be empty"),
    ({"w": np.ones((3, 4, 0, 3))}, r"w must not be empty"),
    ({"x": np.ones((4, 6, 6))}, r"x must be 4-D \(N, C, H, W\), got shape \(4, 6, 6\)"),
    ({"w": np.ones((3, 4, 3))}, r"w must be 4-D"),
    ({"x": X.astype(object)}, r"x must be a real numeric array .* got dtype object"),
    ({"x": np.full((2, 4, 6, 6), "a")}, r"x must be a real numeric array .* got dtype <U1"),
    ({"w": W.astype(np.complex64)}, r"w must be a real numeric array .* got dtype complex64"),
    ({"x": [[1, 2], [3]]}, r"x must be a numeric array"),
    ({"bias": np.ones(4)}, r"bias must have shape \(3,\)"),
    ({"bias": np.array(["a", "b", "c"])}, r"bias must be a real numeric array"),
    ({"pad_mode": "mirror"}, r"pad_mode must be one of zeros, reflect"),
    ({"method": "fft"}, r"method must be one of loop, im2col, winograd, auto"),
    ({"padding": 6, "pad_mode": "reflect"}, r"reflect padding must be smaller than the input"),
    ({"padding": 7, "pad_mode": "circular"}, r"circular padding must not exceed"),
]


@pytest.mark.parametrize("change,message", CONV_ERRORS, ids=lambda v: str(v)[:40])
@pytest.mark.parametrize("method", ["loop", "im2col"])
def test_conv2d_errors(no_kernels, change, message, method):
    args = {"x": X, "w": W, "bias": None, "method": method, **change}
    x, w, bias = args.pop("x"), args.pop("w"), args.pop("bias")
    with pytest.raises(ValueError, match=message):
        ops.conv2d(x, w, bias, **args)
    if "bias" in change:  # the backward takes no bias
        return
    with pytest.raises(ValueError, match=message):
        ops.conv2d_backward(np.ones((2, 3, 4, 4)), x, w, **args)


def test_conv1d_and_3d_errors(no_kernels):
    with pytest.raises(ValueError, match=r"x must be 3-D \(N, C, L\)"):
        ops.conv1d(X, W)
    with pytest.raises(ValueError, match=r"x must be 5-D \(N, C, D, H, W\)"):
        ops.conv3d(X, W)
    with pytest.raises(ValueError, match="kernel larger than padded input"):
        ops.conv1d(np.ones((1, 1, 3)), np.ones((1, 1, 4)))


def test_backward_grad_y_shape(no_kernels):
    with pytest.raises(ValueError, match=r"grad_y must have the output's shape \(2, 3, 4, 4\)"):
        ops.conv2d_backward(np.ones((2, 3, 5, 5)), X, W)
    with pytest.raises(ValueError, match="grad_y must be a real numeric array"):
        ops.conv2d_backward(np.ones((2, 3, 4, 4), complex), X, W)


POOL_ERRORS = [
    ({"kernel_size": 0}, r"kernel_size must be >= 1"),
    ({"kernel_size": 9}, r"kernel_size \(9, 9\) is larger than the padded input"),
    ({"stride": 0}, r"stride must be >= 1"),
    ({"padding": 2}, r"padding must be >= 0 and at most half the kernel size"),
    ({"padding": -1}, r"padding must be >= 0"),
    ({"x": np.ones((6, 6))}, r"x must be 4-D"),
    ({"x": np.ones((1, 1, 0, 6))}, r"x must not be empty"),
    ({"x": np.ones((1, 1, 6, 6), complex)}, r"x must be a real numeric array"),
]


@pytest.mark.parametrize("change,message", POOL_ERRORS, ids=lambda v: str(v)[:40])
def test_pool_errors(no_kernels, change, message):
    args = {"x": np.ones((1, 2, 6, 6)), "kernel_size": 3, "stride": None, "padding": 1, **change}
    x = args.pop("x")
    for fn in (ops.max_pool2d, ops.avg_pool2d):
        with pytest.raises(ValueError, match=message):
            fn(x, **args)
    for fn in (ops.max_pool2d_backward, ops.avg_pool2d_backward):
        with pytest.raises(ValueError, match=message):
            fn(np.ones((1, 2, 2, 2)), x, **args)


def test_pool_backward_argument_errors(no_kernels):
    x = np.ones((1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"grad_y must have the pooled output's shape"):
        ops.max_pool2d_backward(np.ones((1, 1, 3, 3)), x, 2)
    with pytest.raises(ValueError, match="indices must be an integer array"):
        ops.max_pool2d_backward(np.ones((1, 1, 2, 2)), x, 2, indices=np.zeros((1, 1, 2, 2)))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 16\)"):
        ops.max_pool2d_backward(np.ones((1, 1, 2, 2)), x, 2, indices=np.full((1, 1, 2, 2), 16))
    with pytest.raises(ValueError, match=r"x must be 3-D \(N, C, L\)"):
        ops.max_pool1d(x, 2)
    with pytest.raises(ValueError, match="x must be"):
        ops.global_avg_pool(np.ones((2, 3)))
    with pytest.raises(ValueError, match="grad_y must be"):
        ops.global_avg_pool_backward(np.ones((2, 2)), (2, 3, 4))


def test_pad_is_the_convolutions_padding_with_their_checks():
    x = np.arange(12.0).reshape(1, 1, 3, 4)
    pads = ((1, 2), (0, 1))
    for mode, np_mode in (("zeros", "constant"), ("replicate", "edge"), ("circular", "wrap")):
        want = np.pad(x, ((0, 0), (0, 0), *pads), mode=np_mode)
        np.testing.assert_array_equal(ops.pad(x, pads, mode), want)
    assert ops.pad(x, ((0, 0), (0, 0)), "reflect") is x
    with pytest.raises(ValueError, match="reflect padding must be smaller"):
        ops.pad(x, ((3, 0), (0, 0)), "reflect")
    with pytest.raises(ValueError, match="pad_mode must be one of"):
        ops.pad(x, pads, "mirror")
