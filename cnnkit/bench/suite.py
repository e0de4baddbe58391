"""Running the benchmark: each library in its own worker process, alternating rounds.

For every case, every implementation (cnnkit's methods, each peer) is first run once and
checked against the float64 oracle; a wrong result is reported as ``WRONG`` and not timed.
The correct ones are then timed in rounds: round 1 samples A, B, C, ..., round 2 samples
them again in the same order, and so on (A B A B), so drift on a shared machine hits every
side alike. Before each sample the parent waits until no worker's threads are running
(:func:`cnnkit.bench.timing.wait_quiet`). A ratio is computed per round and reported as the
median with its min-max spread.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from cnnkit.bench import timing
from cnnkit.bench.cases import (
    NUMPY_PEER_CAP,
    Case,
    check_memory,
    flops,
    im2col_bytes,
)
from cnnkit.bench.machine import busy_note, machine_info
from cnnkit.bench.oracle import check_outputs, make_inputs, reference
from cnnkit.bench.peers import PEER_OPS, PEERS, missing_peers, thread_choices
from cnnkit.bench.report import best_rows, summarize
from cnnkit.bench.worker import Worker, WorkerError
from cnnkit.memory import human_bytes

SCHEMA = "cnnkit-bench/2"
Side = Any  # a Worker or LocalSide: call(cmd, **kw), pids, info, close()


def start_sides(libraries: Sequence[str], threads: int, wait: bool = True) -> dict[str, Side]:
    """Start one fresh worker process per library, all at once; with ``wait``, wait until
    every one is ready (otherwise a side's first command waits for it)."""
    sides: dict[str, Side] = {}
    try:
        for library in libraries:
            sides[library] = Worker(library, threads)
        if wait:
            for side in sides.values():
                side.ready()
    except BaseException:
        close_sides(sides)
        raise
    return sides


def close_sides(sides: Mapping[str, Side]) -> None:
    """Stop every worker."""
    for side in sides.values():
        side.close()


def run_settings(quick: bool, repeat: int | None = None) -> dict[str, Any]:
    """:func:`run_suite`'s ``repeat``, ``budget_s`` and ``peak_n`` for a quick or a full
    run. An explicit ``repeat`` is honoured exactly; by default a case may stop after 3
    rounds once its rounds took 1.5 s (a 1 s peer would otherwise dominate)."""
    return {
        "repeat": repeat or (3 if quick else 5),
        "budget_s": None if repeat else 1.5,
        "peak_n": 1024 if quick else 2048,
    }


def run_suite(
    cases: Sequence[Case],
    *,
    threads: int,
    repeat: int = 5,
    clock: str = "wall",
    peers: Sequence[str] = PEERS,
    sides: Mapping[str, Side] | None = None,
    peak_n: int = 2048,
    progress: Callable[[str], None] | None = None,
    budget_s: float | None = None,
    thread_control: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``cases`` and return the report (the JSON document).

    Parameters
    ----------
    cases : sequence of Case
    threads : int
        Threads of every library (PyTorch is also timed at 1 thread; its better figure is
        the one ratios use).
    repeat : int
        Rounds: each implementation is sampled once per round (median reported).
    clock : "wall" | "cpu"
        What ``seconds`` (and so GFLOP/s and every ratio) measures. ``"cpu"``, the worker's
        CPU time, is immune to other processes taking the core but counts every thread,
        spinning ones too: it is only accepted with one thread.
    peers : sequence of str
        Peer libraries wanted; those not installed become notes.
    sides : mapping, optional
        ``{library: side}`` already started (tests pass in-process sides); by default one
        fresh worker process per library is started here and stopped at the end.
    peak_n : int
        Side of the sgemm that measures this machine's peak.
    progress : callable, optional
        Called with each case's name before it runs.
    budget_s : float, optional
        After 3 rounds, stop once a case's rounds have taken this long.

    Returns
    -------
    dict
        ``schema``, ``machine``, ``settings``, ``peak``, ``compile``, ``peers``, ``notes``,
        ``results`` (one row per case, implementation and thread count) and ``summary``.
    """
    timing.check_settings(threads, repeat, clock)
    # Before any process starts: cnnkit's im2col builds the patch matrix in chunks, so the
    # whole-batch estimate used here errs on the safe side.
    check_memory(cases)
    missing = {} if sides is not None else missing_peers(peers)
    own = sides is None
    sides = dict(sides) if sides is not None else None
    if sides is None:
        wanted = ["cnnkit", *[p for p in peers if p not in missing]]
        sides = start_sides(wanted, threads, wait=False)
    try:
        # Compile times and the sgemm peak are measured while the peers still import (they
        # are context, not ratios); no case is timed before every worker is ready.
        cnnkit = sides["cnnkit"]
        compile_rows = cnnkit.call("compile", ops=list(dict.fromkeys(c.op for c in cases)))
        peak = cnnkit.call("peak", n=peak_n, clock=clock)
        _drop_broken_peers(sides, missing)
        notes: list[str] = [f"peer {p} missing: {why}" for p, why in missing.items()]
        results, case_notes, waited = _run_cases(
            cases, sides, threads, repeat, peak["gflops"], budget_s, clock, progress
        )
        notes.extend(case_notes)
        versions = {lib: side.info.get("version", "") for lib, side in sides.items()}
    finally:
        if own:
            close_sides(sides)
    machine = machine_info(threads, versions)
    busy = busy_note(machine, clock)
    if busy:
        notes.append(busy)
    return {
        "schema": SCHEMA,
        "machine": machine,
        "settings": {
            "repeat": repeat,
            "budget_s": budget_s,
            "clock": clock,
            "threads": threads,
            "thread_control": thread_control or {},
            "sample_seconds": timing.SAMPLE_SECONDS,
            "dtype": "float32",
            "isolation": "one fresh worker process per library"
            if own
            else "in-process sides (test)",
            "quiet_wait_s": waited,
        },
        "peak": peak,
        "compile": compile_rows,
        "peers": {"available": [p for p in sides if p != "cnnkit"], "missing": missing},
        "notes": notes,
        "results": results,
        "summary": summarize(results),
    }


def _drop_broken_peers(sides: dict[str, Side], missing: dict[str, str]) -> None:
    """Wait for every peer's worker; one that fails to start is closed and noted as missing
    (a broken peer install is a note, not a failed run)."""
    for peer in [p for p in sides if p != "cnnkit"]:
        try:
            sides[peer].ready()
        except WorkerError as exc:
            sides[peer].close()
            del sides[peer]
            missing[peer] = str(exc)


def _run_cases(
    cases: Sequence[Case],
    sides: dict[str, Side],
    threads: int,
    repeat: int,
    peak_gflops: float,
    budget_s: float | None,
    clock: str,
    progress: Callable[[str], None] | None,
) -> tuple[list[dict[str, Any]], list[str], float]:
    """Every case through :func:`run_case`: the result rows, the notes, and the seconds spent
    waiting for other processes' threads to go quiet."""
    results: list[dict[str, Any]] = []
    notes: list[str] = []
    waited = 0.0
    with tempfile.TemporaryDirectory(prefix="cnnkit-bench-") as outdir:
        for case in cases:
            if progress:
                progress(case.name)
            rows, case_notes, wait = run_case(
                case, sides, threads, repeat, peak_gflops, outdir, budget_s, clock
            )
            results.extend(rows)
            notes.extend(case_notes)
            waited += wait
    return results, notes, waited


def _row(case: Case, library: str, method: str, threads: int) -> dict[str, Any]:
    return {
        "case": case.name,
        "group": case.group,
        "op": case.op,
        "shape": case.label(),
        "library": library,
        "method": method,
        "impl": "cnnkit" if library == "cnnkit" else "peer",
        "threads": threads,
        "flops": flops(case),
        "extra_bytes": 0,
        "status": "ok",
        "detail": "",
        "seconds": None,
        "wall_seconds": None,
        "cpu_seconds": None,
        "min_seconds": None,
        "max_seconds": None,
        "rounds": [],
        "number": 0,
        "gflops": None,
        "peak_share": None,
        "error_ratio": None,
        "rss_peak_bytes": None,
        "speedup_vs_loop": None,
        "ratios": {},
        "ratio_spread": {},
        "ratio_threads": {},
    }


def run_case(
    case: Case,
    sides: Mapping[str, Side],
    threads: int,
    repeat: int,
    peak_gflops: float | None,
    outdir: str,
    budget_s: float | None = None,
    clock: str = "wall",
) -> tuple[list[dict[str, Any]], list[str], float]:
    """Check every implementation of ``case`` against the oracle, then time the correct
    ones in alternating rounds.

    Returns the result rows (cnnkit's methods first, then the peers), notes, and the seconds
    spent waiting for idle workers.
    """
    notes: list[str] = []
    taking: dict[str, Side] = {}
    for library, side in sides.items():
        if library != "cnnkit" and case.peer_op not in PEER_OPS[library]:
            continue
        if library == "numpy" and im2col_bytes(case) > NUMPY_PEER_CAP:
            notes.append(
                f"numpy peer skipped for {case.name}: its im2col buffer would be "
                f"{human_bytes(im2col_bytes(case), table=True)} "
                f"(> {human_bytes(NUMPY_PEER_CAP, table=True)})"
            )
            continue
        taking[library] = side
    # Nothing is timed yet: the workers compute their first results while the oracle runs.
    for side in taking.values():
        side.send("load", case=case.to_dict(), outdir=outdir)
    arrays = make_inputs(case)
    ref = reference(case, arrays)
    absref = reference(case, {k: np.abs(v) for k, v in arrays.items()})
    cnnkit_info = sides["cnnkit"].info
    extra = {
        "im2col": im2col_bytes(case, budget=cnnkit_info.get("cols_budget")),
        "numpy": im2col_bytes(case),
    }
    rows: list[dict[str, Any]] = []
    timed: list[tuple[dict[str, Any], Side]] = []
    for library, side in taking.items():
        loaded = side.receive()
        if loaded["auto"]:
            extra["auto"] = extra.get(loaded["auto"], 0)
        for method, info in loaded["impls"].items():
            status, detail, worst = "ok", "", None
            if info["error"]:
                status, detail = "error", info["error"]
            else:
                with np.load(info["file"], allow_pickle=False) as data:
                    got = [data[f"arr_{k}"] for k in range(len(data.files))]
                ok, worst, why = check_outputs(case, got, ref, absref)
                if not ok:
                    status, detail = "WRONG", why
            variants = thread_choices(library, threads) if status == "ok" else (threads,)
            for t in variants:
                row = _row(case, library, method, t)
                row["extra_bytes"] = extra.get(method, 0)
                row["status"], row["detail"], row["error_ratio"] = status, detail, worst
                # The checked call sizes the first sample; each sample sizes the next.
                row["number"] = timing.calls_per_sample(info["first"] or 1.0)
                if method == "auto" and loaded["auto"] and status == "ok":
                    row["detail"] = f"auto -> {loaded['auto']}"
                rows.append(row)
                if status == "ok":
                    timed.append((row, side))
    waited = _time_rounds(timed, sides, repeat, budget_s, clock)
    for row, _ in timed:
        secs = row["rounds"]
        row["seconds"] = statistics.median(secs)
        row["min_seconds"], row["max_seconds"] = min(secs), max(secs)
        row["gflops"] = row["flops"] / row["seconds"] / 1e9
        if peak_gflops:
            row["peak_share"] = row["gflops"] / peak_gflops
    add_ratios(rows)
    return rows, notes, waited


def _time_rounds(
    timed: list[tuple[dict[str, Any], Side]],
    sides: Mapping[str, Side],
    repeat: int,
    budget_s: float | None,
    clock: str,
) -> float:
    """Sample every row once per round, rounds in the same order (A B A B)."""
    pids = [pid for side in sides.values() for pid in side.pids]
    waited = 0.0
    start = time.perf_counter()
    for done in range(repeat):
        for row, side in timed:
            waited += timing.wait_quiet(pids)
            got = side.call(
                "sample", impl=row["method"], threads=row["threads"], number=row["number"]
            )
            row["rounds"].append(got["cpu"] if clock == "cpu" else got["wall"])
            # One warm-up call can mislead (a thread pool that just woke up): size the next
            # round's sample by this one.
            row["number"] = timing.calls_per_sample(got["wall"])
            row.setdefault("wall_rounds", []).append(got["wall"])
            row.setdefault("cpu_rounds", []).append(got["cpu"])
            row["rss_peak_bytes"] = got["rss"]
        if budget_s is not None and done + 1 >= 3 and time.perf_counter() - start > budget_s:
            break
    for row, _ in timed:
        row["wall_seconds"] = statistics.median(row.pop("wall_rounds"))
        row["cpu_seconds"] = statistics.median(row.pop("cpu_rounds"))
    return waited


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """speedup_vs_loop and, on cnnkit's rows, vs <peer> per round: peer / cnnkit.

    ``ratios[peer]`` is the median of the per-round ratios, ``ratio_spread[peer]`` their
    min and max, ``ratio_threads[peer]`` the thread count of the peer's row used.
    """
    loop = next((r for r in rows if r["method"] == "loop" and r["seconds"]), None)
    best = best_rows(rows)
    for r in rows:
        if not r["seconds"]:
            continue
        if loop is not None:
            r["speedup_vs_loop"] = loop["seconds"] / r["seconds"]
        if r["impl"] != "cnnkit":
            continue
        for peer, other in best.items():
            per_round = [p / m for p, m in zip(other["rounds"], r["rounds"])]
            stats = timing.ratio_stats(per_round)
            if stats:
                r["ratios"][peer] = stats["median"]
                r["ratio_spread"][peer] = [stats["min"], stats["max"]]
                r["ratio_threads"][peer] = other["threads"]


def self_check(
    report: dict[str, Any],
    cases: Sequence[Case],
    *,
    tolerance: float = 0.15,
    start: Callable[[str, int], Side] | None = None,
) -> list[dict[str, Any]]:
    """Time each library again, alone in a fresh process, and compare with the suite's figure.

    For each library and thread count of the report, one fresh worker is started while no
    other worker runs (PyTorch at 1 thread and at N threads in two processes, so this also
    checks that switching its thread count inside one worker costs nothing); it times the
    same implementations on the same clock, ``repeat`` samples each, warmed the same way.
    ``difference`` is ``in_bench / alone - 1`` on the fastest sample of each (other
    processes on a shared machine only ever add time, so the fastest sample is the least
    disturbed estimate of both); ``ok`` when its size is at most ``tolerance``. The medians
    are kept next to them.

    Returns
    -------
    list of dict
        ``library, case, method, threads, in_bench, alone, in_bench_median, alone_median,
        difference, ok``.
    """
    if start is None:
        start = Worker
    settings = report["settings"]
    clock, repeat = settings["clock"], settings["repeat"]
    by_name = {c.name: c for c in cases}
    rows = [r for r in report["results"] if r["seconds"] and r["case"] in by_name]
    out: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cnnkit-selfcheck-") as outdir:
        for library, t in dict.fromkeys((r["library"], r["threads"]) for r in rows):
            mine = [r for r in rows if r["library"] == library and r["threads"] == t]
            side = start(library, t)
            try:
                side.ready()
                for name in dict.fromkeys(r["case"] for r in mine):
                    todo = [r for r in mine if r["case"] == name]
                    side.call("load", case=by_name[name].to_dict(), outdir=outdir)
                    samples: list[list[float]] = [[] for _ in todo]
                    for r in todo:
                        side.call("warm", impl=r["method"], threads=t)
                    for _ in range(repeat):
                        for k, r in enumerate(todo):
                            got = side.call(
                                "sample", impl=r["method"], threads=t, number=r["number"]
                            )
                            samples[k].append(got["cpu"] if clock == "cpu" else got["wall"])
                    for k, r in enumerate(todo):
                        best = min(r["rounds"])
                        alone = min(samples[k])
                        diff = best / alone - 1
                        out.append(
                            {
                                "library": library,
                                "case": name,
                                "method": r["method"],
                                "threads": t,
                                "in_bench": best,
                                "alone": alone,
                                "in_bench_median": r["seconds"],
                                "alone_median": statistics.median(samples[k]),
                                "difference": diff,
                                "ok": abs(diff) <= tolerance,
                            }
                        )
            finally:
                side.close()
    return out
