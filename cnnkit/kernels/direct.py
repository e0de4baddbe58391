"""Register-blocked direct convolution in explicit 8-lane vectors (float32, 2-D, stride 1).

The lecture's sliding window, arranged so that each loaded input vector feeds several
accumulators. A block is one or two output rows of one or two output channels. Its
accumulators live in vector registers while it runs the ``kh x kw`` window over every input
channel. At each tap, the block loads one input vector per 8 output columns and broadcasts
one weight per channel. Then it does one fused multiply-add per accumulator. Two rows and
two channels make 14 accumulators for a 28 px row, and the loop runs at about 90 % of the
FMA units' peak.

Numba leaves vectorisation to LLVM's loop vectoriser, which kept every form of this loop
scalar: the accumulators of several channels are rows of one array, a run-time stride
apart (docs/PERFORMANCE.md). So the block is an intrinsic. Its vector code is written out
here, unrolled over taps, vectors and channels, as LLVM IR. The kernel size, vectors per
row and row tail are compile-time constants, one compiled block per combination.

Rows whose length is not a multiple of 8 end in a tail of ``t`` columns. With two rows and
``t <= 4``, both rows' tails share one vector, loaded as two 4-lane halves. So a
28 px row pair is 7 full vectors, where one vector per row would waste 1/8 of the lanes.
Otherwise each row's tail has a vector of its own, and only ``t`` lanes are stored.

The kernel zero-pads one sample at a time into a scratch array (flat planes ``(C, HP * WP)``)
that stays in cache, with 16 elements of slack at the end: a tail vector reads up to 7
elements past its row. Those lanes are never stored.
"""

from __future__ import annotations

import functools

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from cnnkit.kernels import compiled_task, load_lightly
from cnnkit.kernels.spin import pointer, take

LANES = 8
SEGMENT = 4  # full vectors per row in one block, before the row's last block
SLACK = 16  # elements after the padded input that tail vectors may read


def _literal(value: types.Type) -> int | None:
    return value.literal_value if isinstance(value, types.IntegerLiteral) else None


class _Emitter:
    """The few vector operations a block is made of, as LLVM IR."""

    def __init__(self, builder: ir.IRBuilder):
        self.builder = builder
        self.i32, self.i64 = ir.IntType(32), ir.IntType(64)
        self.vec = ir.VectorType(ir.FloatType(), LANES)
        self.half = ir.VectorType(ir.FloatType(), LANES // 2)
        function = ir.FunctionType(self.vec, [self.vec] * 3)
        self._fma = cgutils.get_or_insert_function(builder.module, function, "llvm.fma.v8f32")
        self._undef = ir.Constant(self.vec, ir.Undefined)
        self._splat = ir.Constant(ir.VectorType(self.i32, LANES), [0] * LANES)
        self._joined = ir.Constant(ir.VectorType(self.i32, LANES), list(range(LANES)))

    def index(self, value: ir.Value) -> ir.Value:
        """An integer argument as a 64-bit index."""
        return self.builder.sext(value, self.i64) if value.type.width < 64 else value

    def const(self, value: int) -> ir.Constant:
        return ir.Constant(self.i64, value)

    def at(self, base: ir.Value, *terms: ir.Value) -> ir.Value:
        """``&base[sum(terms)]``."""
        offset = terms[0]
        for term in terms[1:]:
            offset = self.builder.add(offset, term)
        return self.builder.gep(base, [offset])

    def load(self, pointer: ir.Value, kind: ir.Type = None) -> ir.Value:
        kind = kind or self.vec
        return self.builder.load(self.builder.bitcast(pointer, kind.as_pointer()), align=4)

    def store(self, value: ir.Value, pointer: ir.Value) -> None:
        self.builder.store(value, self.builder.bitcast(pointer, self.vec.as_pointer()), align=4)

    def join(self, low: ir.Value, high: ir.Value) -> ir.Value:
        """Two 4-lane vectors as one 8-lane vector."""
        return self.builder.shuffle_vector(low, high, self._joined)

    def broadcast(self, scalar: ir.Value) -> ir.Value:
        lane0 = self.builder.insert_element(self._undef, scalar, ir.Constant(self.i32, 0))
        return self.builder.shuffle_vector(lane0, self._undef, self._splat)

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        return self.builder.call(self._fma, [a, b, c])

    def get_lane(self, value: ir.Value, lane: int) -> ir.Value:
        return self.builder.extract_element(value, ir.Constant(self.i32, lane))


def _vectors(rows: int, nv: int, tail: int) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
    """A block's vectors as ``(row, column, lanes)``. ``lanes`` is empty for a full vector:
    columns ``column`` to ``column + 7`` of ``row``. A tail vector lists its used lanes as
    ``(lane, row, column)``; with two rows and a tail of at most 4, the tails of both rows
    share one vector (row 0 in the low half, row 1 in the high half)."""
    vectors = [(r, LANES * v, []) for r in range(rows) for v in range(nv)]
    c = LANES * nv
    if rows == 2 and 0 < tail <= LANES // 2:
        lanes = [(k, 0, c + k) for k in range(tail)]
        lanes += [(LANES // 2 + k, 1, c + k) for k in range(tail)]
        vectors.append((0, c, lanes))
    elif tail:
        vectors += [(r, c, [(k, r, c + k) for k in range(tail)]) for r in range(rows)]
    return vectors


@intrinsic
def _block(typingctx, operands, kh, kw, rows, chans, nv, tail):
    """One block: ``rows`` output rows (1 or 2) of ``chans`` output channels (1 or 2), each
    row ``nv`` full vectors and ``tail`` more columns, summed over every input channel.

    ``operands`` is ``(x, xo, xs, xcs, w, wo, wcs, b, bo, y, yo, ys, yrs, c)``: ``x`` (padded
    input), ``w`` (weights), ``b`` (bias) and ``y`` (output) are flat float32 arrays. The
    block's first input element is ``x[xo]``, its input rows ``xs`` and its ``c`` input
    channels ``xcs`` apart; the weight of tap ``(i, j)`` of input channel ``ci`` and output
    channel ``k`` is ``w[wo + k * wcs + ci * kh * kw + i * kw + j]``; the block's first
    output element is ``y[yo]``, its channels ``ys`` and its rows ``yrs`` apart; the sums
    start from the bias ``b[bo + k]``. The other arguments are compile-time integers.
    """
    shape = [_literal(v) for v in (kh, kw, rows, chans, nv, tail)]
    arrays = [operands.types[k] for k in (0, 4, 7, 9)]
    if any(v is None for v in shape) or any(
        not isinstance(a, types.Array) or a.dtype != types.float32 or a.layout != "C"
        for a in arrays
    ):
        return None  # raw pointers: only contiguous float32 arrays
    kh_, kw_, rows_, chans_, nv_, tail_ = shape
    vectors = _vectors(rows_, nv_, tail_)
    sig = types.void(operands, kh, kw, rows, chans, nv, tail)

    def codegen(context, builder, signature, args):
        e = _Emitter(builder)
        kinds = signature.args[0].types
        values = cgutils.unpack_tuple(builder, args[0])
        xp, wp, bp, yp = (
            context.make_array(kinds[k])(context, builder, values[k]).data for k in (0, 4, 7, 9)
        )
        xo, xs, xcs, wo, wcs, bo, yo, ys, yrs, c = (
            e.index(values[k]) for k in (1, 2, 3, 5, 6, 8, 10, 11, 12, 13)
        )
        bias = [e.broadcast(builder.load(e.at(bp, bo, e.const(k)))) for k in range(chans_)]

        # one pass of the unrolled window per input channel, the sums in phi nodes
        entry = builder.block
        loop = builder.append_basic_block("input_channels")
        after = builder.append_basic_block("store")
        builder.branch(loop)
        builder.position_at_end(loop)
        ci = builder.phi(e.i64)
        ci.add_incoming(e.const(0), entry)
        start = [[builder.phi(e.vec) for _ in vectors] for _ in range(chans_)]
        for k in range(chans_):
            for phi in start[k]:
                phi.add_incoming(bias[k], entry)
        x_channel = builder.add(xo, builder.mul(ci, xcs))
        w_channel = builder.add(wo, builder.mul(ci, e.const(kh_ * kw_)))
        sums = [list(row) for row in start]
        for i in range(kh_):
            in_row = [e.at(xp, x_channel, builder.mul(xs, e.const(i + r))) for r in (0, 1)]
            for j in range(kw_):
                inputs = []
                for r, col, lanes in vectors:
                    if lanes and lanes[0][1] != lanes[-1][1]:  # both rows' tails
                        at = [builder.gep(in_row[q], [e.const(col + j)]) for q in (0, 1)]
                        inputs.append(e.join(e.load(at[0], e.half), e.load(at[1], e.half)))
                    else:
                        inputs.append(e.load(builder.gep(in_row[r], [e.const(col + j)])))
                for k in range(chans_):
                    tap = e.at(wp, w_channel, builder.mul(wcs, e.const(k)), e.const(i * kw_ + j))
                    weight = e.broadcast(builder.load(tap))
                    sums[k] = [e.fma(u, weight, s) for u, s in zip(inputs, sums[k])]
        following = builder.add(ci, e.const(1))
        ci.add_incoming(following, builder.block)
        for k in range(chans_):
            for phi, value in zip(start[k], sums[k]):
                phi.add_incoming(value, builder.block)
        builder.cbranch(builder.icmp_signed("<", following, c), loop, after)

        builder.position_at_end(after)
        rows_at = [e.const(0), yrs]
        out = [  # first output element of row r of channel k
            [e.at(yp, yo, builder.mul(ys, e.const(k)), rows_at[r]) for r in (0, 1)]
            for k in range(chans_)
        ]
        for k in range(chans_):
            for (r, col, lanes), value in zip(vectors, sums[k]):
                if not lanes:
                    e.store(value, builder.gep(out[k][r], [e.const(col)]))
                for lane, row, column in lanes:
                    pointer = builder.gep(out[k][row], [e.const(column)])
                    builder.store(e.get_lane(value, lane), pointer)
        return context.get_dummy_value()

    return sig, codegen


# A task's block (:func:`conv2d_blocked`): int64 addresses and sizes. The sizes are the
# same on every call of a layer (block_sizes); pack_block adds the addresses.
(_X, _N, _C, _H, _WIDTH, _XP, _SCRATCH, _W, _B, _Y, _QUEUE) = range(11)
(_PAD_H, _PAD_W, _HP, _WP, _O, _OH, _OW, _SEGMENTS, _CHUNK) = range(11, 20)
BLOCK = 20


def block_sizes(x_shape, pads, o, oh, ow, segments, chunk, scratch):
    """The sizes in a block for :func:`conv2d_blocked`'s task (no addresses yet): ``x_shape``
    the input's (N, C, H, W), ``pads`` its padding (top, bottom, left, right), ``o, oh, ow``
    the output's channels and size, ``scratch`` the elements of each part's scratch."""
    sizes = np.zeros(BLOCK, np.int64)
    sizes[[_N, _C, _H, _WIDTH]] = x_shape
    sizes[[_PAD_H, _PAD_W]] = pads[0], pads[2]
    sizes[_HP], sizes[_WP] = x_shape[2] + pads[0] + pads[1], x_shape[3] + pads[2] + pads[3]
    sizes[[_O, _OH, _OW, _SEGMENTS, _CHUNK, _SCRATCH]] = o, oh, ow, segments, chunk, scratch
    return sizes


@njit(cache=True)
def pack_block(block, sizes, x, xp, w, b, y, queue):  # pragma: no cover
    """``block`` (:data:`BLOCK` int64) for :func:`conv2d_blocked`'s task: ``sizes``
    (:func:`block_sizes`) and the addresses of ``x`` the input (N, C, H, W), ``xp`` the
    parts' scratch, ``w``, ``b``, ``y`` the flat weights, bias and output, and ``queue``
    (three zeros), all C-contiguous."""
    block[:] = sizes
    block[_X], block[_XP], block[_W] = x.ctypes.data, xp.ctypes.data, w.ctypes.data
    block[_B], block[_Y], block[_QUEUE] = b.ctypes.data, y.ctypes.data, queue.ctypes.data


@functools.cache
def conv2d_blocked(kh: int, kw: int, last: int, tail: int):
    """The task for ``kh x kw`` windows and rows ending in a block of ``last`` full
    vectors and ``tail`` columns (compile-time constants: a closure's cells are part of
    the key of Numba's disk cache, so each combination compiles and is cached once).

    The task is a C function ``task(block, part)`` for
    :func:`cnnkit.kernels.threads.run_team`, which runs it on the calling thread
    (``part`` 0) and on the pool's workers that join (1, 2, ...). Together they compute a
    stride-1, undilated 2-D convolution. Its units of work are row pairs: unit ``t`` is the
    row pair ``t % ceil(oh / 2)`` of sample ``t // ceil(oh / 2)``, all output channels. The
    parts take ``chunk`` units at a time from a shared queue
    (:func:`cnnkit.kernels.spin.take`; odd parts from the back), so a faster core does
    more of them. ``block`` (:func:`pack_block`) holds the input (N, C, H, W), the flat
    weights (O, C, kh, kw), bias (O,) and output (N, O, OH, OW), and one scratch array per
    part of at least ``C * hp * wp +`` :data:`SLACK` elements, where a part zero-pads one
    sample at a time. A row is ``segments`` blocks of :data:`SEGMENT` full vectors, then
    one of ``last`` full vectors and ``tail`` columns: ``ow = 8 * (4 * segments + last) +
    tail``.
    """

    def task(block, part):
        n, c, h, width = block[_N], block[_C], block[_H], block[_WIDTH]
        o, oh, ow, hp, wp = block[_O], block[_OH], block[_OW], block[_HP], block[_WP]
        plane, taps, yc, segments = hp * wp, kh * kw, oh * ow, block[_SEGMENTS]
        x = carray(pointer(block[_X], np.float32), (n, c, h, width))
        xp = carray(pointer(block[_XP] + 4 * part * block[_SCRATCH], np.float32), c * plane + SLACK)
        w = carray(pointer(block[_W], np.float32), o * c * taps)
        b = carray(pointer(block[_B], np.float32), o)
        y = carray(pointer(block[_Y], np.float32), n * o * yc)
        queue = carray(pointer(block[_QUEUE], np.int64), 3)
        pairs, chunk = (oh + 1) // 2, block[_CHUNK]
        total = n * pairs
        for i in range(c * plane + SLACK):
            xp[i] = 0
        padded = -1  # the sample in xp
        units = (total + chunk - 1) // chunk
        while True:
            unit = take(queue, units, part % 2 == 1)
            if unit < 0:
                return
            for t in range(unit * chunk, min(unit * chunk + chunk, total)):
                sample, oy = t // pairs, 2 * (t % pairs)
                if sample != padded:
                    for ci in range(c):
                        for r in range(h):
                            start = ci * plane + (r + block[_PAD_H]) * wp + block[_PAD_W]
                            for q in range(width):
                                xp[start + q] = x[sample, ci, r, q]
                    padded = sample
                for k in range(0, o, 2):
                    for s in range(segments + 1):
                        x0 = s * SEGMENT * LANES
                        yo = ((sample * o + k) * oh + oy) * ow + x0
                        xo, wo = oy * wp + x0, k * c * taps
                        a = (xp, xo, wp, plane, w, wo, c * taps, b, k, y, yo, yc, ow, c)
                        if k + 1 < o:
                            if oy + 1 < oh:
                                if s < segments:
                                    _block(a, kh, kw, 2, 2, SEGMENT, 0)
                                else:
                                    _block(a, kh, kw, 2, 2, last, tail)
                            elif s < segments:
                                _block(a, kh, kw, 1, 2, SEGMENT, 0)
                            else:
                                _block(a, kh, kw, 1, 2, last, tail)
                        elif oy + 1 < oh:
                            if s < segments:
                                _block(a, kh, kw, 2, 1, SEGMENT, 0)
                            else:
                                _block(a, kh, kw, 2, 1, last, tail)
                        elif s < segments:
                            _block(a, kh, kw, 1, 1, SEGMENT, 0)
                        else:
                            _block(a, kh, kw, 1, 1, last, tail)

    return compiled_task(task)


load_lightly(globals())
