"""``cnnkit bench``: the sliding-window loop against im2col + GEMM, and against peers.

Thin: parse options, call :mod:`cnnkit.bench`, render. Numba, numpy and the kernels load
inside the command, so other commands never pay for them.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import typer

from cnnkit.cli.common import Failure, UsageError, console, err_console, friendly_errors

EXAMPLES = """
Examples:

  cnnkit bench --quick                       # a few seconds

  cnnkit bench --json bench.json --plot bench.png

  cnnkit bench --case 'filter_1024_*' --case lenet_c2 --repeat 7

  cnnkit bench --sizes 256,512 --kernels 3,5 --channels 16 --batch 4

  cnnkit bench --threads 1 --clock cpu       # steady ratios on a busy machine

  cnnkit bench --explain                     # the lecture's im2col example

  cnnkit bench --train                       # training images/s vs PyTorch
"""


def _int_list(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise UsageError(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values:
        raise UsageError(f"{option} takes comma-separated integers, got {text!r}")
    return values


def _check_output(path: Path | None, option: str, suffixes: tuple[str, ...] = ()) -> None:
    if path is None:
        return
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: folder {folder} does not exist")
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(f"{option} {path}: the file name must end with {' or '.join(suffixes)}")


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command to ``app``."""

    @app.command("bench", epilog=EXAMPLES)
    @friendly_errors
    def bench(
        quick: bool = typer.Option(False, "--quick", help="A few-second suite."),
        case: list[str] = typer.Option(
            None, "--case", "-c", help="Case name or glob (repeatable); see --list."
        ),
        sizes: str = typer.Option(None, help="Filter image sides, e.g. 512,1024,2048."),
        kernels: str = typer.Option(None, help="Filter kernel sides (odd), e.g. 3,5,7,11."),
        channels: str = typer.Option(
            None, help="Extra conv layers (b, c, 32, 32) -> c, k3: channel counts."
        ),
        batch: str = typer.Option(None, help="Extra conv layers: batch sizes, e.g. 1,8."),
        threads: int = typer.Option(None, help="Threads for Numba, BLAS, PyTorch, OpenCV."),
        repeat: int = typer.Option(None, help="Timed samples per method (median); 5, quick 3."),
        json_path: Path = typer.Option(None, "--json", help="Write the full report as JSON."),
        csv_path: Path = typer.Option(None, "--csv", help="Write one row per result as CSV."),
        plot_path: Path = typer.Option(
            None, "--plot", help="GFLOP/s vs image size and time vs kernel size (PNG)."
        ),
        explain: bool = typer.Option(
            False, "--explain", help="Show the lecture's im2col example and exit."
        ),
        train: bool = typer.Option(
            False, "--train", help="Only measure training images/s against PyTorch."
        ),
        clock: str = typer.Option(
            "wall",
            help="wall, or cpu: process CPU time, robust on a busy machine (needs --threads 1).",
        ),
        list_cases: bool = typer.Option(False, "--list", help="List the cases and exit."),
    ) -> None:
        """Time cnnkit's loop and im2col convolutions against each other and against peers.

        Every result is checked against a float64 oracle before it is timed; ratios
        (vs_<peer> = peer time / cnnkit time, above 1 means cnnkit is faster) come from the
        same run. Numba compile time is reported on its own line and excluded.
        """
        if clock not in ("wall", "cpu"):
            raise UsageError(f"--clock must be wall or cpu, got {clock!r}")
        if repeat is not None and repeat < 1:
            raise UsageError(f"--repeat must be >= 1, got {repeat}")
        # An explicit --repeat is honoured exactly; the default may stop at 3 samples for
        # calls that take long (a 1 s peer would otherwise dominate the suite).
        budget = None if repeat else 1.5
        repeat = repeat or (3 if quick else 5)
        threads = threads if threads is not None else _usable_cores()
        if threads < 1:
            raise UsageError(f"--threads must be >= 1, got {threads}")
        if clock == "cpu" and threads != 1:
            raise UsageError(
                "--clock cpu needs --threads 1 (CPU time adds up all threads, spinning ones too)"
            )
        _check_output(json_path, "--json")
        _check_output(csv_path, "--csv")
        _check_output(plot_path, "--plot", (".png", ".svg", ".pdf"))
        size_list = _int_list(sizes, "--sizes")
        kernel_list = _int_list(kernels, "--kernels")
        channel_list = _int_list(channels, "--channels")
        batch_list = _int_list(batch, "--batch")

        # Without threadpoolctl, OpenBLAS reads its thread count once, when numpy loads.
        if importlib.util.find_spec("threadpoolctl") is None and "numpy" not in sys.modules:
            for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[var] = str(threads)

        from cnnkit import bench as B

        if explain:
            print_explain(B.explain_data())
            return

        suite_args = {
            "sizes": size_list,
            "kernels": kernel_list,
            "channels": channel_list,
            "batch": batch_list,
        }
        if case:
            # A named case is found even when it is not part of the (quick) default suite.
            pool = B.build_suite(quick=False, **suite_args)
            names = {c.name for c in pool}
            pool += [c for c in B.build_suite(quick=True, **suite_args) if c.name not in names]
            cases = B.select_cases(pool, case)
        else:
            cases = B.build_suite(quick=quick, **suite_args)
        if list_cases:
            print_cases(cases)
            return

        if train and csv_path is not None:
            raise UsageError("--csv holds the kernel results; use --json with --train")
        if plot_path is not None and not train and not any(c.group == "filter" for c in cases):
            raise UsageError("--plot draws the filter cases; select some (e.g. --case 'filter_*')")
        how = B.fix_threads(threads)
        if train:
            peers = B.Peers(wanted=("torch",), threads=threads)
            report = B.train_report(peers, threads, how, quick=quick)
            print_train(report)
        else:
            # run_suite refuses a case too large for memory before allocating anything.
            report = _run_with_progress(B, cases, repeat, threads, how, quick, budget, clock)
            print_report(report)
            if plot_path is not None:
                write_plot(report, plot_path)
                console.print(f"wrote {plot_path}")
        if json_path is not None:
            B.write_json(report, json_path)
            console.print(f"wrote {json_path}")
        if csv_path is not None:
            B.write_csv(report, csv_path)
            console.print(f"wrote {csv_path}")


def _run_with_progress(
    B: Any,
    cases: list[Any],
    repeat: int,
    threads: int,
    how: dict[str, str],
    quick: bool,
    budget: float | None,
    clock: str,
) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("compiling", total=len(cases))
        done = {"n": -1}

        def step(name: str) -> None:
            done["n"] += 1
            progress.update(task, completed=done["n"], description=name)

        return B.run_suite(
            cases,
            repeat=repeat,
            threads=threads,
            peak_n=1024 if quick else 2048,
            progress=step,
            thread_control=how,
            budget_s=budget,
            clock=clock,
        )


# ------------------------------------------------------------------------------ rendering


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def _fmt_ratio(value: float | None) -> str:
    if value is None:
        return ""
    style = "green" if value >= 1 else ("yellow" if value >= 0.5 else "red")
    return f"[{style}]{value:.2f}x[/]"


def _header(report: dict[str, Any]) -> str:
    m = report["machine"]
    how = report["settings"].get("thread_control", {})
    lines = [
        f"[bold]{m['cpu']}[/], {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['threads']} threads",
        f"cnnkit {m.get('cnnkit', '?')}, python {m['python']}, numpy {m['numpy']}, "
        f"numba {m['numba']}, BLAS {m['blas']}",
    ]
    if m.get("load_average"):
        lines.append("load average " + " ".join(f"{v:.2f}" for v in m["load_average"]))
    if how:
        lines.append("threads fixed by: " + "; ".join(f"{k}: {v}" for k, v in how.items()))
    return "\n".join(lines)


def print_report(report: dict[str, Any]) -> None:
    """The kernel benchmark as rich tables: header, compile line, results, notes, summary."""
    from rich import box
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    from cnnkit.bench import PEERS, fmt_bytes

    console.print(Panel(_header(report), title="cnnkit bench", expand=False))
    peak = report["peak"]
    console.print(
        f"peak: numpy sgemm {peak['n']}x{peak['n']} float32 = {peak['gflops']:.1f} GFLOP/s; "
        f"median of {report['settings']['repeat']} samples after warm-up"
    )
    comp = ", ".join(
        f"{r['op']} {r['method']} {r['seconds']:.2f} s" + (" (failed)" if r["error"] else "")
        for r in report["compile"]
    )
    console.print(f"Numba first call (compile or cache load, excluded from timings): {comp}")

    results = report["results"]
    # Tables hold numbers: render them whole (the terminal wraps) rather than truncated.
    out = Console(width=max(console.width, 160), highlight=False)
    for group in dict.fromkeys(r["group"] for r in results):
        rows = [r for r in results if r["group"] == group]
        present = [p for p in PEERS if any(r["method"] == p for r in rows)]
        table = Table(title=f"[bold]{group}[/]", title_justify="left", box=box.SIMPLE_HEAD)
        wide = max(len(r["case"]) for r in rows)
        table.add_column("case", no_wrap=True, min_width=wide)
        table.add_column("method", no_wrap=True)
        first = "cpu time" if report["settings"].get("clock") == "cpu" else "time"
        second = "wall" if first == "cpu time" else "cpu"
        other_key = "wall_seconds" if second == "wall" else "cpu_seconds"
        for col in (first, second, "GFLOP/s", "%peak", "extra mem", "x loop"):
            table.add_column(col, justify="right", no_wrap=True)
        for p in present:
            table.add_column(f"vs {p}", justify="right")
        last = None
        shown = 0
        for r in rows:
            if r["case"] != last:
                if last is not None:
                    table.add_section()
                last, shown = r["case"], 0
            label = r["case"] if shown == 0 else (f"[dim]{r['shape']}[/]" if shown == 1 else "")
            shown += 1
            method = r["method"] if r["impl"] == "cnnkit" else f"[cyan]{r['method']}[/]"
            if r["detail"].startswith("auto -> "):
                method += f" [dim]({r['detail'][8:]})[/]"
            if r["status"] != "ok":
                status = f"[bold red]{r['status']}[/]"
                table.add_row(label, method, status, *[""] * (5 + len(present)))
                continue
            unit = " op" if r["op"].endswith("pool2d") else ""
            table.add_row(
                label,
                method,
                _fmt_time(r["seconds"]),
                f"[dim]{_fmt_time(r.get(other_key))}[/]",
                f"{r['gflops']:.2f}{unit}",
                f"{100 * r['peak_share']:.1f}" if r["peak_share"] is not None else "",
                fmt_bytes(r["extra_bytes"]) if r["extra_bytes"] else "",
                f"{r['speedup_vs_loop']:.2f}" if r["speedup_vs_loop"] else "",
                *[_fmt_ratio(r["ratios"].get(p)) for p in present],
            )
        out.print(table)
    rss = max((r.get("rss_peak_bytes") or 0 for r in results), default=0)
    console.print(
        f"vs <peer> = peer time / cnnkit time (above 1: cnnkit faster); x loop = loop time / "
        f"time. cpu: process CPU time per call (all threads; with --threads 1 it is immune "
        f"to other processes). extra mem: the im2col patch matrix. Peak RSS: {fmt_bytes(rss)}. "
        "Pooling counts one operation (op) per window element."
    )
    for r in results:
        if r["status"] != "ok":
            console.print(f"[bold red]{r['status']}[/] {r['case']} {r['method']}: {r['detail']}")
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}")
    summary = report["summary"]
    if summary["auto_vs_best"]:
        parts = [
            f"{a['case']} {a['ratio']:.2f}"
            + (f" ({a['picked']}, best {a['best']})" if a.get("picked") else "")
            + ("" if a["ok"] else " [red]slower[/]")
            for a in summary["auto_vs_best"]
        ]
        console.print("auto vs best of loop/im2col (>= 0.90 wanted): " + ", ".join(parts))
    if summary["targets"]:
        table = Table(title="issue 6 targets (same run)", title_justify="left")
        for col in ("case", "cnnkit", "peer", "ratio", "target", ""):
            table.add_column(col)
        for t in summary["targets"]:
            table.add_row(
                t["case"],
                t["method"],
                t["peer"],
                f"{t['ratio']:.2f}x",
                f">= {t['target']}x",
                "[green]met[/]" if t["ok"] else "[red]missed[/]",
            )
        console.print(table)
    console.print("[dim]Times on a shared machine are noisy; compare ratios from one run.[/]")


def print_cases(cases: list[Any]) -> None:
    """The selected cases with their shapes and FLOPs."""
    from rich.table import Table

    from cnnkit.bench import flops

    table = Table(title="benchmark cases")
    for col in ("case", "group", "shape", "GFLOP"):
        table.add_column(col)
    for c in cases:
        table.add_row(c.name, c.group, c.label(), f"{flops(c) / 1e9:.3f}")
    console.print(table)


def print_train(report: dict[str, Any]) -> None:
    """Training throughput: images/s of cnnkit and PyTorch and their ratio."""
    from rich.panel import Panel
    from rich.table import Table

    console.print(Panel(_header(report), title="cnnkit bench --train", expand=False))
    table = Table(title="training throughput (images/s, synthetic batches)")
    for col in ("net", "input", "batch", "optimizer", "cnnkit", "PyTorch", "cnnkit/PyTorch"):
        table.add_column(col, justify="left" if col in ("net", "optimizer") else "right")
    for r in report["train"]:
        table.add_row(
            r["net"],
            r["input"],
            str(r["batch"]),
            r["optimizer"],
            f"{r['cnnkit_images_per_s']:,.0f}" if r["cnnkit_images_per_s"] else "see note",
            f"{r['torch_images_per_s']:,.0f}" if r["torch_images_per_s"] else "missing",
            _fmt_ratio(r["ratio"]),
        )
    console.print(table)
    for r in report["train"]:
        if r["note"]:
            console.print(f"[yellow]note:[/] {r['net']}: cnnkit side {r['note']}")
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}")


def _matrix_table(matrix: Any, row_label: str = "", title: str = "") -> Any:
    from rich.table import Table

    table = Table(title=title or None, box=None, padding=(0, 0), show_header=False)
    if row_label:
        table.add_column(justify="right", style="dim", no_wrap=True)
    for _ in range(matrix.shape[1]):
        table.add_column(justify="right", min_width=4, no_wrap=True)
    for i, row in enumerate(matrix):
        cells = [f"{v:g}" for v in row]
        table.add_row(*([f"{row_label}{i + 1} "] if row_label else []), *cells)
    return table


def _show_matrix(caption: str, matrix: Any, row_label: str) -> None:
    console.print(f"\n[bold]{caption}[/]")
    # A 27-column matrix is wider than 80 columns: render it whole and let the terminal wrap
    # rather than let rich drop columns.
    from rich.console import Console

    width = max(console.width, 6 + 4 * matrix.shape[1])
    Console(width=width, highlight=False).print(_matrix_table(matrix, row_label))


def print_explain(data: dict[str, Any]) -> None:
    """The lecture's im2col example: kernels as rows, patches as columns, one product."""
    import numpy as np
    from rich.columns import Columns

    n = data["patches"].shape[1]
    console.print(
        "[bold]Convolution as a matrix product[/] (the lecture's example, small): four 3x3x3 "
        "kernels, an RGB image of 3x5x5, valid padding, stride 1 -> four 3x3 output maps."
    )
    console.print(
        Columns(
            [_matrix_table(data["image"][i], title=f"image {ch}") for i, ch in enumerate("RGB")],
            padding=(0, 4),
        )
    )
    _show_matrix(
        "4x27 kernel matrix: each 3x3x3 kernel flattened to a row (R taps 1-9, G 10-18, B 19-27)",
        data["w_matrix"],
        "k",
    )
    _show_matrix(
        f"27x{n} patch matrix (cnnkit.im2col): each 3x3x3 block of the image is a column",
        data["patches"],
        "r",
    )
    _show_matrix(f"4x{n} product = kernel matrix @ patch matrix", data["product"], "k")
    console.print("\n[bold]each product row reshaped to 3x3, and the sliding-window loop[/]")
    maps = [_matrix_table(m, title=f"im2col map {i + 1}") for i, m in enumerate(data["maps"])]
    loop = [_matrix_table(m, title=f"loop map {i + 1}") for i, m in enumerate(data["loop"])]
    console.print(Columns(maps, padding=(0, 4)))
    console.print(Columns(loop, padding=(0, 4)))
    same = bool(np.array_equal(data["maps"], data["loop"]))
    console.print(
        "product maps equal the loop's maps: "
        + ("[green]yes, exactly[/]" if same else "[bold red]NO[/]")
    )


def write_plot(report: dict[str, Any], path: Path) -> None:
    """GFLOP/s against image size and time against kernel size, one line per method/peer."""
    from cnnkit.bench import plot_series
    from cnnkit.plots import bench_figure

    series = plot_series(report)
    if not series["size"]:
        raise Failure("--plot: no filter case produced a correct, timed result to draw")
    bench_figure(series, path, title=report["machine"]["cpu"])
