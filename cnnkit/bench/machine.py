"""Machine facts (CPU, cores, versions, BLAS, load) and fixing every thread pool's size."""

from __future__ import annotations

import os
import platform
from typing import Any

import numpy as np

from cnnkit import __version__

# threadpoolctl's limit object, kept alive so the limit lasts for the life of the process.
_THREADPOOL_LIMIT: list[Any] = []


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def fix_blas_threads(threads: int) -> str:
    """Limit BLAS/OpenMP pools to ``threads`` for the life of the process; say how."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        value = os.environ.get("OPENBLAS_NUM_THREADS")
        return (
            f"OPENBLAS/OMP/MKL_NUM_THREADS={threads} set before numpy was imported"
            if value == str(threads)
            else "not fixed (no threadpoolctl, OPENBLAS_NUM_THREADS unset before numpy import)"
        )
    _THREADPOOL_LIMIT[:] = [threadpool_limits(limits=threads, user_api="blas")]
    return f"threadpoolctl ({threads})"


def fix_numba_threads(threads: int) -> str:
    """``numba.set_num_threads(threads)``, checked against NUMBA_NUM_THREADS."""
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if not 1 <= threads <= limit:
        raise ValueError(f"threads must be between 1 and {limit} (NUMBA_NUM_THREADS)")
    numba.set_num_threads(threads)
    return f"numba.set_num_threads({threads})"


def thread_limit() -> int:
    """The most threads a run may ask for: NUMBA_NUM_THREADS, else the usable cores (read
    without importing numba)."""
    return int(os.environ.get("NUMBA_NUM_THREADS") or usable_cores())


def cpu_model() -> str:
    """CPU model name and vector extensions from /proc/cpuinfo (platform fallback)."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    ext = [f for f in ("avx512f", "avx2", "fma") if f in flags]
    return f"{model} ({'+'.join(ext).upper()})" if ext else model


def blas_info() -> str:
    """The BLAS numpy runs on (threadpoolctl's runtime view, else numpy's build config)."""
    try:
        from threadpoolctl import threadpool_info

        libs = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
        libs.sort(key=lambda lib: "numpy" not in str(lib.get("filepath", "")))
        if libs:
            lib = libs[0]
            return f"{lib.get('internal_api')} {lib.get('version')} ({lib.get('architecture')})"
    except ImportError:
        pass
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        return "unknown"


def code_version() -> str:
    """cnnkit's version, plus the git commit (and ``-dirty``) when run from a checkout."""
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__} ({out})" if out else __version__


def machine_info(threads: int, versions: dict[str, str] | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, threads, versions, BLAS, load.

    ``versions`` are the libraries' versions as the worker processes reported them.
    """
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "threads": threads,
        "cnnkit": code_version(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "versions": dict(versions or {}),
        "blas": blas_info(),
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def busy_note(machine: dict[str, Any], clock: str = "wall") -> str | None:
    """A warning when other processes competed for the cores during the run."""
    load = machine.get("load_average")
    cores = machine.get("usable_cores") or 1
    if load and load[0] > 0.75 * cores:
        advice = (
            "CPU time resists that, but caches and memory bandwidth are shared too"
            if clock == "cpu"
            else "rerun on an idle machine or use --threads 1 --clock cpu"
        )
        return (
            f"machine busy: load average {load[0]:.1f} on {cores} cores; other processes "
            "competed for the CPU, so times are inflated and ratios noisy (the spread shows "
            f"how much); {advice}"
        )
    return None
