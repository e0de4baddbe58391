"""cnnkit.placement: output and scratch arrays start clear of the 4K-aliasing window of the
arrays they stream against, and the filters that place them give the same results wherever
their input lies in memory."""

from __future__ import annotations

import math

import numpy as np
import pytest
from reference import conv_reference

from cnnkit import ops, placement

WIDTH = placement.WINDOW_BEFORE + placement.WINDOW_AFTER


def at_offset(shape, dtype, offset: int) -> np.ndarray:
    """A C-contiguous array whose data start ``offset`` bytes past a page boundary."""
    dtype = np.dtype(dtype)
    pool = np.empty(math.prod(shape) * dtype.itemsize + 2 * placement.PAGE, np.uint8)
    start = (offset - pool.ctypes.data) % placement.PAGE
    return pool[start : start + math.prod(shape) * dtype.itemsize].view(dtype).reshape(shape)


def clear(stored: np.ndarray, loaded: np.ndarray) -> bool:
    """Every row of ``stored`` lies outside the slow window of every row of ``loaded``,
    checked row pair by row pair (not through the period the module reasons with)."""
    for a in range(stored.shape[-2]):
        for b in range(loaded.shape[-2]):
            gap = stored[..., a, :].ctypes.data - loaded[..., b, :].ctypes.data
            if (gap + placement.WINDOW_BEFORE) % placement.PAGE < WIDTH:
                return False
    return True


@pytest.mark.parametrize("cols", [256, 512, 1024, 2048])
@pytest.mark.parametrize("offset", [0, 16, 64, 128, 1040, 2048 + 64, 4032])
def test_outputs_are_placed_clear_of_their_input(cols, offset):
    x = at_offset((6, cols), np.float32, offset)
    y = placement.empty_apart((6, cols), np.float32, x)
    assert y.shape == (6, cols) and y.dtype == np.float32
    assert y.flags.c_contiguous and y.flags.writeable
    assert clear(y, x)
    y[...] = 1.0  # the whole view is usable memory
    assert not np.shares_memory(x, y)


@pytest.mark.parametrize("cols", [512, 1024, 2048])
@pytest.mark.parametrize("ahead", [0, 64, 128, 256])
def test_a_start_in_the_window_is_moved_out(cols, ahead):
    """Scratch that would start ``ahead`` bytes past the input (the slow offsets) is
    placed further along its buffer."""
    x = at_offset((6, cols), np.float32, 1000)
    buf = at_offset((6 * cols + placement.PAGE // 4,), np.float32, 1000 + ahead)
    assert not clear(buf[: 6 * cols].reshape(6, cols), x)  # where it would start
    tmp = placement.apart(buf, 6 * cols, cols * 4, [x]).reshape(6, cols)
    assert np.shares_memory(tmp, buf) and clear(tmp, x)


@pytest.mark.parametrize("offset", [0, 64, 200, 3000])
def test_scratch_is_placed_clear_of_what_it_reads_and_what_it_feeds(offset):
    cols = 1024
    x = at_offset((5, cols), np.float32, offset)
    y = at_offset((5, cols), np.float32, offset + 96)  # y alone would sit in x's window
    buf = at_offset((5 * cols + placement.PAGE // 4,), np.float32, offset)
    tmp = placement.apart(buf, 5 * cols, cols * 4, [x], [y]).reshape(5, cols)
    assert np.shares_memory(tmp, buf) and tmp.size == 5 * cols
    assert clear(tmp, x) and clear(y, tmp)


def test_float64_and_1d_arrays():
    x = at_offset((3, 512), np.float64, 32)
    y = placement.empty_apart((3, 512), np.float64, x)
    assert clear(y, x)
    signal = at_offset((4096,), np.float32, 100)
    out = placement.empty_apart((4096,), np.float32, signal)
    gap = out.ctypes.data - signal.ctypes.data
    assert (gap + placement.WINDOW_BEFORE) % placement.PAGE >= WIDTH


def test_rows_that_cycle_through_the_page_keep_the_plain_start():
    """Rows of 100 floats (400 bytes) meet every offset anyway: no placement helps, and
    the look-up is skipped."""
    x = at_offset((8, 100), np.float32, 64)
    buf = np.empty(800 + 1024, np.float32)
    assert placement.apart(buf, 800, 400, [x]).ctypes.data == buf.ctypes.data
    assert placement.best_start(0, 400, [(64, 400, 1)]) == 0


@pytest.fixture
def paths(monkeypatch):
    """Which of the two placing forward paths ran."""
    calls = []
    for name in ("_plane_forward", "_separable_planes"):
        original = getattr(ops, name)

        def spy(*args, _original=original, _name=name):
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(ops, name, spy)
    return calls


@pytest.mark.parametrize("offset", [0, 64, 2048 + 128])
@pytest.mark.parametrize("rank_one", [False, True], ids=["plane kernel", "separable passes"])
def test_filters_agree_with_the_reference_wherever_the_input_lies(offset, rank_one, rng, paths):
    """A single 48x256 image (1 KiB rows, where placement applies) through the plane kernel
    and through the fused separable passes, with the input at several offsets."""
    if rank_one:
        w = np.outer([1.0, 4.0, 6.0, 4.0, 1.0], [1.0, 2.0, 0.0, -2.0, -1.0]).astype(np.float32)
    else:
        w = rng.standard_normal((5, 5)).astype(np.float32)
    data = rng.standard_normal((1, 1, 48, 256)).astype(np.float32)
    x = at_offset(data.shape, np.float32, offset)
    x[...] = data
    got = ops.conv2d(x, w[None, None], padding=2)
    assert paths == ["_separable_planes" if rank_one else "_plane_forward"]
    want = conv_reference(data, w[None, None], padding=2)
    scale = conv_reference(np.abs(data), np.abs(w[None, None]), padding=2)
    assert np.all(np.abs(got - want) <= 4 * w.size * np.finfo(np.float32).eps * (scale + 1e-30))
    assert got.flags.c_contiguous
    if not rank_one:  # the plane kernel placed its output clear of the input
        assert clear(got[0, 0], x[0, 0])
