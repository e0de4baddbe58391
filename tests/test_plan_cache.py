"""ops keeps the checked shape part of a convolution's plan per shapes, dtypes and options:
a kept plan is never used for a call that differs in any of them, and every check still
fires on a later call with bad input."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from reference import conv_reference

from cnnkit import memory, ops
from cnnkit.kernels import threads

BASE = dict(stride=1, padding=1, dilation=1, groups=1, pad_mode="zeros", flip=False)


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch):
    monkeypatch.setattr(ops, "_SHAPES", {})


def _check(x, w, b=None, **opts):
    got = ops.conv2d(x, w, b, **opts)
    opts.pop("method", None)
    tol = 1e-10 if got.dtype == np.float64 else 1e-4
    np.testing.assert_allclose(got, conv_reference(x, w, b, **opts), rtol=tol, atol=tol)
    return got


@pytest.mark.parametrize(
    "change",
    [
        dict(x_shape=(2, 4, 9, 7)),
        dict(w_shape=(6, 4, 3, 3)),
        dict(w_shape=(4, 4, 5, 3)),
        dict(x_dtype=np.float32),
        dict(w_dtype=np.float32),
        dict(bias=True),
        dict(stride=2),
        dict(stride=(1, 2)),
        dict(padding=0),
        dict(padding=((0, 2), (1, 0))),
        dict(padding="same"),
        dict(dilation=2),
        dict(groups=2),
        dict(pad_mode="reflect"),
        dict(pad_mode="circular"),
        dict(flip=True),
        dict(method="loop"),
        dict(method="im2col"),
    ],
    ids=str,
)
def test_a_kept_plan_is_not_used_for_other_shapes_dtypes_or_options(rng, change):
    x = rng.standard_normal((2, 4, 8, 8))
    w = rng.standard_normal((4, 4, 3, 3))
    first = _check(x, w, **BASE)
    kept = len(ops._SHAPES)
    assert kept == 1
    opts = dict(BASE)
    for name in ("stride", "padding", "dilation", "groups", "pad_mode", "flip", "method"):
        opts[name] = change.get(name, opts.get(name, "auto"))
    x2 = rng.standard_normal(change.get("x_shape", x.shape)).astype(change.get("x_dtype", x.dtype))
    shape = change.get("w_shape", w.shape)
    w2 = rng.standard_normal((shape[0], shape[1] // opts["groups"], *shape[2:]))
    w2 = w2.astype(change.get("w_dtype", w.dtype))
    b2 = rng.standard_normal(w2.shape[0]) if change.get("bias") else None
    second = _check(x2, w2, b2, **opts)
    assert len(ops._SHAPES) == 2  # a plan of its own
    assert second.dtype == (np.float32 if x2.dtype == w2.dtype == np.float32 else np.float64)
    again = _check(x, w, **BASE)  # the first plan still serves the first call
    np.testing.assert_array_equal(again, first)


def test_new_operands_of_the_same_shapes_are_used(rng):
    x = rng.standard_normal((1, 3, 10, 9))
    w = rng.standard_normal((5, 3, 3, 3))
    _check(x, w, **BASE)
    for _ in range(2):
        x = rng.standard_normal(x.shape)
        w = rng.standard_normal(w.shape)
        _check(x, w, **BASE)
        _check(np.asfortranarray(x), w[:, :, ::-1, :], **BASE)  # strided operands
    assert len(ops._SHAPES) == 1


def test_depthwise_kernels_are_tested_for_rank_one_on_every_call(rng):
    x = rng.standard_normal((1, 2, 70, 70)).astype(np.float32)
    rank_one = np.outer(np.arange(1.0, 6.0), np.ones(5)).astype(np.float32)
    general = rng.standard_normal((2, 1, 5, 5)).astype(np.float32)
    for w in (np.stack([rank_one[None], rank_one[None]]), general, np.stack([rank_one[None]] * 2)):
        _check(x, w, **dict(BASE, groups=2, padding=2))
    assert len(ops._SHAPES) == 1


@pytest.mark.parametrize(
    "name, bad, message",
    [
        ("groups", True, "groups must be an int"),
        ("groups", 1.0, "groups must be an int"),
        ("stride", 1.0, "stride must be"),
        ("stride", True, "stride must be"),
        ("padding", 1.0, "padding must be"),
        ("padding", (True, 1), "padding must be"),
        ("dilation", [1, True], "dilation must be"),
        ("flip", 0, "flip must be True or False"),
        ("flip", "no", "flip must be True or False"),
        ("pad_mode", "zero", "pad_mode must be one of"),
        ("method", "Auto", "method must be one of"),
    ],
)
def test_checks_fire_after_a_good_call_with_equal_looking_options(rng, name, bad, message):
    x = rng.standard_normal((1, 2, 6, 6))
    w = rng.standard_normal((2, 2, 3, 3))
    ops.conv2d(x, w, **BASE)
    with pytest.raises(ValueError, match=message):
        ops.conv2d(x, w, **dict(BASE, **{name: bad}))
    with pytest.raises(ValueError, match=message):  # and again: a refusal is not kept
        ops.conv2d(x, w, **dict(BASE, **{name: bad}))


@pytest.mark.parametrize(
    "x, w, b, message",
    [
        (np.ones((1, 2, 6, 6), complex), np.ones((2, 2, 3, 3)), None, "x must be a real"),
        (np.ones((1, 2, 6, 6)).tolist(), np.ones((2, 2, 3, 3), bool), None, None),
        (np.ones((1, 2, 6, 6)), np.ones((2, 2, 3, 3)), np.ones(3), "bias must have shape"),
        (np.ones((1, 2, 6, 6)), np.ones((2, 2, 3, 3)), "1", "bias must be a real"),
        (np.ones((1, 3, 6, 6)), np.ones((2, 2, 3, 3)), None, "channel mismatch"),
        (np.ones((1, 2, 1, 1)), np.ones((2, 2, 3, 3)), None, "kernel larger than padded"),
        (np.ones((0, 2, 6, 6)), np.ones((2, 2, 3, 3)), None, "x must not be empty"),
    ],
)
def test_operand_checks_fire_after_a_good_call(rng, x, w, b, message):
    ops.conv2d(np.ones((1, 2, 6, 6)), np.ones((2, 2, 3, 3)), np.ones(2), padding=0)
    for _ in range(2):
        if message is None:  # lists and bools are converted, not refused
            assert ops.conv2d(x, w, b, padding=0).shape == (1, 2, 4, 4)
            continue
        with pytest.raises(ValueError, match=message):
            ops.conv2d(x, w, b, padding=0)


def test_the_memory_check_runs_on_every_call(rng, monkeypatch):
    x = rng.standard_normal((2, 3, 16, 16))
    w = rng.standard_normal((4, 3, 3, 3))
    ops.conv2d(x, w)
    monkeypatch.setattr(memory, "budget_bytes", lambda: 1024)
    monkeypatch.setattr(memory, "SMALL_BYTES", 0)
    with pytest.raises(memory.MemoryBudgetError, match="convolution's output of shape"):
        ops.conv2d(x, w)


def test_bad_gradients_are_refused_after_a_good_backward_call(rng):
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((4, 3, 3, 3))
    ops.conv2d_backward(np.ones((2, 4, 6, 6)), x, w)
    with pytest.raises(ValueError, match="grad_y must have the output's shape"):
        ops.conv2d_backward(np.ones((2, 4, 6, 5)), x, w)
    with pytest.raises(ValueError, match="need_input_grad must be True or False"):
        ops.conv2d_backward(np.ones((2, 4, 6, 6)), x, w, need_input_grad=1)


def test_auto_follows_the_thread_count(rng, monkeypatch):
    # a single image with few taps per output takes the loop only with several threads
    # (float64: in float32 the register-blocked loop kernel takes it at any thread count)
    args = (None, 1, 1, 1, 1, "zeros", False, "auto")
    x = rng.standard_normal((1, 1, 256, 256))
    w = rng.standard_normal((8, 1, 3, 3))
    methods = []
    for workers in (1, 2, 1):
        monkeypatch.setattr(ops._threads, "worker_count", lambda workers=workers: workers)
        methods.append(ops._plan_conv(2, x, w, *args).method)
    assert methods == ["im2col", "loop", "im2col"]


@pytest.mark.parametrize(
    "opts, message",
    [
        (dict(kernel_size=2.0), "kernel_size must be an int"),
        (dict(kernel_size=np.float64(2.0)), "kernel_size must be an int"),
        (dict(kernel_size=True, stride=1), "kernel_size must be an int"),
        (dict(kernel_size=2, stride=2.0), "stride must be an int"),
        (dict(kernel_size=2, padding=False), "padding must be an int"),
        (dict(kernel_size=2, ceil_mode=0), "ceil_mode must be True or False"),
    ],
)
def test_pooling_checks_fire_after_a_good_call_with_equal_looking_options(opts, message):
    x = np.ones((1, 2, 8, 8))
    # equal values that are accepted
    good = {name: (bool if name == "ceil_mode" else int)(value) for name, value in opts.items()}
    for pool in (ops.max_pool2d, ops.avg_pool2d):
        pool(x, **good)
        for _ in range(2):
            with pytest.raises(ValueError, match=message):
                pool(x, **opts)


def test_worker_count_follows_numbas_setting_on_every_call():
    before = numba.get_num_threads()
    try:
        for n in (1, numba.config.NUMBA_NUM_THREADS, 1):
            numba.set_num_threads(n)
            assert threads.worker_count() == n == numba.get_num_threads()
    finally:
        numba.set_num_threads(before)
