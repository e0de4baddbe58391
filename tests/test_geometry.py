"""geometry.py, the one place the output-size formulas live, against window counting."""

from __future__ import annotations

import doctest
import itertools

import pytest

from cnnkit import geometry
from cnnkit.geometry import (
    as_tuple,
    conv_output_size,
    dilated_span,
    dropped_by_stride,
    pool_output_size,
    resolve_padding,
    same_padding,
)


def count_windows(n: int, k: int, s: int, lo: int, hi: int, d: int) -> int:
    """Slide a window of k taps, d apart, over lo + n + hi positions; count full fits."""
    count, start = 0, 0
    while start + d * (k - 1) < lo + n + hi:
        count += 1
        start += s
    return count


GRID = list(
    itertools.product(range(1, 12), range(1, 6), range(1, 4), range(0, 3), range(0, 3), (1, 2, 3))
)


@pytest.mark.parametrize("n,k,s,lo,hi,d", GRID[::7])
def test_conv_output_size_counts_the_windows_that_fit(n, k, s, lo, hi, d):
    expected = count_windows(n, k, s, lo, hi, d)
    if expected == 0:
        with pytest.raises(ValueError, match="kernel"):
            conv_output_size(n, k, s, (lo, hi), d)
        return
    got = conv_output_size(n, k, s, (lo, hi), d)
    assert got == expected
    if lo == hi:
        assert conv_output_size(n, k, s, lo, d) == got


def test_the_lectures_numbers():
    assert conv_output_size(8, 3) == 6  # valid: 8x8 -> 6x6
    assert conv_output_size(8, 3, padding=1) == 8  # same
    assert dilated_span(3, 2) == 5


@pytest.mark.parametrize("ceil", [False, True])
def test_pool_output_size_matches_torch(ceil):
    torch = pytest.importorskip("torch")
    for n, k, s, p in itertools.product(range(2, 12), range(1, 5), range(1, 4), range(0, 3)):
        if p > k // 2 or k > n + 2 * p:
            continue
        x = torch.zeros(1, 1, n)
        out = torch.nn.functional.max_pool1d(x, k, s, p, ceil_mode=ceil).shape[-1]
        assert pool_output_size(n, k, s, p, 1, ceil) == out, (n, k, s, p)


def test_pool_output_size_ceil_keeps_a_partial_last_window():
    # 5 inputs, windows of 2 with stride 2: floor keeps 2 windows, ceil keeps a third, partial.
    assert pool_output_size(5, 2, 2) == 2
    assert pool_output_size(5, 2, 2, ceil_mode=True) == 3
    # ... but never a window that would start in the right padding.
    assert pool_output_size(4, 2, 2, padding=1, ceil_mode=True) == 3
    assert pool_output_size(4, 3, None) == 1  # stride defaults to the kernel


@pytest.mark.parametrize(
    "n,k,s,d", list(itertools.product(range(1, 10), (1, 2, 3, 4), (1, 2, 3), (1, 2)))
)
def test_same_padding_gives_ceil_n_over_s_with_the_extra_after(n, k, s, d):
    lo, hi = same_padding(n, k, s, d)
    assert conv_output_size(n, k, s, (lo, hi), d) == -(-n // s)
    assert hi - lo in (0, 1)


def test_resolve_padding_forms():
    sizes, k, s, d = (8, 7), (3, 4), (1, 1), (1, 2)
    assert resolve_padding("valid", sizes, k, s, d) == ((0, 0), (0, 0))
    assert resolve_padding("SAME", sizes, k, s, d) == ((1, 1), (3, 3))
    assert resolve_padding("full", sizes, k, s, d) == ((2, 2), (6, 6))
    assert resolve_padding(2, sizes, k, s, d) == ((2, 2), (2, 2))
    assert resolve_padding((1, 0), sizes, k, s, d) == ((1, 1), (0, 0))
    assert resolve_padding(((0, 1), (2, 3)), sizes, k, s, d) == ((0, 1), (2, 3))


@pytest.mark.parametrize("bad", ["sideways", -1, (1, 2, 3), ((1, -1), (0, 0)), 1.5, True])
def test_resolve_padding_rejects_with_the_argument_named(bad):
    with pytest.raises(ValueError, match="padding"):
        resolve_padding(bad, (8, 8), (3, 3), (1, 1), (1, 1))


def test_as_tuple_and_positive_tuple():
    assert as_tuple(3, 2, "stride") == (3, 3)
    assert as_tuple((1, 2), 2, "stride") == (1, 2)
    for bad in ((1,), "2", 2.0, None, (1, True)):
        with pytest.raises(ValueError, match="stride"):
            as_tuple(bad, 2, "stride")
    with pytest.raises(ValueError, match=">= 1"):
        geometry.positive_tuple((1, 0), 2, "dilation")


@pytest.mark.parametrize("n,k,s,lo,hi,d", GRID[::11])
def test_dropped_by_stride_is_what_the_last_window_leaves(n, k, s, lo, hi, d):
    out = count_windows(n, k, s, lo, hi, d)
    if out == 0:
        assert dropped_by_stride(n, k, s, (lo, hi), d) == 0
        return
    last_covered = (out - 1) * s + d * (k - 1)  # index of the last tap of the last window
    assert dropped_by_stride(n, k, s, (lo, hi), d) == lo + n + hi - 1 - last_covered


def test_docstring_examples():
    failures, tried = doctest.testmod(geometry)
    assert tried > 0 and failures == 0


def test_padding_from_text_is_the_shared_grammar():
    from cnnkit.geometry import padding_from_text

    assert padding_from_text(" Same ") == "same"
    assert padding_from_text("2") == (2,)
    assert padding_from_text("1 x 2") == (1, 2)
    assert padding_from_text("1,2") is None  # filter's --padding: x only
    assert padding_from_text("1,2×3", "x×,") == (1, 2, 3)  # specs
    assert padding_from_text("-1") is None
    assert padding_from_text("-1x2", signed=True) == (-1, 2)
    assert padding_from_text("²") is None  # isdigit() would say yes, int() would fail
    assert padding_from_text("") is None
