"""Matrix products called from inside Numba kernels, through NumPy's own OpenBLAS.

A kernel that alternates its own loops with ``np.matmul`` hands the GIL back and forth
at every product. Two threads doing so ran the same Winograd chunk 1.7x slower each than
one thread alone, although each step alone scaled (docs/PERFORMANCE.md). So a kernel that
needs products takes the address of OpenBLAS's ``cblas_?gemm`` as an integer argument and
calls it through :func:`gemm`, without the GIL. The address is an argument rather than a
global so that Numba's on-disk cache holds no address (shared libraries move between
runs).

:func:`gemm_address` finds the function in the OpenBLAS that NumPy loaded (the
``scipy_openblas`` build of NumPy's wheels, 64-bit integers). With any other BLAS it
returns 0, and callers keep ``np.matmul``.
"""

from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

_CBLAS_ROW_MAJOR = 101
NO_TRANS, TRANS = 111, 112  # CBLAS_TRANSPOSE: op(X) = X, X^T
_addresses: dict[str, int] = {}


def gemm_address(dtype: np.dtype) -> int:
    """Address of ``cblas_sgemm`` (float32) or ``cblas_dgemm`` (float64) in NumPy's
    OpenBLAS with 64-bit integers, or 0 if there is none."""
    kind = {"float32": "s", "float64": "d"}.get(np.dtype(dtype).name)
    if kind is None:
        return 0
    if kind not in _addresses:
        _addresses[kind] = _find(f"scipy_cblas_{kind}gemm64_")
    return _addresses[kind]


def _find(symbol: str) -> int:
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas64_" in line.lower()}
    except OSError:
        return 0
    for path in sorted(paths):
        try:
            function = getattr(ctypes.CDLL(path), symbol, None)
        except OSError:
            continue
        if function is not None:
            return ctypes.cast(function, ctypes.c_void_p).value or 0
    return 0


@intrinsic
def _call_gemm(typingctx, address, transa, transb, m, n, k, a, lda, b, ldb, c, ldc, zero):
    """``C (m, n) = op(A) @ op(B)``, row-major, through ``cblas_?gemm`` at ``address``, with
    ``op`` given by ``transa``/``transb`` (:data:`NO_TRANS`, :data:`TRANS`); ``a``, ``b``,
    ``c`` are addresses and ``zero`` a 0 of the element type."""
    sig = types.void(address, transa, transb, m, n, k, a, lda, b, ldb, c, ldc, zero)

    def codegen(context, builder, signature, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        real = context.get_value_type(signature.args[-1])
        ptr = real.as_pointer()
        fnty = ir.FunctionType(
            ir.VoidType(), [i32, i32, i32, i64, i64, i64, real, ptr, i64, ptr, i64, real, ptr, i64]
        )
        function = builder.inttoptr(args[0], fnty.as_pointer())
        flags = [builder.trunc(v, i32) if v.type.width > 32 else v for v in args[1:3]]
        wide = [builder.sext(v, i64) if v.type.width < 64 else v for v in args[3:12]]
        size, lead = wide[:3], (wide[4], wide[6], wide[8])
        builder.call(
            function,
            [
                ir.Constant(i32, _CBLAS_ROW_MAJOR),
                *flags,
                *size,
                ir.Constant(real, 1.0),
                builder.inttoptr(args[6], ptr),
                lead[0],
                builder.inttoptr(args[8], ptr),
                lead[1],
                args[12],
                builder.inttoptr(args[10], ptr),
                lead[2],
            ],
        )
        return context.get_dummy_value()

    return sig, codegen


gemm = _call_gemm
