"""Output-size and padding arithmetic: the one place these formulas live.

Everything in cnnkit that needs the size of a convolution or pooling output (the Numba
kernels' callers, shape inference, receptive fields, the CLI) calls the functions here.
This module imports nothing but the standard library (and the one error class in
:mod:`cnnkit.errors`), so the arithmetic commands start fast.

The convolution formula, per spatial dimension, with the names PyTorch uses::

    out = floor((n + pad_lo + pad_hi - dilation * (kernel - 1) - 1) / stride) + 1

With symmetric padding ``p`` on both sides, ``pad_lo + pad_hi = 2 * p``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence

from cnnkit.errors import ParameterError

PaddingArg = int | str | Sequence[int] | Sequence[Sequence[int]]

PAD_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_WORDS = ("valid", "same", "full")


def dilated_span(kernel: int, dilation: int = 1) -> int:
    """Input positions one window covers: ``dilation * (kernel - 1) + 1``.

    >>> dilated_span(3), dilated_span(3, dilation=2)
    (3, 5)
    """
    return dilation * (kernel - 1) + 1


def _index(value: object, name: str, minimum: int) -> int:
    """``value`` as a Python int >= ``minimum``; bools, floats and strings are refused."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        out = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {out}")
    return out


def _pads(padding: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(padding, tuple | list) and len(padding) == 2:
        return _index(padding[0], "padding", 0), _index(padding[1], "padding", 0)
    value = _index(padding, "padding", 0)
    return value, value


def _window_count(n: int, kernel: int, stride: int, lo: int, hi: int, dilation: int) -> int:
    """The raw formula; zero or negative when the window does not fit (callers check)."""
    return (n + lo + hi - dilated_span(kernel, dilation)) // stride + 1


def _check_fits(out: int, n: int, kernel: int, lo: int, hi: int, dilation: int) -> int:
    if out <= 0:
        raise ValueError(
            f"kernel {kernel} (dilation {dilation}, span {dilated_span(kernel, dilation)}) is "
            f"larger than the padded input {n + lo + hi} (n {n} + padding {lo} + {hi})"
        )
    return out


def conv_output_size(
    n: int,
    kernel: int,
    stride: int = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int = 1,
) -> int:
    """Length of a convolution output along one dimension.

    Parameters
    ----------
    n : int
        Input length, >= 1.
    kernel : int
        Kernel length (before dilation), >= 1.
    stride : int
        Step of the sliding window, >= 1.
    padding : int or (int, int)
        Padding added on each side (an int), or ``(before, after)``; >= 0.
    dilation : int
        Spacing between kernel taps, >= 1; the kernel spans ``dilation * (kernel - 1) + 1``.

    Returns
    -------
    int
        ``floor((n + pad_before + pad_after - dilation * (kernel - 1) - 1) / stride) + 1``,
        always >= 1.

    Raises
    ------
    ValueError
        An argument that is not an integer (bools included) or out of range, naming it; or
        a (dilated) kernel that does not fit in the padded input.

    Examples
    --------
    The lecture's valid convolution of an 8x8 image with a 3x3 kernel:

    >>> conv_output_size(8, 3)
    6
    >>> conv_output_size(8, 3, padding=1), conv_output_size(8, 3, stride=2)
    (8, 3)
    """
    n = _index(n, "n", 1)
    kernel = _index(kernel, "kernel", 1)
    stride = _index(stride, "stride", 1)
    dilation = _index(dilation, "dilation", 1)
    lo, hi = _pads(padding)
    return _check_fits(
        _window_count(n, kernel, stride, lo, hi, dilation), n, kernel, lo, hi, dilation
    )


def pool_output_size(
    n: int,
    kernel: int,
    stride: int | None = None,
    padding: int = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Length of a pooling output along one dimension, as PyTorch computes it.

    With ``ceil_mode=False`` this is :func:`conv_output_size`. With ``ceil_mode=True`` the
    division rounds up, so a last, partial window is kept, except that a window starting
    inside the right padding is dropped (PyTorch's rule: the last window must start inside
    the input or the left padding)::

        out = ceil((n + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1
        if (out - 1) * stride >= n + padding: out -= 1

    ``stride`` defaults to ``kernel``. Arguments are checked as in :func:`conv_output_size`
    (``ceil_mode`` must be a bool) and a window that does not fit raises a ValueError.
    """
    if not isinstance(ceil_mode, bool):
        raise ValueError(f"ceil_mode must be True or False, got {ceil_mode!r}")
    n = _index(n, "n", 1)
    kernel = _index(kernel, "kernel", 1)
    stride = kernel if stride is None else _index(stride, "stride", 1)
    padding = _index(padding, "padding", 0)
    dilation = _index(dilation, "dilation", 1)
    return _check_fits(
        _pool_count(n, kernel, stride, padding, dilation, ceil_mode),
        n,
        kernel,
        padding,
        padding,
        dilation,
    )


def _pool_count(n: int, kernel: int, stride: int, padding: int, dilation: int, ceil: bool) -> int:
    if not ceil:
        return _window_count(n, kernel, stride, padding, padding, dilation)
    out = -((-(n + 2 * padding - dilated_span(kernel, dilation))) // stride) + 1
    if out > 0 and (out - 1) * stride >= n + padding:
        out -= 1
    return out


def as_tuple(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    """``value`` repeated ``ndim`` times if it is an int, else checked to be ``ndim`` ints."""
    message = f"{name} must be an int or a tuple of {ndim} ints, got {value!r}"
    if isinstance(value, bool) or isinstance(value, str):
        raise ParameterError(message, name)
    try:
        return (operator.index(value),) * ndim  # type: ignore[arg-type]
    except TypeError:
        pass
    if not isinstance(value, Sequence) or len(value) != ndim:
        raise ParameterError(message, name)
    try:
        items = tuple(operator.index(v) for v in value if not isinstance(v, bool))
    except TypeError:
        raise ParameterError(message, name) from None
    if len(items) != ndim:
        raise ParameterError(message, name)
    return items


def positive_tuple(value: int | Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    """:func:`as_tuple`, then every entry must be >= 1 (strides, dilations, kernel sizes)."""
    items = as_tuple(value, ndim, name)
    if any(v < 1 for v in items):
        raise ParameterError(f"{name} must be >= 1 in every dimension, got {value!r}", name)
    return items


def same_padding(n: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's "SAME" padding: output length ``ceil(n / stride)``.

    The total padding is ``max((out - 1) * stride + dilation * (kernel - 1) + 1 - n, 0)``;
    when it is odd the extra row/column goes after (bottom/right), as TensorFlow does.
    """
    out = ceil_div(n, stride)
    total = max((out - 1) * stride + dilated_span(kernel, dilation) - n, 0)
    return total // 2, total - total // 2


def full_padding(kernel: int, dilation: int = 1) -> tuple[int, int]:
    """ "full" padding: every position where kernel and input overlap by at least one tap."""
    p = dilated_span(kernel, dilation) - 1
    return p, p


def resolve_padding(
    padding: PaddingArg,
    sizes: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
) -> tuple[tuple[int, int], ...]:
    """Turn any accepted ``padding`` argument into ``(before, after)`` pairs, one per dimension.

    Accepted: an int (same on every side), a tuple of one int per dimension (PyTorch), a tuple
    of ``(before, after)`` pairs, or one of ``"valid"`` (no padding), ``"same"``
    (:func:`same_padding`) and ``"full"`` (:func:`full_padding`).
    """
    ndim = len(sizes)
    if isinstance(padding, str):
        word = padding.lower()
        if word == "valid":
            return ((0, 0),) * ndim
        if word == "same":
            return tuple(
                same_padding(n, k, s, d) for n, k, s, d in zip(sizes, kernel, stride, dilation)
            )
        if word == "full":
            return tuple(full_padding(k, d) for k, d in zip(kernel, dilation))
        raise ParameterError(
            f"padding must be an int, a tuple, or one of {', '.join(PADDING_WORDS)}; "
            f"got {padding!r}",
            "padding",
        )
    if (
        isinstance(padding, Sequence)
        and len(padding) == ndim
        and all(isinstance(p, Sequence) and not isinstance(p, str) for p in padding)
    ):
        out = tuple(as_tuple(p, 2, "padding") for p in padding)
    else:
        out = tuple((p, p) for p in as_tuple(padding, ndim, "padding"))  # type: ignore[arg-type]
    if any(a < 0 or b < 0 for a, b in out):
        raise ParameterError(f"padding must be >= 0, got {padding!r}", "padding")
    return out


def conv_output_shape(
    sizes: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    pads: Sequence[tuple[int, int]],
    dilation: Sequence[int],
) -> tuple[int, ...]:
    """:func:`conv_output_size` applied to every spatial dimension, unchecked: a size is zero
    or negative where the kernel does not fit (callers name the layer in their error)."""
    return tuple(
        _window_count(n, k, s, p[0], p[1], d)
        for n, k, s, p, d in zip(sizes, kernel, stride, pads, dilation)
    )


def pool_output_shape(
    sizes: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    ceil_mode: bool = False,
) -> tuple[int, ...]:
    """:func:`pool_output_size` applied to every spatial dimension, unchecked like
    :func:`conv_output_shape`."""
    return tuple(
        _pool_count(n, k, s, p, 1, bool(ceil_mode))
        for n, k, s, p in zip(sizes, kernel, stride, padding)
    )


def dropped_by_stride(
    n: int, kernel: int, stride: int, padding: tuple[int, int], dilation: int = 1
) -> int:
    """Input positions (of the padded input) after the last window that no window reaches.

    A stride that does not divide ``n + pads - span`` silently ignores the last rows/columns.
    """
    out = _window_count(n, kernel, stride, padding[0], padding[1], dilation)
    if out <= 0:
        return 0
    covered = (out - 1) * stride + dilated_span(kernel, dilation)
    return n + padding[0] + padding[1] - covered


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for integers, without floating point."""
    return -(-a // b)


def padding_from_text(
    text: str, separators: str = "x", signed: bool = False
) -> str | tuple[int, ...] | None:
    """Padding as a person writes it: a word of :data:`PADDING_WORDS` or integers joined by
    one of ``separators`` (``"1"``, ``"1x2"``); ``signed`` lets a minus sign through so that
    the caller can say "must be >= 0" rather than "not padding".

    Returns the lower-case word, the integers, or None when ``text`` is neither. How many
    integers there may be is the caller's to check. The one grammar ``cnnkit filter
    --padding`` and architecture specs share.
    """
    word = text.strip().lower()
    if word in PADDING_WORDS:
        return word
    number = r"\s*-?\d+\s*" if signed else r"\s*\d+\s*"
    parts = re.split(f"[{re.escape(separators)}]", text)
    if not all(re.fullmatch(number, p) for p in parts):
        return None
    return tuple(int(p) for p in parts)


def format_shape(shape: Sequence[int]) -> str:
    """``(64, 56, 56)`` -> ``"64x56x56"``: how cnnkit writes every shape."""
    return "x".join(str(v) for v in shape)


__all__ = [
    "format_shape",
    "PAD_MODES",
    "PADDING_WORDS",
    "as_tuple",
    "ceil_div",
    "conv_output_shape",
    "conv_output_size",
    "dilated_span",
    "dropped_by_stride",
    "full_padding",
    "padding_from_text",
    "pool_output_shape",
    "pool_output_size",
    "positive_tuple",
    "resolve_padding",
    "same_padding",
]
