"""``cnnkit bench``: the sliding-window loop against im2col + GEMM, and against peers.

Thin: parse options, call :mod:`cnnkit.bench`, render. Every library is timed in a worker
process of its own; this process only orchestrates, checks and prints.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import typer

from cnnkit.cli.common import Failure, UsageError, console, err_console, friendly_errors
from cnnkit.cli.matrices import matrix_table

if TYPE_CHECKING:
    import numpy as np
    from rich.console import Console

    from cnnkit.bench import Case

EXAMPLES = """
Examples:

  cnnkit bench --quick                       # under 10 seconds

  cnnkit bench --json-file bench.json --plot bench.png

  cnnkit bench --case 'filter_1024_*' --case lenet_c2 --repeat 7

  cnnkit bench --sizes 256,512 --kernels 3,5 --channels 16 --batch 4

  cnnkit bench --threads 1 --clock cpu       # steady ratios on a busy machine

  cnnkit bench --quick --self-check          # peers in the bench vs peers alone

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
    if path is None or str(path) == "-":
        return
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{option} {path}: folder {folder} does not exist")
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(f"{option} {path}: the file name must end with {' or '.join(suffixes)}")


@friendly_errors
def bench(
    quick: bool = typer.Option(False, "--quick", help="A suite of under 10 seconds."),
    case: list[str] = typer.Option(
        None, "--case", "-c", help="Case name or glob (repeatable); see --list."
    ),
    sizes: str = typer.Option(None, help="Filter image sides, e.g. 512,1024,2048."),
    kernels: str = typer.Option(None, help="Filter kernel sides (odd), e.g. 3,5,7,11."),
    channels: str = typer.Option(
        None, help="Extra conv layers (b, c, 32, 32) -> c, k3: channel counts."
    ),
    batch: str = typer.Option(None, help="Extra conv layers: batch sizes, e.g. 1,8."),
    threads: int = typer.Option(
        None, help="Threads of every library (PyTorch is also timed at 1). Default: cores."
    ),
    repeat: int = typer.Option(
        None, help="Rounds (each side sampled once per round); 5, quick 3, --train 3."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the full report as JSON on stdout (no tables)."
    ),
    json_file: Path = typer.Option(
        None, "--json-file", help="Write the full report as JSON to a file ('-': stdout)."
    ),
    csv_path: Path = typer.Option(None, "--csv", help="Write one row per result as CSV."),
    plot_path: Path = typer.Option(
        None, "--plot", help="GFLOP/s vs image size and time vs kernel size (PNG/SVG/PDF)."
    ),
    explain: bool = typer.Option(
        False, "--explain", help="Show the lecture's im2col example and exit."
    ),
    train: bool = typer.Option(
        False, "--train", help="Only measure training images/s against PyTorch."
    ),
    check: bool = typer.Option(
        False,
        "--self-check",
        help="Then time each library alone in a fresh process; fail if the bench's "
        "figure differs by more than 15 %.",
    ),
    clock: str = typer.Option(
        "wall",
        help="wall, or cpu: each worker's CPU time, robust on a busy machine (needs --threads 1).",
    ),
    list_cases: bool = typer.Option(False, "--list", help="List the cases and exit."),
) -> None:
    """Time cnnkit's convolutions against each other and against NumPy, SciPy, OpenCV, PyTorch.

    Each library runs in a fresh process of its own; every result is checked first.

    Ratios are peer time / cnnkit time (above 1: cnnkit faster), medians of rounds.
    """
    from cnnkit import bench as B
    from cnnkit.bench.machine import thread_limit, usable_cores
    from cnnkit.bench.timing import check_settings

    threads = threads if threads is not None else usable_cores()
    check_settings(threads, repeat, clock, thread_limit())
    _check_output(json_file, "--json-file")
    _check_output(csv_path, "--csv")
    _check_output(plot_path, "--plot", (".png", ".svg", ".pdf"))
    if train and (csv_path is not None or plot_path is not None or check):
        raise UsageError("--train reports training images/s; use --json or --json-file")
    to_stdout = as_json or (json_file is not None and str(json_file) == "-")
    out = err_console if to_stdout else console
    if explain:
        from cnnkit.bench.explain import explain_data

        print_explain(explain_data())
        return
    if train:
        from cnnkit.bench.training import train_report

        with (
            _worker_failures(),
            err_console.status("training: cnnkit and PyTorch, each in its own process"),
        ):
            report = train_report(threads, quick=quick, repeat=repeat, clock=clock)
        print_train(report, out)
        _write_json(B, report, as_json, json_file, out)
        return
    cases = B.choose_cases(
        case,
        quick=quick,
        sizes=_int_list(sizes, "--sizes"),
        kernels=_int_list(kernels, "--kernels"),
        channels=_int_list(channels, "--channels"),
        batch=_int_list(batch, "--batch"),
    )
    if list_cases:
        print_cases(cases)
        return
    if plot_path is not None and not any(c.group == "filter" for c in cases):
        raise UsageError("--plot draws the filter cases; select some (e.g. --case 'filter_*')")
    with _worker_failures():
        report = _run_with_progress(B, cases, threads, clock, B.run_settings(quick, repeat))
    print_report(report, out)
    if plot_path is not None:
        write_plot(report, plot_path)
        out.print(f"wrote {plot_path}", markup=False, highlight=False)
    if csv_path is not None:
        B.write_csv(report, csv_path)
        out.print(f"wrote {csv_path}", markup=False, highlight=False)
    if check:
        _self_check(B, report, cases, out)
    _write_json(B, report, as_json, json_file, out)
    if check and not all(r["ok"] for r in report["self_check"]):
        raise Failure(
            "self-check: some in-bench figures differ from the standalone ones by more "
            "than 15 % (a busy machine? try --threads 1 --clock cpu)"
        )


def register(app: typer.Typer) -> None:
    """Add the ``bench`` command to ``app``."""
    app.command("bench", epilog=EXAMPLES)(bench)


@contextlib.contextmanager
def _worker_failures() -> Iterator[None]:
    """A worker process that fails to start or dies is a failure (exit 1), not a traceback."""
    from cnnkit.bench.worker import WorkerError

    try:
        yield
    except WorkerError as exc:
        raise Failure(str(exc)) from None


def _write_json(
    B: ModuleType, report: dict[str, Any], as_json: bool, path: Path | None, out: Console
) -> None:
    if as_json or (path is not None and str(path) == "-"):
        sys.stdout.write(B.to_json(report))
    if path is not None and str(path) != "-":
        B.write_json(report, path)
        out.print(f"wrote {path}", markup=False, highlight=False)


def _run_with_progress(
    B: ModuleType, cases: list[Case], threads: int, clock: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """:func:`cnnkit.bench.run_suite` with a progress bar over the cases (on stderr)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting one process per library", total=len(cases))
        done = {"n": -1}

        def step(name: str) -> None:
            done["n"] += 1
            progress.update(task, completed=done["n"], description=name)

        return B.run_suite(cases, threads=threads, progress=step, clock=clock, **settings)


def _self_check(B: ModuleType, report: dict[str, Any], cases: list[Case], out: Console) -> None:
    """Time each library alone in a fresh process; the rows go into ``report``."""
    with (
        _worker_failures(),
        err_console.status("self-check: each library alone in a fresh process"),
    ):
        rows = B.self_check(report, cases)
    report["self_check"] = rows
    print_self_check(rows, out)


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


def _wide(out: Console) -> Console:
    """A console on ``out``'s file at least 100 columns wide: tables hold numbers, and in a
    narrower terminal the terminal wraps lines rather than rich cutting cells short."""
    from rich.console import Console

    if out.width >= 100:
        return out
    return Console(file=out.file, width=100, highlight=False)


def _header(report: dict[str, Any]) -> str:
    m = report["machine"]
    s = report["settings"]
    lines = [
        f"[bold]{m['cpu']}[/], {m['cores']} cores ({m['usable_cores']} usable), "
        f"{m['threads']} threads",
        f"python {m['python']}, numpy {m['numpy']}, BLAS {m['blas']}",
    ]
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items() if v)
    if versions:
        lines.append(versions)
    if m.get("load_average"):
        lines.append("load average " + " ".join(f"{v:.2f}" for v in m["load_average"]))
    if "clock" in s:
        lines.append(
            f"{s['clock']} clock, {s['repeat']} alternating rounds, one process per library"
        )
    return "\n".join(lines)


def _label_lines(case: dict[str, Any]) -> list[str]:
    """A case's name, then its shape label in short pieces (keeps the column narrow)."""
    shape = case["shape"]
    parts = shape.split(" -> ", 1)
    if len(parts) == 2:
        pieces = [parts[0], "-> " + parts[1]]
    else:
        first, _, rest = shape.partition(" ")
        pieces = [first, rest] if rest else [first]
    return [case["case"], *[f"[dim]{p}[/]" for p in pieces]]


def _method_label(r: dict[str, Any], report: dict[str, Any]) -> str:
    if r["impl"] != "cnnkit":
        name = r["method"]
        if r["library"] == "torch":
            name += f" {r['threads']}t"
        return f"[cyan]{name}[/]"
    if r["detail"].startswith("auto -> "):
        return f"auto [dim]({r['detail'][8:]})[/]"
    return r["method"]


def print_report(report: dict[str, Any], out: Console = console) -> None:
    """The kernel benchmark as tables that fit 100 columns: header, results, targets."""
    from rich.panel import Panel

    out.print(Panel(_header(report), title="cnnkit bench", expand=False))
    peak = report["peak"]
    out.print(
        f"peak: numpy sgemm {peak['n']}x{peak['n']} float32 = {peak['gflops']:.1f} GFLOP/s",
        highlight=False,
    )
    comp = ", ".join(
        f"{r['op']} {r['method']} {r['seconds']:.2f} s" + (" (failed)" if r["error"] else "")
        for r in report["compile"]
    )
    out.print(f"Numba first call (compile or cache load, not timed): {comp}", highlight=False)

    results = report["results"]
    # Tables hold numbers: in a terminal narrower than 100 columns, let it wrap the lines
    # rather than have rich cut cells short.
    wide = _wide(out)
    for group in dict.fromkeys(r["group"] for r in results):
        wide.print(_group_table(group, [r for r in results if r["group"] == group], report))
    out.print(
        "Peer columns: the peer's time / cnnkit's time, median of per-round ratios (above "
        "1: cnnkit faster; PyTorch: its better thread count); spreads are in --json. extra "
        "mem: the im2col patch matrix. Pooling counts one operation (op) per window element.",
        highlight=False,
    )
    for r in results:
        if r["status"] != "ok":
            out.print(f"[bold red]{r['status']}[/] {r['case']} {r['method']}: {r['detail']}")
    for note in report["notes"]:
        out.print(f"[yellow]note:[/] {note}", highlight=False)
    summary = report["summary"]
    if summary["auto_vs_best"]:
        out.print(_auto_line(summary["auto_vs_best"]), highlight=False)
    print_targets(summary, wide)
    out.print("[dim]Shared machines are noisy: read the spread (--json), not one digit.[/]")


def _group_table(group: str, rows: list[dict[str, Any]], report: dict[str, Any]) -> Any:
    """One group's results: a row per case and method, a column per peer's ratio."""
    from rich import box
    from rich.table import Table

    from cnnkit.bench import PEERS
    from cnnkit.memory import human_bytes

    present = [p for p in PEERS if any(r["library"] == p for r in rows)]
    table = Table(title=f"[bold]{group}[/]", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("case", no_wrap=True)
    table.add_column("method", no_wrap=True)
    clock = "cpu time" if report["settings"].get("clock") == "cpu" else "time"
    for col in (clock, "GFLOP/s", "extra mem"):
        table.add_column(col, justify="right", no_wrap=True)
    for p in present:
        table.add_column(p, justify="right", no_wrap=True)
    for name in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == name]
        labels = _label_lines(mine[0])
        if len(mine) < len(labels):
            labels = [labels[0], " ".join(labels[1:])]
        for k, r in enumerate(mine):
            label = labels[k] if k < len(labels) else ""
            if r["status"] != "ok":
                status = f"[bold red]{r['status']}[/]"
                table.add_row(label, _method_label(r, report), status)
                continue
            unit = " op" if r["op"].endswith("pool2d") else ""
            table.add_row(
                label,
                _method_label(r, report),
                _fmt_time(r["seconds"]),
                f"{r['gflops']:.2f}{unit}",
                human_bytes(r["extra_bytes"], table=True) if r["extra_bytes"] else "",
                *[_fmt_ratio(r["ratios"].get(p)) for p in present],
            )
        table.add_section()
    return table


def _auto_line(auto: list[dict[str, Any]]) -> str:
    """How often ``auto`` was within 10 % of the better method, naming the cases it was not."""
    slow = [a for a in auto if not a["ok"]]
    line = f"auto within 10 % of the best other method: {len(auto) - len(slow)}"
    line += f" of {len(auto)} cases"
    if slow:
        line += (
            " (slower: "
            + ", ".join(
                f"{a['case']} {a['ratio']:.2f}"
                + (f" picked {a['picked']}" if a["picked"] else "")
                + f", best {a['best']}"
                for a in slow
            )
            + ")"
        )
    return line


def print_targets(summary: dict[str, Any], out: Console = console) -> None:
    """The speed targets table: one row per measured case, then one line per target."""
    from rich import box
    from rich.table import Table

    if not summary["targets"]:
        return
    table = Table(
        title="[bold]speed targets[/] (cnnkit auto vs peer, same run)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
    )
    for col in ("work", "case", "peer", "ratio", "spread", "target", ""):
        table.add_column(
            col, justify="right" if col in ("ratio", "spread") else "left", no_wrap=True
        )
    for t in summary["targets"]:
        peer = t["peer"] + (f" {t['peer_threads']}t" if t["peer"] == "torch" else "")
        lo, hi = t["spread"]
        table.add_row(
            t["work"],
            t["case"],
            peer,
            f"{t['ratio']:.2f}x",
            f"{lo:.2f}-{hi:.2f}",
            f">= {t['target']}x",
            "[green]met[/]" if t["ok"] else "[red]missed[/]",
        )
    out.print(table)
    for g in summary["target_groups"]:
        goal = f"each >= {g['each']}x" + (
            f", geometric mean >= {g['mean_target']}x" if g["mean_target"] else ""
        )
        verdict = "[green]met[/]" if g["ok"] else "[red]missed[/]"
        if g["cases"] < g["of"]:
            verdict += f" on the {g['cases']} of {g['of']} cases measured"
        out.print(
            f"{g['work']} vs {g['peer']}: geometric mean {g['geomean']:.2f}x, lowest "
            f"{g['min']:.2f}x ({goal}): {verdict}",
            highlight=False,
        )


def print_cases(cases: list[Case]) -> None:
    """The selected cases with their shapes and FLOPs."""
    from rich.table import Table

    from cnnkit.bench import flops

    table = Table(title="benchmark cases")
    for col in ("case", "group", "shape", "GFLOP"):
        table.add_column(col)
    for c in cases:
        table.add_row(c.name, c.group, c.label(), f"{flops(c) / 1e9:.3f}")
    console.print(table)


def print_train(report: dict[str, Any], out: Console = console) -> None:
    """Training throughput: images/s of cnnkit and PyTorch and their ratio."""
    from rich.panel import Panel
    from rich.table import Table

    out.print(Panel(_header(report), title="cnnkit bench --train", expand=False))
    rows = report["train"]
    thread_cols = sorted({t for r in rows for t in r["torch_images_per_s"]}, key=int)
    table = Table(
        title="training images/s"
        + (" of CPU time" if report["settings"].get("clock") == "cpu" else "")
        + " (synthetic batches, each side in its own process)",
        title_justify="left",
    )
    for col in (
        "net",
        "batch",
        "cnnkit",
        *[f"torch {t}t" for t in thread_cols],
        "ratio",
        "spread",
        "target",
    ):
        table.add_column(col, justify="left" if col == "net" else "right", no_wrap=True)
    for r in rows:
        spread = r["ratio_spread"]
        target = r["target"]
        verdict = ""
        if target and r["ratio"]:
            verdict = f">= {target}x " + ("[green]met[/]" if r["ok"] else "[red]missed[/]")
        table.add_row(
            r["net"],
            f"{r['batch']} {r['optimizer']}",
            f"{r['cnnkit_images_per_s']:,.0f}",
            *[
                f"{r['torch_images_per_s'][t]:,.0f}" if t in r["torch_images_per_s"] else ""
                for t in thread_cols
            ],
            _fmt_ratio(r["ratio"]),
            f"{spread[0]:.2f}-{spread[1]:.2f}" if spread else "",
            verdict,
        )
    _wide(out).print(table)
    out.print(
        "ratio: cnnkit images/s / PyTorch's at its better thread count, median of rounds.",
        highlight=False,
    )
    for note in report["notes"]:
        out.print(f"[yellow]note:[/] {note}", highlight=False)


def print_self_check(rows: list[dict[str, Any]], out: Console = console) -> None:
    """In-bench figure against the same library timed alone in a fresh process."""
    from rich.table import Table

    table = Table(
        title="self-check: fastest sample in the bench vs alone in a fresh process",
        title_justify="left",
    )
    for col in ("library", "case", "method", "threads", "in bench", "alone", "diff", ""):
        table.add_column(
            col, justify="right" if col in ("in bench", "alone", "diff") else "left", no_wrap=True
        )
    for r in rows:
        table.add_row(
            r["library"],
            r["case"],
            r["method"],
            str(r["threads"]),
            _fmt_time(r["in_bench"]),
            _fmt_time(r["alone"]),
            f"{100 * r['difference']:+.0f} %",
            "[green]ok[/]" if r["ok"] else "[red]> 15 %[/]",
        )
    _wide(out).print(table)


def _show_matrix(caption: str, matrix: np.ndarray, row_label: str) -> None:
    console.print(f"\n[bold]{caption}[/]")
    # A 27-column matrix is wider than 80 columns: render it whole and let the terminal wrap
    # rather than let rich drop columns.
    from rich.console import Console

    width = max(console.width, 6 + 4 * matrix.shape[1])
    Console(width=width, highlight=False).print(matrix_table(matrix, row_label=row_label))


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
            [matrix_table(data["image"][i], title=f"image {ch}") for i, ch in enumerate("RGB")],
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
    maps = [matrix_table(m, title=f"im2col map {i + 1}") for i, m in enumerate(data["maps"])]
    loop = [matrix_table(m, title=f"loop map {i + 1}") for i, m in enumerate(data["loop"])]
    console.print(Columns(maps, padding=(0, 4)))
    console.print(Columns(loop, padding=(0, 4)))
    same = bool(np.array_equal(data["maps"], data["loop"]))
    console.print(
        "product maps equal the loop's maps: "
        + ("[green]yes, exactly[/]" if same else "[bold red]NO[/]")
    )


def write_plot(report: dict[str, Any], path: Path) -> None:
    """GFLOP/s against image size and time against kernel size, one line per method/peer."""
    from cnnkit.bench import plot_panels
    from cnnkit.plots import bench_figure

    panels = plot_panels(report)
    if not panels:
        raise Failure(
            "--plot needs filter cases with at least two image sizes or two kernel sizes "
            "that produced correct, timed results"
        )
    bench_figure(panels, path, title=f"cnnkit bench on {report['machine']['cpu']}")
