"""im2col / col2im against the loop reference, the adjoint identity and the conv GEMM."""

from __future__ import annotations

import numpy as np
import pytest
from reference import col2im_reference, conv_reference, im2col_reference

from cnnkit import ops

CASES = [
    (3, 1, 0, 1),
    ((2, 3), 1, 1, 1),
    (3, 2, "same", 1),
    ((3, 2), (2, 1), ((1, 0), (0, 2)), (1, 2)),
    (2, 3, "full", 2),
    (1, 1, 0, 1),
]


@pytest.mark.parametrize("k,s,p,d", CASES, ids=str)
def test_im2col_col2im_against_reference(rng, k, s, p, d):
    x = rng.standard_normal((3, 7, 8))
    cols = ops.im2col(x, k, s, p, d)
    np.testing.assert_array_equal(cols, im2col_reference(x, k, s, p, d))
    c = rng.standard_normal(cols.shape)
    back = ops.col2im(c, x.shape, k, s, p, d)
    np.testing.assert_allclose(back, col2im_reference(c, x.shape, k, s, p, d), atol=1e-13)
    # adjoint: <im2col(x), c> == <x, col2im(c)>
    np.testing.assert_allclose(np.vdot(cols, c), np.vdot(x, back), rtol=1e-12)


@pytest.mark.parametrize("k,s,p,d", CASES[:4], ids=str)
def test_batched_forms(rng, k, s, p, d):
    x = rng.standard_normal((2, 3, 6, 7))
    cols = ops.im2col(x, k, s, p, d)
    for n in range(2):
        np.testing.assert_array_equal(cols[n], ops.im2col(x[n], k, s, p, d))
    back = ops.col2im(cols, x.shape, k, s, p, d)
    for n in range(2):
        np.testing.assert_allclose(back[n], ops.col2im(cols[n], x.shape[1:], k, s, p, d))


def test_convolution_is_a_matrix_product(rng):
    x = rng.standard_normal((3, 6, 7))
    w = rng.standard_normal((4, 3, 3, 2))
    cols = ops.im2col(x, (3, 2), stride=(1, 2), padding=1)
    y = (w.reshape(4, -1) @ cols).reshape(4, 6, 4)
    np.testing.assert_allclose(y, conv_reference(x[None], w, stride=(1, 2), padding=1)[0])


def test_col2im_counts_overlaps():
    ones = ops.im2col(np.ones((1, 4, 4)), 3)
    counts = ops.col2im(ones, (1, 4, 4), 3)
    expected = np.array([[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])
    np.testing.assert_array_equal(counts[0], expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_im2col_dtype(rng, dtype):
    x = rng.standard_normal((2, 5, 5)).astype(dtype)
    cols = ops.im2col(x, 3)
    assert cols.dtype == dtype and cols.flags.c_contiguous
    assert ops.col2im(cols, x.shape, 3).dtype == dtype


def test_im2col_errors(rng):
    with pytest.raises(ValueError, match="x must be 3-D"):
        ops.im2col(np.ones((4, 4)), 3)
    with pytest.raises(ValueError, match="kernel_size"):
        ops.im2col(np.ones((1, 4, 4)), 5)
    with pytest.raises(ValueError, match="kernel_size"):
        ops.im2col(np.ones((1, 4, 4)), 0)
    with pytest.raises(ValueError, match="cols must have shape"):
        ops.col2im(np.ones((9, 5)), (1, 4, 4), 3)
    with pytest.raises(ValueError, match="input_shape"):
        ops.col2im(np.ones((9, 4)), (4, 4), 3)


@pytest.mark.parametrize("ow", [5, 7, 8, 9, 14, 15, 16, 17, 28])
def test_row_copy_widths(rng, ow):
    """Rows of every length around the kernel's 8-wide block copies (and its overlapping
    last block) land where the loop reference puts them, in im2col and the convolution."""
    x = rng.standard_normal((2, 3, 5, ow))
    cols = ops.im2col(x, 3, 1, 1)
    np.testing.assert_array_equal(cols, np.stack([im2col_reference(s, 3, 1, 1) for s in x]))
    w = rng.standard_normal((4, 3, 3, 3))
    b = rng.standard_normal(4)
    y = ops.conv2d(x, w, b, padding=1, method="im2col")
    np.testing.assert_allclose(y, conv_reference(x, w, b, padding=1), atol=1e-12)
