"""Timing: samples of repeated calls, the allocator warm-up both sides get, waiting for other
processes' threads to go idle, and ratio statistics.

Why the allocator warm-up: glibc serves blocks above its mmap threshold with fresh
``mmap`` pages (zero-filled and page-faulted on first touch) and raises that threshold,
up to 32 MiB, the first time such a block is freed. A fresh process therefore pays page
faults on every multi-MB temporary until something frees a large block; a long-running
program does not. :func:`warm_allocator` puts every process timed in the second state.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnnkit.errors import ParameterError

# What a sample measures: elapsed time, or the worker's CPU time (one thread only).
CLOCKS = ("wall", "cpu")
SAMPLE_SECONDS = 0.01
# Untimed calls before every sample, so a process that slept while others ran starts its
# sample with warm caches and a core at speed (see warm_up).
WARM_SECONDS = 0.003
# glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems: the largest value the dynamic
# threshold reaches, and the block size that moves it there when freed.
MMAP_THRESHOLD_MAX = 32 * 2**20


def check_settings(
    threads: int, repeat: int | None, clock: str, thread_limit: int | None = None
) -> None:
    """Refuse a run that could not be measured as asked: a clock other than
    :data:`CLOCKS`, fewer than one round or thread, more threads than ``thread_limit``, or
    ``clock="cpu"`` with several threads (CPU time would add up every thread's)."""
    if clock not in CLOCKS:
        raise ParameterError(f"clock must be wall or cpu, got {clock!r}", "clock")
    if repeat is not None and repeat < 1:
        raise ParameterError(f"repeat must be >= 1, got {repeat}", "repeat")
    if threads < 1:
        raise ParameterError(f"threads must be >= 1, got {threads}", "threads")
    if thread_limit is not None and threads > thread_limit:
        raise ParameterError(
            f"threads must be between 1 and {thread_limit} (NUMBA_NUM_THREADS)", "threads"
        )
    if clock == "cpu" and threads != 1:
        raise ParameterError(
            "clock=cpu needs threads=1 (CPU time adds up every thread, spinning ones too)",
            "clock",
            "threads",
        )


def warm_allocator() -> None:
    """Allocate, touch and free one 30 MiB block (see the module docstring).

    The block must stay under :data:`MMAP_THRESHOLD_MAX` with numpy's own overhead
    included, or freeing it leaves the threshold where it was.
    """
    block = np.ones(MMAP_THRESHOLD_MAX - 2 * 2**20, dtype=np.uint8)
    del block


def calls_per_sample(first: float) -> int:
    """How many calls make a sample of about :data:`SAMPLE_SECONDS` (1 to 1000)."""
    return max(1, min(1000, math.ceil(SAMPLE_SECONDS / max(first, 1e-9))))


def warm_up(fn: Callable[[], Any], seconds: float = WARM_SECONDS) -> None:
    """Call ``fn`` until ``seconds`` have passed (at least once), untimed."""
    end = time.perf_counter() + seconds
    fn()
    while time.perf_counter() < end:
        fn()


def sample(fn: Callable[[], Any], number: int) -> tuple[float, float]:
    """Per-call (wall, process CPU) seconds of ``number`` back-to-back calls of ``fn``."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    wall = time.perf_counter() - t0
    return wall / number, (time.process_time() - c0) / number


def time_call(
    fn: Callable[[], Any],
    repeat: int,
    warmup: int = 1,
    first: float | None = None,
    budget: float | None = None,
) -> dict[str, float]:
    """Median per-call seconds of ``fn`` over ``repeat`` samples after ``warmup`` calls.

    A sample repeats the call ``number`` times so that it lasts about ``SAMPLE_SECONDS``
    (short calls are otherwise dominated by timer resolution and scheduling noise).
    ``first`` is the duration of an earlier call (it sizes ``number`` when ``warmup`` is 0);
    with ``budget`` (seconds), sampling stops once it is spent and at least 3 samples exist.
    ``cpu`` is the median process CPU time per call (all threads).
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    if warmup > 0 or first is None:
        first = math.inf
        for _ in range(max(warmup, 1)):
            t0 = time.perf_counter()
            fn()
            first = min(first, time.perf_counter() - t0)
    number = calls_per_sample(first)
    walls: list[float] = []
    cpus: list[float] = []
    start = time.perf_counter()
    for _ in range(repeat):
        wall, cpu = sample(fn, number)
        walls.append(wall)
        cpus.append(cpu)
        if budget is not None and len(walls) >= 3 and time.perf_counter() - start > budget:
            break
    return {
        "median": statistics.median(walls),
        "min": min(walls),
        "max": max(walls),
        "number": number,
        "samples": len(walls),
        "cpu": statistics.median(cpus),
    }


def measure_peak(n: int, repeat: int = 3, clock: str = "wall") -> dict[str, float]:
    """GFLOP/s of a float32 ``n x n`` matrix product in numpy (BLAS sgemm): this machine's peak.

    ``2 * n**3`` FLOPs per product, timed like everything else (:func:`time_call`), on the
    same ``clock``.
    """
    rng = np.random.default_rng(1)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    timing = time_call(lambda: np.matmul(a, b, out=out), repeat)
    seconds = timing["cpu"] if clock == "cpu" else timing["median"]
    return {"n": n, "seconds": seconds, "gflops": 2 * n**3 / seconds / 1e9}


def peak_rss() -> int:
    """Peak resident set size of this process so far, in bytes (Linux reports KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def cpu_ns(pids: Sequence[int]) -> int | None:
    """Nanoseconds all threads of ``pids`` have run so far (Linux schedstat), else None."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return None
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                    total += int(handle.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # a thread that just exited
    return total


def wait_quiet(
    pids: Sequence[int], window: float = 0.003, share: float = 0.05, timeout: float = 1.0
) -> float:
    """Wait until the processes ``pids`` use under ``share`` of one core; return seconds waited.

    Thread pools keep spinning for a while after their last task (OpenMP, OpenBLAS), and a
    spinning pool in one process takes the cores from the next library timed in another.
    Without /proc (not Linux) this waits a fixed 0.2 s instead.
    """
    start = time.perf_counter()
    before = cpu_ns(pids)
    if before is None:
        time.sleep(0.2)
        return time.perf_counter() - start
    while True:
        time.sleep(window)
        now = cpu_ns(pids)
        if now is None or now - before < share * window * 1e9:
            break
        if time.perf_counter() - start > timeout:
            break
        before = now
    return time.perf_counter() - start


def ratio_stats(values: Sequence[float]) -> dict[str, float] | None:
    """Median, min and max of per-round ratios (None without any)."""
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}
