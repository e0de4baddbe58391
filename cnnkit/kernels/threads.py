"""One small thread pool for all kernels, and OpenBLAS kept out of its way.

Kernels are serial, release the GIL and take a task range; :func:`run_parts` runs disjoint
ranges on the pool's threads (the caller's thread takes the first part), and cnnkit.ops only
splits a call when it is big enough to pay the hand-off (about 30 us for an empty call).
The workers spin for their next part, outside the GIL, for about 0.7 ms before they sleep
(:mod:`cnnkit.kernels.spin`): waking a sleeping thread took 50-60 us on these VMs.

A part still starts in Python on its worker: the caller posts it, hands the GIL over, and
the worker runs the part's Python before its kernel. On a 250 us layer that came to about
25 us before the kernels ran. :func:`run_team` has none of it. A team task is a compiled C
function (:func:`cnnkit.kernels.compiled_task`) whose parts share a queue of work; the
spinning workers call it themselves, within a microsecond, while the caller runs its own
part (lenet_c1 at two threads: 236-243 us a call against 261-266 us with run_parts).

The im2col path alternates Numba kernels (patch matrices) with OpenBLAS GEMMs. Letting both
run their own thread pools oversubscribes the cores: OpenBLAS workers keep spinning after a
GEMM while the next kernel runs, and on a 2-core machine the lenet_c2 layer ran 6x slower
(12 ms) than with OpenBLAS on one thread (2 ms). So cnnkit splits the batch into one part per
core itself, runs each part (serial patch-matrix kernel + single-threaded GEMM, both release
the GIL) on its own Python thread, and pins OpenBLAS to one thread for the duration. The
user's own OpenBLAS thread count is restored afterwards.

Re-measured on a 2-core AVX-512 EPYC with the per-sample GEMMs of the im2col forward: one
(O, R) @ (R, N*L) GEMM over the whole lenet_c2 batch with OpenBLAS on 2 threads takes
0.75 ms (1 thread: 1.49 ms), while the 64 per-sample GEMMs take 1.1 ms on one thread, so
about 0.55 ms per core when each thread runs half of them, and the patch matrices are
split the same way. Pinning still pays for these shapes.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numba
import numpy as np

from cnnkit.kernels import spin as _spin

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_executor_pid = -1
_blas: tuple[Callable[..., Any], Callable[..., Any]] | None | bool = False  # False: not probed


def _openblas() -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    """(set_num_threads, get_num_threads) of the OpenBLAS numpy loaded, or None."""
    global _blas
    if _blas is False:
        _blas = None
        try:
            with open("/proc/self/maps") as maps:
                paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
        except OSError:
            paths = set()
        for path in sorted(paths):
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            for prefix, suffix in (
                ("scipy_openblas", "64_"),
                ("openblas", "64_"),
                ("openblas", ""),
            ):
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    setter.argtypes = [ctypes.c_int]
                    getter.restype = ctypes.c_int
                    _blas = (setter, getter)
                    return _blas
    return _blas or None


_pinned = 0  # callers inside single_threaded_blas(); the first saves, the last restores
_saved_threads = 1


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """OpenBLAS on one thread inside the block (a no-op for other BLAS libraries).

    Reference-counted, so concurrent callers on several threads restore the user's setting
    only when the last of them leaves.
    """
    global _pinned, _saved_threads
    blas = _openblas()
    if blas is None:
        yield
        return
    setter, getter = blas
    with _lock:
        if _pinned == 0:
            _saved_threads = getter()
            setter(1)
        _pinned += 1
    try:
        yield
    finally:
        with _lock:
            _pinned -= 1
            if _pinned == 0:
                setter(_saved_threads)


_thread_setting: Callable[[], int] | None = None


def worker_count() -> int:
    """Threads to split work over: Numba's setting (``NUMBA_NUM_THREADS``,
    ``numba.set_num_threads``) for the calling thread."""
    global _thread_setting
    if _thread_setting is None:
        count = numba.get_num_threads()  # starts Numba's threading layer
        # the setting itself, read without get_num_threads' two locks (0.1 us, not 0.7)
        _thread_setting = getattr(
            numba.np.ufunc.parallel, "_get_num_threads", numba.get_num_threads
        )
        return max(1, count)
    return max(1, _thread_setting())


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """``range(n)`` cut into at most ``parts`` contiguous, nearly equal ``(start, stop)``."""
    parts = max(1, min(parts, n))
    if parts == 1:
        return [(0, n)] if n > 0 else []
    edges = [n * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:]) if b > a]


# A worker spins this many pauses (about 0.7 ms) for its next part before it sleeps.
_SPIN_PAUSES = 20_000
# The caller waits at most this many pauses (about 70 us) for its workers to start.
_START_PAUSES = 2_000
_MAX_WORKERS = 64
_WIDTH = 4  # a worker's counters: parts posted, done, handed over; its last team round


class _Worker:
    """A thread that runs one part at a time. Between parts it first spins on
    ``counters`` (:mod:`cnnkit.kernels.spin`, outside the GIL), joining the team's tasks
    (:func:`run_team`) meanwhile, then sleeps until woken."""

    def __init__(self, counters: Any, team: Any, name: str) -> None:
        self.counters = counters  # its row of the pool's table: posted, done, handed over
        self.team = team
        self.task: tuple[Callable[[int, int], Any], tuple[int, int]] | None = None
        self.outcome: tuple[Any, BaseException | None] = (None, None)
        self.parked = self.nudged = False
        self.wake = threading.Condition()
        threading.Thread(target=self._serve, daemon=True, name=name).start()

    def post(self, fn: Callable[[int, int], Any], part: tuple[int, int]) -> None:
        self.join()  # the previous part, if an interrupted caller left it running
        self.task = (fn, part)
        with self.wake:
            _spin.publish(self.counters, 0, self.counters[0] + 1)
            if self.parked:
                self.wake.notify()

    def nudge(self) -> None:
        """Wake the worker if it sleeps, to join the team's tasks again."""
        with self.wake:
            self.nudged = True
            self.wake.notify()

    def join(self) -> tuple[Any, BaseException | None]:
        """Wait for the last posted part; its ``(result, exception)``."""
        posted = self.counters[0]
        while not _spin.wait_while(self.counters, 1, posted - 1, _SPIN_PAUSES):
            pass  # back in Python every 0.7 ms, where Ctrl-C can reach the caller
        return self.outcome

    def _serve(self) -> None:
        seen = 0  # parts run
        while True:
            # wait for the hand-over, not the post: the caller then no longer holds the GIL
            if not _spin.serve(self.counters, seen, self.team, _SPIN_PAUSES):
                with self.wake:
                    self.parked = True
                    while self.counters[0] <= seen and not self.nudged:
                        self.wake.wait()
                    self.parked = self.nudged = False
                continue  # posted: the hand-over follows at once
            seen += 1
            fn, part = self.task  # type: ignore[misc]
            try:
                self.outcome = (fn(*part), None)
            except BaseException as error:  # handed to the caller by join()
                self.outcome = (None, error)
            _spin.publish(self.counters, 1, seen)


_workers: list[_Worker] = []
_workers_pid = -1
_workers_busy = threading.Lock()
_counters: Any = None  # (_MAX_WORKERS, _WIDTH) int64, flat: one row per worker
_team: Any = None  # the team table the workers serve (spin.run_team)
_NO_FLAGS: Any = None  # no part to wait for


def _idle_workers(count: int) -> list[_Worker] | None:
    """``count`` spinning workers for this call, or None if another call has them (the
    caller then uses the executor). Holds ``_workers_busy`` until released."""
    global _workers, _workers_pid, _counters, _team, _NO_FLAGS
    if count > _MAX_WORKERS or not _workers_busy.acquire(blocking=False):
        return None
    if _workers_pid != os.getpid():  # a forked child has the objects but not the threads
        _workers, _workers_pid = [], os.getpid()
        _counters = np.zeros(_MAX_WORKERS * _WIDTH, np.int64)
        _team = _new_team()
        _NO_FLAGS = np.zeros(1, np.int64)
    while len(_workers) < count:
        row = len(_workers) * _WIDTH
        counters = _counters[row : row + _WIDTH]
        _workers.append(_Worker(counters, _team, f"cnnkit-{len(_workers) + 1}"))
    return _workers[:count]


def _new_team() -> Any:
    team = np.zeros(_spin.TEAM, np.int64)
    team[_spin.OPEN] = -1  # closed
    return team


_NO_TEAM = _new_team()  # for a task the calling thread runs alone


def run_team(task: int, block: Any, parts: int) -> int:
    """The compiled ``task`` (an address, :func:`cnnkit.kernels.compiled_task`) run with
    ``block`` as up to ``parts`` parts: part 0 on the calling thread, the others on the
    pool's workers that join while it runs (:func:`cnnkit.kernels.spin.run_team`); how
    many workers joined.

    The task's parts share their work through a queue, so the call does not wait for a
    worker to start: a sleeping worker is woken and joins when it can. A call made while
    another holds the workers runs the task on the calling thread alone.
    """
    workers = _idle_workers(parts - 1) if parts > 1 else None
    if workers is None:
        return _spin.run_team(_NO_TEAM, 0, task, block)
    try:
        for worker in workers:
            if worker.parked:
                worker.nudge()
        return _spin.run_team(_team, len(workers), task, block)
    finally:
        _workers_busy.release()


def run_parts(
    fn: Callable[[int, int], Any], parts: Sequence[tuple[int, int]], started: Any = None
) -> list[Any]:
    """``fn(start, stop)`` for every part, concurrently; the calling thread takes the first.

    The other parts go to the spinning workers, which take a part in a few microseconds
    (a thread pool's sleeping threads took 50-60 us on these VMs). A call made while
    another holds the workers (from another thread, or from inside a part) uses a plain
    thread pool instead.

    ``started``, optional, is an int64 array of one zero per part, which the kernel of
    part ``k`` sets (:func:`cnnkit.kernels.spin.publish`) once it runs without the GIL.
    The caller then waits for the workers' kernels before it runs its own part's Python:
    a thread that waits for the GIL sleeps, and waking it took 30-70 us.
    """
    if len(parts) == 1:
        return [fn(*parts[0])]
    workers = _idle_workers(len(parts) - 1)
    if workers is None:
        return _run_on_executor(fn, parts)
    try:
        for worker, part in zip(workers, parts[1:]):
            worker.post(fn, part)
        flags, pauses = (_NO_FLAGS, 0) if started is None else (started, _START_PAUSES)
        _spin.hand_over(_counters, len(workers), _WIDTH, flags, pauses)
        try:
            first = fn(*parts[0])
        finally:
            outcomes = [worker.join() for worker in workers]
    finally:
        _workers_busy.release()
    for _, error in outcomes:
        if error is not None:
            raise error
    return [first, *(result for result, _ in outcomes)]


def start_flags(parts: Sequence[tuple[int, int]]) -> tuple[Any, dict[int, int]]:
    """For :func:`run_parts`' ``started``: one zero flag per part, and each part's index
    (the flag its kernel sets) by the part's start."""
    return np.zeros(len(parts), np.int64), {start: k for k, (start, _) in enumerate(parts)}


def _run_on_executor(fn: Callable[[int, int], Any], parts: Sequence[tuple[int, int]]) -> list:
    global _executor, _executor_pid
    with _lock:
        # a forked child inherits the pool object but not its threads: start a new one
        if _executor is None or _executor_pid != os.getpid():
            _executor = ThreadPoolExecutor(max_workers=worker_count(), thread_name_prefix="cnnkit")
            _executor_pid = os.getpid()
    futures = [_executor.submit(fn, *part) for part in parts[1:]]
    first = fn(*parts[0])
    return [first, *(f.result() for f in futures)]


_local = threading.local()


def workspace(name: str, size: int, dtype: Any) -> Any:
    """A reusable 1-D scratch array of at least ``size`` elements, private to this thread.

    Patch matrices are megabytes; allocating them afresh on every call costs page faults
    that serialise the threads (the kernel's memory-map lock) and made 2 threads no faster
    than 1 on lenet_c2. Each thread keeps its largest buffer per (name, dtype), which the
    im2col chunk budget bounds (a few MiB per thread).
    """
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    key = (name, np.dtype(dtype).str)
    buf = cache.get(key)
    if buf is None or buf.size < size:
        buf = cache[key] = np.empty(size, dtype)
    return buf[:size]
