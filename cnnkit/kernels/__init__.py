"""Numba JIT kernels. Only cnnkit.ops calls these, with validated, contiguous 5-D arrays
(1-D and 2-D problems are viewed as 3-D ones with unit leading spatial axes), so each kernel
compiles once per dtype (float32, float64) and never raises for user mistakes.

Threading: every kernel is serial, releases the GIL (``nogil=True``) and works on a range
``[t0, t1)`` of independent tasks (rows, planes or weight taps; no two tasks write the same
element). cnnkit.ops splits the task range over a small thread pool only when the call is big
enough to pay for it (:mod:`cnnkit.kernels.threads`). Numba's own ``parallel=True`` was the
first design; it was dropped because its OpenMP workers and OpenBLAS's workers
oversubscribed a 2-core machine (see threads.py), because waking its workers cost ~60 us per
call on the small batches training uses, and because it compiles more slowly.

Compiled kernels are cached per user, outside the installed package (:mod:`cnnkit.cache`).
"""

from cnnkit.cache import configure_numba

configure_numba()
