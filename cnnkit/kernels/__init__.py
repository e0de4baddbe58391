"""Numba JIT kernels. Only cnnkit.ops calls these, with validated, contiguous 5-D arrays
(1-D and 2-D problems are viewed as 3-D ones with unit leading spatial axes), so each kernel
compiles once per dtype (float32, float64) and never raises for user mistakes.

Threading: every kernel is serial, releases the GIL (``nogil=True``) and works on a range
``[t0, t1)`` of independent tasks (rows, planes or weight taps; no two tasks write the same
element), or takes its tasks from a queue shared with the other threads
(:func:`cnnkit.kernels.spin.take`, the register-blocked kernel, a compiled C task that the
pool's workers call without Python: :func:`compiled_task`). cnnkit.ops splits the
work over a small thread pool only when the call is big enough to pay for it
(:mod:`cnnkit.kernels.threads`). Numba's own ``parallel=True`` was the first design; it
was dropped because its OpenMP workers and OpenBLAS's workers oversubscribed a 2-core
machine (see threads.py), because waking its workers cost ~60 us per call on the small
batches training uses, and because it compiles more slowly.

Compiled kernels are cached per user, outside the installed package (:mod:`cnnkit.cache`).
Before the first load from that cache Numba imports and installs every typing and lowering
registry it has (arrays, random numbers, linear algebra, which imports scipy, typed
containers, ...): about 0.3 s that loading compiled code does not need. Every kernel module
therefore ends with ``load_lightly(globals())``, which gives its kernels a cache that starts
only Numba's runtime (its allocator) before a load. A cache miss compiles as usual, and
Numba's compiler installs the registries itself first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from numba.core.caching import FunctionCache
from numba.core.dispatcher import Dispatcher

from cnnkit.cache import configure_numba

configure_numba()


_stamp: tuple | None = None


def kernels_stamp() -> tuple:
    """Name, size and modification time of every kernel module: the freshness stamp of
    every kernel's cache entries.

    Numba stamps a kernel with its own file only. A kernel compiles in the functions it
    calls from other modules (``direct`` and ``winograd`` call ``spin``; ``winograd`` calls
    ``blas``), so it kept stale code when only such a module changed. With one stamp for
    all of them, any change recompiles every kernel.
    """
    global _stamp
    if _stamp is None:
        files = sorted(Path(__file__).parent.glob("*.py"))
        _stamp = tuple((f.name, f.stat().st_mtime, f.stat().st_size) for f in files)
    return _stamp


class KernelCache(FunctionCache):
    """Numba's per-function disk cache, without the registry refresh before a load, and
    stamped with every kernel module (:func:`kernels_stamp`)."""

    def __init__(self, py_func: Any) -> None:
        super().__init__(py_func)
        cache_file = getattr(self, "_cache_file", None)
        if cache_file is not None and hasattr(cache_file, "_source_stamp"):
            cache_file._source_stamp = kernels_stamp()

    def load_overload(self, sig: Any, target_context: Any) -> Any:
        """Load the compiled code for ``sig`` (None when it is not in the cache)."""
        from numba.core.runtime import rtsys

        rtsys.initialize(target_context)  # compiled code calls it (reference counts, allocation)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)


# the private pieces KernelCache relies on; a Numba without them keeps its own cache
_LIGHT = all(
    hasattr(FunctionCache, name) for name in ("_load_overload", "_guard_against_spurious_io_errors")
)


def load_lightly(namespace: dict[str, Any]) -> None:
    """Give every cached Numba function in ``namespace`` a :class:`KernelCache`.

    Parameters
    ----------
    namespace : dict
        A kernel module's ``globals()``; called as the module's last line.
    """
    if not _LIGHT:
        return
    for value in namespace.values():
        if isinstance(value, Dispatcher) and type(value._cache) is FunctionCache:
            value._cache = KernelCache(value.py_func)


def compiled_task(fn: Any) -> Any:
    """``fn(block, part)`` compiled as the C function ``void task(int64 *block, int64
    part)`` that :func:`cnnkit.kernels.threads.run_team` runs (its ``.address``), and
    cached on disk like the kernels.

    ``fn`` must not raise: a C function has no way to hand an exception on, so it is
    compiled with NumPy's error model (no division checks) and reads its arrays from
    ``block`` with :func:`numba.carray` (no bounds checks). Its closure must hold only
    numbers and NumPy scalar types: they are part of the cache's key, and anything else
    (a Numba dispatcher) pickles differently in every process, so it would never load.
    """
    from numba import types
    from numba.core.ccallback import CFunc

    signature = ((types.CPointer(types.int64), types.int64), types.void)
    task = CFunc(fn, signature, {}, {"error_model": "numpy"})
    task._cache = KernelCache(fn) if _LIGHT else FunctionCache(fn)
    task.compile()
    return task
