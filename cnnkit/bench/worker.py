"""One library per process: the worker that times it, and the parent's handle on it.

Each library (cnnkit, NumPy, SciPy, OpenCV, PyTorch) is timed in a fresh process of its own
(``python -m cnnkit.bench.worker LIBRARY THREADS``) that imports only that library, fixes its
thread pools, and warms the allocator (:func:`cnnkit.bench.timing.warm_allocator`). No other
library's thread pool lives in it, so none can spin on its cores; between samples the parent
waits until every worker is idle (:func:`cnnkit.bench.timing.wait_quiet`).

The parent talks to a worker in JSON lines over its stdin/stdout: ``load`` a case (the
worker builds the same seeded inputs, runs each implementation once and writes the outputs to
an ``.npz`` the parent checks against the oracle), ``warm``, ``sample``, ``train``.
:class:`LocalSide` runs the same commands in-process (tests with stand-in libraries).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.bench import peers, timing
from cnnkit.bench.cases import Case, conv_case, pool_case
from cnnkit.bench.oracle import make_inputs


class Host:
    """The commands a worker answers, for one library in this process.

    Parameters
    ----------
    library : str
        One of :data:`cnnkit.bench.peers.LIBRARIES`.
    threads : int
        Thread count of BLAS (and Numba for cnnkit); ``sample`` sets the library's own pool.
    module : module-like, optional
        The library (default: imported by name); tests pass stand-ins.
    """

    def __init__(self, library: str, threads: int, module: Any = None) -> None:
        self.library = library
        self.threads = threads
        self.module = module if module is not None else peers.import_library(library)
        self.impls: dict[str, peers.Impl] = {}
        self._threads_now = 0

    def hello(self) -> dict[str, Any]:
        """pid and version of the library."""
        version = getattr(self.module, "__version__", "")
        if self.library == "cnnkit":
            import numba

            from cnnkit import __version__

            version = f"{__version__}, numba {numba.__version__}"
        budget = getattr(self.module, "_COLS_BUDGET", None)
        return {"pid": os.getpid(), "version": str(version), "cols_budget": budget}

    def _use_threads(self, threads: int) -> None:
        if threads != self._threads_now:
            peers.set_threads(self.library, self.module, threads)
            self._threads_now = threads

    def load(self, case: dict[str, Any], outdir: str) -> dict[str, Any]:
        """Build ``case``'s inputs and implementations; run each once into ``outdir``."""
        c = Case.from_dict(case)
        arrays = make_inputs(c)
        self.impls = peers.implementations(self.library, self.module, c, arrays)
        self._use_threads(self.threads)
        out: dict[str, Any] = {}
        for name, fn in self.impls.items():
            path = str(Path(outdir) / f"{self.library}-{name}.npz")
            try:
                t0 = time.perf_counter()
                outputs = fn()
                first = time.perf_counter() - t0
                np.savez(path, *peers.to_numpy(outputs))
                out[name] = {"first": first, "file": path, "error": ""}
            except Exception as exc:  # one broken method must not hide the others' numbers
                error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                out[name] = {"first": None, "file": None, "error": error}
        pick = peers.auto_choice(c, self.module) if self.library == "cnnkit" else None
        return {"impls": out, "auto": pick}

    def warm(self, impl: str, threads: int) -> float:
        """Run ``impl`` once at ``threads`` (after a switch, once more); return its seconds."""
        fn = self.impls[impl]
        if threads != self._threads_now:
            self._use_threads(threads)
            fn()
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    def sample(self, impl: str, threads: int, number: int) -> dict[str, float]:
        """Per-call wall and CPU seconds of ``number`` calls of ``impl`` at ``threads``.

        Untimed calls first (:func:`cnnkit.bench.timing.warm_up`): this process slept while
        others ran, so its caches are cold and its core may have slowed down; every side is
        warmed the same way before it is timed.
        """
        fn = self.impls[impl]
        self._use_threads(threads)
        timing.warm_up(fn)
        wall, cpu = timing.sample(fn, number)
        return {"wall": wall, "cpu": cpu, "rss": timing.peak_rss()}

    def compile(self, ops: list[str]) -> list[dict[str, Any]]:
        """Seconds of the first call of each (operation, method) on a tiny input.

        That call compiles the Numba kernels, or loads them from Numba's on-disk cache; a
        cost users feel once per process, kept out of the timings.
        """
        tiny = {
            "conv2d": conv_case("tiny", "conv2d", (1, 2, 6, 6), 2, 3, 1),
            "conv1d": conv_case("tiny", "conv1d", (1, 2, 8), 2, 3, 1),
            "conv2d_backward": conv_case("tiny", "backward", (1, 2, 6, 6), 2, 3, 1),
            "max_pool2d": pool_case("tiny", "max_pool2d", (1, 2, 6, 6), 2, 2),
            "avg_pool2d": pool_case("tiny", "avg_pool2d", (1, 2, 6, 6), 2, 2),
        }
        rows = []
        for op in ops:
            case = tiny[op]
            for method, fn in peers.cnnkit_impls(case, self.module, make_inputs(case)).items():
                if method == "auto":  # dispatches to the kernels timed just above
                    continue
                t0 = time.perf_counter()
                try:
                    fn()
                    error = ""
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                seconds = time.perf_counter() - t0
                rows.append({"op": op, "method": method, "seconds": seconds, "error": error})
        return rows

    def peak(self, n: int, clock: str) -> dict[str, float]:
        """numpy sgemm GFLOP/s in this process (:func:`cnnkit.bench.timing.measure_peak`)."""
        return timing.measure_peak(n, clock=clock)

    def train(self, net: str, threads: int, steps: int) -> dict[str, float]:
        """Training images/s of ``net`` (:data:`cnnkit.bench.training.TRAIN_NETS`).

        ``images_per_s`` is the wall-clock figure (median step); ``cpu_images_per_s`` is
        ``steps`` batches over the CPU time they took: the CPU time of the measurement with
        ``steps + 1`` timed steps minus that of one with a single timed step, so building
        the network and the warm-up steps cancel out (with one thread, immune to other
        processes).
        """
        from cnnkit.bench import training

        spec = training.TRAIN_NETS[net]
        self._use_threads(threads)

        def measure(n: int) -> tuple[dict[str, float], float]:
            c0 = time.process_time()
            if self.library == "torch":
                out = training.torch_train_throughput(
                    spec.spec, spec.batch, n, optimizer=spec.optimizer, lr=spec.lr
                )
            else:
                out = training.cnnkit_train_throughput(spec, n)
            return out, time.process_time() - c0

        measure(1)  # the process's first run pays one-time set-up (kernel caches, allocator)
        _, base = measure(1)
        out, cpu = measure(steps + 1)
        return {**out, "cpu_images_per_s": steps * spec.batch / max(cpu - base, 1e-9)}


def _setup(library: str, threads: int) -> tuple[Host, dict[str, str]]:
    """Fix the thread pools, import the library, warm the allocator."""
    from cnnkit.bench import machine

    how = {"blas": machine.fix_blas_threads(threads)}
    if library == "cnnkit":
        how["numba"] = machine.fix_numba_threads(threads)
    host = Host(library, threads)
    host._use_threads(threads)
    timing.warm_allocator()
    return host, how


def main(argv: list[str] | None = None) -> int:
    """Serve one library: ``python -m cnnkit.bench.worker LIBRARY THREADS``."""
    library, threads = (argv or sys.argv[1:])[:2]
    # The protocol owns the real stdout; anything a library prints goes to stderr.
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        host, how = _setup(library, int(threads))
        channel.write(json.dumps({"ok": {**host.hello(), "thread_control": how}}) + "\n")
    except Exception as exc:
        channel.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 1
    channel.flush()
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request.pop("cmd")
        if cmd == "quit":
            break
        try:
            reply = {"ok": getattr(host, cmd)(**request)}
        except Exception as exc:
            reply = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        channel.write(json.dumps(reply) + "\n")
        channel.flush()
    return 0


class WorkerError(RuntimeError):
    """A worker process failed to start or died."""


class Worker:
    """The parent's handle on one worker process (start it, send commands, stop it)."""

    def __init__(self, library: str, threads: int) -> None:
        self.library = library
        self.threads = threads
        self._err = tempfile.TemporaryFile(mode="w+")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cnnkit.bench.worker", library, str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            env=env,
        )
        self.info: dict[str, Any] = {}

    def ready(self) -> dict[str, Any]:
        """Wait for the worker's start-up message (pid, version, thread control)."""
        if not self.info:
            self.info = self._reply()
        return self.info

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid]

    def _reply(self) -> Any:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.proc.wait(timeout=10)
            self._err.seek(0)
            tail = self._err.read().strip().splitlines()[-1:] or ["no message"]
            raise WorkerError(f"the {self.library} worker stopped: {tail[0]}")
        reply = json.loads(line)
        if "error" in reply:
            raise WorkerError(f"{self.library} worker: {reply['error']}")
        return reply["ok"]

    def send(self, cmd: str, **kwargs: Any) -> None:
        """Start a :class:`Host` command in the worker; :meth:`receive` returns its result
        (so several workers can work at once while the parent does its own part)."""
        self.ready()
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> Any:
        """The result of the command :meth:`send` started."""
        return self._reply()

    def call(self, cmd: str, **kwargs: Any) -> Any:
        """Run a :class:`Host` command in the worker and return its result."""
        self.send(cmd, **kwargs)
        return self.receive()

    def close(self) -> None:
        """Ask the worker to quit; kill it if it does not within 5 s."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._err.close()


class LocalSide:
    """:class:`Worker`'s interface over a :class:`Host` in this process (tests)."""

    def __init__(self, library: str, threads: int, module: Any = None) -> None:
        self.library = library
        self.threads = threads
        self.host = Host(library, threads, module)
        self.info = {**self.host.hello(), "thread_control": {}}

    def ready(self) -> dict[str, Any]:
        return self.info

    @property
    def pids(self) -> list[int]:
        return []

    def call(self, cmd: str, **kwargs: Any) -> Any:
        return getattr(self.host, cmd)(**kwargs)

    def send(self, cmd: str, **kwargs: Any) -> None:
        """In this process the command runs at :meth:`receive`."""
        self._pending = (cmd, kwargs)

    def receive(self) -> Any:
        cmd, kwargs = self._pending
        return self.call(cmd, **kwargs)

    def close(self) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main())
