"""What a run means: the speed targets, auto against the best method, CSV/JSON files and the
plot's series."""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cnnkit.bench.peers import CONV_METHODS as METHODS
from cnnkit.bench.peers import PEERS
from cnnkit.io import atomic_write

FORWARD_LAYERS = ("lenet_c1", "lenet_c2", "cifar", "conv_b8_c16", "conv_b1_c64")


@dataclass(frozen=True)
class SpeedTarget:
    """A speed target: cnnkit's ``auto`` (pooling: its one method) against ``peer``.

    Every case must reach ``each``; with ``mean``, the geometric mean of the ratios must
    reach it too.
    """

    work: str
    cases: tuple[str, ...]
    peer: str
    each: float
    mean: float | None = None


SPEED_TARGETS = (
    SpeedTarget(
        "single-image filters",
        tuple(f"filter_{s}_k{k}" for s in (512, 1024, 2048) for k in (3, 5, 7, 11)),
        "opencv",
        each=0.8,
        mean=1.0,
    ),
    SpeedTarget(
        "separable filters",
        tuple(
            f"sep_{s}_{k}"
            for s in (1024, 2048)
            for k in ("gauss1", "gauss2", "gauss4", "box5", "sobel")
        ),
        "opencv",
        each=1.0,
    ),
    SpeedTarget("conv2d forward", FORWARD_LAYERS, "torch", each=1.0),
    SpeedTarget("conv2d backward", tuple(f"{c}_bwd" for c in FORWARD_LAYERS), "torch", each=1.0),
    SpeedTarget(
        "pooling",
        ("maxpool_lenet", "avgpool_lenet", "maxpool_cifar_k3s2", "avgpool_cifar"),
        "torch",
        each=1.0,
    ),
)
# Training images/s against PyTorch's better thread count (cnnkit bench --train).
TRAIN_TARGETS = {"digits": 1.3, "lenet5": 1.2}


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How ``auto`` compares with the best of the other methods, and the speed targets.

    ``auto_vs_best`` is ``time(best of loop, im2col, winograd) / time(auto)`` (median of the
    rounds' ratios when rounds are known; winograd where it applies), wanted >= 0.9 (auto
    never more than 10 % slower than the best method). ``targets`` has one entry per
    measured case of :data:`SPEED_TARGETS`; ``target_groups`` one per target with the
    geometric mean and whether it is met (on the cases measured).
    """
    by_case: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        if r["impl"] == "cnnkit":
            by_case.setdefault(r["case"], {})[r["method"]] = r
    auto = []
    for name, rows in by_case.items():
        times = {m: rows[m]["seconds"] for m in METHODS if m in rows}
        if {"loop", "im2col", "auto"} <= set(times) and all(times.values()):
            best = min((m for m in times if m != "auto"), key=lambda m: times[m])
            ratio = times[best] / times["auto"]
            # per round, like the peer ratios: drift between rounds cancels
            pairs = zip(rows[best].get("rounds") or [], rows["auto"].get("rounds") or [])
            per_round = [b / a for b, a in pairs]
            if per_round:
                ratio = statistics.median(per_round)
            detail = rows["auto"].get("detail", "")
            picked = detail[8:] if detail.startswith("auto -> ") else None
            auto.append(
                {"case": name, "best": best, "picked": picked, "ratio": ratio, "ok": ratio >= 0.9}
            )
    targets = []
    groups = []
    for target in SPEED_TARGETS:
        ratios = []
        for name in target.cases:
            rows = by_case.get(name, {})
            row = rows.get("auto") or rows.get("cnnkit")
            if row is None or target.peer not in row["ratios"]:
                continue
            ratio = row["ratios"][target.peer]
            ratios.append(ratio)
            targets.append(
                {
                    "work": target.work,
                    "case": name,
                    "method": row["method"],
                    "peer": target.peer,
                    "peer_threads": row["ratio_threads"][target.peer],
                    "ratio": ratio,
                    "spread": row["ratio_spread"][target.peer],
                    "target": target.each,
                    "ok": ratio >= target.each,
                }
            )
        if ratios:
            mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
            ok = min(ratios) >= target.each and (target.mean is None or mean >= target.mean)
            groups.append(
                {
                    "work": target.work,
                    "peer": target.peer,
                    "cases": len(ratios),
                    "of": len(target.cases),
                    "geomean": mean,
                    "min": min(ratios),
                    "each": target.each,
                    "mean_target": target.mean,
                    "ok": ok,
                }
            )
    wrong = [f"{r['case']}/{r['method']}" for r in results if r["status"] != "ok"]
    return {"auto_vs_best": auto, "targets": targets, "target_groups": groups, "not_ok": wrong}


CSV_COLUMNS = (
    "case",
    "group",
    "op",
    "shape",
    "library",
    "method",
    "threads",
    "status",
    "seconds",
    "min_seconds",
    "max_seconds",
    "wall_seconds",
    "cpu_seconds",
    "gflops",
    "peak_share",
    "flops",
    "extra_bytes",
    "rss_peak_bytes",
    "speedup_vs_loop",
    *(f"vs_{p}" for p in PEERS),
    *(f"vs_{p}_min" for p in PEERS),
    *(f"vs_{p}_max" for p in PEERS),
    "rounds",
    "error_ratio",
    "detail",
)


def csv_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat dict per result row, keys :data:`CSV_COLUMNS` (empty string when absent)."""
    out = []
    for r in report["results"]:
        flat = {k: r.get(k) for k in CSV_COLUMNS}
        flat["rounds"] = len(r.get("rounds") or [])
        for p in PEERS:
            flat[f"vs_{p}"] = r["ratios"].get(p)
            lo, hi = r["ratio_spread"].get(p, (None, None))
            flat[f"vs_{p}_min"], flat[f"vs_{p}_max"] = lo, hi
        out.append({k: "" if v is None else v for k, v in flat.items()})
    return out


def write_csv(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write :func:`csv_rows` atomically."""
    import csv

    with atomic_write(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(csv_rows(report))


def clean_json(value: Any) -> Any:
    """Infinities and NaN become None (JSON has no such numbers); tuples become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_json(x) for k, x in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(x) for x in value]
    return value


def to_json(report: dict[str, Any]) -> str:
    """The report as indented JSON text (ending in a newline)."""
    import json

    return json.dumps(clean_json(report), indent=2) + "\n"


def write_json(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the report atomically as JSON."""
    with atomic_write(path, "w") as handle:
        handle.write(to_json(report))


def best_rows(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per peer library, its fastest timed row (PyTorch: the better thread count)."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["impl"] != "peer" or not r["seconds"]:
            continue
        if r["library"] not in best or r["seconds"] < best[r["library"]]["seconds"]:
            best[r["library"]] = r
    return best


def plot_panels(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The filter cases as line panels, one line per method or peer (PyTorch: its better
    thread count): GFLOP/s against image size (smallest kernel), and seconds against kernel
    size (the middle image size). A panel whose x axis would hold a single value is left out.
    """
    filt = [r for r in report["results"] if r["group"] == "filter" and r["seconds"]]
    keep = []
    for name in dict.fromkeys(r["case"] for r in filt):
        rows = [r for r in filt if r["case"] == name]
        best = best_rows(rows)
        keep += [r for r in rows if r["impl"] == "cnnkit" or best.get(r["library"]) is r]
    parsed = []
    for r in keep:
        _, size, k = r["case"].split("_")
        parsed.append((int(size), int(k[1:]), r))
    if not parsed:
        return []
    kmin = min(k for _, k, _ in parsed)
    sizes = sorted({s for s, _, _ in parsed})
    smid = 1024 if 1024 in sizes else sizes[len(sizes) // 2]
    by_size: dict[str, list[tuple[float, float]]] = {}
    by_kernel: dict[str, list[tuple[float, float]]] = {}
    for s, k, r in sorted(parsed, key=lambda t: (t[0], t[1])):
        if k == kmin:
            by_size.setdefault(r["method"], []).append((s, r["gflops"]))
        if s == smid:
            by_kernel.setdefault(r["method"], []).append((k, r["seconds"]))
    panels = []
    if len(sizes) > 1:
        panels.append(
            {
                "title": f"throughput vs image size, kernel {kmin}x{kmin}",
                "xlabel": "image side (pixels)",
                "ylabel": "GFLOP/s",
                "xlog": True,
                "lines": by_size,
            }
        )
    if len({k for s, k, _ in parsed if s == smid}) > 1:
        panels.append(
            {
                "title": f"time vs kernel size, {smid}x{smid} image",
                "xlabel": "kernel side",
                "ylabel": "seconds per call",
                "xlog": False,
                "lines": by_kernel,
            }
        )
    return panels
