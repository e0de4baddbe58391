"""The benchmark: cnnkit's sliding-window loop and im2col + GEMM against each other and
against peers (NumPy, SciPy, OpenCV, PyTorch), measured so that no side is flattered.

The lecture says convolution is drawn as a sliding window but computed as a matrix product,
because matrix products are faster. This package measures that claim, and cnnkit's speed
against the peers, on the machine it runs on.

Modules
-------
cases     the operations and shapes timed, their FLOPs and memory, the suites
oracle    seeded inputs and the float64 reference every result is checked against
peers     the implementations: cnnkit's methods and each peer library
worker    one fresh process per library, and the parent's handle on it
timing    samples, the allocator warm-up, waiting for idle thread pools, ratio statistics
machine   CPU, cores, versions, BLAS, load; fixing thread counts
suite     running cases in alternating rounds; the self-check against standalone runs
report    speed targets, auto against the best method, CSV/JSON, plot series
explain   the lecture's im2col example (``--explain``)
training  training throughput against PyTorch from one network spec (``--train``)

Methodology
-----------
* Each library runs in a fresh worker process of its own that imports only that library,
  with the same thread count (PyTorch also at 1 thread; its better figure counts), and the
  allocator warmed the same way in every process.
* Every implementation is checked against the float64 oracle before it is timed; a wrong
  result is reported as ``WRONG`` and not timed. Numba's compile time is measured apart.
* Rounds alternate (A B C A B C ...), each sample about 10 ms of back-to-back calls after a
  warm-up call, and the parent waits until no worker's threads are running before each
  sample. Times are medians over rounds; ratios ``time(peer) / time(cnnkit)`` are computed
  per round and reported as median and min-max spread (above 1: cnnkit faster).
* FLOPs are ``2 * MACs`` (:func:`cnnkit.bench.cases.flops`); GFLOP/s is compared with a
  numpy sgemm measured in the cnnkit worker.
* ``clock="cpu"`` uses each worker's CPU time (one thread only): immune to other processes.
"""

from __future__ import annotations

from cnnkit.bench.cases import (
    ANCHOR_LAYERS,
    Case,
    build_suite,
    check_memory,
    choose_cases,
    conv_case,
    flops,
    im2col_bytes,
    memory_needed,
    pool_case,
    select_cases,
)
from cnnkit.bench.oracle import check_outputs, make_inputs, reductions, reference
from cnnkit.bench.peers import LIBRARIES, PEER_OPS, PEERS
from cnnkit.bench.report import (
    CSV_COLUMNS,
    SPEED_TARGETS,
    csv_rows,
    plot_panels,
    summarize,
    to_json,
    write_csv,
    write_json,
)
from cnnkit.bench.suite import SCHEMA, run_case, run_settings, run_suite, self_check

__all__ = [
    "ANCHOR_LAYERS",
    "CSV_COLUMNS",
    "Case",
    "LIBRARIES",
    "PEERS",
    "PEER_OPS",
    "SCHEMA",
    "SPEED_TARGETS",
    "build_suite",
    "check_memory",
    "check_outputs",
    "choose_cases",
    "conv_case",
    "csv_rows",
    "flops",
    "im2col_bytes",
    "make_inputs",
    "memory_needed",
    "plot_panels",
    "pool_case",
    "reductions",
    "reference",
    "run_case",
    "run_settings",
    "run_suite",
    "select_cases",
    "self_check",
    "summarize",
    "to_json",
    "write_csv",
    "write_json",
]
