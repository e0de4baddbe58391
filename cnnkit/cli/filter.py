"""``cnnkit filter``: convolve images and signals with named or custom kernels.

The command parses options into :class:`cnnkit.filtering.FilterSettings`, expands the inputs
and checks the outputs, runs :func:`cnnkit.filtering.filter_file` on each input (load,
filter, write) and renders the facts it returns. Numpy, pillow and Numba load inside the
command, never at import time.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cnnkit.cli.common import (
    JSON_FILE_HELP,
    JSON_HELP,
    Failure,
    UsageError,
    check_json_file,
    console,
    emit_json,
    err_console,
    friendly_errors,
)
from cnnkit.cli.matrices import aligned_rows, matrix_table
from cnnkit.geometry import format_shape

if TYPE_CHECKING:
    import numpy as np

    from cnnkit.filtering import FilterSettings

EXAMPLES = """\
Examples:

  cnnkit filter sample_images/lecture_8x8.png -k vertical-edge

  cnnkit filter sample_images/camera.png -k sobel-x -o edges.png

  cnnkit filter sample_images/chelsea.png -k sobel-x -k sobel-y \\
      --combine magnitude --color gray -o cat_edges.png \\
      --compare cat_compare.png

  cnnkit filter sample_images/coffee.png -k gaussian:sigma=2 -p same \\
      --pad-mode reflect -o blurred.png

  cnnkit filter sample_images/signal.csv -k box:3 -o smooth.csv \\
      --compare smooth.png

  cnnkit filter sample_images/ -k "1,0,-1;2,0,-2;1,0,-1" --color gray \\
      --out-dir out/

  cnnkit filter --list-kernels

  cnnkit filter --demo

Kernels: a name with optional parameters (gaussian:sigma=2,size=7 or gaussian:2,7;
gabor:theta=45 with theta in degrees), rows of numbers (-k "1,0,-1;2,0,-2;1,0,-1"; one row =
1-D), or a .npy/.txt file. A .npy file of shape (C, kh, kw) is one filter that sums over the
image's C channels (3x3x3 on an RGB photo: one map); (O, C, kh, kw) is a bank of O such
filters. Filtering is cross-correlation, as in CNN layers; --flip makes it true convolution.

Defaults: --padding valid (8x8 with 3x3 gives 6x6), --color per-channel, --display auto (clip
for non-negative responses, abs = |y| scaled to its 99.5th percentile for signed ones). A
result of up to 16x16 is printed as numbers. Images load in their own units (0..255, 16-bit:
0..65535) and are written as 8-bit; .npy outputs are the raw float response. RGBA: alpha is
kept aside and re-attached when the output image has the input's size. 3-D .npy inputs are
channels-last when the last dimension is 1, 3 or 4, else channels-first. A folder means its
images; --out-dir is created when missing. --json prints one object (a list for several
inputs).
"""

# A filter still running after this many seconds shows a progress bar (on stderr).
PROGRESS_AFTER = 1.0


@dataclass
class Job:
    """One input and where its results go."""

    source: Path
    output: Path | None
    compare: Path | None


def _expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (their supported files, sorted) and globs -> a list of input files."""
    from cnnkit.io import IMAGE_SUFFIXES

    found: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            # a folder means its images: signals and arrays are named one by one or by glob,
            # so one 2-D kernel can be applied to everything a folder yields
            files = sorted(
                f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise UsageError(f"{p}: folder has no images ({' '.join(IMAGE_SUFFIXES)})")
            found.extend(files)
        elif not p.exists() and any(ch in item for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(item) if Path(m).is_file())
            if not matches:
                raise UsageError(f"{item}: no files match")
            found.extend(matches)
        else:
            found.append(p)
    return found


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_output(path: Path, inputs: list[Path], force: bool, what: str) -> None:
    """Refuse before any work: missing or unwritable folder, a folder as file, the input."""
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"{what} folder {str(folder)!r} does not exist (create it first)")
    if path.is_dir():
        raise UsageError(f"{what} {str(path)!r} is a folder; give a file name")
    if not os.access(folder, os.W_OK):
        raise Failure(f"{what} folder {str(folder)!r} is not writable")
    if not force and any(_same_file(path, src) for src in inputs):
        raise UsageError(f"{what} {str(path)!r} would overwrite the input; add --force to allow it")
    from cnnkit import io

    io.check_output(path, force)  # device files, hard links, read-only files


def _plan_jobs(
    sources: list[Path],
    output: Path | None,
    out_dir: Path | None,
    out_ext: str | None,
    compare: Path | None,
    force: bool,
) -> list[Job]:
    if output is not None and out_dir is not None:
        raise UsageError("give either -o FILE (one input) or --out-dir DIR, not both")
    if len(sources) > 1 and output is not None:
        raise UsageError(f"{len(sources)} inputs: use --out-dir DIR instead of -o")
    if len(sources) > 1 and compare is not None:
        raise UsageError("--compare FILE takes one input")
    if out_ext is not None and out_dir is None:
        raise UsageError("--out-ext applies to --out-dir")
    jobs: list[Job] = []
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--out-dir {str(out_dir)!r} is a file, not a folder")
        out_dir.mkdir(parents=True, exist_ok=True)
        ext = None
        if out_ext is not None:
            ext = out_ext if out_ext.startswith(".") else f".{out_ext}"
        seen: dict[Path, Path] = {}
        for src in sources:
            suffix = ext or _default_ext(src)
            target = out_dir / f"{src.stem}{suffix}"
            if target in seen:
                raise UsageError(
                    f"{seen[target]} and {src} would both write {target}; rename one of them"
                )
            seen[target] = src
            jobs.append(Job(src, target, None))
    else:
        jobs = [Job(src, output, compare) for src in sources]
    for job in jobs:
        for path, what in ((job.output, "output"), (job.compare, "--compare")):
            if path is not None:
                _check_output(path, sources, force, what)
    if len(jobs) == 1 and jobs[0].output is not None and jobs[0].output == jobs[0].compare:
        raise UsageError("-o and --compare name the same file")
    return jobs


def _default_ext(src: Path) -> str:
    suffix = src.suffix.lower()
    if suffix == ".wav":
        return ".wav"
    if suffix in (".csv", ".txt"):
        return ".csv"
    if suffix == ".npy":
        return ".npy"
    return ".png"


def _kernel_text(label: str, w: np.ndarray, flip: bool) -> str:
    """The kernel as the sliding window applies it: its matrix (or a digest if large)."""
    import numpy as np

    # true convolution slides the kernel reversed along every spatial axis
    spatial = w.ndim if w.ndim < 3 else 2
    applied = w[(Ellipsis,) + (slice(None, None, -1),) * spatial] if flip else w
    head = f"{label} ({format_shape(w.shape)})"
    if flip:
        head += ", flipped (true convolution)"
    big = max(w.shape[-2:]) > 7 or (w.ndim == 3 and w.shape[0] > 4)
    if big:
        return (
            f"{head}: sum {float(np.sum(w)):.4g}, min {float(np.min(w)):.4g}, "
            f"max {float(np.max(w)):.4g}"
        )
    if w.ndim == 3:
        parts = [f"channel {c}:\n{_matrix_text(m)}" for c, m in enumerate(applied)]
        return head + "\n" + "\n".join(parts)
    return head + "\n" + _matrix_text(applied)


def _grid_lines(m: np.ndarray, width: int) -> list[str]:
    """A 1-D or 2-D array as right-aligned columns, as few digits as fit in ``width``."""
    for digits in (4, 3, 2):
        lines = ["  " + line for line in aligned_rows(m, digits)]
        if max(len(line) for line in lines) <= width:
            break
    return lines


def _print_grids(facts: dict[str, Any], y: Any) -> None:
    names = facts["map_names"]
    shown = min(len(names), 8)
    for i in range(shown):
        k, c = divmod(i, y.shape[1])
        shape = format_shape(y.shape[2:])
        console.print(f"{names[i]} ({shape}):", highlight=False, markup=False)
        for line in _grid_lines(y[k, c], console.width):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
    if len(names) > shown:
        console.print(f"({len(names) - shown} more maps in --json)", highlight=False)


def _render(facts: list[dict[str, Any]]) -> None:
    import numpy as np
    from rich.table import Table

    first = facts[0]
    flip = bool(first["flip"])
    pads = " ".join(f"{a}+{b}" for a, b in first["padding_pairs"])
    if len(facts) == 1:
        f = first
        table = Table(title="cnnkit filter", show_header=False, title_justify="left")
        table.add_column("field", style="bold", no_wrap=True)
        table.add_column("value", overflow="fold")
        kernels = "\n".join(
            _kernel_text(k["label"], np.asarray(k["weights"]), flip) for k in f["kernels"]
        )
        rows = [
            ("input", f"{f['input']} ({f['kind']}, {format_shape(f['input_shape'])})"),
            ("kernel", kernels),
            ("channels", f["channels"]),
            ("padding", f"{f['padding']} ({pads}, {f['pad_mode']})"),
            ("stride", str(f["stride"])),
            ("dilation", str(f["dilation"])),
            ("method", f["method"]),
        ]
        extras = []
        if f["combine"]:
            extras.append(f"combine {f['combine']}")
        if f["pool"]:
            extras.append(f"{f['pool']} pool {f['pool_size']} stride {f['pool_stride']}")
        if f["bias"]:
            extras.append(f"bias {f['bias']:g}")
        if extras:
            rows.append(("options", ", ".join(extras)))
        rows += [
            ("output shape", f"{format_shape(f['output_shape'])} x {f['maps']} map(s)"),
            ("time", f"{f['seconds'] * 1000:.1f} ms (filtering, JIT loaded)"),
            ("min / max / mean", f"{f['min']:.4g} / {f['max']:.4g} / {f['mean']:.4g}"),
        ]
        if f["display"]:
            rows.append(("display", f["display"]))
        if f["output"]:
            rows.append(("output", f["output"]))
        if f["compare"]:
            rows.append(("compare", f["compare"]))
        for k, v in rows:
            table.add_row(k, v)
        console.print(table, highlight=False)
        if f["values"] is not None:
            values = np.asarray(f["values"], dtype=np.float64)
            _print_grids(f, values.reshape(-1, 1, *values.shape[1:]))
        return
    kernels = ", ".join(f"{k['label']} ({format_shape(k['shape'])})" for k in first["kernels"])
    settings = (
        f"padding {first['padding']} ({pads}, {first['pad_mode']}), stride {first['stride']}, "
        f"dilation {first['dilation']}, method {first['method']}"
        + (", flipped (true convolution)" if flip else "")
    )
    console.print(f"cnnkit filter: {kernels}", highlight=False, markup=False)
    console.print(settings, highlight=False, markup=False)
    console.print(_folder_table(facts), highlight=False)


# The folder table's columns: (title, numeric, optional). Optional columns are dropped, last
# first, when the terminal is too narrow to show every number whole.
_FOLDER_COLUMNS = (
    ("input", False, False),
    ("output shape", True, False),
    ("min", True, False),
    ("max", True, False),
    ("mean", True, True),
    ("time", True, True),
    ("input shape", True, True),
    ("output", False, True),
)


def _folder_table(facts: list[dict[str, Any]]) -> Any:
    """One row per input; numbers never wrap or shorten, names wrap, optional columns go."""
    from rich.table import Table

    def cells(f: dict[str, Any]) -> dict[str, str]:
        return {
            "input": Path(f["input"]).name,
            "input shape": format_shape(f["input_shape"]),
            "output shape": f"{format_shape(f['output_shape'])} x {f['maps']}",
            "time": f"{f['seconds'] * 1000:.1f} ms",
            "min": f"{f['min']:.4g}",
            "max": f"{f['max']:.4g}",
            "mean": f"{f['mean']:.4g}",
            "output": Path(f["output"]).name if f["output"] else "",
        }

    rows = [cells(f) for f in facts]
    columns = [c for c in _FOLDER_COLUMNS if c[0] != "output" or any(r["output"] for r in rows)]
    while True:
        table = Table(title_justify="left")
        for title, numeric, _ in columns:
            if numeric:
                table.add_column(title, justify="right", no_wrap=True)
            else:
                table.add_column(title, overflow="fold", min_width=8)
        for r in rows:
            table.add_row(*(r[title] for title, _, _ in columns))
        # numbers at full length, names folded to 8 characters, 3 per column of padding and
        # rules plus the closing rule
        need = 1 + sum(
            3 + (max(len(title), *(len(r[title]) for r in rows)) if numeric else 8)
            for title, numeric, _ in columns
        )
        optional = [c for c in columns if c[2]]
        if need <= console.width or not optional:
            return table
        columns.remove(optional[-1])


def _matrix_text(w: np.ndarray, limit: int = 7, digits: int = 4) -> str:
    if w.ndim == 2 and max(w.shape) > limit:
        return f"{w.shape[0]}x{w.shape[1]} (too big to show here)"
    return "\n".join(aligned_rows(w, digits))


def list_kernels() -> None:
    """Print the bank: names, parameters with defaults, description and default matrix."""
    from rich.table import Table

    from cnnkit.filters import BANK, default_matrices

    table = Table(
        title="Kernels: -k NAME or -k NAME:key=value,... (matrices with the defaults)",
        show_lines=True,
        title_justify="left",
    )
    table.add_column("kernel", ratio=1, min_width=26)
    table.add_column("matrix", no_wrap=True)
    room = console.width - 26 - 7
    for spec, w in default_matrices():
        params = "; ".join(
            f"{p.name}={'auto' if p.default is None else p.default} ({p.help})" for p in spec.params
        )
        lines = [
            f"[bold cyan]{spec.name}[/]"
            + (f" (or {', '.join(spec.aliases)})" if spec.aliases else "")
        ]
        lines.append(spec.description + ("; also 1-D, for signals" if spec.one_d else ""))
        if params:
            lines.append(f"[dim]{params}[/]")
        matrix = _matrix_text(w, digits=2)
        if max(len(line) for line in matrix.splitlines()) > room:
            matrix = f"{w.shape[0]}x{w.shape[1]} (wider than this terminal)"
        table.add_row("\n".join(lines), matrix)
    console.print(table)
    console.print(
        f"{len(BANK)} named kernels. Custom: -k '1,0,-1;2,0,-2;1,0,-1' (rows by ';', one row "
        "is 1-D) or a .npy/.txt file. Parameters by name or position: gaussian:sigma=2,size=7 "
        "= gaussian:2,7."
    )


def print_demo() -> None:
    """The lecture's walk-through (:func:`cnnkit.demo.demo_steps`), matrices side by side."""
    from rich.columns import Columns
    from rich.rule import Rule

    from cnnkit.demo import demo_steps

    console.print("[bold]The lecture, runnable[/]: every number below comes from cnnkit.ops.")
    for step in demo_steps():
        console.print(Rule(step.title, align="left"))
        console.print(step.text)
        tables = [matrix_table(m, title=c, boxed=True, decimals=2) for c, m in step.matrices]
        console.print(Columns(tables, padding=(0, 2)))
    console.print(
        "\nTry it on a photo: cnnkit filter sample_images/camera.png -k vertical-edge "
        "-o edges.png --compare compare.png"
    )


def _progress(label: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A ``progress(done, total)`` callback that shows a bar once a filter runs long."""
    start = time.perf_counter()
    state: dict[str, Any] = {}

    def tick(done: int, total: int) -> None:
        if "bar" not in state:
            if time.perf_counter() - start < PROGRESS_AFTER or done >= total:
                return
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            bar = Progress(
                TextColumn(label),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} bands"),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
            )
            bar.start()
            state["bar"], state["task"] = bar, bar.add_task(label, total=total)
        state["bar"].update(state["task"], completed=done)

    def stop() -> None:
        if "bar" in state:
            state["bar"].stop()

    return tick, stop


def _nothing() -> None:
    """Stop a progress display that was never started."""


def _run_all(jobs: list[Job], settings: FilterSettings) -> list[dict[str, Any]]:
    """The facts of every job; several inputs show one bar over the files, and an error
    names the file it is about."""
    if len(jobs) == 1:
        return [_run(jobs[0], settings, bar=True)]
    from rich.progress import Progress

    facts = []
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("filtering", total=len(jobs))
        for job in jobs:
            try:
                facts.append(_run(job, settings, bar=False))
            except ValueError as exc:
                if str(job.source) not in str(exc):
                    exc.args = (f"{job.source}: {exc}",)  # keeps exc.params
                raise
            progress.advance(task)
    return facts


def _run(job: Job, settings: FilterSettings, bar: bool) -> dict[str, Any]:
    """Filter one input (:func:`cnnkit.filtering.filter_file`); with ``bar``, a progress bar
    once it runs long (several inputs have one bar over the files: one live display)."""
    from cnnkit.filtering import filter_file

    tick, stop = _progress(f"filtering {job.source.name}") if bar else (None, _nothing)
    try:
        return filter_file(job.source, settings, job.output, job.compare, progress=tick)
    finally:
        stop()


@friendly_errors
def filter_command(
    inputs: list[str] = typer.Argument(
        None, metavar="INPUT...", help="Image, .npy, .csv/.txt or .wav files, folders or globs."
    ),
    kernel: list[str] = typer.Option(
        None,
        "--kernel",
        "-k",
        metavar="KERNEL",
        help="Kernel name[:params] (gabor:theta=45, theta in degrees), 'rows;of,numbers' "
        "or a file (.npy may be C x kh x kw or O x C x kh x kw). Repeat for a bank.",
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", metavar="FILE", help="Output file; its suffix picks the format."
    ),
    out_dir: Path | None = typer.Option(
        None,
        "--out-dir",
        metavar="DIR",
        help="Folder for the outputs of several inputs (created when missing).",
    ),
    out_ext: str | None = typer.Option(
        None,
        "--out-ext",
        metavar="EXT",
        help="Output suffix with --out-dir (default: like the input; images -> .png).",
    ),
    compare: Path | None = typer.Option(
        None,
        "--compare",
        metavar="PNG",
        help="Write a figure of input, kernel and output (1-D: a plot) to this .png.",
    ),
    padding: str = typer.Option(
        "valid", "--padding", "-p", metavar="PAD", help="valid | same | full | N | HxW."
    ),
    pad_mode: str = typer.Option(
        "zeros", "--pad-mode", metavar="MODE", help="zeros | reflect | replicate | circular."
    ),
    stride: int = typer.Option(
        1, "--stride", "-s", metavar="N", help="Step of the sliding window."
    ),
    dilation: int = typer.Option(
        1, "--dilation", "-d", metavar="N", help="Spacing between kernel taps."
    ),
    method: str = typer.Option(
        "auto",
        "--method",
        metavar="METHOD",
        help="loop | im2col | winograd (3x3, stride 1) | auto.",
    ),
    flip: bool = typer.Option(
        False, "--flip", help="True convolution (flip the kernel) instead of cross-correlation."
    ),
    transpose: bool = typer.Option(False, "--transpose", help="Transpose the kernel(s)."),
    rotate: int = typer.Option(
        0,
        "--rotate",
        metavar="DEG",
        help="Rotate the kernel(s) 90, 180 or 270 degrees counter-clockwise.",
    ),
    normalize: bool = typer.Option(False, "--normalize", help="Scale the kernel(s) to sum to 1."),
    scale: float = typer.Option(
        1.0, "--scale", metavar="X", help="Multiply the kernel(s) by this."
    ),
    bias: float = typer.Option(0.0, "--bias", metavar="B", help="Add this to every response."),
    combine: str | None = typer.Option(
        None,
        "--combine",
        metavar="HOW",
        help="magnitude: sqrt(sum of squares) of the bank (e.g. sobel-x + sobel-y).",
    ),
    color: str | None = typer.Option(
        None,
        "--color",
        metavar="MODE",
        help="per-channel (default) | gray | rgb (the 2-D kernel on every channel, summed: "
        "one map). A C x kh x kw kernel always sums over the channels.",
    ),
    display_mode: str = typer.Option(
        "auto",
        "--display",
        metavar="MODE",
        help="How an image output shows the response: auto | abs (|y| up to its 99.5th "
        "percentile) | clip | rescale | diverging (red +, blue -, white 0).",
    ),
    pool: str | None = typer.Option(
        None, "--pool", metavar="KIND", help="max | avg pooling after the filter."
    ),
    pool_size: int = typer.Option(2, "--pool-size", metavar="N", help="Pooling window."),
    pool_stride: int | None = typer.Option(
        None, "--pool-stride", metavar="N", help="Pooling stride (default: the window)."
    ),
    column: str | None = typer.Option(
        None, "--column", metavar="COL", help="CSV/TXT column: header name or 0-based index."
    ),
    force: bool = typer.Option(
        False, "--force", help="Allow an output to overwrite an input or a read-only file."
    ),
    max_pixels: int | None = typer.Option(
        None,
        "--max-pixels",
        metavar="N",
        help="Largest image (width x height) to read; default 178956970, pillow's limit.",
    ),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    json_file: str | None = typer.Option(None, "--json-file", metavar="PATH", help=JSON_FILE_HELP),
    list_bank: bool = typer.Option(
        False, "--list-kernels", help="Show the named kernels with their matrices."
    ),
    demo: bool = typer.Option(
        False, "--demo", help="Walk through the lecture's examples in the terminal."
    ),
) -> None:
    """Convolve images and signals with classic or custom kernels, and see the result."""
    if list_bank:
        list_kernels()
        return
    if demo:
        print_demo()
        return
    if not inputs:
        raise UsageError("give an INPUT file (or --list-kernels / --demo); see --help")
    check_json_file(json_file)
    if not kernel:
        raise UsageError("give a kernel with -k, e.g. -k sobel-x (see --list-kernels)")
    from cnnkit import filtering

    settings = filtering.FilterSettings(
        kernels=tuple(kernel),
        padding=padding,
        pad_mode=pad_mode,
        stride=stride,
        dilation=dilation,
        method=method,
        flip=flip,
        transpose=transpose,
        rotate=rotate,
        normalize=normalize,
        scale=scale,
        bias=bias,
        combine=combine,
        color=color,
        display=display_mode,
        pool=pool,
        pool_size=pool_size,
        pool_stride=pool_stride,
        column=column,
        max_pixels=max_pixels,
        force=force,
    )
    # kernel mistakes are reported before any file is read or written
    sources = _expand_inputs(inputs)
    settings.check_kernels({filtering.input_dims(s) for s in sources})
    jobs = _plan_jobs(sources, output, out_dir, out_ext, compare, force)
    for job in jobs:
        if job.output is not None:
            filtering.output_kind(job.output)
        if job.compare is not None and filtering.output_kind(job.compare) != "image":
            raise UsageError(f"--compare writes an image (.png), got {job.compare}")

    facts = _run_all(jobs, settings)
    if not emit_json(facts if len(facts) > 1 else facts[0], as_json, json_file):
        _render(facts)


def register(app: typer.Typer) -> None:
    """Add ``cnnkit filter`` to the app."""
    app.command("filter", epilog=EXAMPLES)(filter_command)
