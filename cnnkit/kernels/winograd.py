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
tile columns and ``TW1 = TW + 1``, a (padded) plane is held as its even and odd rows,
``q[pr, R * 2 * TW1 + col]`` for position ``(2R + pr, col)`` (the adjoint splits the columns
by parity too, ``q[pr, pc, R * TW1 + K]``). Tile ``(ty, tx)`` then reads index ``f``,
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

import numpy as np
from numba import njit, uint64

from cnnkit.kernels import load_lightly


@njit(cache=True, nogil=True)
def _to_rows(x, n, c, q, tw1, ph, pw):  # pragma: no cover
    """``q[pr, R * 2 * TW1 + col]`` = padded position ``(2R + pr, col)`` of ``x[n, c]``
    padded by ``(ph, pw)`` before, zeros elsewhere."""
    q[:] = 0
    height, width = x.shape[2], x.shape[3]
    for yy in range(height):
        r = yy + ph
        dst = uint64((r // 2) * 2 * tw1 + pw)
        pr = r % 2
        for xx in range(width):
            q[pr, dst + uint64(xx)] = x[n, c, yy, uint64(xx)]


@njit(cache=True, nogil=True)
def input_tiles(x, v, t_n, th, tw1, n0, n1, ph, pw, c0, c1):  # pragma: no cover
    """``V[e, c, t] = (B^T d B)[e // 4, e % 4]`` for every 4x4 tile ``d`` of ``x[n0:n1]``
    and the channels ``c0 <= c < c1``.

    ``x`` is (N, C, H, W) with ``ph`` / ``pw`` zeros before rows / columns. ``V[e, c, t]``
    is ``v[e, c * t_n + t]`` (``v`` C-contiguous, so the inner loops know their stride).
    """
    length = th * tw1
    q = np.empty((2, 2 * (length + tw1)), x.dtype)
    s = np.empty((4, 2, length + 1), x.dtype)
    s[:, :, length] = 0
    step, one, two = uint64(2 * tw1), uint64(1), uint64(2)  # unsigned: see kernels/conv.py
    for n in range(n0, n1):
        for c in range(c0, c1):
            _to_rows(x, n, c, q, tw1, ph, pw)
            # rows of B^T d: tile rows 0-3 are row parities 0, 1 at f and at f + TW1
            for pc in range(2):
                for f in range(length):
                    k = two * uint64(f) + uint64(pc)
                    a0 = q[0, k]
                    a1 = q[1, k]
                    a2 = q[0, k + step]
                    a3 = q[1, k + step]
                    j = uint64(f)
                    s[0, pc, j] = a0 - a2
                    s[1, pc, j] = a1 + a2
                    s[2, pc, j] = a2 - a1
                    s[3, pc, j] = a1 - a3
            # columns of (B^T d) B: tile columns 0-3 are parities 0, 1 at f and at f + 1
            t0 = uint64(c * t_n + (n - n0) * length)
            for i in range(4):
                for f in range(length):
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
    ``y`` (N, O, OH, OW)."""
    n_out, oh_n, ow_n = y.shape[1], y.shape[2], y.shape[3]
    length = th * tw1
    # [output row parity, 2 * f + column parity]: row 2ty + pr of the output is
    # yq[pr, 2 * ty * TW1:][:OW], so the final copy runs along contiguous rows
    yq = np.empty((2, 2 * length), y.dtype)
    two, one = uint64(2), uint64(1)
    for n in range(n0, n1):
        for o in range(n_out):
            b = bias[o]
            t0 = uint64(o * t_n + (n - n0) * length)
            for f in range(length):
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
                yq[0, two * k] = p0 + p1 + p2 + b
                yq[0, two * k + one] = q0 + q1 + q2 + b
                yq[1, two * k] = p1 - p2 - p3 + b
                yq[1, two * k + one] = q1 - q2 - q3 + b
            for yy in range(oh_n):
                src = uint64((yy // 2) * 2 * tw1)
                pr = yy % 2
                for xx in range(ow_n):
                    y[n, o, yy, uint64(xx)] = yq[pr, src + uint64(xx)]


@njit(cache=True, nogil=True)
def grad_tiles(gy, g, t_n, th, tw1, n0, n1, o0, o1):  # pragma: no cover
    """``G[e, o, t] = (A dY A^T)[e // 4, e % 4]`` for every 2x2 tile ``dY`` of
    ``gy[n0:n1, o0:o1]``, stored at ``g[e, o * t_n + t]``.

    The adjoint of :func:`output_tiles`; positions past OH or OW and gap tiles count as zero.
    """
    oh_n, ow_n = gy.shape[2], gy.shape[3]
    length = th * tw1
    gq = np.zeros((2, 2 * length), gy.dtype)  # laid out as yq in output_tiles
    rows = np.empty((4, 2, length), gy.dtype)  # rows of A dY: [row, column parity, f]
    two, one = uint64(2), uint64(1)
    for n in range(n0, n1):
        for o in range(o0, o1):
            for yy in range(oh_n):
                dst = uint64((yy // 2) * 2 * tw1)
                pr = yy % 2
                for xx in range(ow_n):
                    gq[pr, dst + uint64(xx)] = gy[n, o, yy, uint64(xx)]
            # rows of A dY: (a, a + c, a - c, -c) with a, c the tile's two gradient rows
            for f in range(length):
                k = uint64(f)
                a0 = gq[0, two * k]
                a1 = gq[0, two * k + one]
                c0 = gq[1, two * k]
                c1 = gq[1, two * k + one]
                rows[0, 0, k] = a0
                rows[0, 1, k] = a1
                rows[1, 0, k] = a0 + c0
                rows[1, 1, k] = a1 + c1
                rows[2, 0, k] = a0 - c0
                rows[2, 1, k] = a1 - c1
                rows[3, 0, k] = -c0
                rows[3, 1, k] = -c1
            # then (l, l + r, l - r, -r) along each row; four stores a loop (more streams
            # than LLVM checks for overlap at run time keep a loop scalar)
            t0 = uint64(o * t_n + (n - n0) * length)
            for i in range(4):
                for f in range(length):
                    k = uint64(f)
                    left = rows[i, 0, k]
                    right = rows[i, 1, k]
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
    overwritten, and what falls in the padding is dropped.
    """
    height, width = gx.shape[2], gx.shape[3]
    length = th * tw1
    last = uint64(length - 1)
    s = np.empty((4, 2, length + 1), gx.dtype)
    q = np.empty((2, 2, length + tw1), gx.dtype)  # quarter planes [pr, pc, R * TW1 + K]
    step, one = uint64(tw1), uint64(1)
    for n in range(n0, n1):
        for c in range(c0, c1):
            t0 = uint64(c * t_n + (n - n0) * length)
            # column step: even f collects d0 at f and d1 + d2 - d0 from f - 1; odd f
            # collects d1 - d2 + d3 at f and -d3 from f - 1
            for i in range(4):
                e0, e1, e2, e3 = 4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3
                s[i, 0, 0] = dv[e0, t0]
                s[i, 1, 0] = dv[e1, t0] - dv[e2, t0] + dv[e3, t0]
                for f in range(1, length):
                    k = uint64(f)
                    j = t0 + k
                    s[i, 0, k] = dv[e0, j] + dv[e1, j - one] + dv[e2, j - one] - dv[e0, j - one]
                    s[i, 1, k] = dv[e1, j] - dv[e2, j] + dv[e3, j] - dv[e3, j - one]
                s[i, 0, last + one] = dv[e1, t0 + last] + dv[e2, t0 + last] - dv[e0, t0 + last]
                s[i, 1, last + one] = -dv[e3, t0 + last]
            # row step: row parity 0 collects s0 at f and s1 + s2 - s0 from f - TW1;
            # parity 1 collects s1 - s2 + s3 at f and -s3 from f - TW1
            for pc in range(2):
                for f in range(tw1):
                    k = uint64(f)
                    q[0, pc, k] = s[0, pc, k]
                    q[1, pc, k] = s[1, pc, k] - s[2, pc, k] + s[3, pc, k]
                for f in range(tw1, length):
                    k = uint64(f)
                    b = k - step
                    q[0, pc, k] = s[0, pc, k] + s[1, pc, b] + s[2, pc, b] - s[0, pc, b]
                    q[1, pc, k] = s[1, pc, k] - s[2, pc, k] + s[3, pc, k] - s[3, pc, b]
                for f in range(length, length + tw1):
                    k = uint64(f)
                    b = k - step
                    q[0, pc, k] = s[1, pc, b] + s[2, pc, b] - s[0, pc, b]
                    q[1, pc, k] = -s[3, pc, b]
            for yy in range(height):
                r = yy + ph
                pr, row = r % 2, (r // 2) * tw1
                for pc in range(2):
                    xx0 = (pc - pw) % 2
                    src = uint64(row + (xx0 + pw) // 2)
                    for j in range((width - xx0 + 1) // 2):
                        gx[n, c, yy, uint64(xx0) + uint64(2) * uint64(j)] = q[
                            pr, pc, src + uint64(j)
                        ]


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
