"""The register-blocked loop kernel (cnnkit.kernels.direct) against the plain-loop reference,
PyTorch, and itself split over threads."""

from __future__ import annotations

import numpy as np
import pytest
from attempts import attempts
from reference import conv_reference

from cnnkit import ops
from cnnkit.kernels import direct

# (x shape, w shape, padding): every row tail 0-7, with one and two rows per block (odd
# output heights end in a one-row block), odd and even output counts, one to three input
# channels, square, oblong and even kernels, and a row of two blocks (ow = 70)
CASES = [
    ((2, 1, 9, 8), (3, 1, 3, 3), 1),  # ow 8: one vector, no tail
    ((2, 3, 7, 12), (5, 3, 5, 5), 2),  # tail 4: both rows' tails in one vector
    ((1, 2, 6, 13), (2, 2, 3, 3), 1),  # tail 5: a tail vector per row
    ((1, 1, 5, 17), (4, 1, 3, 5), (1, 2)),  # tail 1, shared
    ((2, 2, 8, 11), (3, 2, 3, 3), 1),  # tail 3, shared
    ((1, 3, 6, 15), (5, 3, 2, 4), 0),  # tail 4 after an even kernel (oh 5, ow 12)
    ((1, 1, 4, 23), (2, 1, 1, 1), 0),  # tail 7, 1x1 kernel
    ((1, 1, 3, 42), (3, 1, 1, 1), 0),  # ow 42: a full block of 4 vectors, then 1 + tail 2
    ((2, 2, 4, 70), (6, 2, 7, 7), 3),  # ow 70: 4 vectors, then 4 + tail 6
    ((3, 1, 28, 28), (16, 1, 5, 5), 2),  # LeNet's first layer: 3 vectors + shared tail 4
]


def _operands(rng, x_shape, w_shape, bias=True):
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32) if bias else None
    return x, w, b


def _plan(x, w, b, **kw):
    return ops._plan_conv(2, x, w, b, 1, kw.get("padding", 0), 1, 1, "zeros", False, "loop")


@pytest.fixture
def calls(monkeypatch):
    """The runs of blocked tasks: the parts each asked for and the workers that joined."""
    runs = []
    tasks = {}
    build, run_team = direct.conv2d_blocked, ops._threads.run_team

    def built(*shape):
        task = build(*shape)
        tasks[task.address] = shape
        return task

    def counted(task, block, parts):
        assert task in tasks  # a blocked task
        joined = run_team(task, block, parts)
        runs.append((parts, joined))
        return joined

    monkeypatch.setattr(ops._direct, "conv2d_blocked", built)
    monkeypatch.setattr(ops._threads, "run_team", counted)
    ops._blocked_layout.cache_clear()  # each layer looks its task up again
    return runs


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_shape,w_shape,padding", CASES, ids=str)
def test_blocked_matches_reference(rng, calls, x_shape, w_shape, padding, bias):
    x, w, b = _operands(rng, x_shape, w_shape, bias)
    assert ops._use_blocked(_plan(x, w, b, padding=padding))
    y = ops.conv2d(x, w, b, padding=padding, method="loop")
    assert len(calls) == 1
    assert y.dtype == np.float32
    expected = conv_reference(x.astype(np.float64), w.astype(np.float64), b, padding=padding)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5 * np.sqrt(w[0].size))


@pytest.mark.parametrize("pad_mode", ["reflect", "circular"])
def test_blocked_with_padding_modes(rng, calls, pad_mode):
    x, w, b = _operands(rng, (2, 2, 9, 10), (3, 2, 3, 3))
    y = ops.conv2d(x, w, b, padding=1, pad_mode=pad_mode, method="loop")
    assert len(calls) == 1
    expected = conv_reference(x.astype(np.float64), w, b, padding=1, pad_mode=pad_mode)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)


def test_blocked_non_contiguous_operands(rng, calls):
    x, w, b = _operands(rng, (2, 3, 10, 24), (8, 3, 3, 3))
    xs, ws, bs = x[:, ::-1, :, ::2], w[::2, :, ::-1], np.repeat(b[::2], 2)[::2]
    y = ops.conv2d(xs, ws, bs, padding=1, flip=True, method="loop")
    assert len(calls) == 1
    expected = conv_reference(np.array(xs, np.float64), ws, bs, padding=1, flip=True)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("n", [1, 2, 5])
def test_blocked_threads_match_one_thread(rng, monkeypatch, calls, n, workers):
    """Whole samples (n >= 4 per part) or a few row pairs at a time from the queue, with
    the workers that join: the same numbers as one thread."""
    x, w, b = _operands(rng, (n, 2, 11, 20), (5, 2, 3, 3))
    one = ops.conv2d(x, w, b, padding=1, method="loop")
    assert calls == [(1, 0)]
    monkeypatch.setattr(ops, "_THREADED_BLOCKED_FLOPS", 0)
    monkeypatch.setattr(ops._threads, "worker_count", lambda: workers)
    for _ in attempts():  # until a worker took part
        np.testing.assert_array_equal(ops.conv2d(x, w, b, padding=1, method="loop"), one)
        if calls[-1][1] > 0:
            break
    assert all(parts == workers and joined < workers for parts, joined in calls[1:])
    assert calls[-1][1] > 0


def test_blocked_nan_reaches_only_its_windows(rng):
    x, w, b = _operands(rng, (1, 1, 9, 13), (2, 1, 3, 3))
    x[0, 0, 4, 12] = np.nan  # the last column: a tail lane
    y = ops.conv2d(x, w, b, padding=1, method="loop")
    seen = np.zeros((9, 13), bool)
    seen[3:6, 11:13] = True
    assert np.isnan(y[:, :, seen]).all()
    assert np.isfinite(y[:, :, ~seen]).all()


def test_blocked_against_torch(rng):
    torch = pytest.importorskip("torch")
    x, w, b = _operands(rng, (4, 1, 28, 28), (16, 1, 5, 5))
    expected = torch.nn.functional.conv2d(*map(torch.from_numpy, (x, w, b)), padding=2)
    y = ops.conv2d(x, w, b, padding=2, method="loop")
    np.testing.assert_allclose(y, expected.numpy(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "dtype,stride,dilation,groups,n_out,width,kernel,expected",
    [
        (np.float32, 1, 1, 1, 16, 28, (5, 5), True),
        (np.float64, 1, 1, 1, 16, 28, (5, 5), False),  # float32 only
        (np.float32, 2, 1, 1, 16, 28, (5, 5), False),
        (np.float32, 1, 2, 1, 16, 28, (5, 5), False),
        (np.float32, 1, 1, 2, 16, 28, (5, 5), False),
        (np.float32, 1, 1, 1, 1, 28, (5, 5), False),  # one output: the plane kernel
        (np.float32, 1, 1, 1, 16, 7, (5, 5), False),  # rows shorter than a vector
        (np.float32, 1, 1, 1, 16, 28, (7, 7), True),
        (np.float32, 1, 1, 1, 16, 28, (9, 9), False),  # more taps than it unrolls
    ],
)
def test_blocked_applies(dtype, stride, dilation, groups, n_out, width, kernel, expected):
    steps = (stride,) * 2, (dilation,) * 2
    assert ops.blocked_applies(2, dtype, kernel, *steps, groups, n_out, width) is expected


def test_auto_takes_blocked_forward_only():
    # LeNet's first layer: the blocked loop forward, im2col for the gradients
    shape = dict(n_batch=64, n_positions=784, out_width=28)
    assert ops.choose_method(1, 25, 16, blocked=True, **shape) == "loop"
    assert ops.choose_method(1, 25, 16, blocked=False, **shape) == "im2col"
    assert ops.choose_method(1, 25, 16, blocked=True, backward=True, **shape) == "im2col"
    # Winograd keeps the 3x3 layers with channels for its GEMMs
    deep = dict(n_batch=64, n_positions=196, out_width=14, winograd=True)
    assert ops.choose_method(16, 9, 32, blocked=True, **deep) == "winograd"
    assert ops.choose_method(3, 9, 32, blocked=True, **deep) == "loop"


def test_blocked_multiplies_the_padding_like_pytorch(rng):
    """An inf weight tap over zero padding gives NaN (0 * inf), as im2col and PyTorch do."""
    x, w, b = _operands(rng, (1, 1, 6, 9), (2, 1, 3, 3))
    w[0, 0, 0, 0] = np.inf
    y = ops.conv2d(x, w, b, padding=1, method="loop")
    assert np.isnan(y[0, 0, 0]).all() and np.isnan(y[0, 0, :, 0]).all()  # tap on padding
    assert np.isinf(y[0, 0, 1:, 1:]).all()  # tap on the image
    assert np.isfinite(y[0, 1]).all()
    np.testing.assert_array_equal(
        np.isnan(y), np.isnan(ops.conv2d(x, w, b, padding=1, method="im2col"))
    )
