"""method="winograd" (F(2x2, 3x3)): forward and both gradients against the plain-loop
reference and PyTorch, in float64 and float32; which layers ``auto`` sends there; and the
layers it refuses."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from attempts import attempts
from reference import conv_reference

from cnnkit import ops

# (x shape, out channels, padding): odd and even sizes, batch 1, asymmetric and "same"
# padding, padding larger than 1, an input smaller than one tile
CASES = [
    ((2, 3, 7, 6), 4, 1),
    ((1, 2, 5, 5), 3, 0),
    ((3, 4, 8, 9), 5, ((2, 0), (1, 2))),
    ((1, 1, 3, 3), 1, 1),
    ((2, 5, 4, 4), 6, 2),
    ((1, 3, 6, 11), 2, "same"),
    ((2, 2, 3, 4), 3, "full"),
]


def _operands(rng, xs, o, dtype=np.float64):
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal((o, xs[1], 3, 3)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("xs, o, padding", CASES)
def test_forward_matches_reference(rng, xs, o, padding):
    x, w, b = _operands(rng, xs, o)
    y = ops.conv2d(x, w, b, padding=padding, method="winograd")
    np.testing.assert_allclose(y, conv_reference(x, w, b, padding=padding), atol=1e-12)
    y = ops.conv2d(x, w, padding=padding, method="winograd")
    np.testing.assert_allclose(y, conv_reference(x, w, padding=padding), atol=1e-12)


@pytest.mark.parametrize("xs, o, padding", CASES)
def test_gradients_match_loop_and_finite_differences(rng, xs, o, padding):
    x, w, b = _operands(rng, xs, o)
    y = ops.conv2d(x, w, b, padding=padding)
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = ops.conv2d_backward(gy, x, w, padding=padding, method="winograd")
    lx, lw, lb = ops.conv2d_backward(gy, x, w, padding=padding, method="loop")
    np.testing.assert_allclose(gx, lx, atol=1e-12)
    np.testing.assert_allclose(gw, lw, atol=1e-12)
    np.testing.assert_allclose(gb, lb, atol=1e-12)
    # one weight and one input entry by central differences of L = sum(gy * conv(x, w))
    eps = 1e-6
    for arr, grad, idx in ((w, gw, (0, 0, 1, 2)), (x, gx, (0, 0, 1, 1))):
        saved = arr[idx]
        arr[idx] = saved + eps
        up = np.sum(gy * conv_reference(x, w, padding=padding))
        arr[idx] = saved - eps
        down = np.sum(gy * conv_reference(x, w, padding=padding))
        arr[idx] = saved
        assert grad[idx] == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-6)


def test_weight_gradient_alone(rng):
    x, w, _ = _operands(rng, (2, 3, 6, 7), 4)
    gy = rng.standard_normal((2, 4, 6, 7))
    gx, gw, _ = ops.conv2d_backward(gy, x, w, padding=1, method="winograd", need_input_grad=False)
    assert gx is None
    np.testing.assert_allclose(
        gw, ops.conv2d_backward(gy, x, w, padding=1, method="loop")[1], atol=1e-12
    )


def test_float32_and_chunks_of_several_samples(rng, monkeypatch):
    # a small tile budget: chunks of two samples and a partial last chunk
    monkeypatch.setattr(ops, "_WINOGRAD_TILES", 2 * 4 * 5)
    x, w, b = _operands(rng, (5, 6, 8, 8), 7, np.float32)
    y = ops.conv2d(x, w, b, padding=1, method="winograd")
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, conv_reference(x, w, b, padding=1), rtol=1e-4, atol=1e-4)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    got = ops.conv2d_backward(gy, x, w, padding=1, method="winograd")
    want = ops.conv2d_backward(gy, x, w, padding=1, method="loop")
    for a, b_ in zip(got, want):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b_, rtol=1e-4, atol=1e-3)


def test_padding_modes_and_flip(rng):
    x, w, b = _operands(rng, (2, 3, 7, 8), 4)
    for pad_mode in ("reflect", "replicate", "circular"):
        kw = dict(padding=1, pad_mode=pad_mode, flip=True)
        y = ops.conv2d(x, w, b, method="winograd", **kw)
        np.testing.assert_allclose(y, conv_reference(x, w, b, **kw), atol=1e-12)
        gy = rng.standard_normal(y.shape)
        got = ops.conv2d_backward(gy, x, w, method="winograd", **kw)
        want = ops.conv2d_backward(gy, x, w, method="loop", **kw)
        for a, b_ in zip(got, want):
            np.testing.assert_allclose(a, b_, atol=1e-12)


def test_threads_split_the_batch(rng, monkeypatch):
    from cnnkit.kernels import threads

    monkeypatch.setattr(ops, "_THREADED_FLOPS", 0)
    monkeypatch.setattr(threads, "worker_count", lambda: 2)
    x, w, b = _operands(rng, (3, 4, 6, 6), 5)
    y = ops.conv2d(x, w, b, padding=1, method="winograd")
    np.testing.assert_allclose(y, conv_reference(x, w, b, padding=1), atol=1e-12)
    gy = rng.standard_normal(y.shape)
    got = ops.conv2d_backward(gy, x, w, padding=1, method="winograd")
    want = ops.conv2d_backward(gy, x, w, padding=1, method="loop")
    for a, b_ in zip(got, want):
        np.testing.assert_allclose(a, b_, atol=1e-12)


def test_threads_add_only_the_weight_gradients(rng, monkeypatch):
    # the 16 planes have padding past O*C; garbage there must not reach the sum of the
    # threads' parts (inf + -inf warned, or raised under np.errstate(all="raise"))
    import threading

    from cnnkit.kernels import threads

    monkeypatch.setattr(ops, "_THREADED_FLOPS", 0)
    monkeypatch.setattr(threads, "worker_count", lambda: 2)
    original = ops._planes

    def poisoned(*args, **kwargs):
        flat, view = original(*args, **kwargs)
        main = threading.current_thread() is threading.main_thread()
        flat[:, view.shape[1] * view.shape[2] :] = np.inf if main else -np.inf
        return flat, view

    monkeypatch.setattr(ops, "_planes", poisoned)
    x, w, _ = _operands(rng, (2, 3, 6, 6), 4)
    gy = rng.standard_normal((2, 4, 6, 6))
    with np.errstate(all="raise"):
        got = ops.conv2d_backward(gy, x, w, padding=1, method="winograd")
    want = ops.conv2d_backward(gy, x, w, padding=1, method="loop")
    for a, b_ in zip(got, want):
        np.testing.assert_allclose(a, b_, atol=1e-12)


# fewer samples than threads: the channels are split instead (odd tile counts, one input
# channel so one thread's range is empty, several chunks through a small tile budget)
SPLIT_CASES = [
    ((1, 4, 7, 9), 5, 1, 2, 0),
    ((1, 3, 8, 8), 6, 0, 2, 0),
    ((2, 5, 5, 7), 3, 2, 3, 0),
    ((1, 1, 6, 5), 2, 1, 2, 0),
    ((3, 4, 5, 6), 4, 1, 4, 12),
    ((2, 6, 9, 5), 7, ((2, 0), (1, 2)), 3, 15),
]


@pytest.mark.parametrize("xs, o, padding, workers, budget", SPLIT_CASES)
def test_threads_split_the_channels_of_small_batches(
    rng, monkeypatch, xs, o, padding, workers, budget
):
    from cnnkit.kernels import threads

    monkeypatch.setattr(ops, "_THREADED_FLOPS", 0)
    monkeypatch.setattr(threads, "worker_count", lambda: workers)
    if budget:
        monkeypatch.setattr(ops, "_WINOGRAD_TILES", budget)
    split = []
    original = ops._winograd_backward_split
    monkeypatch.setattr(ops, "_winograd_backward_split", lambda *a: split.append(1) or original(*a))
    x, w, b = _operands(rng, xs, o)
    y = ops.conv2d(x, w, b, padding=padding, method="winograd")
    np.testing.assert_allclose(y, conv_reference(x, w, b, padding=padding), atol=1e-12)
    gy = rng.standard_normal(y.shape)
    got = ops.conv2d_backward(gy, x, w, padding=padding, method="winograd")
    want = ops.conv2d_backward(gy, x, w, padding=padding, method="loop")
    for a, b_ in zip(got, want):
        np.testing.assert_allclose(a, b_, atol=1e-12)
    gx, gw, _ = ops.conv2d_backward(
        gy, x, w, padding=padding, method="winograd", need_input_grad=False
    )
    assert gx is None
    np.testing.assert_allclose(gw, want[1], atol=1e-12)
    assert split  # the split path ran, not the batch split


@pytest.mark.parametrize("n", [1, 2])
def test_two_threads_against_torch(rng, monkeypatch, n):
    torch = pytest.importorskip("torch")
    from cnnkit.kernels import threads

    monkeypatch.setattr(ops, "_THREADED_FLOPS", 0)
    monkeypatch.setattr(threads, "worker_count", lambda: 2 * n)
    x, w, b = _operands(rng, (n, 6, 11, 10), 5)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, torch.tensor(b), padding=1)
    y = ops.conv2d(x, w, b, padding=1, method="winograd")
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    gy = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(gy))
    gx, gw, _ = ops.conv2d_backward(gy, x, w, padding=1, method="winograd")
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("xs, o, padding", CASES[:4])
def test_against_torch_forward_and_autograd(rng, xs, o, padding):
    torch = pytest.importorskip("torch")
    x, w, b = _operands(rng, xs, o)
    pads = ops.geometry.resolve_padding(padding, xs[2:], (3, 3), (1, 1), (1, 1))
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    flat = [pads[1][0], pads[1][1], pads[0][0], pads[0][1]]
    yt = torch.nn.functional.conv2d(torch.nn.functional.pad(xt, flat), wt, bt)
    y = ops.conv2d(x, w, b, padding=padding, method="winograd")
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-10)
    gy = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(gy))
    gx, gw, gb = ops.conv2d_backward(gy, x, w, padding=padding, method="winograd")
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_nan_stays_in_its_windows(rng):
    x, w, _ = _operands(rng, (1, 2, 6, 6), 3)
    x[0, 1, 2, 3] = np.nan
    y = ops.conv2d(x, w, padding=1, method="winograd")
    expected = np.isnan(conv_reference(x, w, padding=1))
    np.testing.assert_array_equal(np.isnan(y), expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stride": 2},
        {"dilation": 2},
        {"groups": 2},
    ],
)
def test_refuses_what_it_cannot_compute(rng, kwargs):
    x, w, _ = _operands(rng, (1, 4, 8, 8), 4)
    if "groups" in kwargs:
        w = w[:, :2]
    with pytest.raises(ValueError, match="method='winograd' needs a 2-D 3x3 kernel"):
        ops.conv2d(x, w, method="winograd", **kwargs)


def test_refuses_other_kernels_and_dimensions(rng):
    with pytest.raises(ValueError, match="3x3"):
        ops.conv2d(np.ones((1, 2, 8, 8)), np.ones((2, 2, 5, 5)), method="winograd")
    with pytest.raises(ValueError, match="3x3"):
        ops.conv1d(np.ones((1, 2, 8)), np.ones((2, 2, 3)), method="winograd")


@pytest.mark.parametrize(
    "args, kwargs, expected",
    [
        ((16, 9, 32), {"n_batch": 64, "n_positions": 196, "winograd": True}, "winograd"),
        ((64, 9, 64), {"n_batch": 32, "n_positions": 1024, "winograd": True}, "winograd"),
        ((64, 9, 64), {"n_batch": 1, "n_positions": 1024, "winograd": True}, "winograd"),
        (
            (16, 9, 32),
            {"n_batch": 64, "n_positions": 196, "backward": True, "winograd": True},
            "winograd",
        ),
        ((1, 9, 16), {"n_batch": 32, "n_positions": 64, "winograd": True}, "im2col"),  # C = 1
        ((16, 9, 4), {"n_batch": 8, "n_positions": 1024, "winograd": True}, "loop"),  # O = 4
        ((64, 9, 64), {"n_batch": 1, "n_positions": 224 * 224, "winograd": True}, "im2col"),
        ((16, 9, 32), {"n_batch": 64, "n_positions": 196}, "im2col"),  # not a 3x3 stride 1
    ],
)
def test_auto_choice(args, kwargs, expected):
    assert ops.choose_method(*args, **kwargs) == expected


def test_auto_runs_winograd_for_a_3x3_layer(rng, monkeypatch):
    seen = []
    original = ops._winograd_forward
    monkeypatch.setattr(ops, "_winograd_forward", lambda plan: seen.append(1) or original(plan))
    x, w, b = _operands(rng, (2, 8, 6, 6), 8)
    y = ops.conv2d(x, w, b, padding=1)
    assert seen
    np.testing.assert_allclose(y, conv_reference(x, w, b, padding=1), atol=1e-12)


def test_memory_budget_is_checked(monkeypatch):
    from cnnkit import memory

    # the output (2 MiB) fits, the transformed tiles (16 MiB) do not
    monkeypatch.setattr(memory, "budget_bytes", lambda: 8 * 2**20)
    monkeypatch.setattr(memory, "SMALL_BYTES", 0)
    x, w = np.ones((1, 8, 256, 256), np.float32), np.ones((8, 8, 3, 3), np.float32)
    with pytest.raises(memory.MemoryBudgetError, match="method='winograd'.*im2col"):
        ops.conv2d(x, w, method="winograd")
    assert ops.conv2d(x, w, method="im2col").shape == (1, 8, 254, 254)


def _nogil_available():
    from cnnkit.kernels import blas

    if not blas.gemm_address(np.float32):
        pytest.skip("NumPy's BLAS is not the 64-bit-integer OpenBLAS of its wheels")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blas_gemm_from_numba_matches_matmul(rng, dtype):
    from numba import njit

    from cnnkit.kernels import blas

    _nogil_available()

    @njit
    def product(address, transa, transb, a, b, c):
        k = a.shape[0] if transa == blas.TRANS else a.shape[1]
        blas.gemm(
            address,
            transa,
            transb,
            c.shape[0],
            c.shape[1],
            k,
            a.ctypes.data,
            a.shape[1],
            b.ctypes.data,
            b.shape[1],
            c.ctypes.data,
            c.shape[1],
            c.dtype.type(0),
        )

    for m, k, n in [(1, 1, 1), (7, 3, 5), (32, 16, 504), (5, 64, 17)]:
        for ta in (blas.NO_TRANS, blas.TRANS):
            for tb in (blas.NO_TRANS, blas.TRANS):
                a = rng.standard_normal((k, m) if ta == blas.TRANS else (m, k)).astype(dtype)
                b = rng.standard_normal((n, k) if tb == blas.TRANS else (k, n)).astype(dtype)
                c = np.full((m, n), np.nan, dtype)
                product(blas.gemm_address(dtype), ta, tb, a, b, c)
                want = (a.T if ta == blas.TRANS else a) @ (b.T if tb == blas.TRANS else b)
                np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)


def _count_one_calls(monkeypatch, threads, name):
    """Chunks of two samples, ``threads`` parts, and the calls of the one-call kernel
    ``name`` counted in the returned list."""
    _small_chunks(monkeypatch, threads)
    calls = []
    real = getattr(ops._winograd, name)
    monkeypatch.setattr(ops._winograd, name, lambda *a: calls.append(1) or real(*a))
    return calls


def _small_chunks(monkeypatch, threads):
    """Chunks of two samples, split over ``threads`` parts, with NumPy's OpenBLAS."""
    from cnnkit.kernels import threads as pool

    _nogil_available()
    monkeypatch.setattr(ops, "_THREADED_FLOPS", 0)
    monkeypatch.setattr(ops, "_WINOGRAD_TILES", 40)  # 2 samples of 4x5 tiles a chunk
    monkeypatch.setattr(pool, "worker_count", lambda: threads)


def _team_runs(monkeypatch, factory, dtype):
    """The runs of the team task ``factory(dtype)``, as ``(parts asked for, workers
    joined)``, recorded in the returned list (other tasks run unrecorded)."""
    runs = []
    run_team = ops._threads.run_team

    def counted(task, block, parts):
        joined = run_team(task, block, parts)
        if task == factory(dtype).address:
            runs.append((parts, joined))
        return joined

    monkeypatch.setattr(ops._threads, "run_team", counted)
    return runs


@contextlib.contextmanager
def _matmul_path(monkeypatch):
    """As with any BLAS but NumPy's OpenBLAS: np.matmul between the kernels."""
    with monkeypatch.context() as m:
        m.setattr(ops._blas, "gemm_address", lambda dtype: 0)
        yield


WINOGRAD_LAYERS = [((7, 3, 7, 8), 4, 1), ((5, 2, 9, 5), 3, ((2, 0), (1, 2)))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 3])
def test_forward_team_task_matches_matmul_path(rng, monkeypatch, dtype, threads):
    """The forward as a team task, its chunks from a queue with OpenBLAS called from the
    task, gives np.matmul's numbers to the bit, over several chunks, a partial last chunk
    and the workers that join."""
    _small_chunks(monkeypatch, threads)
    runs = _team_runs(monkeypatch, ops._winograd.forward_task, dtype)
    for xs, o, padding in WINOGRAD_LAYERS:
        x, w, b = _operands(rng, xs, o, dtype)
        with _matmul_path(monkeypatch):
            want = ops.conv2d(x, w, b, padding=padding, method="winograd")
        assert runs == []  # the np.matmul path does not run the task
        for _ in attempts():  # until a worker took part
            got = ops.conv2d(x, w, b, padding=padding, method="winograd")
            np.testing.assert_array_equal(got, want)
            if threads == 1 or runs[-1][1] > 0:
                break
        chunks = -(-xs[0] // 2)
        assert all(parts == min(threads, chunks) and joined < parts for parts, joined in runs)
        assert runs[-1][1] == (threads > 1)
        runs.clear()
        tol = 1e-12 if dtype == np.float64 else 1e-4
        expected = conv_reference(x.astype(np.float64), w.astype(np.float64), b, padding=padding)
        np.testing.assert_allclose(got, expected, rtol=tol, atol=tol)


def _with_output_gradient(rng, xs, o, padding, dtype):
    """A layer's input and weights, and a random gradient of its output."""
    x, w, _ = _operands(rng, xs, o, dtype)
    gy = rng.standard_normal(ops.conv2d(x, w, padding=padding, method="loop").shape)
    return x, w, gy.astype(dtype)


def _backward_three_ways(monkeypatch, calls, dtype, gy, x, w, **kw):
    """conv2d_backward by Winograd's one-call kernels, by its np.matmul path and by the
    loop method, checked to agree (a missing input gradient missing in all three); how many
    one-call kernels ran, and the first result."""
    calls.clear()
    got = ops.conv2d_backward(gy, x, w, method="winograd", **kw)
    ran = len(calls)
    with _matmul_path(monkeypatch):
        old = ops.conv2d_backward(gy, x, w, method="winograd", **kw)
    assert len(calls) == ran  # the np.matmul path does not call them
    loop = ops.conv2d_backward(gy, x, w, method="loop", **kw)
    tol = 1e-10 if dtype == np.float64 else 1e-3
    for a, b_, c_ in zip(got, old, loop):
        if a is None:
            assert b_ is None and c_ is None and not kw["need_input_grad"]
            continue
        np.testing.assert_allclose(a, b_, rtol=tol, atol=tol)
        np.testing.assert_allclose(a, c_, rtol=tol, atol=tol)
    return ran, got


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 3])
def test_backward_in_one_nogil_call_matches_matmul_path(rng, monkeypatch, dtype, threads):
    """Both gradients from the one-call backward agree with the np.matmul path and the
    loop method, with and without the input gradient, over chunks and split batches."""
    calls = _count_one_calls(monkeypatch, threads, "backward_chunks")
    for xs, o, padding in WINOGRAD_LAYERS:
        x, w, gy = _with_output_gradient(rng, xs, o, padding, dtype)
        for need in (True, False):
            kw = {"padding": padding, "need_input_grad": need}
            ran, _ = _backward_three_ways(monkeypatch, calls, dtype, gy, x, w, **kw)
            assert ran == threads


# fewer samples than threads, so the channels are split: (x shape, outputs, padding,
# threads); one input channel leaves a thread without channels, three samples make chunks
SPLIT_ONE_CALL = [
    ((1, 6, 7, 9), 5, 1, 2),
    ((1, 1, 6, 5), 4, 1, 2),
    ((3, 5, 5, 7), 3, ((2, 0), (1, 2)), 4),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("xs, o, padding, threads", SPLIT_ONE_CALL)
def test_split_backward_team_task(rng, monkeypatch, dtype, xs, o, padding, threads):
    """The channel split of a small batch runs as one team task, its channel blocks from a
    queue per step; both gradients agree with its np.matmul path and the loop method, with
    and without the input gradient, over several chunks, and are the same numbers on every
    run, whichever threads did which blocks."""
    _small_chunks(monkeypatch, threads)
    monkeypatch.setattr(ops, "_WINOGRAD_TILES", 1)  # one sample a chunk
    runs = _team_runs(monkeypatch, ops._winograd.split_backward_task, dtype)
    x, w, gy = _with_output_gradient(rng, xs, o, padding, dtype)
    for need in (True, False):
        kw = {"padding": padding, "need_input_grad": need}
        ran, got = _backward_three_ways(monkeypatch, runs, dtype, gy, x, w, **kw)
        assert ran == 1 and runs[0][0] == threads
        for _ in attempts():  # until a worker took part
            again = ops.conv2d_backward(gy, x, w, method="winograd", **kw)
            for a, d_ in zip(got, again):
                if a is not None:
                    np.testing.assert_array_equal(a, d_)  # the same numbers on every run
            if runs[-1][1] > 0:
                break
        assert runs[-1][1] > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("workers", [1, 2])
def test_output_rows_of_every_width(rng, monkeypatch, dtype, workers):
    """Every output width from 1 to past four vectors (8 float32, 4 float64: the copy-out
    loops' vector and remainder parts), through the batch path (one worker) and the
    tile-row split of a single sample (two)."""
    from cnnkit.kernels import threads

    monkeypatch.setattr(ops, "_THREADED_FLOPS", 0)
    monkeypatch.setattr(threads, "worker_count", lambda: workers)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    for width in [*range(1, 21), 31, 32, 33]:
        x, w, b = _operands(rng, (2 if workers == 1 else 1, 2, 4, width), 3, dtype)
        got = ops.conv2d(x, w, b, padding=1, method="winograd")
        want = conv_reference(x.astype(np.float64), w.astype(np.float64), b, padding=1)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=f"width {width}")
