"""``cnnkit filter``: convolve images and signals with named or custom kernels.

The command parses options, loads inputs (:mod:`cnnkit.io`), builds kernels and filters
(:mod:`cnnkit.filters`, which calls :mod:`cnnkit.ops`), writes outputs atomically and
renders the summary. Numpy, pillow and Numba load inside the command, never at import time.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from cnnkit.cli.common import Failure, UsageError, console, err_console, friendly_errors

EXAMPLES = """\
Examples:

  cnnkit filter sample_images/camera.png -k sobel-x -o edges.png

  cnnkit filter sample_images/chelsea.png -k sobel-x -k sobel-y --combine magnitude \\
      --color gray -o cat_edges.png --compare cat_compare.png

  cnnkit filter sample_images/lecture_8x8.png -k vertical-edge -o edge.npy

  cnnkit filter sample_images/coffee.png -k gaussian:sigma=2 -p same --pad-mode reflect -o b.png

  cnnkit filter sample_images/signal.csv -k box:3 -o smooth.csv --compare smooth.png

  cnnkit filter sample_images/ -k "1,0,-1;2,0,-2;1,0,-1" --color gray --out-dir out/

  cnnkit filter --list-kernels

  cnnkit filter --demo

Kernels: a name with optional parameters (gaussian:sigma=2,size=7 or gaussian:2,7), rows of
numbers (-k "1,0,-1;2,0,-2;1,0,-1"; one row = 1-D), or a .npy/.txt file. Filtering is
cross-correlation, as in CNN layers; --flip makes it true convolution.

Defaults: --padding valid (8x8 with 3x3 gives 6x6), --color per-channel, --display auto (clip
for non-negative responses, abs = |y| scaled to its peak for signed ones). Images load in their
own units (0..255, 16-bit: 0..65535) and are written as 8-bit; .npy outputs are the raw float
response. RGBA: alpha is kept aside and re-attached when the output image has the input's
size. 3-D .npy inputs are channels-last when the last dimension is 1, 3 or 4, else
channels-first. A folder means its images. --json prints one object (a list for several
inputs).
"""

DEFAULT_EXT = {"image": ".png", "array": ".npy", "npy": ".npy", "csv": ".csv", "wav": ".wav"}


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
    inputs: list[str],
    output: Path | None,
    out_dir: Path | None,
    out_ext: str | None,
    compare: Path | None,
    force: bool,
) -> list[Job]:
    sources = _expand_inputs(inputs)
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
        if not out_dir.is_dir():
            raise UsageError(f"--out-dir {str(out_dir)!r} does not exist (create it first)")
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


def _output_kind(path: Path) -> str:
    from cnnkit.io import OUTPUT_KINDS

    kind = OUTPUT_KINDS.get(path.suffix.lower())
    if kind is None:
        raise UsageError(
            f"{path}: unknown output format {path.suffix or '(no suffix)'!r}; use an image "
            "suffix (.png .jpg .bmp .tif .gif .webp), .npy, .csv (1-D) or .wav (audio)"
        )
    return kind


def _check_output_kind(kind: str, loaded: Any, maps: int) -> None:
    if kind == "image" and loaded.ndim == 1:
        raise UsageError("a 1-D signal cannot be saved as an image; use .csv, .npy or .wav")
    if kind in ("csv", "wav") and loaded.ndim != 1:
        raise UsageError(f".{kind} output is for 1-D signals; use an image suffix or .npy")
    if kind == "wav":
        if loaded.fmt != "wav":
            raise UsageError(".wav output needs a .wav input (its sample rate and width)")
        if maps > 1:
            raise UsageError(".wav output takes one kernel (or --combine magnitude)")


def _map_names(labels: list[str], channels: int) -> list[str]:
    names = []
    for label in labels:
        for c in range(channels):
            if len(labels) == 1 and channels == 1:
                names.append("filtered")
            elif channels == 1:
                names.append(label)
            elif len(labels) == 1:
                names.append(f"ch{c}")
            else:
                names.append(f"{label}_ch{c}")
    return names


def _write(
    job: Job, loaded: Any, result: Any, labels: list[str], display_mode: str, force: bool
) -> None:
    from cnnkit import io

    y = result.y
    if job.output is not None:
        kind = _output_kind(job.output)
        if kind == "npy":
            # drop the kernel and channel axes when they have one entry
            arr = y
            if arr.shape[0] == 1:
                arr = arr[0]
                if arr.shape[0] == 1:
                    arr = arr[0]
            elif arr.shape[1] == 1:
                arr = arr[:, 0]
            io.save_array(job.output, arr, force=force)
        elif kind == "csv":
            flat = y.reshape(-1, y.shape[-1])
            io.save_signal_csv(job.output, flat, _map_names(labels, y.shape[1]), force=force)
        elif kind == "wav":
            io.save_wav(job.output, y[0], loaded.sample_rate, loaded.sample_width, force=force)
        else:
            io.save_image(job.output, _pixels(loaded, y, display_mode), force=force)
    if job.compare is not None:
        if _output_kind(job.compare) != "image":
            raise UsageError(f"--compare writes an image (.png), got {job.compare}")
        if loaded.ndim == 1:
            from cnnkit.plots import compare_signals

            compare_signals(
                job.compare,
                loaded.data,
                y.reshape(-1, y.shape[-1]),
                result.positions,
                [
                    n if n != "filtered" else f"filtered ({labels[0]})"
                    for n in _map_names(labels, y.shape[1])
                ],
                title=loaded.path.name,
            )
        else:
            before = io.display(
                loaded.data if loaded.data.shape[0] in (1, 3) else loaded.data[:1],
                loaded.maxval,
                "clip",
            )
            after = _pixels(loaded, y, display_mode)
            io.save_image(job.compare, io.side_by_side(before, after), force=force)


def _pixels(loaded: Any, y: Any, display_mode: str) -> Any:
    from cnnkit import io

    tiles = [io.display(y[k], loaded.maxval, display_mode) for k in range(y.shape[0])]
    if len(tiles) == 1:
        return io.attach_alpha(tiles[0], loaded.alpha)
    return io.tile(tiles)


def _facts(
    job: Job, loaded: Any, result: Any, labels: list[str], kernels: list[Any], opts: dict
) -> dict[str, Any]:
    y = result.y
    return {
        "input": str(job.source),
        "kind": loaded.kind,
        "input_shape": list(loaded.data.shape),
        "kernels": [
            {"label": lab, "shape": list(w.shape), "weights": w.tolist()}
            for lab, w in zip(labels, kernels)
        ],
        **opts,
        "padding_pairs": [list(p) for p in result.pads],
        "output_shape": list(y.shape[2:]),
        "maps": int(y.shape[0] * y.shape[1]),
        "seconds": round(result.seconds, 6),
        "min": float(y.min()),
        "max": float(y.max()),
        "mean": float(y.mean()),
        "output": str(job.output) if job.output else None,
        "compare": str(job.compare) if job.compare else None,
    }


def _shape_text(shape: list[int]) -> str:
    return "x".join(str(s) for s in shape)


def _render(facts: list[dict[str, Any]]) -> None:
    from rich.table import Table

    first = facts[0]
    kernels = ", ".join(f"{k['label']} ({_shape_text(k['shape'])})" for k in first["kernels"])
    pads = " ".join(f"{a}+{b}" for a, b in first["padding_pairs"])
    settings = (
        f"padding {first['padding']} ({pads}, {first['pad_mode']}), stride {first['stride']}, "
        f"dilation {first['dilation']}, method {first['method']}"
        + (", flipped (true convolution)" if first["flip"] else "")
    )
    if len(facts) == 1:
        f = first
        table = Table(title="cnnkit filter", show_header=False, title_justify="left")
        table.add_column("field", style="bold")
        table.add_column("value")
        rows = [
            ("input", f"{f['input']} ({f['kind']}, {_shape_text(f['input_shape'])})"),
            ("kernel", kernels),
            ("padding", f"{f['padding']} ({pads}, {f['pad_mode']})"),
            ("stride", str(f["stride"])),
            ("dilation", str(f["dilation"])),
            ("method", f["method"]),
        ]
        extras = []
        if f["flip"]:
            extras.append("flip (true convolution)")
        if f["color"]:
            extras.append(f"color {f['color']}")
        if f["combine"]:
            extras.append(f"combine {f['combine']}")
        if f["pool"]:
            extras.append(f"{f['pool']} pool {f['pool_size']} stride {f['pool_stride']}")
        if f["bias"]:
            extras.append(f"bias {f['bias']:g}")
        if extras:
            rows.append(("options", ", ".join(extras)))
        rows += [
            ("output shape", f"{_shape_text(f['output_shape'])} x {f['maps']} map(s)"),
            ("time", f"{f['seconds'] * 1000:.1f} ms (filtering, JIT loaded)"),
            ("min / max / mean", f"{f['min']:.4g} / {f['max']:.4g} / {f['mean']:.4g}"),
        ]
        if f["output"]:
            rows.append(("output", f["output"]))
        if f["compare"]:
            rows.append(("compare", f["compare"]))
        for k, v in rows:
            table.add_row(k, v)
    else:
        table = Table(title=f"cnnkit filter: {kernels}", caption=settings, title_justify="left")
        for col in ("input", "input shape", "output shape", "time", "min", "max", "mean", "output"):
            table.add_column(
                col, justify="right" if col in ("time", "min", "max", "mean") else "left"
            )
        for f in facts:
            table.add_row(
                Path(f["input"]).name,
                _shape_text(f["input_shape"]),
                f"{_shape_text(f['output_shape'])} x {f['maps']}",
                f"{f['seconds'] * 1000:.1f} ms",
                f"{f['min']:.4g}",
                f"{f['max']:.4g}",
                f"{f['mean']:.4g}",
                Path(f["output"]).name if f["output"] else "",
            )
    console.print(table)


def _format_number(v: float) -> str:
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.3f}"


def _matrix_text(w: Any, limit: int = 7) -> str:
    if w.ndim == 2 and max(w.shape) > limit:
        return f"{w.shape[0]}x{w.shape[1]} (too big to show here)"
    rows = w if w.ndim == 2 else w[None]
    cells = [[_format_number(v) for v in row] for row in rows]
    width = max(len(c) for row in cells for c in row)
    return "\n".join(" ".join(c.rjust(width) for c in row) for row in cells)


def list_kernels() -> None:
    """Print the bank: names, parameters with defaults, description and default matrix."""
    from rich.table import Table

    from cnnkit.filters import BANK, default_matrices

    table = Table(
        title="Kernels: -k NAME or -k NAME:key=value,... (matrices with the defaults)",
        show_lines=True,
        title_justify="left",
    )
    table.add_column("kernel", ratio=1)
    table.add_column("matrix", no_wrap=True)
    for spec, w in default_matrices():
        params = ", ".join(
            f"{p.name}={'auto' if p.default is None else p.default}" for p in spec.params
        )
        lines = [
            f"[bold cyan]{spec.name}[/]"
            + (f" (or {', '.join(spec.aliases)})" if spec.aliases else "")
        ]
        lines.append(spec.description + ("; also 1-D, for signals" if spec.one_d else ""))
        if params:
            lines.append(f"[dim]{params}[/]")
        table.add_row("\n".join(lines), _matrix_text(w))
    console.print(table)
    console.print(
        f"{len(BANK)} named kernels. Custom: -k '1,0,-1;2,0,-2;1,0,-1' (rows by ';', one row "
        "is 1-D) or a .npy/.txt file. Parameters by name or position: gaussian:sigma=2,size=7 "
        "= gaussian:2,7."
    )


def register(app: typer.Typer) -> None:
    """Add ``cnnkit filter`` to the app."""

    @app.command("filter", epilog=EXAMPLES)
    @friendly_errors
    def filter_command(
        inputs: list[str] = typer.Argument(
            None, metavar="INPUT...", help="Image, .npy, .csv/.txt or .wav files, folders or globs."
        ),
        kernel: list[str] = typer.Option(
            None,
            "--kernel",
            "-k",
            help="Kernel name[:params], 'rows;of,numbers' or a file. Repeat for a bank.",
        ),
        output: Path | None = typer.Option(
            None, "--output", "-o", help="Output file; its suffix picks the format."
        ),
        out_dir: Path | None = typer.Option(
            None, "--out-dir", help="Folder for the outputs of several inputs."
        ),
        out_ext: str | None = typer.Option(
            None,
            "--out-ext",
            help="Output suffix with --out-dir (default: like the input; images -> .png).",
        ),
        compare: Path | None = typer.Option(
            None,
            "--compare",
            help="Write input and output side by side (1-D: a plot) to this .png.",
        ),
        padding: str = typer.Option(
            "valid", "--padding", "-p", help="valid | same | full | N | HxW."
        ),
        pad_mode: str = typer.Option(
            "zeros", "--pad-mode", help="zeros | reflect | replicate | circular."
        ),
        stride: int = typer.Option(1, "--stride", "-s", help="Step of the sliding window."),
        dilation: int = typer.Option(1, "--dilation", "-d", help="Spacing between kernel taps."),
        method: str = typer.Option("auto", "--method", help="loop | im2col | auto."),
        flip: bool = typer.Option(
            False, "--flip", help="True convolution (flip the kernel) instead of cross-correlation."
        ),
        transpose: bool = typer.Option(False, "--transpose", help="Transpose the kernel(s)."),
        rotate: int = typer.Option(
            0, "--rotate", help="Rotate the kernel(s) 90, 180 or 270 degrees counter-clockwise."
        ),
        normalize: bool = typer.Option(
            False, "--normalize", help="Scale the kernel(s) to sum to 1."
        ),
        scale: float = typer.Option(1.0, "--scale", help="Multiply the kernel(s) by this."),
        bias: float = typer.Option(0.0, "--bias", help="Add this to every response."),
        combine: str | None = typer.Option(
            None,
            "--combine",
            help="magnitude: sqrt(sum of squares) of the bank (e.g. sobel-x + sobel-y).",
        ),
        color: str | None = typer.Option(
            None, "--color", help="per-channel (default) | gray | rgb (one 3-D kernel, one map)."
        ),
        display_mode: str = typer.Option(
            "auto",
            "--display",
            help="Image output of signed responses: auto | abs | clip | rescale | diverging.",
        ),
        pool: str | None = typer.Option(None, "--pool", help="max | avg pooling after the filter."),
        pool_size: int = typer.Option(2, "--pool-size", help="Pooling window."),
        pool_stride: int | None = typer.Option(
            None, "--pool-stride", help="Pooling stride (default: the window)."
        ),
        column: str | None = typer.Option(
            None, "--column", help="CSV/TXT column: header name or 0-based index."
        ),
        force: bool = typer.Option(
            False, "--force", help="Allow an output to overwrite an input or a read-only file."
        ),
        max_pixels: int | None = typer.Option(
            None,
            "--max-pixels",
            help="Largest image (width x height) to read; default 178956970, pillow's limit.",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
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
            from cnnkit.demo import run_demo

            run_demo(console)
            return
        if not inputs:
            raise UsageError("give an INPUT file (or --list-kernels / --demo); see --help")
        if not kernel:
            raise UsageError("give a kernel with -k, e.g. -k sobel-x (see --list-kernels)")
        if display_mode not in ("auto", "abs", "clip", "rescale", "diverging"):
            raise UsageError(
                f"--display must be auto, abs, clip, rescale or diverging, got {display_mode!r}"
            )
        if pool is None and pool_stride is not None:
            raise UsageError("--pool-stride needs --pool max|avg")
        if pool_size < 1 or (pool_stride is not None and pool_stride < 1):
            raise UsageError("--pool-size and --pool-stride must be >= 1")
        jobs = _plan_jobs(inputs, output, out_dir, out_ext, compare, force)
        for job in jobs:
            if job.output is not None:
                _output_kind(job.output)
            if job.compare is not None and _output_kind(job.compare) != "image":
                raise UsageError(f"--compare writes an image (.png), got {job.compare}")
        from cnnkit import filters, io

        # kernel mistakes are reported before any file is read or written
        for dims in sorted(
            {1 if j.source.suffix.lower() in (".csv", ".txt", ".wav") else 2 for j in jobs}
        ):
            for k in kernel:
                filters.parse_kernel(k, dims)
        filters.parse_padding(padding, 2)

        def run(job: Job) -> dict[str, Any]:
            loaded = io.load(job.source, column, max_pixels=max_pixels)
            parsed = [filters.parse_kernel(k, loaded.ndim) for k in kernel]
            weights = [
                filters.transform(
                    k.weights, transpose=transpose, rotate=rotate, normalize=normalize, scale=scale
                )
                for k in parsed
            ]
            labels = [k.label for k in parsed]
            if job.output is not None:
                maps = 1 if combine else len(weights)
                _check_output_kind(_output_kind(job.output), loaded, maps)
            padding_arg = filters.parse_padding(padding, loaded.ndim)
            result = filters.apply_bank(
                loaded.data,
                weights,
                color=color or "per-channel",
                padding=padding_arg,
                pad_mode=pad_mode,
                stride=stride,
                dilation=dilation,
                method=method,
                flip=flip,
                bias=bias,
                combine=combine,
                pool=pool,
                pool_size=pool_size,
                pool_stride=pool_stride,
            )
            if combine:
                labels = ["magnitude(" + ", ".join(labels) + ")"]
            _write(job, loaded, result, labels, display_mode, force)
            opts = {
                "padding": padding,
                "pad_mode": pad_mode,
                "stride": stride,
                "dilation": dilation,
                "method": method,
                "flip": flip,
                "color": color if loaded.ndim == 2 else None,
                "bias": bias,
                "combine": combine,
                "pool": pool,
                "pool_size": pool_size if pool else None,
                "pool_stride": (pool_stride or pool_size) if pool else None,
            }
            return _facts(job, loaded, result, labels, weights, opts)

        facts: list[dict[str, Any]] = []
        if len(jobs) == 1:
            facts.append(run(jobs[0]))
        else:
            from rich.progress import Progress

            with Progress(console=err_console, transient=True) as progress:
                task = progress.add_task("filtering", total=len(jobs))
                for job in jobs:
                    try:
                        facts.append(run(job))
                    except ValueError as exc:
                        if str(job.source) in str(exc):
                            raise
                        raise type(exc)(f"{job.source}: {exc}") from None
                    progress.advance(task)
        if as_json:
            typer.echo(json.dumps(facts if len(facts) > 1 else facts[0], indent=2))
        else:
            _render(facts)
