"""``cnnkit receptive-field``: how much of the input each layer's units see.

Imports only the spec parser and receptive-field arithmetic; ``--plot`` loads matplotlib (and
``--image`` pillow and numpy) only when asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from cnnkit.cli.common import (
    InputOption,
    SpecArgument,
    TableJsonFileOption,
    TableJsonOption,
    UsageError,
    console,
    emit_json,
    fit_table,
    friendly_errors,
    human_count,
    load_arch,
)
from cnnkit.geometry import format_shape

if TYPE_CHECKING:
    import numpy as np
    from rich.table import Table

    from cnnkit.arch import Graph, LayerInfo
    from cnnkit.arch.receptive import Field, Region

EXAMPLES = """\
Examples:

  cnnkit receptive-field vgg16

  cnnkit receptive-field lecture-1d --unit 0

  cnnkit receptive-field alexnet --unit 0,0 --layer conv5 --json

  cnnkit receptive-field lenet5 --plot fields.png --image photo.png

  cnnkit receptive-field resnet18 --unit 3,3 --plot resnet_fields.png

  cnnkit receptive-field lecture-3x3x2 --compare lecture-5x5

SPEC is a shipped name, a spec file (.txt or .json), or inline text with ';' between layers.

Units are 0-based output positions (y,x in 2-D). Coordinates are input pixel indices; \
negative or past-the-end coordinates lie in the padding.
"""


def _dims(values: tuple[float, ...], sep: str = ",") -> str:
    return sep.join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _describe_region(arch: Graph, region: Region) -> list[str]:
    names = {1: ("positions",), 2: ("rows", "columns"), 3: ("slices", "rows", "columns")}[
        len(region.unit)
    ]
    unit = ",".join(map(str, region.unit))
    box = ", ".join(f"{n} {lo}..{hi}" for n, (lo, hi) in zip(names, region.box))
    size = format_shape(tuple(hi - lo + 1 for lo, hi in region.box))
    lines = [f"{region.layer} unit ({unit}) sees input {box} (field {size})."]
    if region.inside == 0:
        lines.append("All of it lies in the padding: no input pixel reaches this unit.")
        return lines
    clip = ", ".join(f"{n} {c[0]}..{c[1]}" for n, c in zip(names, region.clipped) if c)
    share = 100 * region.padding / region.field_size
    lines.append(
        f"Inside the input ({format_shape(arch.input_shape[1:])}): {clip} "
        f"({region.inside:,} positions); {region.padding:,} of {region.field_size:,} "
        f"({share:.1f}%) are padding."
    )
    if region.seen != region.inside:
        lines.append(
            f"Only {region.seen:,} of those pixels reach the unit (dilation or a stride larger "
            "than the kernel leaves holes, or intermediate padding cuts the field)."
        )
    else:
        lines.append(f"All {region.seen:,} input pixels inside the field reach the unit.")
    return lines


def _render_fields(arch: Graph, fields: list[Field]) -> None:
    from rich.table import Table

    graph = not arch.is_chain
    columns = ("#", "layer", "output", "field r", "stride j", "padding P", "start", "center")

    def make(dropped: set[str]) -> Table:
        table = Table(
            title=f"{arch.name}: input {format_shape(arch.input_shape)}", title_justify="left"
        )
        shown = [c for c in columns if c not in dropped]
        for col in shown:
            if col == "layer":
                table.add_column(col, overflow="fold")
            else:
                table.add_column(col, justify="right", no_wrap=True)
        for number, f in enumerate(fields, start=1):
            cells = {
                "#": str(number),
                "layer": f.name + ("" if f.aligned else " *"),
                "output": format_shape(f.output_shape),
                "field r": _dims(f.receptive_field, "x"),
                "stride j": _dims(f.effective_stride),
                "padding P": _dims(f.effective_padding),
                "start": _dims(f.start),
                "center": _dims(f.center),
            }
            table.add_row(*(cells[c] for c in shown))
        return table

    table = fit_table(make, ["start", "center"])
    console.print(table)
    shown = [c.header for c in table.columns]
    hidden = "" if "start" in shown else " (start = -P)"
    console.print(
        "[dim]Araujo, Norris & Sim, Distill 2019. Unit y sees input y*j-P .. y*j-P+r-1 per "
        f"dimension; start and center are those of unit 0{hidden}. Layers with a flat output "
        "see the whole input."
        + (" Where paths meet, the field is their union." if graph else "")
        + "[/]"
    )
    unaligned = [f.name for f in fields if not f.aligned]
    if unaligned:
        console.print(
            f"* unaligned: from {unaligned[0]} on, paths whose fields are centred differently "
            "have met, so a unit does not sit at the centre of what it sees (the center "
            "column is the middle of the union).",
            highlight=False,
        )


def _render_compare(summaries: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="side by side", title_justify="left")
    table.add_column("")
    for s in summaries:
        table.add_column(s["name"], justify="right", overflow="fold")
    rows = [
        ("input", lambda s: format_shape(s["input_shape"])),
        ("output", lambda s: format_shape(s["output_shape"])),
        (
            "receptive field",
            lambda s: f"{format_shape(s['receptive_field'])} ({s['receptive_field_layer']})",
        ),
        ("effective stride", lambda s: ",".join(map(str, s["effective_stride"]))),
        ("parameters", lambda s: f"{s['params']:,}"),
        ("multiply-adds", lambda s: human_count(s["macs"])),
        ("non-linearities", lambda s: str(s["nonlinearities"])),
        ("layers", lambda s: str(s["layers"])),
    ]
    for label, value in rows:
        table.add_row(label, *(value(s) for s in summaries))
    console.print(table)


def _load_image(path: str, height: int, width: int) -> tuple[np.ndarray, str | None]:
    """The photo as an RGB array of the input's height and width, and a note if it was
    resized to get there."""
    from cnnkit.io import read_rgb

    pixels, size = read_rgb(path, height, width)
    if size == (width, height):
        return pixels, None
    note = (
        f"{path} resized from {size[0]}x{size[1]} to {width}x{height} (the input's width x height)"
    )
    return pixels, note


def _plot(
    arch: Graph,
    infos: list[LayerInfo],
    out: str,
    image_path: str | None,
    unit: tuple[int, ...] | None,
    layer: str | None,
) -> tuple[int, str | None]:
    from cnnkit import plots
    from cnnkit.arch import receptive

    ndim = len(arch.input_shape) - 1
    if ndim == 3:
        raise UsageError("--plot draws 1-D and 2-D inputs; this spec's input is 3-D")
    if image_path and ndim != 2:
        raise UsageError("--image needs a 2-D input (C H W)")
    regions = receptive.growth(arch, infos, unit, layer)
    image, note = _load_image(image_path, *arch.input_shape[1:]) if image_path else (None, None)
    target = regions[-1]
    which = ",".join(map(str, target.unit))
    title = f"{arch.name}: field of {target.layer} unit ({which}), layer by layer"
    fig = plots.receptive_field_figure(
        arch.input_shape[1:], regions, image=image, title=title, note=note
    )
    plots.save_figure(fig, out)
    return len(regions), note


@friendly_errors
def receptive_field(
    spec_source: SpecArgument,
    input_shape: InputOption = None,
    unit: str | None = typer.Option(
        None, "--unit", help="Show the input region of this unit, e.g. 3,4 (0-based y,x)."
    ),
    layer: str | None = typer.Option(
        None,
        "--layer",
        help="Layer of --unit: 1-based number or name (conv2); default the last spatial one.",
    ),
    plot: str | None = typer.Option(
        None,
        "--plot",
        help="Draw the field of --unit (default the centre unit) as it grows layer by "
        "layer, into this image file.",
    ),
    image: str | None = typer.Option(
        None, "--image", help="With --plot: draw over this photo instead of a grid."
    ),
    compare: list[str] | None = typer.Option(
        None,
        "--compare",
        help="Compare SPEC with this spec side by side (repeatable).",
    ),
    as_json: TableJsonOption = False,
    json_file: TableJsonFileOption = None,
) -> None:
    """Receptive field, effective stride and padding of every layer of SPEC."""
    from cnnkit import arch as spec
    from cnnkit.arch import receptive

    if layer is not None and unit is None:
        raise UsageError("--layer selects the layer of --unit; give --unit too")
    if image is not None and plot is None:
        raise UsageError("--image is drawn by --plot; give --plot out.png too")
    arch = load_arch(spec_source, input_shape)
    infos = spec.infer(arch)
    if compare:
        others = [load_arch(other, input_shape) for other in compare]
        summaries = [receptive.summary(a) for a in (arch, *others)]
        if (as_json or json_file) and emit_json({"compare": summaries}, as_json, json_file):
            return
        _render_compare(summaries)
        return
    fields = receptive.fields(arch, infos)
    region = None
    chosen = receptive.parse_unit(unit) if unit is not None else None
    if chosen is not None:
        region = receptive.unit_region(arch, chosen, layer, infos)
    drawn, note = _plot(arch, infos, plot, image, chosen, layer) if plot else (0, None)
    if as_json or json_file:
        out: dict[str, Any] = {
            "name": arch.name,
            "input_shape": list(arch.input_shape),
            "layers": [f.to_json() for f in fields],
        }
        if region is not None:
            out["unit"] = region.to_json()
        if plot:
            out["plot"] = plot
            if note:
                out["image_note"] = note
        if emit_json(out, as_json, json_file):
            return
    _render_fields(arch, fields)
    if region is not None:
        for line in _describe_region(arch, region):
            console.print(line, markup=False, highlight=False)
    if plot:
        if note:
            console.print(note, markup=False, highlight=False, soft_wrap=True)
        console.print(
            f"wrote {plot} ({drawn} layers drawn)", markup=False, highlight=False, soft_wrap=True
        )


def register(app: typer.Typer) -> None:
    """Add ``cnnkit receptive-field`` to the app."""
    app.command("receptive-field", epilog=EXAMPLES)(receptive_field)
