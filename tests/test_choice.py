"""method="auto": the forward pass of stride-1 layers with 32-63 px rows and few taps per
output goes to the four-channel flat loop kernel, their gradients stay with im2col; results
agree with the plain-loop reference either way."""

from __future__ import annotations

import numpy as np
import pytest
from reference import conv_reference

from cnnkit import ops


@pytest.mark.parametrize(
    "args, kwargs, expected",
    [
        ((16, 9, 16), {"n_batch": 8, "n_positions": 1024, "out_width": 32}, "loop"),
        ((32, 9, 32), {"n_batch": 32, "n_positions": 1024, "out_width": 32}, "loop"),
        (
            (16, 9, 16),
            {"n_batch": 8, "n_positions": 1024, "out_width": 32, "backward": True},
            "im2col",
        ),
        ((64, 9, 64), {"n_batch": 8, "n_positions": 1024, "out_width": 32}, "im2col"),
        ((16, 9, 32), {"n_batch": 64, "n_positions": 196, "out_width": 14}, "im2col"),  # lenet_c2
        ((1, 25, 16), {"n_batch": 64, "n_positions": 784, "out_width": 28}, "im2col"),  # lenet_c1
        ((16, 7, 16), {"n_batch": 8, "n_positions": 1024, "out_width": 1024}, "im2col"),  # 1-D
        ((16, 9, 16), {"n_batch": 8, "n_positions": 1024}, "im2col"),  # stride 2: no out_width
        ((16, 9, 18), {"n_batch": 8, "n_positions": 1024, "out_width": 32}, "im2col"),  # 18 % 4
    ],
)
def test_forward_rule_for_short_rows(args, kwargs, expected):
    assert ops.choose_method(*args, **kwargs) == expected


@pytest.fixture
def choices(monkeypatch):
    seen = []
    original = ops.choose_method

    def spy(*args, **kwargs):
        seen.append((kwargs.get("backward", False), original(*args, **kwargs)))
        return seen[-1][1]

    monkeypatch.setattr(ops, "choose_method", spy)
    monkeypatch.setattr(ops, "_SHAPES", {})  # choices kept from earlier calls would skip the spy
    return seen


def test_auto_forward_loop_backward_im2col_both_correct(rng, choices):
    # a 3x5 kernel: 3x3 stride-1 layers with this many channels go to Winograd
    x = rng.standard_normal((2, 8, 32, 33))
    w = rng.standard_normal((8, 8, 3, 5))
    b = rng.standard_normal(8)
    y = ops.conv2d(x, w, b, padding=(1, 2))
    assert choices[-1] == (False, "loop")
    np.testing.assert_allclose(y, conv_reference(x, w, b, padding=(1, 2)), rtol=1e-10, atol=1e-10)
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = ops.conv2d_backward(gy, x, w, padding=(1, 2))
    assert choices[-1] == (True, "im2col")
    lx, lw, lb = ops.conv2d_backward(gy, x, w, padding=(1, 2), method="loop")
    np.testing.assert_allclose(gx, lx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, lw, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gb, lb, rtol=1e-10, atol=1e-10)


def test_strided_layer_keeps_im2col(rng, choices):
    x = rng.standard_normal((2, 8, 64, 64))
    w = rng.standard_normal((8, 8, 3, 3))
    y = ops.conv2d(x, w, stride=2, padding=1)
    assert choices[-1] == (False, "im2col")
    np.testing.assert_allclose(y, conv_reference(x, w, stride=2, padding=1), rtol=1e-10, atol=1e-9)
