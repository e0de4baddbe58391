"""Winograd F(2x2, 3x3) transforms for 3x3, stride-1 convolutions on NCHW arrays.

Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (2016). A 2x2 output
tile of the cross-correlation of a 4x4 input tile ``d`` with a 3x3 kernel ``g`` is

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise)

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

16 multiplications per tile and channel pair instead of 36. Summed over input channels, the
16 elementwise products become 16 GEMMs ``M[e] = U[e] @ V[e]`` with ``U[e]`` (O, C) the
transformed weights and ``V[e]`` (C, T) the transformed input tiles; cnnkit.ops runs them
through numpy's matmul (OpenBLAS). These kernels do the transforms: ``V[e, c, t]`` from the
input, the output ``y`` from ``M[e, o, t]``, and for the gradients the adjoints of both
(``A dY A^T`` of each output-gradient tile, and ``B dV B^T`` added back to the input).

Layout for the vector units. With ``TH = ceil(OH / 2)`` tile rows, ``TW = ceil(OW / 2)``
tile columns and ``TW1 = TW + 1``, a (padded) plane is held as four quarter planes of
row and column parity, ``q[pr, pc, R * TW1 + K]`` for position ``(2R + pr, 2K + pc)``.
Tile ``(ty, tx)`` then reads index ``f``,
``f + 1``, ``f + TW1`` and ``f + TW1 + 1`` of a parity, with ``f = ty * TW1 + tx``: every
transform is a few unit-stride loops over ``f`` across the whole plane, whatever its width
(loops over one row of 7 tiles did not vectorise and ran 4-8x slower). The price is one
gap tile per tile row (``tx == TW``): its transformed input is never used by the output,
its output gradient is zero, and the GEMMs carry it (1 / TW more work). So a sample has
``L = TH * TW1`` tiles, numbered ``t = (n - n0) * L + f`` for the samples ``[n0, n1)`` of a
call. Output positions past OH or OW are computed and dropped, and their gradient is taken
as zero. The 16 planes ``e`` of ``V`` must not lie a multiple of 4 KiB apart (ops pads
them): sixteen store streams on one cache set ran 6x slower. A loop stores to at most four
planes: LLVM checks only a few streams for overlap at run time, and more keep it scalar.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import carray, njit, uint64

from cnnkit.kernels import compiled_task, load_lightly
from cnnkit.kernels.blas import NO_TRANS, TRANS, gemm
from cnnkit.kernels.spin import count_done, pointer, publish, take, wait_done


@njit(cache=True, nogil=True)
def _quarter_index(height, width, ph, pw, tw1, size):  # pragma: no cover
    """Where each position ``(yy, xx)`` of an input plane goes in the quarter planes
    ``q[pr, pc, R * TW1 + K]`` (padded position ``(2R + pr, 2K + pc)``), as flat indices
    into ``q`` with quarter planes ``size`` long."""
    where = np.empty(height * width, np.int64)
    for yy in range(height):
        r = yy + ph
        for xx in range(width):
            col = xx + pw
            quarter = (r % 2) * 2 + col % 2
            where[yy * width + xx] = quarter * size + (r // 2) * tw1 + col // 2
    return where


@njit(cache=True, nogil=True)
def input_tiles(x, v, t_n, th, tw1, n0, n1, ph, pw, c0, c1):  # pragma: no cover
    """``V[e, c, t] = (B^T d B)[e // 4, e % 4]`` for every 4x4 tile ``d`` of ``x[n0:n1]``
    and the channels ``c0 <= c < c1``.

    ``x`` is (N, C, H, W) with ``ph`` / ``pw`` zeros before rows / columns. ``V[e, c, t]``
    is ``v[e, c * t_n + t]`` (``v`` C-contiguous, so the inner loops know their stride).
    Each plane is first spread over its four quarter planes (row and column parity) by a
    precomputed index, one load and one store per input value; the zero padding is the part
    of ``q`` no plane writes. Then the rows of ``B^T d`` read the quarters at ``f`` and
    ``f + TW1``, and the columns of ``(B^T d) B`` read the result at ``f`` and ``f + 1``,
    both unit-stride. The column step runs once per channel over the tiles of every sample
    (the short per-sample loops of small planes spent most of their time in scalar
    remainders).
    """
    height, width = x.shape[2], x.shape[3]
    length = th * tw1
    span = (n1 - n0) * length
    size = length + tw1
    q = np.zeros((2, 2, size), x.dtype)
    flat = q.ravel()
    where = _quarter_index(height, width, ph, pw, tw1, size)
    s = np.empty((4, 2, span + 1), x.dtype)  # rows of B^T d: [row, column parity, t]
    s[:, :, span] = 0
    step, one = uint64(tw1), uint64(1)
    for c in range(c0, c1):
        for n in range(n0, n1):
            for yy in range(height):
                row = uint64(yy * width)
                for xx in range(width):
                    flat[uint64(where[row + uint64(xx)])] = x[n, c, yy, uint64(xx)]
            # rows of B^T d: tile rows 0-3 are row parities 0, 1 at f and at f + TW1
            base = uint64((n - n0) * length)
            for pc in range(2):
                for f in range(length):
                    k = uint64(f)
                    a0 = q[0, pc, k]
                    a1 = q[1, pc, k]
                    a2 = q[0, pc, k + step]
                    a3 = q[1, pc, k + step]
                    j = base + k
                    s[0, pc, j] = a0 - a2
                    s[1, pc, j] = a1 + a2
                    s[2, pc, j] = a2 - a1
                    s[3, pc, j] = a1 - a3
        # columns of (B^T d) B: tile columns 0-3 are parities 0, 1 at f and at f + 1
        t0 = uint64(c * t_n)
        for i in range(4):
            for f in range(span):
                k = uint64(f)
                e0 = s[i, 0, k]
                o0 = s[i, 1, k]
                e1 = s[i, 0, k + one]
                o1 = s[i, 1, k + one]
                v[4 * i, t0 + k] = e0 - e1
                v[4 * i + 1, t0 + k] = o0 + e1
                v[4 * i + 2, t0 + k] = e1 - o0
                v[4 * i + 3, t0 + k] = o0 - o1


@njit(cache=True, nogil=True)
def output_tiles(m, t_n, th, tw1, bias, y, n0, n1):  # pragma: no cover
    """``y[n0:n1] = A^T M A + bias`` for every tile; ``M[e, o, t]`` is ``m[e, o * t_n + t]``,
    ``y`` (N, O, OH, OW).

    One pass per output channel over the tiles of every sample writes the even and the odd
    output rows (``y0``, ``y1``: ``[2 * t + column parity]``); the rows are then copied out.
    Two arrays, not two rows of one: LLVM then sees the two store streams cannot overlap
    and vectorises the pass (as rows of one array whose length is not the loop's, it ran
    3-4x slower).
    """
    n_out, oh_n, ow_n = y.shape[1], y.shape[2], y.shape[3]
    length = th * tw1
    span = (n1 - n0) * length
    y0 = np.empty(2 * span, y.dtype)
    y1 = np.empty(2 * span, y.dtype)
    two, one = uint64(2), uint64(1)
    for o in range(n_out):
        b = bias[o]
        t0 = uint64(o * t_n)
        for f in range(span):
            k = uint64(f)
            t = t0 + k
            # columns of M A (two per row of M), then rows of A^T (M A)
            p0 = m[0, t] + m[1, t] + m[2, t]
            q0 = m[1, t] - m[2, t] - m[3, t]
            p1 = m[4, t] + m[5, t] + m[6, t]
            q1 = m[5, t] - m[6, t] - m[7, t]
            p2 = m[8, t] + m[9, t] + m[10, t]
            q2 = m[9, t] - m[10, t] - m[11, t]
            p3 = m[12, t] + m[13, t] + m[14, t]
            q3 = m[13, t] - m[14, t] - m[15, t]
            y0[two * k] = p0 + p1 + p2 + b
            y0[two * k + one] = q0 + q1 + q2 + b
            y1[two * k] = p1 - p2 - p3 + b
            y1[two * k + one] = q1 - q2 - q3 + b
        # output row 2ty + pr of sample n is y<pr>[2 * ((n - n0) * L + ty * TW1):][:OW]
        for n in range(n0, n1):
            base = (n - n0) * 2 * length
            for yy in range(oh_n):
                src = uint64(base + (yy // 2) * 2 * tw1)
                if yy % 2 == 0:
                    for xx in range(ow_n):
                        y[n, o, yy, uint64(xx)] = y0[src + uint64(xx)]
                else:
                    for xx in range(ow_n):
                        y[n, o, yy, uint64(xx)] = y1[src + uint64(xx)]


@njit(cache=True, nogil=True)
def forward_chunk(x, u, bias, y, th, tw1, n0, n1, ph, pw, v, m, address):  # pragma: no cover
    """``y[n0:n1]``: :func:`input_tiles`, the 16 products ``M[e] = U[e] @ V[e]`` through
    the ``cblas_?gemm`` at ``address`` (:mod:`cnnkit.kernels.blas`), then
    :func:`output_tiles`.

    ``u`` (16, S) holds ``U[e]`` (O, C) row-major at the start of row ``e``; ``v`` and
    ``m`` (16, S') are scratch for the chunk, laid out as ops' ``_planes``.
    """
    n_chan, n_out = x.shape[1], y.shape[1]
    t = (n1 - n0) * th * tw1
    input_tiles(x, v, t, th, tw1, n0, n1, ph, pw, 0, n_chan)
    zero = y.dtype.type(0)
    for e in range(16):
        gemm(
            address, NO_TRANS, NO_TRANS, n_out, t, n_chan,
            u[e].ctypes.data, n_chan, v[e].ctypes.data, t, m[e].ctypes.data, t, zero,
        )  # fmt: skip
    output_tiles(m, t, th, tw1, bias, y, n0, n1)


# A forward task's block (forward_task): int64 addresses and sizes, packed by pack_forward
_F_X, _F_N, _F_C, _F_H, _F_W, _F_U, _F_U_STRIDE, _F_BIAS = range(8)
_F_Y, _F_O, _F_OH, _F_OW, _F_V, _F_V_STRIDE, _F_M, _F_M_STRIDE = range(8, 16)
_F_TH, _F_TW1, _F_PER, _F_PH, _F_PW, _F_GEMM, _F_QUEUE = range(16, 23)
FORWARD_BLOCK = 23


@njit(cache=True)
def pack_forward(block, x, u, bias, y, v, m, tiling, address, queue):  # pragma: no cover
    """Fill ``block`` (:data:`FORWARD_BLOCK` int64) for :func:`forward_task`: ``x`` the
    input (N, C, H, W), ``u`` the transformed weights (16, S), ``bias`` (O,), ``y`` the
    output (N, O, OH, OW), all C-contiguous; ``v`` and ``m`` (parts, 16, S') each part's
    scratch planes; ``tiling = (th, tw1, per, ph, pw)`` (tile rows, tile columns with the
    gap, samples a chunk, padding before the rows and the columns); ``address`` the GEMM's;
    ``queue`` three zeros."""
    block[_F_X], block[_F_U], block[_F_BIAS], block[_F_Y] = (
        x.ctypes.data, u.ctypes.data, bias.ctypes.data, y.ctypes.data
    )  # fmt: skip
    block[_F_N], block[_F_C], block[_F_H], block[_F_W] = x.shape
    block[_F_U_STRIDE], block[_F_O] = u.shape[1], y.shape[1]
    block[_F_OH], block[_F_OW] = y.shape[2:]
    block[_F_V], block[_F_V_STRIDE], block[_F_M], block[_F_M_STRIDE] = (
        v.ctypes.data, v.shape[2], m.ctypes.data, m.shape[2]
    )  # fmt: skip
    block[_F_TH], block[_F_TW1], block[_F_PER], block[_F_PH], block[_F_PW] = tiling
    block[_F_GEMM], block[_F_QUEUE] = address, queue.ctypes.data


def forward_task(dtype: np.dtype):
    """The forward of a batch as a team task (:func:`cnnkit.kernels.threads.run_team`):
    each part takes chunks of ``per`` samples from a shared queue and runs
    :func:`forward_chunk` on them in its own scratch planes, so a faster core does more
    chunks. ``block`` is :func:`pack_forward`'s."""
    return _forward_task(np.dtype(dtype).name)


@functools.cache
def _forward_task(name: str):
    kind, size = np.dtype(name).type, np.dtype(name).itemsize

    def task(block, part):
        n, c = block[_F_N], block[_F_C]
        n_out, th, tw1, per = block[_F_O], block[_F_TH], block[_F_TW1], block[_F_PER]
        x = carray(pointer(block[_F_X], kind), (n, c, block[_F_H], block[_F_W]))
        u = carray(pointer(block[_F_U], kind), (16, block[_F_U_STRIDE]))
        bias = carray(pointer(block[_F_BIAS], kind), n_out)
        y = carray(pointer(block[_F_Y], kind), (n, n_out, block[_F_OH], block[_F_OW]))
        v_planes, m_planes = block[_F_V_STRIDE], block[_F_M_STRIDE]
        v = carray(pointer(block[_F_V] + part * 16 * v_planes * size, kind), (16, v_planes))
        m = carray(pointer(block[_F_M] + part * 16 * m_planes * size, kind), (16, m_planes))
        queue = carray(pointer(block[_F_QUEUE], np.int64), 3)
        ph, pw, address = block[_F_PH], block[_F_PW], block[_F_GEMM]
        units = (n + per - 1) // per
        while True:
            unit = take(queue, units, part % 2 == 1)
            if unit < 0:
                return
            n0 = unit * per
            n1 = min(n0 + per, n)
            forward_chunk(x, u, bias, y, th, tw1, n0, n1, ph, pw, v, m, address)

    return compiled_task(task)


@njit(cache=True, nogil=True)
def backward_chunks(
    x, gy, u, du, prod, gx, th, tw1, span, ph, pw, v, g, address, started, part
):  # pragma: no cover
    """Both gradients of the samples ``span = (start, stop, per)``, in chunks of ``per``, in
    one call that runs without the GIL (the backward of :func:`forward_chunk`); sets
    ``started[part]`` first.

    ``du`` (16, S) receives ``dU[e] = sum over chunks of G[e] @ V[e]^T`` (O, C) row-major
    (each chunk's product goes through ``prod``, then is added, as ``du += prod`` did);
    with a non-empty ``gx`` the input gradient too: ``dV[e] = U[e]^T @ G[e]`` in ``v``'s
    buffer, then :func:`input_tiles_adjoint`.
    """
    publish(started, part, 1)
    start, stop, per = span
    n_chan, n_out = x.shape[1], gy.shape[1]
    tiles = th * tw1
    zero = x.dtype.type(0)
    used = n_out * n_chan
    for e in range(16):
        for j in range(used):
            du[e, j] = zero
    for n0 in range(start, stop, per):
        n1 = min(n0 + per, stop)
        t = (n1 - n0) * tiles
        input_tiles(x, v, t, th, tw1, n0, n1, ph, pw, 0, n_chan)
        grad_tiles(gy, g, t, th, tw1, n0, n1, 0, n_out)
        for e in range(16):
            gemm(
                address,
                NO_TRANS,
                TRANS,
                n_out,
                n_chan,
                t,
                g[e].ctypes.data,
                t,
                v[e].ctypes.data,
                t,
                prod[e].ctypes.data,
                n_chan,
                zero,
            )
            for j in range(used):
                du[e, j] += prod[e, j]
            if gx.size:  # V[e] is used up: its buffer takes dV[e]
                gemm(
                    address,
                    TRANS,
                    NO_TRANS,
                    n_chan,
                    t,
                    n_out,
                    u[e].ctypes.data,
                    n_chan,
                    g[e].ctypes.data,
                    t,
                    v[e].ctypes.data,
                    t,
                    zero,
                )
        if gx.size:
            input_tiles_adjoint(v, t, th, tw1, gx, n0, n1, ph, pw, 0, n_chan)


@njit(cache=True, nogil=True)
def split_products(
    u, g, v, du, gx, sizes, t, th, tw1, n0, n1, ph, pw, chans, first, address
):  # pragma: no cover
    """The products of one block of input channels when a small batch is split by
    channels (:func:`split_backward_task`). For the input channels ``chans = (c0, c1)``:
    columns ``c0:c1`` of ``dU[e] = G[e] @ V[e]^T`` (written if ``first``, else added);
    then, with a non-empty ``gx``, rows ``c0:c1`` of ``dV[e] = U[e]^T @ G[e]`` into ``v``
    and :func:`input_tiles_adjoint` of them.

    ``sizes = (O, C)``. ``u`` and ``du`` are (16, S) with ``U[e]``, ``dU[e]`` (O, C)
    row-major at the start of row ``e``; ``g`` and ``v`` hold every channel's tiles.
    """
    n_out, n_chan = sizes
    c0, c1 = chans
    width = c1 - c0
    if width <= 0:
        return
    zero = v.dtype.type(0)
    size = v.itemsize
    prod = np.empty(n_out * width, v.dtype)
    for e in range(16):
        rows = v[e].ctypes.data + c0 * t * size  # rows c0:c1 of V[e]
        gemm(
            address, NO_TRANS, TRANS, n_out, width, t,
            g[e].ctypes.data, t, rows, t, prod.ctypes.data, width, zero,
        )  # fmt: skip
        for o in range(n_out):
            at = o * n_chan + c0
            if first:
                for j in range(width):
                    du[e, at + j] = prod[o * width + j]
            else:
                for j in range(width):
                    du[e, at + j] += prod[o * width + j]
        if gx.size:  # rows c0:c1 of V[e] are used up: they take dV[e]
            gemm(
                address, TRANS, NO_TRANS, width, t, n_out,
                u[e].ctypes.data + c0 * size, n_chan, g[e].ctypes.data, t, rows, t, zero,
            )  # fmt: skip
    if gx.size:
        input_tiles_adjoint(v, t, th, tw1, gx, n0, n1, ph, pw, c0, c1)


# A split backward task's block (split_backward_task): int64 addresses and sizes
_S_X, _S_N, _S_C, _S_H, _S_W, _S_GY, _S_O, _S_OH, _S_OW = range(9)
_S_U, _S_U_STRIDE, _S_DU, _S_V, _S_V_STRIDE, _S_G, _S_G_STRIDE, _S_GX, _S_GX_N = range(9, 18)
_S_TH, _S_TW1, _S_PER, _S_PH, _S_PW, _S_GEMM, _S_STEPS, _S_BLOCKS = range(18, 26)
SPLIT_BLOCK = 26
STEP = 4  # a step's counters (split_backward_task): its queue (3), then its units done


@njit(cache=True)
def pack_split(block, x, gy, u, du, v, g, gx, tiling, address, steps, blocks):  # pragma: no cover
    """Fill ``block`` (:data:`SPLIT_BLOCK` int64) for :func:`split_backward_task`: ``x``
    (N, C, H, W) and ``gy`` (N, O, OH, OW) C-contiguous; ``u`` and ``du`` (16, S) the
    transformed weights and their gradient (its rows as long as ``u``'s); ``v`` and ``g``
    (16, S') the planes of a chunk's tiles; ``gx`` the input gradient, or an empty array;
    ``tiling = (th, tw1, per, ph, pw)``; ``steps`` :data:`STEP` zeros for each of two steps
    per chunk; ``blocks`` the channel blocks of each step."""
    block[_S_X], block[_S_GY], block[_S_U], block[_S_DU] = (
        x.ctypes.data, gy.ctypes.data, u.ctypes.data, du.ctypes.data
    )  # fmt: skip
    block[_S_N], block[_S_C], block[_S_H], block[_S_W] = x.shape
    block[_S_O], block[_S_OH], block[_S_OW] = gy.shape[1:]
    block[_S_U_STRIDE] = u.shape[1]
    block[_S_V], block[_S_V_STRIDE], block[_S_G], block[_S_G_STRIDE] = (
        v.ctypes.data, v.shape[1], g.ctypes.data, g.shape[1]
    )  # fmt: skip
    block[_S_GX], block[_S_GX_N] = (gx.ctypes.data, gx.shape[0]) if gx.size else (x.ctypes.data, 0)
    block[_S_TH], block[_S_TW1], block[_S_PER], block[_S_PH], block[_S_PW] = tiling
    block[_S_GEMM], block[_S_STEPS], block[_S_BLOCKS] = address, steps.ctypes.data, blocks


def split_backward_task(dtype: np.dtype):
    """Both gradients of a batch smaller than the threads, split by channels, as a team
    task (:func:`cnnkit.kernels.threads.run_team`). For each chunk of ``per`` samples, two
    steps: the transforms (:func:`input_tiles` of ``blocks`` blocks of input channels,
    :func:`grad_tiles` of ``blocks`` blocks of output channels), then
    :func:`split_products` of each block of input channels. Each step's units come from
    its own queue; a part that runs out waits until every unit of the step is done (only
    units another part is running can be outstanding). ``block`` is
    :func:`pack_split`'s."""
    return _split_backward_task(np.dtype(dtype).name)


@functools.cache
def _split_backward_task(name: str):
    kind = np.dtype(name).type

    def task(block, part):
        n, c, h, w = block[_S_N], block[_S_C], block[_S_H], block[_S_W]
        n_out, th, tw1, per = block[_S_O], block[_S_TH], block[_S_TW1], block[_S_PER]
        x = carray(pointer(block[_S_X], kind), (n, c, h, w))
        gy = carray(pointer(block[_S_GY], kind), (n, n_out, block[_S_OH], block[_S_OW]))
        u = carray(pointer(block[_S_U], kind), (16, block[_S_U_STRIDE]))
        du = carray(pointer(block[_S_DU], kind), (16, block[_S_U_STRIDE]))
        v = carray(pointer(block[_S_V], kind), (16, block[_S_V_STRIDE]))
        g = carray(pointer(block[_S_G], kind), (16, block[_S_G_STRIDE]))
        gx = carray(pointer(block[_S_GX], kind), (block[_S_GX_N], c, h, w))
        ph, pw, address, blocks = block[_S_PH], block[_S_PW], block[_S_GEMM], block[_S_BLOCKS]
        chunks = (n + per - 1) // per
        steps = carray(pointer(block[_S_STEPS], np.int64), 2 * chunks * STEP)
        back = part % 2 == 1
        for k in range(chunks):
            n0 = k * per
            n1 = min(n0 + per, n)
            t = (n1 - n0) * th * tw1
            at = 2 * k * STEP  # the transforms
            unit = take(steps[at : at + 3], 2 * blocks, back)
            while unit >= 0:
                if unit < blocks:
                    c0, c1 = c * unit // blocks, c * (unit + 1) // blocks
                    input_tiles(x, v, t, th, tw1, n0, n1, ph, pw, c0, c1)
                else:
                    o0, o1 = (
                        n_out * (unit - blocks) // blocks,
                        n_out * (unit - blocks + 1) // blocks,
                    )
                    grad_tiles(gy, g, t, th, tw1, n0, n1, o0, o1)
                count_done(steps, at + 3)
                unit = take(steps[at : at + 3], 2 * blocks, back)
            wait_done(steps, at + 3, 2 * blocks)
            at += STEP  # the products
            unit = take(steps[at : at + 3], blocks, back)
            while unit >= 0:
                chans = (c * unit // blocks, c * (unit + 1) // blocks)
                sizes = (n_out, c)
                split_products(
                    u, g, v, du, gx, sizes, t, th, tw1, n0, n1, ph, pw, chans, k == 0, address
                )
                count_done(steps, at + 3)
                unit = take(steps[at : at + 3], blocks, back)
            wait_done(steps, at + 3, blocks)

    return compiled_task(task)


@njit(cache=True, nogil=True)
def grad_tiles(gy, g, t_n, th, tw1, n0, n1, o0, o1):  # pragma: no cover
    """``G[e, o, t] = (A dY A^T)[e // 4, e % 4]`` for every 2x2 tile ``dY`` of
    ``gy[n0:n1, o0:o1]``, stored at ``g[e, o * t_n + t]``.

    The adjoint of :func:`output_tiles`, in reverse: each gradient plane is copied into the
    even and odd rows ``gq0``, ``gq1`` (laid out as there), then one pass per row of
    ``A dY`` runs over the tiles of every sample. Positions past OH or OW and gap tiles
    count as zero: no plane writes them.
    """
    oh_n, ow_n = gy.shape[2], gy.shape[3]
    length = th * tw1
    span = (n1 - n0) * length
    gq0 = np.zeros(2 * span, gy.dtype)
    gq1 = np.zeros(2 * span, gy.dtype)
    for o in range(o0, o1):
        for n in range(n0, n1):
            base = (n - n0) * 2 * length
            for yy in range(oh_n):
                dst = uint64(base + (yy // 2) * 2 * tw1)
                if yy % 2 == 0:
                    for xx in range(ow_n):
                        gq0[dst + uint64(xx)] = gy[n, o, yy, uint64(xx)]
                else:
                    for xx in range(ow_n):
                        gq1[dst + uint64(xx)] = gy[n, o, yy, uint64(xx)]
        # rows of A dY are (a, a + c, a - c, -c), with a, c the tile's two gradient rows;
        # then (l, l + r, l - r, -r) along each row. Four stores a loop: more streams than
        # LLVM checks for overlap at run time keep a loop scalar.
        t0 = uint64(o * t_n)
        _grad_row(gq0, gq1, g, 0, t0, span)
        _grad_row(gq0, gq1, g, 1, t0, span)
        _grad_row(gq0, gq1, g, 2, t0, span)
        _grad_row(gq0, gq1, g, 3, t0, span)


@njit(cache=True, inline="always")
def _grad_row(gq0, gq1, g, i, t0, span):
    """Row ``i`` of ``A dY A^T`` for ``span`` tiles: ``g[4i:4i + 4, t0:t0 + span]``."""
    two, one = uint64(2), uint64(1)
    for f in range(span):
        k = uint64(f)
        a0 = gq0[two * k]
        a1 = gq0[two * k + one]
        c0 = gq1[two * k]
        c1 = gq1[two * k + one]
        if i == 0:
            left, right = a0, a1
        elif i == 1:
            left, right = a0 + c0, a1 + c1
        elif i == 2:
            left, right = a0 - c0, a1 - c1
        else:
            left, right = -c0, -c1
        g[4 * i, t0 + k] = left
        g[4 * i + 1, t0 + k] = left + right
        g[4 * i + 2, t0 + k] = left - right
        g[4 * i + 3, t0 + k] = -right


@njit(cache=True, nogil=True)
def input_tiles_adjoint(dv, t_n, th, tw1, gx, n0, n1, ph, pw, c0, c1):  # pragma: no cover
    """``gx[n0:n1, c0:c1]`` = the sum over tiles of ``B dV B^T`` at each tile's input position.

    The adjoint of :func:`input_tiles`, step by step in reverse, each step written as a
    gather (an entry collects what the forward step read from it) so that its loops
    vectorise: ``dV[e, c, t]`` is ``dv[e, c * t_n + t]``; ``gx`` (N, C, H, W) is
    overwritten, and what falls in the padding is dropped. The column step runs once per
    channel over the tiles of every sample: a sample's first tile collects from the tile
    before it, the previous sample's last gap tile, whose ``dV`` is zero.
    """
    height, width = gx.shape[2], gx.shape[3]
    length = th * tw1
    span = (n1 - n0) * length
    size = length + tw1
    s = np.empty((4, 2, span), gx.dtype)
    q = np.empty((2, 2, size), gx.dtype)  # quarter planes [pr, pc, R * TW1 + K]
    flat = q.ravel()
    where = _quarter_index(height, width, ph, pw, tw1, size)
    step, one = uint64(tw1), uint64(1)
    for c in range(c0, c1):
        t0 = uint64(c * t_n)
        # column step: even f collects d0 at f and d1 + d2 - d0 from f - 1; odd f
        # collects d1 - d2 + d3 at f and -d3 from f - 1
        for i in range(4):
            e0, e1, e2, e3 = 4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3
            s[i, 0, 0] = dv[e0, t0]
            s[i, 1, 0] = dv[e1, t0] - dv[e2, t0] + dv[e3, t0]
            for f in range(1, span):
                k = uint64(f)
                j = t0 + k
                s[i, 0, k] = dv[e0, j] + dv[e1, j - one] + dv[e2, j - one] - dv[e0, j - one]
                s[i, 1, k] = dv[e1, j] - dv[e2, j] + dv[e3, j] - dv[e3, j - one]
        for n in range(n0, n1):
            base = uint64((n - n0) * length)
            # row step: row parity 0 collects s0 at f and s1 + s2 - s0 from f - TW1;
            # parity 1 collects s1 - s2 + s3 at f and -s3 from f - TW1
            for pc in range(2):
                for f in range(tw1):
                    k = base + uint64(f)
                    q[0, pc, uint64(f)] = s[0, pc, k]
                    q[1, pc, uint64(f)] = s[1, pc, k] - s[2, pc, k] + s[3, pc, k]
                for f in range(tw1, length):
                    k = base + uint64(f)
                    b = k - step
                    q[0, pc, uint64(f)] = s[0, pc, k] + s[1, pc, b] + s[2, pc, b] - s[0, pc, b]
                    q[1, pc, uint64(f)] = s[1, pc, k] - s[2, pc, k] + s[3, pc, k] - s[3, pc, b]
                for f in range(length, size):
                    b = base + uint64(f) - step
                    q[0, pc, uint64(f)] = s[1, pc, b] + s[2, pc, b] - s[0, pc, b]
                    q[1, pc, uint64(f)] = -s[3, pc, b]
            for yy in range(height):
                row = uint64(yy * width)
                for xx in range(width):
                    gx[n, c, yy, uint64(xx)] = flat[uint64(where[row + uint64(xx)])]


@njit(cache=True, inline="always")
def _put(u, e, j, row):
    """``u[e:e + 4, j] = row``."""
    u[e, j] = row[0]
    u[e + 1, j] = row[1]
    u[e + 2, j] = row[2]
    u[e + 3, j] = row[3]


@njit(cache=True, inline="always")
def _g(a0, a1, a2):
    """``G`` applied to three values: four."""
    h = 0.5 * (a0 + a2)
    return a0, h + 0.5 * a1, h - 0.5 * a1, a2


@njit(cache=True, inline="always")
def _gt(a0, a1, a2, a3):
    """``G^T`` applied to four values: three (the adjoint of :func:`_g`)."""
    return a0 + 0.5 * (a1 + a2), 0.5 * (a1 - a2), a3 + 0.5 * (a1 + a2)


@njit(cache=True, nogil=True)
def weight_tiles(w, u):  # pragma: no cover
    """``U[e, o, c] = (G w[o, c] G^T)[e // 4, e % 4]`` at ``u[e, o * C + c]``; ``w`` is
    (O, C, 3, 3)."""
    n_chan = w.shape[1]
    for o in range(w.shape[0]):
        for c in range(n_chan):
            j = o * n_chan + c
            # columns of G g, then rows of (G g) G^T
            c0 = _g(w[o, c, 0, 0], w[o, c, 1, 0], w[o, c, 2, 0])
            c1 = _g(w[o, c, 0, 1], w[o, c, 1, 1], w[o, c, 2, 1])
            c2 = _g(w[o, c, 0, 2], w[o, c, 1, 2], w[o, c, 2, 2])
            _put(u, 0, j, _g(c0[0], c1[0], c2[0]))
            _put(u, 4, j, _g(c0[1], c1[1], c2[1]))
            _put(u, 8, j, _g(c0[2], c1[2], c2[2]))
            _put(u, 12, j, _g(c0[3], c1[3], c2[3]))


@njit(cache=True, nogil=True)
def weight_tiles_adjoint(du, gw):  # pragma: no cover
    """``gw[o, c] = G^T dU G`` with ``dU[i, j] = du[4 * i + j, o * C + c]`` (adjoint of
    :func:`weight_tiles`); ``gw`` (O, C, 3, 3) is overwritten."""
    n_chan = gw.shape[1]
    for o in range(gw.shape[0]):
        for c in range(n_chan):
            j = o * n_chan + c
            r0 = _gt(du[0, j], du[4, j], du[8, j], du[12, j])
            r1 = _gt(du[1, j], du[5, j], du[9, j], du[13, j])
            r2 = _gt(du[2, j], du[6, j], du[10, j], du[14, j])
            r3 = _gt(du[3, j], du[7, j], du[11, j], du[15, j])
            for a in range(3):
                row = _gt(r0[a], r1[a], r2[a], r3[a])
                gw[o, c, a, 0] = row[0]
                gw[o, c, a, 1] = row[1]
                gw[o, c, a, 2] = row[2]


load_lightly(globals())
