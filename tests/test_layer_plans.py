"""ops.conv2d_layer / conv2d_layer_backward: a layer's convolution planned once per shape
gives what conv2d and conv2d_backward give, call after call, as the operands change."""

from __future__ import annotations

import numpy as np
import pytest
from reference import conv_reference

from cnnkit import ops

OPTS = dict(stride=(1, 1), padding=((1, 1), (1, 1)), dilation=(1, 1), groups=1)


@pytest.mark.parametrize(
    "xs, ws, opts",
    [
        ((4, 8, 6, 6), (8, 8, 3, 3), OPTS),  # winograd
        ((4, 1, 9, 9), (6, 1, 5, 5), dict(OPTS, padding=((2, 2), (2, 2)))),  # im2col
        ((2, 4, 9, 8), (4, 2, 3, 3), dict(OPTS, stride=(2, 1), groups=2)),
        ((2, 4, 7, 7), (4, 1, 5, 5), dict(OPTS, groups=4)),  # depthwise 5x5: tested for rank 1
    ],
)
def test_repeated_calls_follow_the_operands(rng, xs, ws, opts):
    cache: dict = {}
    for dtype in (np.float64, np.float32):
        for step in range(3):
            batch = xs[0] - (step == 2)  # a last, smaller batch gets its own plan
            x = rng.standard_normal((batch, *xs[1:])).astype(dtype)
            w = rng.standard_normal(ws).astype(dtype)
            if step == 1 and ws[1] == 1:
                w[:, 0] = np.outer(np.arange(1, ws[2] + 1), np.ones(ws[3]))  # rank 1 now
            b = rng.standard_normal(ws[0]).astype(dtype)
            y = ops.conv2d_layer(cache, x, w, b, **opts)
            assert y.dtype == dtype
            tol = 1e-10 if dtype == np.float64 else 1e-4
            pad = opts["padding"]
            want = conv_reference(
                x, w, b, stride=opts["stride"], padding=pad, groups=opts["groups"]
            )
            np.testing.assert_allclose(y, want, rtol=tol, atol=tol)
            gy = rng.standard_normal(y.shape).astype(dtype)
            got = ops.conv2d_layer_backward(cache, gy, x, w, **opts)
            expected = ops.conv2d_backward(gy, x, w, method="loop", **opts)
            for a, e in zip(got, expected):
                np.testing.assert_allclose(a, e, rtol=tol, atol=tol)


def test_plans_are_kept_and_reused(rng, monkeypatch):
    cache: dict = {}
    x = rng.standard_normal((2, 8, 6, 6))
    w = rng.standard_normal((8, 8, 3, 3))
    ops.conv2d_layer(cache, x, w, None, **OPTS)
    assert len(cache) == 1
    calls = []
    original = ops._plan_conv
    monkeypatch.setattr(ops, "_plan_conv", lambda *a, **k: calls.append(1) or original(*a, **k))
    y = ops.conv2d_layer(cache, x + 1, w, None, **OPTS)
    assert not calls
    np.testing.assert_allclose(y, conv_reference(x + 1, w, padding=1), atol=1e-10)
    # a strided view is checked and planned afresh, not reused
    xs = np.asfortranarray(x)
    ops.conv2d_layer(cache, xs, w, None, **OPTS)
    assert calls


def test_bad_grad_is_still_refused(rng):
    cache: dict = {}
    x = rng.standard_normal((2, 8, 6, 6))
    w = rng.standard_normal((8, 8, 3, 3))
    ops.conv2d_layer_backward(cache, np.ones((2, 8, 6, 6)), x, w, **OPTS)
    with pytest.raises(ValueError, match="grad_y must have the output's shape"):
        ops.conv2d_layer_backward(cache, np.ones((2, 8, 5, 6)), x, w, **OPTS)
