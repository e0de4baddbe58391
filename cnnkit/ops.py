"""Checked, documented convolution and pooling: validate, pick a kernel, run it.

Every public function here validates its arguments and raises ``ValueError`` with a message
naming the argument before any Numba code runs; the kernels in :mod:`cnnkit.kernels` assume
validated, contiguous input. Semantics and parameter names follow PyTorch's ``F.conv*d``,
``F.max_pool*d`` and ``F.avg_pool*d`` (NCHW layout; a "convolution" is a cross-correlation
unless ``flip=True``).

Output size, per spatial dimension (computed only by :mod:`cnnkit.geometry`)::

    out = floor((n + pad_before + pad_after - dilation * (k - 1) - 1) / stride) + 1

Dtypes: float32 and float64 are computed in that dtype; if either operand is float64 the
result is float64; integer and bool input is converted to float32; complex, object and string
arrays are rejected.

NaN and inf propagate per IEEE 754 in every operation: a NaN anywhere in a window (or in a
weight) makes that output NaN; ``inf * 0`` is NaN, so an inf under a zero weight tap gives a
NaN, exactly as a plain loop (and PyTorch) would. One kernel-dependent detail: a tap over
*zero padding* is multiplied by 0 in the im2col kernels and the loop method's small-image
and register-blocked (float32, 2-D, stride 1) kernels (as PyTorch does), but skipped by the
loop method's row and plane kernels; the results differ only when a weight is inf or NaN
(``inf * 0`` is NaN), and only at the border. The Winograd method (``method="winograd"``,
and ``"auto"`` for 3x3 stride-1 layers) combines inputs before multiplying, so an inf input
can give NaN where a plain sum gives +-inf; NaN stays in the windows that hold it. Max
pooling treats NaN as the maximum of its window (PyTorch's behaviour).

Threads: calls above ~2 MFLOP split their work over ``numba.get_num_threads()`` threads
(``NUMBA_NUM_THREADS`` sets it); smaller calls run on the caller's thread. The im2col method
pins OpenBLAS to one thread while it runs (each of cnnkit's threads runs its own GEMM) and
restores the previous setting afterwards; it keeps a few MiB of scratch per thread. See
:mod:`cnnkit.kernels.threads`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from cnnkit import geometry, memory, placement
from cnnkit.geometry import PAD_MODES, PaddingArg
from cnnkit.kernels import blas as _blas
from cnnkit.kernels import conv as _conv
from cnnkit.kernels import direct as _direct
from cnnkit.kernels import im2col as _im2col
from cnnkit.kernels import pool as _pool
from cnnkit.kernels import threads as _threads
from cnnkit.kernels import winograd as _winograd

METHODS = ("loop", "im2col", "winograd", "auto")
IntOrTuple = int | Sequence[int]

# np.pad's names for PyTorch's padding modes.
_NP_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}

# Bytes of patch matrix each thread builds at once in the im2col method: larger batches are
# chunked so memory stays bounded and the matrix is still in cache when the GEMM reads it,
# while each GEMM stays large enough to run at full speed.
_COLS_BUDGET = 4 * 2**20

# Weight gradient of im2col: with few patch rows and outputs (R*O <= 512) OpenBLAS runs the
# one (R, m*L) @ (m*L, O) GEMM at a fraction of its speed, and a stack of per-sample GEMMs
# summed afterwards is 2-4x faster (docs/PERFORMANCE.md).
_SMALL_WEIGHT_GRAD = 512

# choose_method: Winograd needs channels for its GEMMs (K = C, M = O) and keeps one sample's
# transformed tiles (16 * C * OH * OW / 4 values) at once, so planes stay modest.
_WINOGRAD_MIN_CHANNELS = 8
_WINOGRAD_MAX_POSITIONS = 64 * 64

# choose_method: a single image with few taps per output goes to the threaded loop method
# from this many output positions on (measured crossover, see choose_method).
_SINGLE_IMAGE_LOOP_POSITIONS = 65536

# Below this many FLOPs a call runs on the calling thread only: handing work to another
# thread costs tens of microseconds, more than small training batches take.
_THREADED_FLOPS = 2_000_000

# The loop method switches to the flattened-plane kernels for stride-1 convolutions whose
# output rows are shorter than this (row-loop start-up dominates there); _FLAT_BLOCK output
# elements (4 KiB of float32) are accumulated per task so they stay in L1.
_FLAT_MAX_WIDTH = 64
_FLAT_BLOCK = 1024
# The row kernel splits output rows longer than this into equal column blocks (1-D signals).
_ROW_BLOCK = 4096
# One-channel-per-output 2-D filters of at least this many output positions per plane take
# the plane kernel (kernels/filter2d.py); smaller planes stay with the flat loop kernels,
# which split one call over many planes without the plane kernel's per-plane Python set-up
# of about 5 us (docs/PERFORMANCE.md).
_PLANE_POSITIONS = 4096

# The plane kernel splits a call over threads from 8 MFLOP, or 16 MFLOP on rows of 256 px
# and wider, where it runs twice as fast: about 350 us of one thread's work. Below that
# the hand-off and the per-plane Python calls cost more than the second thread saves
# (docs/PERFORMANCE.md).
_THREADED_PLANE_FLOPS = 8_000_000
_WIDE_PLANE = 256

# The register-blocked kernel (kernels/direct.py) unrolls the whole window: at most this
# many taps, so that a block compiles in seconds. It splits a call over threads from
# 12 MFLOP (about 150 us of one thread's work); below that the hand-off costs more than
# the second thread saves (docs/PERFORMANCE.md).
_BLOCKED_MAX_TAPS = 49
_THREADED_BLOCKED_FLOPS = 12_000_000

# Intermediate elements per block of rows in the fused separable passes (2 MiB of float32;
# each block costs about 10 us of calls, and a larger one falls out of cache).
_SEPARABLE_BLOCK = 2**19
# The plane kernel unrolls a piece of the kernel of at most this many columns and taps
# (LLVM stops unrolling, and the loop stops vectorising, at about 11 columns or 30 taps);
# larger kernels run as several pieces.
_PIECE_WIDTH = 9
_PIECE_TAPS = 25

_LAYOUT = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}


# ----------------------------------------------------------------------------- validation
def _float_dtype(*arrays: np.ndarray) -> np.dtype:
    """float64 if any operand is a float of 64 bits or more, else float32."""
    wide = any(a.dtype.kind == "f" and a.dtype.itemsize >= 8 for a in arrays)
    return np.dtype(np.float64 if wide else np.float32)


def _as_real_array(value: object, name: str) -> np.ndarray:
    """``value`` as an ndarray of a real numeric dtype, or a ValueError naming ``name``."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(
            f"{name} must be a real numeric array (float32/float64, or int/bool), "
            f"got dtype {arr.dtype}"
        )
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {arr.shape}")
    return arr


#: Largest padding accepted: no real input comes near it, and every geometry value handed
#: to the int64 kernels stays far from overflow.
MAX_PADDING = 2**31 - 1


def _flag(value: object, name: str) -> bool:
    """A bool argument: a string such as ``"no"`` would be truthy, so only bools pass."""
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _kernel_geometry(
    stride: tuple[int, ...], dilation: tuple[int, ...], kernel: Sequence[int], out: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Stride and dilation as the kernels get them: a stride along a dimension with a single
    output, or the dilation of a one-tap kernel, changes nothing and becomes 1, so no huge
    Python int (``stride=2**63``) reaches int64 code."""
    return (
        tuple(1 if o == 1 else st for st, o in zip(stride, out)),
        tuple(1 if k == 1 else d for d, k in zip(dilation, kernel)),
    )


def _check_output_memory(shape: Sequence[int], itemsize: int, what: str) -> None:
    need = math.prod(shape) * itemsize
    if need > memory.SMALL_BYTES:  # smaller needs always pass: no message to format
        memory.check(need, f"{what} output of shape {tuple(shape)}")


def _check_ndim(arr: np.ndarray, ndim: int, name: str, layout: str) -> None:
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {arr.shape}")


def _cast(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(arr, dtype=dtype)


def _lift(values: Sequence[int], fill: int, nd: int) -> tuple[int, ...]:
    """Prefix ``values`` with ``fill`` so a 1-D/2-D problem becomes a 3-D one."""
    return (fill,) * (3 - nd) + tuple(values)


def _to5d(arr: np.ndarray, nd: int) -> np.ndarray:
    return arr.reshape(arr.shape[:2] + (1,) * (3 - nd) + arr.shape[2:])


def choose_method(
    c_in_per_group: int,
    taps: int,
    n_out: int,
    *,
    groups: int = 1,
    n_batch: int | None = None,
    n_positions: int | None = None,
    out_width: int | None = None,
    backward: bool = False,
    winograd: bool = False,
    blocked: bool = False,
) -> str:
    """The kernel ``method="auto"`` uses for a convolution of this shape.

    Parameters
    ----------
    c_in_per_group : int
        Input channels each output sees (``C / groups``).
    taps : int
        Kernel taps (``kh * kw``).
    n_out : int
        Output channels ``O``.
    groups : int
        Channel groups; ``O / groups`` outputs share each patch matrix.
    n_batch : int, optional
        Batch size, if known.
    n_positions : int, optional
        Output positions per channel (``OH * OW``), if known.
    out_width : int, optional
        Output row length of a stride-1, undilated convolution (None otherwise).
    backward : bool
        Choosing for the gradients rather than the forward pass.
    winograd : bool
        The convolution is one :func:`winograd_applies` to (2-D, 3x3, stride 1, dilation 1,
        one group).
    blocked : bool
        The loop method's forward runs the register-blocked kernel (:func:`blocked_applies`).

    Returns
    -------
    str
        ``"loop"``, ``"im2col"`` or ``"winograd"``.

    Notes
    -----
    With ``O / groups <= 4`` (image filtering, depthwise layers) the im2col GEMM degenerates
    to a memory-bound matrix-vector product, so the loop wins. 3x3 stride-1 layers with at
    least 8 input and 8 output channels and at most 64x64 outputs take Winograd F(2x2, 3x3)
    (2.25x fewer multiplications; larger planes stay with im2col, whose scratch is
    bounded). Any other forward pass that the register-blocked kernel takes goes to the
    loop: it beat im2col on every such layer measured, from 9 to 1600 patch rows. A single
    image with few taps per output (``C/groups * taps <= 32``) goes to the loop only from
    65536 output positions on and with more than one thread, because im2col splits its
    work by batch. Forward passes of stride-1 layers with 32-63 px output rows, at least 32
    rows, ``C/groups * taps <= 288`` and a multiple of 4 outputs per group run the
    four-channel flat loop kernel; their gradients stay with im2col. Everything else goes
    to im2col. The measurements behind these thresholds are in docs/PERFORMANCE.md.
    """
    per_group = n_out // max(groups, 1)
    if per_group <= 4:
        return "loop"
    if (
        winograd
        and c_in_per_group >= _WINOGRAD_MIN_CHANNELS
        and per_group >= _WINOGRAD_MIN_CHANNELS
        and (n_positions is None or n_positions <= _WINOGRAD_MAX_POSITIONS)
    ):
        return "winograd"
    if blocked and not backward:
        return "loop"
    if n_batch == 1 and c_in_per_group * taps <= 32:
        if n_positions is None:
            return "loop"
        if n_positions >= _SINGLE_IMAGE_LOOP_POSITIONS and _threads.worker_count() > 1:
            return "loop"
    if (
        not backward
        and out_width is not None
        and 32 <= out_width < _FLAT_MAX_WIDTH
        and n_positions is not None
        and n_positions >= 32 * out_width
        and per_group % 4 == 0
        and c_in_per_group * taps <= 288
    ):
        return "loop"
    return "im2col"


class _ConvPlan(NamedTuple):
    """Validated operands and geometry of one convolution, shared by forward and backward.

    The spatial fields are lifted to three dimensions (a 1-D or 2-D problem is a 3-D one
    with leading size-1 dimensions), which is how the kernels see every convolution.
    A plan cannot be changed once built (layers keep theirs): another one is derived with
    ``_replace`` or :meth:`with_operands`. A named tuple, not a frozen dataclass, because
    one is built on every call and a frozen dataclass takes ~2 us more to build.
    """

    nd: int  # spatial dimensions the caller asked for (1, 2 or 3)
    dtype: np.dtype
    x5: np.ndarray  # input as (N, C, D, H, W), already padded if pad_mode is not zeros
    w5: np.ndarray  # weight as (O, C/groups, kd, kh, kw)
    bias: np.ndarray | None
    groups: int
    stride: tuple[int, int, int]
    dilation: tuple[int, int, int]
    pads: tuple[tuple[int, int], ...]  # resolved (before, after) per caller dimension
    zero_pads: tuple[tuple[int, int], ...]  # the 3 (before, after) zero pads the kernels add
    pad_mode: str
    in_sizes: tuple[int, ...]  # spatial sizes of the unpadded input
    out5: tuple[int, int, int, int, int]  # output as (N, O, OD, OH, OW)
    method: str  # "loop" or "im2col"
    flip: bool
    factors: tuple[np.ndarray, np.ndarray] | None  # rank-1 factors for two 1-D passes

    @property
    def pads_before(self) -> tuple[int, int, int]:
        """Zero padding before each of the three dimensions (where the window starts)."""
        (d, _), (h, _), (w, _) = self.zero_pads
        return d, h, w

    def with_operands(self, x5: np.ndarray, w5: np.ndarray, bias: np.ndarray | None) -> _ConvPlan:
        """This plan for other operands of the same shapes and dtype (``_replace`` costs
        ~1 us more)."""
        return _ConvPlan(self.nd, self.dtype, x5, w5, bias, *self[5:])

    def geometry_args(self) -> tuple[int, ...]:
        """Stride, padding before and dilation as the kernels take them: nine ints."""
        return (*self.stride, *self.pads_before, *self.dilation)


def _check_groups(groups: object, n_in: int, w_shape: tuple[int, ...]) -> int:
    """``groups`` as an int that divides the input and output channels and matches ``w``."""
    if isinstance(groups, bool) or not isinstance(groups, int | np.integer) or groups < 1:
        raise ValueError(f"groups must be an int >= 1, got {groups!r}")
    groups = int(groups)
    n_out = w_shape[0]
    if n_in % groups:
        raise ValueError(f"groups={groups} must divide the input channels of x ({n_in})")
    if n_out % groups:
        raise ValueError(f"groups={groups} must divide the output channels of w ({n_out})")
    if w_shape[1] * groups != n_in:
        raise ValueError(
            f"channel mismatch: x has {n_in} channels but w expects "
            f"w.shape[1] * groups = {w_shape[1]} * {groups} = {w_shape[1] * groups}"
        )
    return groups


def pad(x: np.ndarray, pads: tuple[tuple[int, int], ...], pad_mode: str = "zeros") -> np.ndarray:
    """``x`` (N, C, *spatial) padded by ``pads`` ((before, after) per spatial dimension) as
    the convolutions pad it, with the same checks; ``x`` itself when ``pads`` are all 0."""
    _check_pad_mode(pad_mode)
    _check_pad_mode_room(pad_mode, pads, x.shape[2:])
    if all(p == (0, 0) for p in pads):
        return x
    mode = "constant" if pad_mode == "zeros" else _NP_PAD_MODE[pad_mode]
    return np.pad(x, ((0, 0), (0, 0), *pads), mode=mode)


def _check_pad_mode(pad_mode: str) -> None:
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {', '.join(PAD_MODES)}; got {pad_mode!r}")


def _check_pad_mode_room(
    pad_mode: str, pads: tuple[tuple[int, int], ...], sizes: tuple[int, ...]
) -> None:
    """reflect padding must be smaller than the input, circular at most as large."""
    if pad_mode == "reflect" and any(p >= n for pp, n in zip(pads, sizes) for p in pp):
        raise ValueError(
            f"reflect padding must be smaller than the input size, got padding {pads} "
            f"for input size {sizes}"
        )
    if pad_mode == "circular" and any(p > n for pp, n in zip(pads, sizes) for p in pp):
        raise ValueError(
            f"circular padding must not exceed the input size, got padding {pads} "
            f"for input size {sizes}"
        )


def _check_kernel_fits(
    out: tuple[int, ...],
    sizes: tuple[int, ...],
    kernel: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    dilation: tuple[int, ...],
) -> None:
    """Every output size ``out`` is positive: the dilated kernel fits the padded input."""
    for i, o in enumerate(out):
        if o <= 0:
            span = dilation[i] * (kernel[i] - 1) + 1
            raise ValueError(
                f"kernel larger than padded input in spatial dim {i}: dilated kernel spans "
                f"{span} but the padded input has {sizes[i] + pads[i][0] + pads[i][1]}"
            )


def _checked_bias(bias: object, n_out: int) -> np.ndarray:
    """``bias`` as a real array of one value per output channel."""
    bias = _as_real_array(bias, "bias")
    if bias.shape != (n_out,):
        raise ValueError(f"bias must have shape ({n_out},), got {bias.shape}")
    return bias


def _pad_for_mode(
    pads: tuple[tuple[int, int], ...], pad_mode: str, nd: int
) -> tuple[bool, tuple[tuple[int, int], ...]]:
    """Pads other than zeros are applied to the input by np.pad; zeros are left to the kernels.

    Returns whether np.pad runs and the zero padding the kernels add (in 3-D form)."""
    if pad_mode != "zeros" and any(p != (0, 0) for p in pads):
        return True, ((0, 0),) * 3
    return False, ((0, 0),) * (3 - nd) + tuple(pads)


@dataclass(frozen=True, slots=True)
class _ConvShape:
    """What :func:`_plan_conv` checks and decides from the operands' shapes and dtypes and
    the options alone: every field of a :class:`_ConvPlan` except the operands."""

    nd: int
    dtype: np.dtype
    groups: int
    stride: tuple[int, int, int]
    dilation: tuple[int, int, int]
    pads: tuple[tuple[int, int], ...]
    zero_pads: tuple[tuple[int, int], ...]
    pad_copy: bool  # the input is padded by np.pad (pad_mode other than zeros)
    pad_mode: str
    in_sizes: tuple[int, ...]
    out5: tuple[int, int, int, int, int]
    itemsize: int  # of the output, for the memory check
    out_bytes: int
    method: str
    flip: bool
    rank_one: bool  # method "auto" with unit stride and dilation: the kernel is tested


# Checked shapes of recent convolutions (key: _plan_key): repeating the checks and the method
# choice costs ~20 us a call, a sixth of filtering a 512 px image with a 3x3 kernel.
_SHAPES: dict[tuple, _ConvShape] = {}
_SHAPES_KEPT = 256
_OUTPUT = "the convolution's"  # what the memory check names


def _plain(value: object) -> bool:
    """Whether ``value`` is an int, a str or a tuple of them: such arguments are hashable and
    equal ones are checked alike (unlike ``True == 1 == 1.0`` or a list)."""
    kind = type(value)
    if kind is int or kind is str:
        return True
    if kind is not tuple:
        return False
    for item in value:  # type: ignore[attr-defined]
        if not _plain(item):
            return False
    return True


def _plan_key(
    nd, x, w, bias, stride, padding, dilation, groups, pad_mode, flip, method, backward
) -> tuple | None:
    """The key of a convolution's :class:`_ConvShape` in ``_SHAPES``, or None when an
    operand is not a plain ndarray or an option not a plain value (checked afresh)."""
    if type(x) is not np.ndarray or type(w) is not np.ndarray:
        return None
    if bias is None:
        b = None
    elif type(bias) is np.ndarray:
        b = (bias.shape, bias.dtype)
    else:
        return None
    if flip is not True and flip is not False:
        return None
    for option in (stride, padding, dilation, groups, pad_mode, method):
        kind = type(option)
        if kind is not int and kind is not str and not _plain(option):
            return None
    # "auto" may choose by the number of threads
    workers = _threads.worker_count() if method == "auto" else 0
    return (
        nd,
        x.shape,
        x.dtype,
        w.shape,
        w.dtype,
        b,
        stride,
        padding,
        dilation,
        groups,
        pad_mode,
        flip,
        method,
        backward,
        workers,
    )


def _plan_conv(
    nd: int,
    x: object,
    w: object,
    bias: object,
    stride: IntOrTuple,
    padding: PaddingArg,
    dilation: IntOrTuple,
    groups: int,
    pad_mode: str,
    flip: bool,
    method: str,
    backward: bool = False,
) -> _ConvPlan:
    """The checked plan of a convolution; its shape part is kept for the next call with the
    same shapes, dtypes and options, and only the output's memory is checked again."""
    args = (stride, padding, dilation, groups, pad_mode, flip, method, backward)
    key = _plan_key(nd, x, w, bias, *args)
    shape = None if key is None else _SHAPES.get(key)
    if shape is None:
        x = _as_real_array(x, "x")
        w = _as_real_array(w, "w")
        shape, bias = _check_conv(nd, x, w, bias, *args)
        if key is not None:
            if len(_SHAPES) >= _SHAPES_KEPT:
                _SHAPES.clear()
            _SHAPES[key] = shape
    else:
        if shape.out_bytes > memory.SMALL_BYTES:  # smaller needs always pass
            _check_output_memory(shape.out5[:2] + shape.out5[5 - nd :], shape.itemsize, _OUTPUT)
    return _bind(shape, x, w, bias)


def _check_conv(
    nd: int,
    x: np.ndarray,
    w: np.ndarray,
    bias: object,
    stride: IntOrTuple,
    padding: PaddingArg,
    dilation: IntOrTuple,
    groups: int,
    pad_mode: str,
    flip: bool,
    method: str,
    backward: bool,
) -> tuple[_ConvShape, np.ndarray | None]:
    """Every check of a convolution's arguments, and the method "auto" picks; returns the
    shape part of its plan and ``bias`` as an array."""
    _check_ndim(x, nd + 2, "x", _LAYOUT[nd])
    _check_ndim(w, nd + 2, "w", "(O, C/groups, k...)")
    groups = _check_groups(groups, x.shape[1], w.shape)
    n_out = w.shape[0]
    _check_pad_mode(pad_mode)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    kernel = w.shape[2:]
    sizes = x.shape[2:]
    stride_t = geometry.positive_tuple(stride, nd, "stride")
    dil_t = geometry.positive_tuple(dilation, nd, "dilation")
    flip = _flag(flip, "flip")
    pads = geometry.resolve_padding(padding, sizes, kernel, stride_t, dil_t)
    if any(p > MAX_PADDING for pp in pads for p in pp):
        raise ValueError(f"padding must be <= {MAX_PADDING:,}, got {padding!r}")
    out = geometry.conv_output_shape(sizes, kernel, stride_t, pads, dil_t)
    _check_kernel_fits(out, sizes, kernel, pads, dil_t)
    stride_t, dil_t = _kernel_geometry(stride_t, dil_t, kernel, out)
    itemsize = 8 if np.float64 in (x.dtype, w.dtype) else 4
    _check_output_memory((x.shape[0], n_out, *out), itemsize, _OUTPUT)
    _check_pad_mode_room(pad_mode, pads, sizes)
    bias = None if bias is None else _checked_bias(bias, n_out)
    dtype = _float_dtype(x, w) if bias is None else _float_dtype(x, w, bias)
    pad_copy, zero_pads = _pad_for_mode(pads, pad_mode, nd)
    winograd = winograd_applies(nd, kernel, stride_t, dil_t, groups)
    if method == "winograd" and not winograd:
        raise ValueError(
            "method='winograd' needs a 2-D 3x3 kernel with stride 1, dilation 1 and groups=1; "
            f"got kernel {tuple(kernel)}, stride {stride_t}, dilation {dil_t}, groups {groups}"
        )
    unit = stride_t == dil_t == (1,) * nd
    if method == "auto":
        method = choose_method(
            w.shape[1],
            math.prod(kernel),
            n_out,
            groups=groups,
            n_batch=x.shape[0],
            n_positions=math.prod(out),
            out_width=out[-1] if unit else None,
            backward=backward,
            winograd=winograd,
            blocked=blocked_applies(nd, dtype, kernel, stride_t, dil_t, groups, n_out, out[-1]),
        )
        rank_one = unit
    else:
        rank_one = False
    shape = _ConvShape(
        nd=nd,
        dtype=dtype,
        groups=groups,
        stride=_lift(stride_t, 1, nd),
        dilation=_lift(dil_t, 1, nd),
        pads=pads,
        zero_pads=zero_pads,
        pad_copy=pad_copy,
        pad_mode=pad_mode,
        in_sizes=sizes,
        out5=(x.shape[0], n_out, *_lift(out, 1, nd)),
        itemsize=itemsize,
        out_bytes=x.shape[0] * n_out * math.prod(out) * itemsize,
        method=method,
        flip=flip,
        rank_one=rank_one,
    )
    return shape, bias


def _bind(shape: _ConvShape, x: np.ndarray, w: np.ndarray, bias: np.ndarray | None) -> _ConvPlan:
    """The plan of ``shape`` for these operands (checked against it already)."""
    nd, dtype = shape.nd, shape.dtype
    if shape.flip:
        w = w[(Ellipsis,) + (slice(None, None, -1),) * nd]
    w = _cast(w, dtype)
    x = _cast(x, dtype)
    if shape.pad_copy:
        x = np.pad(x, ((0, 0), (0, 0), *shape.pads), mode=_NP_PAD_MODE[shape.pad_mode])
    return _ConvPlan(
        nd=nd,
        dtype=dtype,
        x5=_to5d(x, nd),
        w5=_to5d(w, nd),
        bias=None if bias is None else _cast(bias, dtype),
        groups=shape.groups,
        stride=shape.stride,
        dilation=shape.dilation,
        pads=shape.pads,
        zero_pads=shape.zero_pads,
        pad_mode=shape.pad_mode,
        in_sizes=shape.in_sizes,
        out5=shape.out5,
        method=shape.method,
        flip=shape.flip,
        factors=separable_factors(w, shape.groups) if shape.rank_one else None,
    )


# ----------------------------------------------------------------------------- im2col GEMM
def _chunk(per_sample_bytes: int, n: int) -> int:
    return max(1, min(n, _COLS_BUDGET // max(per_sample_bytes, 1)))


def _launch(kernel, tasks: int, flops: float, *args) -> None:
    """``kernel(*args, t0, t1)`` over ``range(tasks)``, split over threads if worth it."""
    workers = _threads.worker_count() if flops >= _THREADED_FLOPS else 1
    _threads.run_parts(lambda t0, t1: kernel(*args, t0, t1), _threads.split(tasks, workers))


def _fill_cols(plan: _ConvPlan, x5: np.ndarray, cols: np.ndarray, per_sample: bool) -> None:
    """Patch matrix of the samples ``x5`` on the calling thread (callers split the batch).

    ``cols`` is ``(R, n, L)``, or ``(n, R, L)`` if ``per_sample``.
    """
    kernel3, out3 = plan.w5.shape[2:], plan.out5[2:]
    n, length = x5.shape[0], math.prod(out3)
    # per-sample blocks may hold extra rows after the R patch rows (the bias row)
    steps = (length, cols.shape[1] * length) if per_sample else (n * length, length)
    geo = plan.geometry_args()
    _im2col.im2col_fill(
        x5, cols.reshape(-1), *steps, *kernel3, *out3, *geo, 0, n * plan.x5.shape[1]
    )


def _flops(plan: _ConvPlan) -> int:
    """Multiply-adds x 2 of the convolution (each gradient costs the same)."""
    return 2 * plan.w5.size * math.prod(plan.out5[2:]) * plan.out5[0]


def _parts(plan: _ConvPlan) -> list[tuple[int, int]]:
    """Batch parts, one per core, when the layer is big enough to pay for the threads."""
    workers = _threads.worker_count() if _flops(plan) >= _THREADED_FLOPS else 1
    return _threads.split(plan.out5[0], workers)


def _gemm_forward(plan: _ConvPlan) -> np.ndarray:
    x5, w5, groups = plan.x5, plan.w5, plan.groups
    n_batch, n_in = x5.shape[:2]
    n_out = w5.shape[0]
    taps, length = math.prod(w5.shape[2:]), math.prod(plan.out5[2:])
    rows, rg, og = n_in * taps, w5.shape[1] * taps, n_out // groups
    wm = w5.reshape(n_out, rg)
    y = np.empty(plan.out5, plan.dtype)
    y3 = y.reshape(n_batch, n_out, length)
    # Without groups the bias rides in the GEMM (a row of ones under the patch rows, the bias
    # as an extra weight column), which saves a pass over y.
    fold = plan.bias is not None and groups == 1
    if fold:
        wm = np.concatenate([wm, plan.bias[:, None]], axis=1)
    block = rows + fold  # rows of one sample's block
    nb = _chunk(block * length * plan.dtype.itemsize, n_batch)

    @np.errstate(invalid="ignore", over="ignore")  # inf/NaN input is documented behaviour
    def part(start: int, stop: int) -> None:
        buf = _threads.workspace("cols", block * min(nb, stop - start) * length, plan.dtype)
        for n0 in range(start, stop, nb):
            m = min(nb, stop - n0)
            # per-sample (R, L) blocks: a stack of GEMMs writes NCHW directly, where one
            # (R, m*L) GEMM would need a reorder pass (and, reorder included, ran 1.1-1.3x
            # slower on LeNet-sized layers)
            cols = buf[: m * block * length].reshape(m, block, length)
            _fill_cols(plan, x5[n0 : n0 + m], cols, per_sample=True)
            if fold:
                cols[:, rows] = 1
                np.matmul(wm, cols, out=y3[n0 : n0 + m])
                continue
            for g in range(groups):
                np.matmul(
                    wm[g * og : (g + 1) * og],
                    cols[:, g * rg : (g + 1) * rg],
                    out=y3[n0 : n0 + m, g * og : (g + 1) * og],
                )
            if plan.bias is not None:
                np.add(y3[n0 : n0 + m], plan.bias[:, None], out=y3[n0 : n0 + m])

    with _threads.single_threaded_blas():
        _threads.run_parts(part, _parts(plan))
    return y


def _gemm_backward(plan: _ConvPlan, gy5: np.ndarray, need_input_grad: bool):
    x5, w5, groups = plan.x5, plan.w5, plan.groups
    n_batch, n_in = x5.shape[:2]
    n_out = w5.shape[0]
    kernel3, out3 = w5.shape[2:], plan.out5[2:]
    taps, length = math.prod(kernel3), math.prod(out3)
    rows, rg, og = n_in * taps, w5.shape[1] * taps, n_out // groups
    wm = w5.reshape(n_out, rg)
    geo = plan.geometry_args()
    gx = np.zeros(x5.shape, plan.dtype) if need_input_grad else None
    nb = _chunk(2 * rows * length * plan.dtype.itemsize, n_batch)
    # few patch rows and outputs: per-sample GEMMs for dL/dw (see _SMALL_WEIGHT_GRAD)
    stacked = rg * og <= _SMALL_WEIGHT_GRAD

    @np.errstate(invalid="ignore", over="ignore")  # per thread, so set where GEMMs run
    def part(start: int, stop: int) -> np.ndarray:
        # accumulated transposed: (R, m*L) @ (m*L, O) is the faster GEMM shape here
        gwt = np.zeros((rg, n_out), plan.dtype)
        size = rows * min(nb, stop - start) * length
        buf = _threads.workspace("cols", size, plan.dtype)
        gbuf = _threads.workspace("grad_cols", size, plan.dtype) if need_input_grad else None
        gybuf = _threads.workspace("grad_y", n_out * min(nb, stop - start) * length, plan.dtype)
        for n0 in range(start, stop, nb):
            m = min(nb, stop - n0)
            gy3 = gy5[n0 : n0 + m].reshape(m, n_out, length)
            if stacked:
                cols = buf[: rows * m * length].reshape(m, rows, length)
                _fill_cols(plan, x5[n0 : n0 + m], cols, per_sample=True)
                for g in range(groups):
                    gs, rs = slice(g * og, (g + 1) * og), slice(g * rg, (g + 1) * rg)
                    gwt[:, gs] += np.matmul(cols[:, rs], gy3[:, gs].transpose(0, 2, 1)).sum(0)
            else:
                cols = buf[: rows * m * length].reshape(rows, m, length)
                _fill_cols(plan, x5[n0 : n0 + m], cols, per_sample=False)
            if stacked and gbuf is None:
                continue
            gym = gybuf[: n_out * m * length].reshape(n_out, m, length)
            gym[...] = np.moveaxis(gy3, 0, 1)
            gym = gym.reshape(n_out, m * length)
            gcols = None if gbuf is None else gbuf[: rows * m * length].reshape(rows, m * length)
            for g in range(groups):
                gs, rs = slice(g * og, (g + 1) * og), slice(g * rg, (g + 1) * rg)
                if not stacked:
                    gwt[:, gs] += cols.reshape(rows, m * length)[rs] @ gym[gs].T
                if gcols is not None:
                    np.matmul(wm[gs].T, gym[gs], out=gcols[rs])
            if gcols is not None:
                _im2col.col2im_accumulate(
                    gcols.reshape(rows, m, length),
                    gx[n0 : n0 + m],
                    *kernel3,
                    *out3,
                    *geo,
                    0,
                    m * n_in,
                )
        return gwt

    with _threads.single_threaded_blas():
        partial = _threads.run_parts(part, _parts(plan))
    gwt = partial[0]
    for other in partial[1:]:
        gwt += other
    return gx, np.ascontiguousarray(gwt.T).reshape(w5.shape)


# ----------------------------------------------------------------------------- Winograd
# Tiles per Winograd GEMM (U[e] @ V[e] is (O, C) @ (C, tiles)): whole samples, at least this
# many (or one sample). 200-500 ran OpenBLAS at 85-108 GFLOP/s on one core, 1000 and more at
# 67-77 (the operands leave L2). Since each thread's chunks run in one call, 224 (lenet_c2:
# 4 samples, the chunk's planes 0.7 MiB) beat 512 (10 samples, 1.7 MiB) by 0-6 % on every
# layer measured (docs/PERFORMANCE.md).
_WINOGRAD_TILES = 224
# Channel blocks a thread, in each step of a small batch's backward split by channels: more
# balance a slower core, fewer keep the products' GEMMs wide.
_SPLIT_BLOCKS = 4


def winograd_applies(
    nd: int,
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    groups: int,
) -> bool:
    """Whether ``method="winograd"`` (F(2x2, 3x3)) computes this convolution: a 2-D 3x3
    kernel with stride 1, dilation 1 and one group (any zero padding)."""
    unit = tuple(stride) == tuple(dilation) == (1, 1)
    return nd == 2 and tuple(kernel) == (3, 3) and unit and groups == 1


def _winograd_weights(w5: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``U[e, o, c] = (G w[o, c] G^T)[e // 4, e % 4]``: (16, O*C) storage and (16, O, C) view."""
    flat, u = _planes(w5.shape[0], w5.shape[1], w5.dtype)
    _winograd.weight_tiles(w5.reshape(*w5.shape[:2], 3, 3), flat)
    return flat, u


def _winograd_geometry(plan: _ConvPlan) -> tuple[int, int, int, int]:
    """Tile rows, tile columns plus the gap column (kernels/winograd.py), tiles per sample
    and samples per GEMM chunk."""
    th, tw = (geometry.ceil_div(s, 2) for s in plan.out5[3:])
    tiles = th * (tw + 1)
    per = geometry.ceil_div(_WINOGRAD_TILES, tiles)
    # a chunk holds whole samples: one large plane is one large chunk
    chunk = 16 * (plan.x5.shape[1] + plan.out5[1]) * tiles * min(per, plan.out5[0])
    memory.check(
        chunk * plan.dtype.itemsize * _threads.worker_count(),
        f"method='winograd' on {plan.out5[3]}x{plan.out5[4]} outputs (transformed tiles)",
        "method='im2col' works in bounded chunks",
    )
    return th, tw + 1, tiles, per


def _planes(
    rows: int, t: int, dtype: np.dtype, name: str = "", most: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """16 planes of (rows, t): as (16, S) C-contiguous storage (what the kernels take) and
    as a (16, rows, t) view (what the GEMMs take). The planes start 64 bytes past a 4 KiB
    multiple apart: planes an exact multiple apart share cache sets, and the transforms,
    which touch all 16 at once, ran up to 6x slower. With ``name``, per-thread scratch
    sized for ``most`` columns."""
    stride = _plane_stride(rows, max(t, most))
    buf = _threads.workspace(name, 16 * stride, dtype) if name else np.empty(16 * stride, dtype)
    flat = buf.reshape(16, stride)
    return flat, flat[:, : rows * t].reshape(16, rows, t)


def _plane_stride(rows: int, t: int) -> int:
    """Elements from one of :func:`_planes`' planes to the next."""
    return geometry.ceil_div(rows * t, 1024) * 1024 + 16


def _planes_of_parts(parts: int, rows: int, most: int, dtype: np.dtype, name: str) -> np.ndarray:
    """Per-thread scratch of :func:`_planes` (16 planes of (rows, most)) for each of
    ``parts`` parts of a team task, from the calling thread: (parts, 16, S)."""
    stride = _plane_stride(rows, most)
    return _threads.workspace(name, parts * 16 * stride, dtype).reshape(parts, 16, stride)


def _winograd_workers(plan: _ConvPlan) -> int:
    """Threads for a Winograd call; 1 if the layer is too small to pay for them. A thread
    hand-off pays for about 100 us of work, which Winograd does in 16x the flops of the
    direct loop's threshold (1x32x32x32 -> 32 at 2 threads: 0.16 ms alone, 0.20 split)."""
    return _threads.worker_count() if _flops(plan) >= 16 * _THREADED_FLOPS else 1


def _ranges(n: int, parts: int) -> list[tuple[int, int]]:
    """``range(n)`` cut into exactly ``parts`` contiguous ranges (some may be empty)."""
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


def _winograd_forward(plan: _ConvPlan) -> np.ndarray:
    n, n_out, _, oh, ow = plan.out5
    c = plan.x5.shape[1]
    x4 = plan.x5.reshape(n, c, *plan.x5.shape[3:])
    ph, pw = plan.pads_before[1:]
    th, tw1, tiles, per = _winograd_geometry(plan)
    uflat, u = _winograd_weights(plan.w5)
    bias = np.zeros(n_out, plan.dtype) if plan.bias is None else plan.bias
    y = np.empty((n, n_out, oh, ow), plan.dtype)
    workers = _winograd_workers(plan)
    address = _blas.gemm_address(plan.dtype)  # 0: not NumPy's OpenBLAS, np.matmul
    chunks = geometry.ceil_div(n, per)  # of per samples, the last one maybe smaller
    most = min(per, n) * tiles

    def part(u0: int, u1: int) -> None:  # chunks u0:u1
        for n0 in range(u0 * per, min(u1 * per, n), per):
            n1 = min(n0 + per, n)
            t = (n1 - n0) * tiles
            vflat, v = _planes(c, t, plan.dtype, "winograd_v", most)
            mflat, m = _planes(n_out, t, plan.dtype, "winograd_m", most)
            _winograd.input_tiles(x4, vflat, t, th, tw1, n0, n1, ph, pw, 0, c)
            np.matmul(u, v, out=m)
            _winograd.output_tiles(mflat, t, th, tw1, bias, y, n0, n1)

    def rows(ty0: int, ty1: int) -> None:
        # fewer samples than threads: each thread takes tile rows ty0:ty1 of every sample,
        # as the convolution of the input rows they read (one hand-off, no shared buffers)
        top = 2 * ty0 - ph
        r0, r1 = max(0, top), max(0, min(x4.shape[2], 2 * ty1 + 2 - ph))
        xs, ys = x4[:, :, r0:r1], y[:, :, 2 * ty0 : min(oh, 2 * ty1)]
        most = min(per, n) * (ty1 - ty0) * tw1
        for n0 in range(0, n, per):
            n1 = min(n0 + per, n)
            t = (n1 - n0) * (ty1 - ty0) * tw1
            vflat, v = _planes(c, t, plan.dtype, "winograd_v", most)
            mflat, m = _planes(n_out, t, plan.dtype, "winograd_m", most)
            _winograd.input_tiles(xs, vflat, t, ty1 - ty0, tw1, n0, n1, r0 - top, pw, 0, c)
            np.matmul(u, v, out=m)
            _winograd.output_tiles(mflat, t, ty1 - ty0, tw1, bias, ys, n0, n1)

    with _threads.single_threaded_blas():
        if n < workers:
            _threads.run_parts(rows, _threads.split(th, workers))
        elif address:  # chunks from a queue, OpenBLAS called from the task (kernels/blas.py)
            parts = min(workers, chunks)
            v_all = _planes_of_parts(parts, c, most, plan.dtype, "winograd_v")
            m_all = _planes_of_parts(parts, n_out, most, plan.dtype, "winograd_m")
            block = np.empty(_winograd.FORWARD_BLOCK, np.int64)
            x4 = np.ascontiguousarray(x4)
            tiling = (th, tw1, per, ph, pw)
            args = (uflat, np.ascontiguousarray(bias), y, v_all, m_all, tiling, address)
            _winograd.pack_forward(block, x4, *args, np.zeros(3, np.int64))
            _threads.run_team(_winograd.forward_task(plan.dtype).address, block, parts)
        else:
            _threads.run_parts(part, _threads.split(chunks, workers))
    return y.reshape(plan.out5)


def _winograd_backward(plan: _ConvPlan, gy5: np.ndarray, need_input_grad: bool):
    """Both gradients through the transposes of the forward's steps (Lavin & Gray, 2016):
    ``dU[e] = Gt[e] @ V[e]^T`` with ``Gt = A dY A^T``, ``dw = G^T dU G``, and
    ``dV[e] = U[e]^T @ Gt[e]`` added back to the input as ``B dV B^T``."""
    n, n_out, _, oh, ow = plan.out5
    c = plan.x5.shape[1]
    x4 = plan.x5.reshape(n, c, *plan.x5.shape[3:])
    gy4 = gy5.reshape(n, n_out, oh, ow)
    ph, pw = plan.pads_before[1:]
    th, tw1, tiles, per = _winograd_geometry(plan)
    uflat, u = _winograd_weights(plan.w5)
    ut = u.transpose(0, 2, 1) if need_input_grad else None
    gx = np.empty(x4.shape, plan.dtype) if need_input_grad else None
    workers = _winograd_workers(plan)
    address = _blas.gemm_address(plan.dtype)  # 0: not NumPy's OpenBLAS, np.matmul

    parts = _threads.split(n, workers)
    started, index = _threads.start_flags(parts)

    @np.errstate(invalid="ignore", over="ignore")  # inf/NaN input is documented behaviour
    def part(start: int, stop: int) -> np.ndarray:
        duflat, du = _planes(n_out, c, plan.dtype)
        prodflat, prod = _planes(n_out, c, plan.dtype)
        most = min(per, stop - start) * tiles
        if address:  # the whole part in one call, without the GIL (kernels/blas.py)
            vflat = _planes(c, most, plan.dtype, "winograd_v", most)[0]
            gflat = _planes(n_out, most, plan.dtype, "winograd_m", most)[0]
            out = gx if gx is not None else np.empty((0, 0, 0, 0), plan.dtype)
            args = (th, tw1, (start, stop, per), ph, pw, vflat, gflat, address)
            _winograd.backward_chunks(
                x4, gy4, uflat, duflat, prodflat, out, *args, started, index[start]
            )
            return duflat
        du[...] = 0
        for n0 in range(start, stop, per):
            n1 = min(n0 + per, stop)
            t = (n1 - n0) * tiles
            vflat, v = _planes(c, t, plan.dtype, "winograd_v", most)
            gflat, g = _planes(n_out, t, plan.dtype, "winograd_m", most)
            _winograd.input_tiles(x4, vflat, t, th, tw1, n0, n1, ph, pw, 0, c)
            _winograd.grad_tiles(gy4, gflat, t, th, tw1, n0, n1, 0, n_out)
            np.matmul(g, v.transpose(0, 2, 1), out=prod)
            du += prod
            if ut is not None:
                np.matmul(ut, g, out=v)  # V is used up: its buffer takes dV
                _winograd.input_tiles_adjoint(vflat, t, th, tw1, gx, n0, n1, ph, pw, 0, c)
        return duflat

    if n >= workers:
        with _threads.single_threaded_blas():
            partial = _threads.run_parts(part, parts, started if address else None)
        du, used = partial[0], n_out * c
        for other in partial[1:]:
            du[:, :used] += other[:, :used]  # the planes' padding past O*C is uninitialised
    else:
        du = _winograd_backward_split(plan, x4, gy4, (uflat, ut), gx, workers, address)
    gw = np.empty(plan.w5.shape, plan.dtype)
    _winograd.weight_tiles_adjoint(du, gw.reshape(n_out, c, 3, 3))
    return None if gx is None else gx.reshape(plan.x5.shape), gw


def _winograd_backward_split(plan, x4, gy4, weights, gx, workers, address) -> np.ndarray:
    """:func:`_winograd_backward` for fewer samples than threads, split by channels: the
    transforms of blocks of input and of output channels, then, from all of ``Gt``, the
    columns of ``dU`` and the rows of ``dV`` (and ``gx``) of blocks of input channels.
    With NumPy's OpenBLAS it is one team task (kernels/winograd.py), whose parts take
    :data:`_SPLIT_BLOCKS` blocks a thread of each step from a queue, so a faster core
    does more of them. Otherwise each step splits the channels in one range per thread,
    through np.matmul. ``weights`` is ``U`` as (16, O*C) storage and its transposed
    (16, C, O) view (None: no input gradient); ``address`` is
    :func:`cnnkit.kernels.blas.gemm_address`'s (0: np.matmul). Returns ``dU`` as
    (16, O*C) storage."""
    n, n_out, _, oh, ow = plan.out5
    c = x4.shape[1]
    ph, pw = plan.pads_before[1:]
    th, tw1, tiles, per = _winograd_geometry(plan)
    duflat, du = _planes(n_out, c, plan.dtype)
    most = min(per, n) * tiles
    uflat, ut = weights
    if address:
        vflat = _planes(c, most, plan.dtype, "winograd_v", most)[0]
        gflat = _planes(n_out, most, plan.dtype, "winograd_m", most)[0]
        out = gx if gx is not None else np.empty((0, 0, 0, 0), plan.dtype)
        blocks = max(1, min(c, n_out, _SPLIT_BLOCKS * workers))
        steps = np.zeros(2 * geometry.ceil_div(n, per) * _winograd.STEP, np.int64)
        block = np.empty(_winograd.SPLIT_BLOCK, np.int64)
        x4, gy4 = np.ascontiguousarray(x4), np.ascontiguousarray(gy4)
        tiling = (th, tw1, per, ph, pw)
        args = (uflat, duflat, vflat, gflat, out, tiling, address, steps, blocks)
        _winograd.pack_split(block, x4, gy4, *args)
        with _threads.single_threaded_blas():
            task = _winograd.split_backward_task(plan.dtype).address
            _threads.run_team(task, block, workers)
        return duflat
    chans, outs = _ranges(c, workers), _ranges(n_out, workers)
    parts = _ranges(workers, workers)

    def chunk(n0: int, n1: int) -> None:
        t = (n1 - n0) * tiles
        vflat, v = _planes(c, t, plan.dtype, "winograd_v", most)
        gflat, g = _planes(n_out, t, plan.dtype, "winograd_m", most)

        def transform(i: int, _: int) -> None:
            _winograd.input_tiles(x4, vflat, t, th, tw1, n0, n1, ph, pw, *chans[i])
            _winograd.grad_tiles(gy4, gflat, t, th, tw1, n0, n1, *outs[i])

        @np.errstate(invalid="ignore", over="ignore")
        def products(i: int, _: int) -> None:
            c0, c1 = chans[i]
            vt = v[:, c0:c1].transpose(0, 2, 1)
            if n0 == 0:
                np.matmul(g, vt, out=du[:, :, c0:c1])
            else:
                du[:, :, c0:c1] += g @ vt
            if ut is not None:  # rows c0:c1 of V are used up: they take dV
                np.matmul(ut[:, c0:c1], g, out=v[:, c0:c1])
                _winograd.input_tiles_adjoint(vflat, t, th, tw1, gx, n0, n1, ph, pw, c0, c1)

        _threads.run_parts(transform, parts)
        _threads.run_parts(products, parts)

    with _threads.single_threaded_blas():
        for n0 in range(0, n, per):
            chunk(n0, min(n0 + per, n))
    return duflat


# ----------------------------------------------------------------------------- convolution
def _use_flat(plan: _ConvPlan) -> bool:
    """Whether the loop method takes the stride-1 flattened-plane kernels (short rows)."""
    return plan.stride == (1, 1, 1) and plan.out5[4] < _FLAT_MAX_WIDTH


def _flat_input(plan: _ConvPlan) -> tuple[np.ndarray, tuple[int, ...]]:
    """The input zero-padded explicitly, planes flattened: (N, C, Dp, Hp*Wp), and its shape."""
    xp = plan.x5
    if any(p != (0, 0) for p in plan.zero_pads):  # np.pad takes ~20 us more for this
        (d0, d1), (h0, h1), (w0, w1) = plan.zero_pads
        n, c, d, h, w = xp.shape
        xp = np.zeros((n, c, d + d0 + d1, h + h0 + h1, w + w0 + w1), plan.dtype)
        xp[:, :, d0 : d0 + d, h0 : h0 + h, w0 : w0 + w] = plan.x5
    n, c, dp, hp, wp = xp.shape
    return xp.reshape(n, c, dp, hp * wp), xp.shape


def _loop_forward_quad(plan: _ConvPlan, bias: np.ndarray, flops: int) -> np.ndarray:
    """Stride-1 forward with conv_forward_flat4 (groups of 4k output channels, short rows).

    Its flattened planes carry 16 zeros of slack (the kernel runs whole 16-lane vectors).
    With a batch of at least one sample per thread, each thread pads its own samples and
    then convolves them, so the padding copy is split over the threads as well.
    """
    n, o, od, oh, ow = plan.out5
    _, c, d, h, w = plan.x5.shape
    (d0, d1), (h0, h1), (w0, w1) = plan.zero_pads
    padded = (n, c, d + d0 + d1, h + h0 + h1, w + w0 + w1)
    wp = padded[4]
    xp = np.empty((*padded[:3], padded[3] * wp + 16), plan.dtype)
    inner = xp[..., : padded[3] * wp].reshape(padded)
    dd, dh, dw = plan.dilation
    length = oh * wp - (plan.w5.shape[4] - 1) * dw
    blocks = geometry.ceil_div(length, _FLAT_BLOCK)
    block = geometry.ceil_div(length, blocks)  # equal blocks: 1088 -> 2 x 544, not 1024 + 64
    y = np.empty(plan.out5, plan.dtype)  # written in its final layout, no crop
    args = (xp, plan.w5, bias, y, plan.groups, wp, dd, dh, dw, block)
    per_sample = (o // 4) * od * blocks

    def pad(n0: int, n1: int) -> None:
        xp[n0:n1] = 0
        inner[n0:n1, :, d0 : d0 + d, h0 : h0 + h, w0 : w0 + w] = plan.x5[n0:n1]

    def part(n0: int, n1: int) -> None:
        pad(n0, n1)
        _conv.conv_forward_flat4(*args, n0 * per_sample, n1 * per_sample)

    workers = _threads.worker_count() if flops >= _THREADED_FLOPS else 1
    if n >= workers:
        _threads.run_parts(part, _threads.split(n, workers))
    else:
        pad(0, n)
        _launch(_conv.conv_forward_flat4, n * per_sample, flops, *args)
    return y


def _use_planes(plan: _ConvPlan) -> bool:
    """Whether the loop method takes the plane kernel: 2-D, stride 1, undilated, one input
    channel per output channel, large planes."""
    _, _, od, oh, ow = plan.out5
    return (
        plan.nd == 2
        and plan.stride == plan.dilation == (1, 1, 1)
        and plan.w5.shape[1] == 1
        and plan.w5.shape[2] == 1
        and od == 1
        and oh * ow >= _PLANE_POSITIONS
    )


def _kernel_pieces(kh: int, kw: int) -> list[tuple[int, int, int, int]]:
    """The plane kernel's pieces of a ``kh x kw`` kernel: ``(row0, row1, col0, col1)``,
    nearly equal in size, none wider or taller than ``_PIECE_WIDTH`` or larger than
    ``_PIECE_TAPS``."""
    n_cols = geometry.ceil_div(kw, _PIECE_WIDTH)
    n_rows = geometry.ceil_div(kh, min(_PIECE_WIDTH, _PIECE_TAPS // geometry.ceil_div(kw, n_cols)))
    rows = [kh * i // n_rows for i in range(n_rows + 1)]
    cols = [kw * i // n_cols for i in range(n_cols + 1)]
    return [(r0, r1, c0, c1) for r0, r1 in zip(rows, rows[1:]) for c0, c1 in zip(cols, cols[1:])]


@functools.lru_cache(maxsize=64)
def _piece_weights(data: bytes, shape: tuple[int, int], dtype: str) -> tuple:
    """The plane kernel's weight pieces, each as a tuple of rows of numpy scalars (Numba
    compiles the kernel per piece shape and dtype) and as an array, with its first row and
    column. Building them costs 10-20 us, a look-up 1 us."""
    w2 = np.frombuffer(data, dtype=dtype).reshape(shape)
    return tuple(
        (tuple(map(tuple, w2[r0:r1, c0:c1])), w2[r0:r1, c0:c1].copy(), r0, c0)
        for r0, r1, c0, c1 in _kernel_pieces(*shape)
    )


def _run_pieces(x2, pieces, bias, y2, ph: int, pw: int, t0: int, t1: int) -> None:
    """Rows ``[t0, t1)`` of the plane ``y2`` from ``x2`` by the kernel's ``pieces``."""
    from cnnkit.kernels import filter2d

    for k, (wt, wa, r0, c0) in enumerate(pieces):
        filter2d.piece_rows(x2, wt, wa, bias, y2, ph - r0, pw - c0, k > 0, t0, t1)


def _over_planes(fn, n: int, o: int, oh: int, workers: int) -> None:
    """``fn(m, j, t0, t1)`` for rows ``[t0, t1)`` of every output plane ``(m, j)``: threads
    take whole planes when there are at least as many planes, else rows of each plane (a
    thread hand-off costs tens of microseconds, more than a small plane takes)."""
    if workers == 1:
        for m in range(n):
            for j in range(o):
                fn(m, j, 0, oh)
        return
    planes = [(m, j) for m in range(n) for j in range(o)]

    def some_planes(p0: int, p1: int) -> None:
        for m, j in planes[p0:p1]:
            fn(m, j, 0, oh)

    if len(planes) >= workers:
        _threads.run_parts(some_planes, _threads.split(len(planes), workers))
    else:
        for m, j in planes:
            _threads.run_parts(functools.partial(fn, m, j), _threads.split(oh, workers))


def _plane_forward(plan: _ConvPlan, bias: np.ndarray | None, flops: int) -> np.ndarray:
    """Each output plane with :func:`cnnkit.kernels.filter2d.piece_rows` (``bias`` None:
    zeros)."""
    n, o, _, oh, _ = plan.out5
    ph, pw = plan.pads_before[1:]
    og = o // plan.groups
    y = placement.empty_apart(plan.out5, plan.dtype, plan.x5)  # no 4K aliasing with x
    pieces = []
    for j in range(o):
        w2 = plan.w5[j, 0, 0]
        pieces.append(_piece_weights(w2.tobytes(), w2.shape, w2.dtype.str))

    if bias is None:
        bias = [plan.dtype.type(0)] * o

    def rows(m: int, j: int, t0: int, t1: int) -> None:
        _run_pieces(plan.x5[m, j // og, 0], pieces[j], bias[j], y[m, j, 0], ph, pw, t0, t1)

    wide = plan.out5[4] >= _WIDE_PLANE
    threaded = flops >= _THREADED_PLANE_FLOPS * (2 if wide else 1)
    _over_planes(rows, n, o, oh, _threads.worker_count() if threaded else 1)
    return y


def _separable_planes(plan: _ConvPlan) -> np.ndarray:
    """A rank-1 2-D filter as a row pass and a column pass of the plane kernel, fused by
    blocks of output rows: the row pass fills the block's intermediate rows (in a per-thread
    buffer that stays in cache) and the column pass turns them into output rows."""
    col, row = plan.factors
    n, o, _, oh, ow = plan.out5
    h = plan.x5.shape[3]
    kh, kw = col.shape[1], row.shape[1]
    ph, pw = plan.pads_before[1:]
    og = o // plan.groups
    bias = np.zeros(o, plan.dtype) if plan.bias is None else plan.bias
    zero = plan.dtype.type(0)
    y = np.empty(plan.out5, plan.dtype)
    block = max(8, _SEPARABLE_BLOCK // ow)
    row_pieces = [_piece_weights(r.tobytes(), (1, kw), plan.dtype.str) for r in row]
    col_pieces = [_piece_weights(c.tobytes(), (kh, 1), plan.dtype.str) for c in col]

    size = (block + kh - 1) * ow
    slack = placement.PAGE // plan.dtype.itemsize
    row_bytes = ow * plan.dtype.itemsize

    def rows(m: int, j: int, t0: int, t1: int) -> None:
        x2, y2 = plan.x5[m, j // og, 0], y[m, j, 0]
        # the row pass stores tmp while loading x2, the column pass loads it storing y2
        buf = _threads.workspace("separable", size + slack, plan.dtype)
        tmp = placement.apart(buf, size, row_bytes, [x2], [y2]).reshape(block + kh - 1, ow)
        held = (0, 0)  # input rows whose row pass is in tmp[: held[1] - held[0]]
        for r in range(t0, t1, block):
            r1 = min(r + block, t1)
            i0 = min(max(0, r - ph), h)  # input rows [i0, i1) reach output rows r..r1
            i1 = max(min(h, r1 - ph + kh - 1), i0)
            keep = max(0, held[1] - i0) if held[0] <= i0 else 0
            if keep:  # the rows the previous block shares with this one move up
                tmp[:keep] = tmp[i0 - held[0] : held[1] - held[0]]
            rp, kept = row_pieces[j], tmp[keep : i1 - i0]
            _run_pieces(x2[i0 + keep : i1], rp, zero, kept, 0, pw, 0, i1 - i0 - keep)
            held = (i0, i1)
            _run_pieces(tmp[: i1 - i0], col_pieces[j], bias[j], y2[r:r1], ph - r + i0, 0, 0, r1 - r)

    flops = 2 * (kh + kw) * oh * ow * n * o
    _over_planes(rows, n, o, oh, _threads.worker_count() if flops >= _THREADED_FLOPS else 1)
    return y


def blocked_applies(
    nd: int,
    dtype: np.dtype,
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    groups: int,
    n_out: int,
    out_width: int,
) -> bool:
    """Whether the loop method's forward runs the register-blocked kernel
    (:mod:`cnnkit.kernels.direct`): float32, 2-D, stride 1, undilated, one group, at least
    two outputs, output rows of at least 8 px and at most 49 taps."""
    return (
        np.dtype(dtype) == np.float32
        and nd == 2
        and all(s == 1 for s in stride)
        and all(d == 1 for d in dilation)
        and groups == 1
        and n_out >= 2
        and out_width >= _direct.LANES
        and math.prod(kernel) <= _BLOCKED_MAX_TAPS
    )


def _use_blocked(plan: _ConvPlan) -> bool:
    return blocked_applies(
        plan.nd,
        plan.dtype,
        plan.w5.shape[3:],
        plan.stride,
        plan.dilation,
        plan.groups,
        plan.out5[1],
        plan.out5[4],
    )


def _blocked_forward(plan: _ConvPlan, bias: np.ndarray, flops: int) -> np.ndarray:
    """Forward with :func:`cnnkit.kernels.direct.conv2d_blocked`, a task whose parts share
    its work through a queue (:func:`cnnkit.kernels.threads.run_team`)."""
    parts = _threads.worker_count() if flops >= _THREADED_BLOCKED_FLOPS else 1
    layout = plan.x5.shape, plan.w5.shape[3:], plan.zero_pads[1:], plan.out5
    task, parts, scratch, sizes = _blocked_layout(*layout, parts)
    y = np.empty(plan.out5, plan.dtype)
    x = np.ascontiguousarray(plan.x5[:, :, 0])
    weights, bias = np.ascontiguousarray(plan.w5).reshape(-1), np.ascontiguousarray(bias)
    xp = _threads.workspace("padded", parts * scratch, plan.dtype)
    block, queue = np.empty(_direct.BLOCK, np.int64), np.zeros(3, np.int64)
    _direct.pack_block(block, sizes, x, xp, weights, bias, y.reshape(-1), queue)
    _threads.run_team(task, block, parts)
    return y


@functools.lru_cache(maxsize=64)
def _blocked_layout(x_shape, kernel, pads, out5, parts) -> tuple[int, int, int, np.ndarray]:
    """What :func:`_blocked_forward` needs besides its arrays, the same on every call of a
    layer: its task's address, the parts, each part's scratch and the sizes in the task's
    block."""
    _, o, _, oh, ow = out5
    n, c, _, h, w = x_shape
    (h0, h1), (w0, w1) = pads
    full, tail = divmod(ow, _direct.LANES)
    segments = (full - 1) // _direct.SEGMENT
    task = _direct.conv2d_blocked(*kernel, full - segments * _direct.SEGMENT, tail)
    # each part's scratch starts on its own cache line
    scratch = -(-(c * (h + h0 + h1) * (w + w0 + w1) + _direct.SLACK) // 16) * 16
    pairs = (oh + 1) // 2
    parts = min(parts, n * pairs)
    # the parts take whole samples from the queue, or a few row pairs each when there are
    # fewer than 4 samples a part (one image: several chunks per part)
    chunk = min(pairs, geometry.ceil_div(n * pairs, 4 * parts))
    sizes = _direct.block_sizes((n, c, h, w), (h0, h1, w0, w1), o, oh, ow, segments, chunk, scratch)
    sizes.flags.writeable = False
    return task.address, parts, scratch, sizes


def _loop_forward(plan: _ConvPlan, four_channels: bool = True) -> np.ndarray:
    """The loop method's forward, 5-D. float32 2-D stride-1 layers take the register-blocked
    kernel (:func:`blocked_applies`). Otherwise, groups with a multiple of four output
    channels take the flat kernel that computes four channels per pass (conv_forward_flat4)
    unless ``four_channels`` is False (the tests reach the one-channel kernel that way)."""
    n, o, od, oh, ow = plan.out5
    flops = _flops(plan)
    bias = np.zeros(o, plan.dtype) if plan.bias is None else plan.bias
    if _use_blocked(plan):
        return _blocked_forward(plan, bias, flops)
    if _use_planes(plan):
        return _plane_forward(plan, plan.bias, flops)
    if not _use_flat(plan):
        y = np.empty(plan.out5, plan.dtype)
        blocks = geometry.ceil_div(ow, _ROW_BLOCK)
        block = geometry.ceil_div(ow, blocks)
        args = (plan.x5, plan.w5, bias, y, plan.groups, *plan.geometry_args(), block)
        _launch(_conv.conv_forward, n * o * od * oh * blocks, flops, *args)
        return y
    if four_channels and (o // plan.groups) % 4 == 0:
        return _loop_forward_quad(plan, bias, flops)
    xp, padded = _flat_input(plan)
    wp = padded[4]
    dd, dh, dw = plan.dilation
    length = oh * wp - (plan.w5.shape[4] - 1) * dw
    blocks = geometry.ceil_div(length, _FLAT_BLOCK)
    block = geometry.ceil_div(length, blocks)  # equal blocks: 1088 -> 2 x 544, not 1024 + 64
    # wide columns past the last computed position are never written; they are cropped off
    y = np.empty((n, o, od, oh, wp), plan.dtype)
    args = (xp, plan.w5, bias, y.reshape(n, o, od, oh * wp), plan.groups, wp, dd, dh, dw, block)
    _launch(_conv.conv_forward_flat, n * o * od * blocks, flops, *args)
    return np.ascontiguousarray(y[..., :ow])


def rank_one_factors(w: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Column and row factors of 2-D kernels that are each an outer product, else None.

    Only for one input channel per output channel (a single-image filter or a depthwise
    layer: ``w`` is ``(O, 1, kh, kw)`` with ``groups == O``) and kernels of at least 2x2.

    Returns
    -------
    (col, row) : ndarrays (O, kh) and (O, kw), or None
        ``w[o, 0] == outer(col[o], row[o])`` up to ``kh * kw * eps`` of the kernel's
        largest tap (Gaussian, box, Sobel and other separable kernels).

    Notes
    -----
    A rank-1 ``kh x kw`` filter is a ``1 x kw`` pass along the rows followed by a
    ``kh x 1`` pass along the columns: ``kh + kw`` multiply-adds per output instead of
    ``kh * kw``. If ``K`` has rank 1 and ``p = K[i, j]`` is its largest tap, then
    ``K = outer(K[:, j], K[i, :] / p)`` exactly (every 2x2 minor of a rank-1 matrix is 0);
    the test is whether that product reproduces ``K``, which costs a few array operations
    where a singular value decomposition cost ~50 us per call.
    """
    if w.ndim != 4 or w.shape[1] != 1 or groups != w.shape[0] or min(w.shape[2:]) < 2:
        return None
    o, _, kh, kw = w.shape
    k = w[:, 0].astype(np.float64)
    flat = np.abs(k).reshape(o, kh * kw)
    at = flat.argmax(axis=1)
    scale = flat[np.arange(o), at]
    if not np.all(scale > 0):
        return None
    i, j = np.divmod(at, kw)
    col = k[np.arange(o), :, j]
    row = k[np.arange(o), i, :] / k[np.arange(o), i, j][:, None]
    error = np.abs(k - col[:, :, None] * row[:, None, :]).reshape(o, -1).max(axis=1)
    if np.any(error > kh * kw * float(np.finfo(w.dtype).eps) * scale):
        return None
    return col.astype(w.dtype), row.astype(w.dtype)


def separable_factors(w: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`rank_one_factors` when two 1-D passes pay off, else None (``method="auto"``).

    Two passes cost ``kh + kw`` multiply-adds per output instead of ``kh * kw``, and one
    more store; they are taken when ``kh * kw >= 2 * (kh + kw)`` (5x5 and larger, not 3x3).
    Measured on 1024-2048 px images at one thread, fused passes against the direct plane
    kernel: 5x5 box 1.3-1.7x, Gaussian sigma 1-4 (7x7 to 25x25) 2.0-8.4x faster, 3x3
    Sobel 0.67-0.74x (docs/PERFORMANCE.md).
    """
    if w.ndim != 4 or w.shape[2] * w.shape[3] < 2 * (w.shape[2] + w.shape[3]):
        return None
    if w.shape[1] != 1 or groups != w.shape[0]:
        return None
    # The same filter is usually applied many times: its test costs ~20 us, a look-up ~1 us.
    return _cached_rank_one(w.tobytes(), w.shape, w.dtype.str, groups)


@functools.lru_cache(maxsize=64)
def _cached_rank_one(
    data: bytes, shape: tuple[int, ...], dtype: str, groups: int
) -> tuple[np.ndarray, np.ndarray] | None:
    return rank_one_factors(np.frombuffer(data, dtype=dtype).reshape(shape), groups)


def _separable_forward(plan: _ConvPlan) -> np.ndarray:
    """A rank-1 filter as two loop passes: ``1 x kw`` along rows, then ``kh x 1``."""
    if plan.nd == 2 and math.prod(plan.out5[3:]) >= _PLANE_POSITIONS:
        return _separable_planes(plan)
    col, row = plan.factors
    o = col.shape[0]
    n, _, od, oh, ow = plan.out5
    _, _, d, h, _ = plan.x5.shape
    # pass 1: rows of the (H-unpadded) input, W padded: (N, O, D, H, OW)
    first = plan._replace(
        w5=np.ascontiguousarray(row[:, None, None, None, :]),
        bias=None,
        zero_pads=(plan.zero_pads[0], (0, 0), plan.zero_pads[2]),
        out5=(n, o, od, h, ow),
        method="loop",
    )
    tmp = _loop_forward(first)
    # pass 2: columns of the intermediate, H padded, one channel per group
    second = first._replace(
        x5=tmp,
        w5=np.ascontiguousarray(col[:, None, None, :, None]),
        bias=plan.bias,
        groups=o,
        zero_pads=((0, 0), plan.zero_pads[1], (0, 0)),
        out5=plan.out5,
    )
    return _loop_forward(second)


def _conv_forward(plan: _ConvPlan) -> np.ndarray:
    if plan.factors is not None:
        return _separable_forward(plan).reshape(plan.out5[:2] + plan.out5[5 - plan.nd :])
    if plan.method == "winograd":
        y = _winograd_forward(plan)
    else:
        y = _gemm_forward(plan) if plan.method == "im2col" else _loop_forward(plan)
    return y.reshape(plan.out5[:2] + plan.out5[5 - plan.nd :])


def _pad_adjoint(g: np.ndarray, pads, sizes, mode: str) -> np.ndarray:
    """Gradient w.r.t. the unpadded input, given the gradient w.r.t. ``np.pad(x, mode)``.

    Every padded cell is a copy of one input cell (its np.pad source index), so its gradient
    is added back there: the adjoint of the padding.
    """
    for axis, ((lo, hi), n) in enumerate(zip(pads, sizes), start=2):
        if lo == 0 and hi == 0:
            continue
        source = np.pad(np.arange(n), (lo, hi), mode=_NP_PAD_MODE[mode])
        inner = np.take(g, np.arange(lo, lo + n), axis=axis)
        outer = np.r_[np.arange(lo), np.arange(lo + n, lo + n + hi)]
        index = (slice(None),) * axis + (source[outer],)
        np.add.at(inner, index, np.take(g, outer, axis=axis))
        g = inner
    return g


def _loop_backward_flat(plan: _ConvPlan, gy5: np.ndarray, need_input_grad: bool):
    xp, padded = _flat_input(plan)
    n, o, od, oh, ow = plan.out5
    wp = padded[4]
    dd, dh, dw = plan.dilation
    flops = _flops(plan)
    # The wide kernels run one long loop per plane but multiply the wide layout's extra
    # columns (zero gradient) by input or weight values: exact only if those are finite.
    wide_w = bool(np.isfinite(xp).all())
    wide_x = need_input_grad and bool(np.isfinite(plan.w5).all())
    gyw = None
    if wide_w or wide_x:
        gyw = np.zeros((n, o, od, oh, wp), plan.dtype)
        gyw[..., :ow] = gy5
        gyw = gyw.reshape(n, o, od, oh * wp)
    gw = np.empty(plan.w5.shape, plan.dtype)
    if wide_w:
        kernel, args = _conv.conv_backward_weight_wide, (gyw, xp)
    else:
        kernel, args = _conv.conv_backward_weight_flat, (gy5, xp)
    _launch(kernel, gw.size, flops, *args, gw, plan.groups, wp, dd, dh, dw)
    if not need_input_grad:
        return None, gw
    gxp = np.zeros(xp.shape, plan.dtype)
    if wide_x:
        kernel, args = _conv.conv_backward_input_wide, (gyw, plan.w5)
    else:
        kernel, args = _conv.conv_backward_input_flat, (gy5, plan.w5)
    _launch(kernel, n * xp.shape[1], flops, *args, gxp, plan.groups, wp, dd, dh, dw)
    crop = tuple(slice(lo, lo + size) for (lo, _), size in zip(plan.zero_pads, plan.x5.shape[2:]))
    return np.ascontiguousarray(gxp.reshape(padded)[(slice(None), slice(None), *crop)]), gw


def _conv_backward(plan: _ConvPlan, grad_y: object, need_input_grad: bool):
    need_input_grad = _flag(need_input_grad, "need_input_grad")
    gy = _as_real_array(grad_y, "grad_y")
    expected = plan.out5[:2] + plan.out5[5 - plan.nd :]
    if gy.shape != expected:
        raise ValueError(f"grad_y must have the output's shape {expected}, got {gy.shape}")
    gy5 = _to5d(_cast(gy, plan.dtype), plan.nd)
    grad_b = gy5.sum(axis=(0, 2, 3, 4))
    if plan.method == "winograd":
        gx, gw = _winograd_backward(plan, gy5, need_input_grad)
    elif plan.method == "im2col":
        gx, gw = _gemm_backward(plan, gy5, need_input_grad)
    elif _use_flat(plan):
        gx, gw = _loop_backward_flat(plan, gy5, need_input_grad)
    else:
        geo = plan.geometry_args()
        flops = _flops(plan)
        gw = np.empty(plan.w5.shape, plan.dtype)
        _launch(_conv.conv_backward_weight, gw.size, flops, gy5, plan.x5, gw, plan.groups, *geo)
        gx = None
        if need_input_grad:
            gx = np.zeros(plan.x5.shape, plan.dtype)
            tasks = math.prod(gx.shape[:4])
            _launch(_conv.conv_backward_input, tasks, flops, gy5, plan.w5, gx, plan.groups, *geo)
    gw = gw.reshape(gw.shape[:2] + gw.shape[5 - plan.nd :])
    if plan.flip:
        gw = np.ascontiguousarray(gw[(Ellipsis,) + (slice(None, None, -1),) * plan.nd])
    if gx is not None:
        gx = gx.reshape(gx.shape[:2] + gx.shape[5 - plan.nd :])
        if plan.pad_mode != "zeros":
            gx = _pad_adjoint(gx, plan.pads, plan.in_sizes, plan.pad_mode)
    return gx, gw, grad_b


def _reusable(plan: _ConvPlan) -> bool:
    """Whether ``plan``'s choices hold for any operands of the same shapes and dtype: zero
    padding (the input is not copied into the plan), no flip, and a kernel whose method
    does not depend on its values (only depthwise kernels of 5x5 and up are tested for
    rank 1)."""
    o, cg, _, kh, kw = plan.w5.shape
    rank_one_tested = cg == 1 and plan.groups == o and kh * kw >= 2 * (kh + kw)
    return plan.pad_mode == "zeros" and not plan.flip and not rank_one_tested


def _layer_plan(cache: dict, key: tuple, x, w, bias, make) -> _ConvPlan:
    """The plan of a convolution a layer repeats: built and checked once by ``make()`` for
    each input shape, then given the new operands. Validation and the method choice cost
    ~60 us a call, a fifth of a small network's training step."""
    key = (*key, x.shape, w.shape, x.dtype.str, w.dtype.str, bias is None)
    plan = cache.get(key)
    fresh = (
        plan is not None
        and x.flags.c_contiguous
        and w.flags.c_contiguous
        and x.dtype == plan.dtype
        and w.dtype == plan.dtype
        and (bias is None or bias.dtype == plan.dtype)
    )
    if not fresh:
        plan = make()
        if _reusable(plan):
            cache[key] = plan
        return plan
    return plan.with_operands(_to5d(x, 2), _to5d(w, 2), bias)


def conv2d_layer(
    cache: dict,
    x: np.ndarray,
    w: np.ndarray,
    bias: np.ndarray | None,
    *,
    stride: IntOrTuple,
    padding: PaddingArg,
    dilation: IntOrTuple,
    groups: int,
) -> np.ndarray:
    """:func:`conv2d` for a layer that calls it again and again with the same shapes.

    Parameters
    ----------
    cache : dict
        Owned by the caller (one per layer), empty at first; holds one checked plan per
        shapes, dtypes and options (hashable: ints and tuples).
    x, w, bias, stride, padding, dilation, groups
        As in :func:`conv2d` (zero padding, no flip, ``method="auto"``).

    Returns
    -------
    ndarray
        ``conv2d(x, w, bias, ...)``.
    """
    opts = (stride, padding, dilation, groups, "zeros", False, "auto")
    plan = _layer_plan(cache, opts, x, w, bias, lambda: _plan_conv(2, x, w, bias, *opts))
    return _conv_forward(plan)


def conv2d_layer_backward(
    cache: dict,
    grad_y: np.ndarray,
    x: np.ndarray,
    w: np.ndarray,
    *,
    stride: IntOrTuple,
    padding: PaddingArg,
    dilation: IntOrTuple,
    groups: int,
    need_input_grad: bool = True,
):
    """:func:`conv2d_backward` with the plan of :func:`conv2d_layer` (same ``cache``)."""
    opts = (stride, padding, dilation, groups, "zeros", False, "auto", True)
    plan = _layer_plan(cache, opts, x, w, None, lambda: _plan_conv(2, x, w, None, *opts))
    return _conv_backward(plan, grad_y, need_input_grad)


def conv1d(
    x,
    w,
    bias=None,
    *,
    stride: IntOrTuple = 1,
    padding: PaddingArg = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    pad_mode: str = "zeros",
    flip: bool = False,
    method: str = "auto",
) -> np.ndarray:
    """1-D convolution (cross-correlation) of ``(N, C, L)`` signals, like ``F.conv1d``.

    Parameters
    ----------
    x : ndarray
        Input, (N, C, L).
    w : ndarray
        Weight, ``(O, C / groups, k)``.
    bias : ndarray, optional
        ``(O,)``, added to every output position.
    stride, dilation : int or tuple of int
        Step of the window and spacing of its taps, per spatial dimension (>= 1).
    padding : int, tuple, or "valid" | "same" | "full"
        An int or one int per dimension pads both sides; ``((before, after), ...)`` pads
        asymmetrically. ``"same"`` gives ``ceil(n / stride)`` outputs with the extra cell at
        the end (TensorFlow's rule), ``"full"`` pads ``dilation * (k - 1)`` on both sides.
    groups : int
        Channels are split into ``groups`` independent convolutions; must divide C and O.
    pad_mode : "zeros" | "reflect" | "replicate" | "circular"
        Values in the padding (PyTorch's ``padding_mode``). reflect needs padding < size.
    flip : bool
        Flip the kernel's spatial axes first, turning the cross-correlation into a true
        convolution.
    method : "loop" | "im2col" | "winograd" | "auto"
        Direct sliding-window kernel, patch matrix + GEMM, or Winograd F(2x2, 3x3) (2-D 3x3
        kernels, stride 1, dilation 1, one group); "auto" picks by shape
        (:func:`choose_method`). Results agree to rounding.

    Returns
    -------
    ndarray
        ``(N, O, L_out)``, ``y[n, o, i] = bias[o] + sum_{c, k} w[o, c, k] *
        xpad[n, g*C/groups + c, i * stride + k * dilation]``.

    Notes
    -----
    ``L_out = floor((L + pad_before + pad_after - dilation * (k - 1) - 1) / stride) + 1``.
    """
    plan = _plan_conv(1, x, w, bias, stride, padding, dilation, groups, pad_mode, flip, method)
    return _conv_forward(plan)


def conv2d(
    x,
    w,
    bias=None,
    *,
    stride: IntOrTuple = 1,
    padding: PaddingArg = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    pad_mode: str = "zeros",
    flip: bool = False,
    method: str = "auto",
) -> np.ndarray:
    """2-D convolution (cross-correlation) of ``(N, C, H, W)`` images, like ``F.conv2d``.

    Parameters
    ----------
    x : ndarray
        Input, (N, C, H, W).
    w : ndarray
        Weight, ``(O, C / groups, kh, kw)``.
    bias : ndarray, optional
        ``(O,)``, added to every output position.
    stride, dilation : int or tuple of int
        Step of the window and spacing of its taps, per spatial dimension (>= 1).
    padding : int, tuple, or "valid" | "same" | "full"
        An int or one int per dimension pads both sides; ``((before, after), ...)`` pads
        asymmetrically. ``"same"`` gives ``ceil(n / stride)`` outputs with the extra cell at
        the end (TensorFlow's rule), ``"full"`` pads ``dilation * (k - 1)`` on both sides.
    groups : int
        Channels are split into ``groups`` independent convolutions; must divide C and O.
    pad_mode : "zeros" | "reflect" | "replicate" | "circular"
        Values in the padding (PyTorch's ``padding_mode``). reflect needs padding < size.
    flip : bool
        Flip the kernel's spatial axes first, turning the cross-correlation into a true
        convolution.
    method : "loop" | "im2col" | "winograd" | "auto"
        Direct sliding-window kernel, patch matrix + GEMM, or Winograd F(2x2, 3x3) (2-D 3x3
        kernels, stride 1, dilation 1, one group); "auto" picks by shape
        (:func:`choose_method`). Results agree to rounding.

    Returns
    -------
    ndarray
        ``(N, O, H_out, W_out)`` with
        ``y[n, o, i, j] = bias[o] + sum_{c, a, b} w[o, c, a, b] *
        xpad[n, g*C/groups + c, i*sh + a*dh, j*sw + b*dw]`` where ``g = o // (O / groups)``.

    Notes
    -----
    ``H_out = floor((H + pad_top + pad_bottom - dilation[0] * (kh - 1) - 1) / stride[0]) + 1``
    and likewise for W (:func:`cnnkit.geometry.conv_output_size`).

    Examples
    --------
    >>> import numpy as np
    >>> conv2d(np.ones((1, 1, 8, 8)), np.ones((1, 1, 3, 3))).shape
    (1, 1, 6, 6)
    """
    plan = _plan_conv(2, x, w, bias, stride, padding, dilation, groups, pad_mode, flip, method)
    return _conv_forward(plan)


def conv3d(
    x,
    w,
    bias=None,
    *,
    stride: IntOrTuple = 1,
    padding: PaddingArg = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    pad_mode: str = "zeros",
    flip: bool = False,
    method: str = "auto",
) -> np.ndarray:
    """3-D convolution (cross-correlation) of ``(N, C, D, H, W)`` volumes, like ``F.conv3d``.

    Parameters
    ----------
    x : ndarray
        Input, (N, C, D, H, W).
    w : ndarray
        Weight, ``(O, C / groups, kd, kh, kw)``.
    bias : ndarray, optional
        ``(O,)``, added to every output position.
    stride, dilation : int or tuple of int
        Step of the window and spacing of its taps, per spatial dimension (>= 1).
    padding : int, tuple, or "valid" | "same" | "full"
        An int or one int per dimension pads both sides; ``((before, after), ...)`` pads
        asymmetrically. ``"same"`` gives ``ceil(n / stride)`` outputs with the extra cell at
        the end (TensorFlow's rule), ``"full"`` pads ``dilation * (k - 1)`` on both sides.
    groups : int
        Channels are split into ``groups`` independent convolutions; must divide C and O.
    pad_mode : "zeros" | "reflect" | "replicate" | "circular"
        Values in the padding (PyTorch's ``padding_mode``). reflect needs padding < size.
    flip : bool
        Flip the kernel's spatial axes first, turning the cross-correlation into a true
        convolution.
    method : "loop" | "im2col" | "winograd" | "auto"
        Direct sliding-window kernel, patch matrix + GEMM, or Winograd F(2x2, 3x3) (2-D 3x3
        kernels, stride 1, dilation 1, one group); "auto" picks by shape
        (:func:`choose_method`). Results agree to rounding.

    Returns
    -------
    ndarray
        ``(N, O, D_out, H_out, W_out)``.

    Notes
    -----
    ``y[n, o, i, j, k] = bias[o] + sum_{c, a, b, e} w[o, c, a, b, e] *
    xpad[n, g*C/groups + c, i*sd + a*dd, j*sh + b*dh, k*sw + e*dw]``; each output size from
    :func:`cnnkit.geometry.conv_output_size`, as in :func:`conv2d`.
    """
    plan = _plan_conv(3, x, w, bias, stride, padding, dilation, groups, pad_mode, flip, method)
    return _conv_forward(plan)


def conv1d_backward(
    grad_y,
    x,
    w,
    *,
    stride: IntOrTuple = 1,
    padding: PaddingArg = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    pad_mode: str = "zeros",
    flip: bool = False,
    method: str = "auto",
    need_input_grad: bool = True,
):
    """Gradients of :func:`conv1d` w.r.t. its input, weight and bias.

    Parameters
    ----------
    grad_y : ndarray
        dL/dy, the shape of ``conv1d(x, w, ...)``.
    x, w, stride, padding, dilation, groups, pad_mode, flip, method
        As passed to :func:`conv1d`.
    need_input_grad : bool
        Compute ``grad_x`` (skip it for a first layer).

    Returns
    -------
    (grad_x or None, grad_w, grad_b)
        ``grad_b`` is ``grad_y`` summed over N and L; ``grad_x`` is None when
        ``need_input_grad`` is False (first layers skip it). See :func:`conv2d_backward`.

    Notes
    -----
    As :func:`conv2d_backward` with one spatial dimension:
    ``grad_w[o, c, a] = sum_{n, i} grad_y[n, o, i] * xpad[n, c', i*stride + a*dilation]``.
    """
    plan = _plan_conv(
        1, x, w, None, stride, padding, dilation, groups, pad_mode, flip, method, True
    )
    return _conv_backward(plan, grad_y, need_input_grad)


def conv2d_backward(
    grad_y,
    x,
    w,
    *,
    stride: IntOrTuple = 1,
    padding: PaddingArg = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    pad_mode: str = "zeros",
    flip: bool = False,
    method: str = "auto",
    need_input_grad: bool = True,
):
    """Gradients of :func:`conv2d` w.r.t. its input, weight and bias.

    Parameters
    ----------
    grad_y : ndarray
        dL/dy, the shape of ``conv2d(x, w, ...)``.
    x, w, stride, padding, dilation, groups, pad_mode, flip, method
        As passed to :func:`conv2d`.
    need_input_grad : bool
        Compute ``grad_x`` (skip it for a first layer).

    Returns
    -------
    (grad_x or None, grad_w, grad_b)

    Notes
    -----
    With ``xpad`` the padded input and ``y = w * xpad`` (cross-correlation)::

        grad_w[o, c, a, b] = sum_{n, i, j} grad_y[n, o, i, j]
                             * xpad[n, c', i*sh + a*dh, j*sw + b*dw]
        grad_xpad[n, c', i*sh + a*dh, j*sw + b*dw] += w[o, c, a, b] * grad_y[n, o, i, j]
        grad_b[o] = sum_{n, i, j} grad_y[n, o, i, j]

    ``grad_x`` is ``grad_xpad`` folded back through the padding: the padded border is cut
    off for zero padding, and added to the cells it copies for reflect/replicate/circular.
    """
    plan = _plan_conv(
        2, x, w, None, stride, padding, dilation, groups, pad_mode, flip, method, True
    )
    return _conv_backward(plan, grad_y, need_input_grad)


# ----------------------------------------------------------------------------- im2col
def _im2col_geometry(shape, kernel_size, stride, padding, dilation):
    kernel = geometry.positive_tuple(kernel_size, 2, "kernel_size")
    stride_t = geometry.positive_tuple(stride, 2, "stride")
    dil_t = geometry.positive_tuple(dilation, 2, "dilation")
    pads = geometry.resolve_padding(padding, shape[-2:], kernel, stride_t, dil_t)
    if any(p > MAX_PADDING for pp in pads for p in pp):
        raise ValueError(f"padding must be <= {MAX_PADDING:,}, got {padding!r}")
    out = geometry.conv_output_shape(shape[-2:], kernel, stride_t, pads, dil_t)
    if min(out) <= 0:
        raise ValueError(
            f"kernel_size {kernel} (dilation {dil_t}) is larger than the padded input "
            f"{tuple(n + a + b for n, (a, b) in zip(shape[-2:], pads))}"
        )
    stride_t, dil_t = _kernel_geometry(stride_t, dil_t, kernel, out)
    _check_output_memory((shape[0], shape[1] * math.prod(kernel), math.prod(out)), 8, "im2col's")
    geo = (1, *stride_t, 0, pads[0][0], pads[1][0], 1, *dil_t)
    return (1, *kernel), (1, *out), geo


def im2col(
    x,
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: PaddingArg = 0,
    dilation: IntOrTuple = 1,
) -> np.ndarray:
    """The patch matrix: every (zero-padded) window of ``x`` as one column.

    Parameters
    ----------
    x : ndarray
        ``(C, H, W)`` or ``(N, C, H, W)``.
    kernel_size, stride, dilation : int or (int, int)
    padding : int, tuple, or "valid" | "same" | "full"
        Zero padding, as in :func:`conv2d`.

    Returns
    -------
    ndarray
        ``(C*kh*kw, OH*OW)`` (or ``(N, C*kh*kw, OH*OW)``) with
        ``cols[(c*kh + a)*kw + b, i*OW + j] = xpad[c, i*sh + a*dh, j*sw + b*dw]``.

    Notes
    -----
    ``conv2d(x, w) == (w.reshape(O, -1) @ im2col(x, k)).reshape(O, OH, OW)``: the lecture's
    convolution-as-matrix-product. Output sizes follow :func:`conv2d`.
    """
    arr = _as_real_array(x, "x")
    if arr.ndim not in (3, 4):
        raise ValueError(f"x must be 3-D (C, H, W) or 4-D (N, C, H, W), got shape {arr.shape}")
    batched = arr.ndim == 4
    x4 = _cast(arr if batched else arr[None], _float_dtype(arr))
    kernel3, out3, geo = _im2col_geometry(x4.shape, kernel_size, stride, padding, dilation)
    n, c = x4.shape[:2]
    rows, length = c * math.prod(kernel3), math.prod(out3)
    cols = np.empty((n, rows, length), x4.dtype)
    steps = (length, rows * length)
    args = (x4[:, :, None], cols.reshape(-1), *steps, *kernel3, *out3, *geo)
    _launch(_im2col.im2col_fill, n * c, cols.size * 2, *args)
    return cols if batched else cols[0]


def col2im(
    cols,
    input_shape: Sequence[int],
    kernel_size: IntOrTuple,
    stride: IntOrTuple = 1,
    padding: PaddingArg = 0,
    dilation: IntOrTuple = 1,
) -> np.ndarray:
    """The adjoint of :func:`im2col`: scatter columns back to an image, summing overlaps.

    Parameters
    ----------
    cols : ndarray
        ``(C*kh*kw, OH*OW)`` or ``(N, C*kh*kw, OH*OW)``, as :func:`im2col` returns.
    input_shape : tuple
        ``(C, H, W)`` or ``(N, C, H, W)``: the shape of the image im2col was applied to.
    kernel_size, stride, padding, dilation
        As passed to :func:`im2col`.

    Returns
    -------
    ndarray
        ``input_shape``; ``x[c, i*sh + a*dh - ph, j*sw + b*dw - pw] += cols[(c*kh + a)*kw + b,
        i*OW + j]`` over all in-bounds positions (padding cells are dropped).

    Notes
    -----
    It is the adjoint, not the inverse: ``<im2col(x), cols> == <x, col2im(cols)>``; a cell
    covered by ``m`` windows comes back multiplied by ``m``. This is the input gradient of the
    im2col convolution.
    """
    arr = _as_real_array(cols, "cols")
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"input_shape must be a tuple of ints, got {input_shape!r}") from None
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W), got {input_shape!r}")
    batched = len(shape) == 4
    shape4 = shape if batched else (1, *shape)
    kernel3, out3, geo = _im2col_geometry(shape4, kernel_size, stride, padding, dilation)
    n, c = shape4[:2]
    expected = (c * math.prod(kernel3), math.prod(out3))
    expected = (n, *expected) if batched else expected
    if arr.shape != expected:
        raise ValueError(
            f"cols must have shape {expected} for input_shape {shape}, got {arr.shape}"
        )
    dtype = _float_dtype(arr)
    c3 = _cast(np.moveaxis(arr, 0, 1) if batched else arr[:, None], dtype)
    gx = np.zeros((n, c, 1, *shape4[2:]), dtype)
    _launch(_im2col.col2im_accumulate, n * c, c3.size * 2, c3, gx, *kernel3, *out3, *geo)
    return gx.reshape(shape)


# ----------------------------------------------------------------------------- pooling
def _plan_pool(nd, x, kernel_size, stride, padding, ceil_mode):
    arr = _as_real_array(x, "x")
    _check_ndim(arr, nd + 2, "x", _LAYOUT[nd])
    args = (nd, arr.shape[2:], kernel_size, stride, padding, ceil_mode)
    # only plain values are looked up: a kept 2 would otherwise answer for 2.0 or True
    plain = (ceil_mode is True or ceil_mode is False) and _plain((kernel_size, padding))
    if plain and (stride is None or _plain(stride)):
        kernel, stride_t, pad, out = _pool_geometry_cached(*args)
    else:
        kernel, stride_t, pad, out = _pool_geometry(*args)
    # the output and, for max pooling, its int64 argmax indices
    _check_output_memory((*arr.shape[:2], *out[-nd:]), 16, "the pooling's")
    x4 = _cast(arr, _float_dtype(arr))
    if nd == 1:
        x4 = x4[:, :, None, :]
    return x4, kernel, stride_t, pad, out


def _pool_geometry(nd, sizes, kernel_size, stride, padding, ceil_mode):
    """Checked kernel, stride, padding and output size of a pooling (2-D, 1-D lifted)."""
    kernel = geometry.positive_tuple(kernel_size, nd, "kernel_size")
    stride_t = kernel if stride is None else geometry.positive_tuple(stride, nd, "stride")
    pad = geometry.as_tuple(padding, nd, "padding")
    if any(p < 0 or p > k // 2 for p, k in zip(pad, kernel)):
        raise ValueError(
            f"padding must be >= 0 and at most half the kernel size (kernel_size {kernel}), "
            f"got {padding!r}"
        )
    out = geometry.pool_output_shape(sizes, kernel, stride_t, pad, _flag(ceil_mode, "ceil_mode"))
    if min(out) <= 0:
        padded = tuple(n + 2 * q for n, q in zip(sizes, pad))
        raise ValueError(f"kernel_size {kernel} is larger than the padded input {padded}")
    stride_t, _ = _kernel_geometry(stride_t, (1,) * nd, kernel, out)
    if nd == 1:
        return (1, *kernel), (1, *stride_t), (0, *pad), (1, *out)
    return kernel, stride_t, pad, out


# A layer pools the same shapes every step; validating them costs ~12 us a call.
_pool_geometry_cached = functools.lru_cache(maxsize=256)(_pool_geometry)


def _pool_k2(x4: np.ndarray, k, s, p, out) -> bool:
    """2x2 windows at stride 2 that all lie inside the input: the written-out kernels."""
    inside = 2 * out[0] <= x4.shape[2] and 2 * out[1] <= x4.shape[3]
    return tuple(k) == tuple(s) == (2, 2) and tuple(p) == (0, 0) and inside


def _pool_shape(x4: np.ndarray, out: tuple[int, ...], nd: int) -> tuple[int, ...]:
    return x4.shape[:2] + out[2 - nd :]


def _max_pool(nd, x, kernel_size, stride, padding, ceil_mode, return_indices):
    return_indices = _flag(return_indices, "return_indices")
    x4, k, s, p, out = _plan_pool(nd, x, kernel_size, stride, padding, ceil_mode)
    y = np.empty(x4.shape[:2] + out, x4.dtype)
    idx = np.empty(y.shape, np.int64)
    tasks, flops = y.shape[0] * y.shape[1], y.size * math.prod(k)
    if _pool_k2(x4, k, s, p, out):
        _launch(_pool.max_pool_forward_k2, tasks, flops, x4, y, idx)
    else:
        _launch(_pool.max_pool_forward, tasks, flops, x4, y, idx, *k, *s, *p)
    shape = _pool_shape(x4, out, nd)
    y = y.reshape(shape)
    return (y, idx.reshape(shape)) if return_indices else y


def _avg_pool(nd, x, kernel_size, stride, padding, ceil_mode, count_include_pad):
    count_include_pad = _flag(count_include_pad, "count_include_pad")
    x4, k, s, p, out = _plan_pool(nd, x, kernel_size, stride, padding, ceil_mode)
    y = np.empty(x4.shape[:2] + out, x4.dtype)
    tasks, flops = y.shape[0] * y.shape[1], y.size * math.prod(k)
    if _pool_k2(x4, k, s, p, out):
        _launch(_pool.avg_pool_forward_k2, tasks, flops, x4, y)
    else:
        args = (x4, y, *k, *s, *p, bool(count_include_pad))
        _launch(_pool.avg_pool_forward, tasks, flops, *args)
    return y.reshape(_pool_shape(x4, out, nd))


def max_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, return_indices=False):
    """Max pooling of ``(N, C, L)`` signals, like ``F.max_pool1d``.

    Parameters
    ----------
    x, kernel_size, stride, padding, ceil_mode
        As in :func:`max_pool2d`, with one spatial dimension.
    return_indices : bool
        Also return the position in L of each maximum.

    Returns
    -------
    ndarray or (ndarray, ndarray)
        ``(N, C, L_out)`` maxima (and int64 positions). Padding never wins (it is -inf); a NaN
        in a window makes the output NaN.

    Notes
    -----
    ``L_out`` as in :func:`max_pool2d`.
    """
    return _max_pool(1, x, kernel_size, stride, padding, ceil_mode, return_indices)


def max_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, return_indices=False):
    """Max pooling of ``(N, C, H, W)`` images, like ``F.max_pool2d``.

    Parameters
    ----------
    x : ndarray
        ``(N, C, H, W)``, float32 or float64 (kept), int/bool (computed in float32).
    kernel_size : int or (int, int)
        Window size.
    stride : int or (int, int), optional
        Window step; defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit -inf padding on both sides, at most ``kernel_size // 2`` (PyTorch's rule).
    ceil_mode : bool
        Round the output size up, keeping a last partial window.
    return_indices : bool
        Also return where each maximum is (for :func:`max_pool2d_backward`).

    Returns
    -------
    ndarray or (ndarray, ndarray)
        ``(N, C, H_out, W_out)`` window maxima; with ``return_indices`` also the int64 flat
        position ``h * W + w`` of each maximum in its plane (PyTorch's convention; ties keep
        the first in row-major order). A NaN in a window makes that output NaN, and its index
        is the first NaN's.

    Notes
    -----
    ``H_out = floor((H + 2 * padding - kernel_size) / stride) + 1``, rounded up instead with
    ``ceil_mode`` except that a last window starting inside the right padding is dropped
    (:func:`cnnkit.geometry.pool_output_size`); likewise for W.
    """
    return _max_pool(2, x, kernel_size, stride, padding, ceil_mode, return_indices)


def avg_pool1d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Average pooling of ``(N, C, L)`` signals, like ``F.avg_pool1d``.

    Parameters
    ----------
    x, kernel_size, stride, padding, ceil_mode, count_include_pad
        As in :func:`avg_pool2d`, with one spatial dimension.

    Returns
    -------
    ndarray
        ``(N, C, L_out)`` window means.

    Notes
    -----
    ``y = sum(window cells inside x) / divisor``, divisor and ``L_out`` as in
    :func:`avg_pool2d`.
    """
    return _avg_pool(1, x, kernel_size, stride, padding, ceil_mode, count_include_pad)


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Average pooling of ``(N, C, H, W)`` images, like ``F.avg_pool2d``.

    Parameters
    ----------
    x, kernel_size, stride, padding, ceil_mode
        As in :func:`max_pool2d` (the padding is zeros here).
    count_include_pad : bool
        Count padding cells in the divisor.

    Returns
    -------
    ndarray
        ``(N, C, H_out, W_out)`` window means.

    Notes
    -----
    ``y = sum(window cells inside x) / divisor``; the divisor is the window's size clipped
    to the padded input (``count_include_pad=True``) or to the input (``False``), so a last
    partial ceil_mode window is averaged over what it covers. Output size as in
    :func:`max_pool2d`.
    """
    return _avg_pool(2, x, kernel_size, stride, padding, ceil_mode, count_include_pad)


def _pool_grad(grad_y, x4, out, nd):
    gy = _as_real_array(grad_y, "grad_y")
    expected = _pool_shape(x4, out, nd)
    if gy.shape != expected:
        raise ValueError(f"grad_y must have the pooled output's shape {expected}, got {gy.shape}")
    return _cast(gy, x4.dtype).reshape(x4.shape[:2] + out)


def max_pool2d_backward(
    grad_y, x, kernel_size, stride=None, padding=0, ceil_mode=False, indices=None
) -> np.ndarray:
    """Gradient of :func:`max_pool2d` w.r.t. ``x``.

    Parameters
    ----------
    grad_y : ndarray
        dL/dy, the pooled output's shape.
    x, kernel_size, stride, padding, ceil_mode
        As passed to :func:`max_pool2d`.
    indices : ndarray, optional
        The indices ``max_pool2d(..., return_indices=True)`` returned; recomputed if None.

    Returns
    -------
    ndarray
        ``grad_x[n, c, idx // W, idx % W] += grad_y[n, c, i, j]`` with ``idx`` the argmax of
        window ``(i, j)``: all of the gradient goes to the (first) maximum.

    Notes
    -----
    ``dL/dx[n, c, h, w] = sum of dL/dy[n, c, i, j] over the windows whose argmax is (h, w)``;
    the max is piecewise linear, so this is exact away from ties.
    """
    x4, k, s, p, out = _plan_pool(2, x, kernel_size, stride, padding, ceil_mode)
    gy = _pool_grad(grad_y, x4, out, 2)
    if indices is None:
        idx = np.empty(gy.shape, np.int64)
        args = (x4, np.empty(gy.shape, x4.dtype), idx, *k, *s, *p)
        _launch(_pool.max_pool_forward, gy.shape[0] * gy.shape[1], gy.size * math.prod(k), *args)
    else:
        idx = np.asarray(indices)
        if idx.shape != gy.shape or idx.dtype.kind not in "iu":
            raise ValueError(
                f"indices must be an integer array of shape {gy.shape}, got {idx.dtype} {idx.shape}"
            )
        plane = x4.shape[2] * x4.shape[3]
        if idx.min() < 0 or idx.max() >= plane:
            raise ValueError(f"indices must lie in [0, {plane}) (flat positions in H*W)")
        idx = _cast(idx, np.int64)
    gx = np.zeros(x4.shape, x4.dtype)
    _launch(_pool.max_pool_backward, gy.shape[0] * gy.shape[1], gy.size, gy, idx, gx)
    return gx


def avg_pool2d_backward(
    grad_y, x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True
) -> np.ndarray:
    """Gradient of :func:`avg_pool2d` w.r.t. ``x``.

    Parameters
    ----------
    grad_y : ndarray
        dL/dy, the pooled output's shape.
    x, kernel_size, stride, padding, ceil_mode, count_include_pad
        As passed to :func:`avg_pool2d`.

    Returns
    -------
    ndarray
        Each ``grad_y[n, c, i, j]`` divided by its window's divisor and added to every input
        cell of that window (the transpose of the averaging).

    Notes
    -----
    ``dL/dx[n, c, h, w] = sum over windows (i, j) covering (h, w) of
    dL/dy[n, c, i, j] / divisor(i, j)``, with the divisor of :func:`avg_pool2d`.
    """
    x4, k, s, p, out = _plan_pool(2, x, kernel_size, stride, padding, ceil_mode)
    gy = _pool_grad(grad_y, x4, out, 2)
    gx = np.zeros(x4.shape, x4.dtype)
    args = (gy, gx, *k, *s, *p, _flag(count_include_pad, "count_include_pad"))
    tasks, flops = gy.shape[0] * gy.shape[1], gy.size * math.prod(k)
    if _pool_k2(x4, k, s, p, out):
        _launch(_pool.avg_pool_backward_k2, tasks, flops, gy, gx)
    else:
        _launch(_pool.avg_pool_backward, tasks, flops, *args)
    return gx


def global_avg_pool(x) -> np.ndarray:
    """Mean over all spatial dimensions: ``(N, C, ...) -> (N, C)``.

    Parameters
    ----------
    x : ndarray
        ``(N, C, ...)`` with at least one spatial dimension.

    Returns
    -------
    ndarray
        ``y[n, c] = mean(x[n, c])`` in x's float dtype (float32 for int input).

    Notes
    -----
    ``y[n, c] = (1 / (H*W...)) * sum_{h, w, ...} x[n, c, h, w, ...]``.
    """
    arr = _as_real_array(x, "x")
    if arr.ndim < 3:
        raise ValueError(f"x must be (N, C, ...) with at least one spatial dim, got {arr.shape}")
    arr = arr.astype(_float_dtype(arr), copy=False)
    return arr.mean(axis=tuple(range(2, arr.ndim)), dtype=arr.dtype)


def global_avg_pool_backward(grad_y, x_shape: Sequence[int]) -> np.ndarray:
    """Gradient of :func:`global_avg_pool`: ``grad_y[n, c] / (H*W...)`` at every position.

    Parameters
    ----------
    grad_y : ndarray
        dL/dy, ``(N, C)``.
    x_shape : tuple of int
        The shape of the pooled input.

    Returns
    -------
    ndarray
        ``x_shape``, float dtype of ``grad_y``.

    Notes
    -----
    ``dL/dx[n, c, h, w, ...] = dL/dy[n, c] / (H*W...)``: every cell weighs equally in a mean.
    """
    gy = _as_real_array(grad_y, "grad_y")
    shape = tuple(int(s) for s in x_shape)
    if len(shape) < 3 or gy.shape != shape[:2]:
        raise ValueError(f"grad_y must be (N, C) = {shape[:2]} for x_shape {shape}, got {gy.shape}")
    gy = gy.astype(_float_dtype(gy), copy=False)
    count = math.prod(shape[2:])
    return np.broadcast_to((gy / count).reshape(shape[:2] + (1,) * (len(shape) - 2)), shape).copy()


__all__ = [
    "METHODS",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool2d_backward",
    "choose_method",
    "rank_one_factors",
    "separable_factors",
    "winograd_applies",
    "col2im",
    "conv1d",
    "conv1d_backward",
    "conv2d",
    "conv2d_backward",
    "conv3d",
    "global_avg_pool",
    "global_avg_pool_backward",
    "im2col",
    "max_pool1d",
    "max_pool2d",
    "max_pool2d_backward",
    "pad",
]
