"""``cnnkit receptive-field``: how much of the input each layer's units see.

Imports only the spec parser and receptive-field arithmetic; ``--plot`` loads matplotlib (and
``--image`` pillow and numpy) only when asked.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from cnnkit.cli.common import UsageError, console, friendly_errors
from cnnkit.cli.shape import human_count, load_arch

EXAMPLES = """\
Examples:

  cnnkit receptive-field vgg16

  cnnkit receptive-field lecture-1d --unit 0

  cnnkit receptive-field alexnet --unit 0,0 --layer conv5 --json

  cnnkit receptive-field lenet5 --plot fields.png --image photo.png

  cnnkit receptive-field lecture-3x3x2 --compare lecture-5x5

SPEC is a shipped name, a spec file (.txt or .json), or inline text with ';' between layers.

Units are 0-based output positions (y,x in 2-D). Coordinates are input pixel indices; \
negative or past-the-end coordinates lie in the padding.
"""


def _dims(values: tuple[Any, ...], sep: str = ",") -> str:
    return sep.join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def _field_json(f: Any) -> dict[str, Any]:
    return {
        "name": f.name,
        "kind": f.kind,
        "output_shape": list(f.output_shape),
        "receptive_field": list(f.receptive_field),
        "effective_stride": list(f.effective_stride),
        "effective_padding": list(f.effective_padding),
        "start": list(f.start),
        "center": list(f.center),
    }


def _region_json(region: Any) -> dict[str, Any]:
    return {
        "layer": region.layer,
        "unit": list(region.unit),
        "box": [list(b) for b in region.box],
        "clipped": [list(c) if c is not None else None for c in region.clipped],
        "field_size": region.field_size,
        "inside": region.inside,
        "padding": region.padding,
        "padding_fraction": region.padding / region.field_size,
        "pixels_seen": region.seen,
        "positions": [list(p) for p in region.positions],
    }


def _describe_region(arch: Any, region: Any) -> list[str]:
    from cnnkit import spec

    names = {1: ("positions",), 2: ("rows", "columns"), 3: ("slices", "rows", "columns")}[
        len(region.unit)
    ]
    unit = ",".join(map(str, region.unit))
    box = ", ".join(f"{n} {lo}..{hi}" for n, (lo, hi) in zip(names, region.box))
    size = "x".join(str(hi - lo + 1) for lo, hi in region.box)
    lines = [f"{region.layer} unit ({unit}) sees input {box} (field {size})."]
    if region.inside == 0:
        lines.append("All of it lies in the padding: no input pixel reaches this unit.")
        return lines
    clip = ", ".join(f"{n} {c[0]}..{c[1]}" for n, c in zip(names, region.clipped) if c)
    share = 100 * region.padding / region.field_size
    lines.append(
        f"Inside the input ({spec.format_shape(arch.input_shape[1:])}): {clip} "
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


def _render_fields(arch: Any, fields: list[Any]) -> None:
    from rich.table import Table

    from cnnkit import spec

    table = Table(
        title=f"{arch.name}: input {spec.format_shape(arch.input_shape)}", title_justify="left"
    )
    for col in ("#", "layer", "output", "field r", "stride j", "padding P", "start", "center"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for number, f in enumerate(fields, start=1):
        table.add_row(
            str(number),
            f.name,
            spec.format_shape(f.output_shape),
            _dims(f.receptive_field, "x"),
            _dims(f.effective_stride),
            _dims(f.effective_padding),
            _dims(f.start),
            _dims(f.center),
        )
    console.print(table)
    console.print(
        "[dim]Araujo, Norris & Sim, Distill 2019. Unit y sees input y*j-P .. y*j-P+r-1 per "
        "dimension; start and center are those of unit 0. Layers with a flat output see the "
        "whole input.[/]"
    )


def _render_compare(summaries: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="side by side", title_justify="left")
    table.add_column("")
    for s in summaries:
        table.add_column(s["name"], justify="right")
    rows = [
        ("input", lambda s: "x".join(map(str, s["input_shape"]))),
        ("output", lambda s: "x".join(map(str, s["output_shape"]))),
        (
            "receptive field",
            lambda s: f"{'x'.join(map(str, s['receptive_field']))} ({s['receptive_field_layer']})",
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


def _load_image(path: str, height: int, width: int) -> Any:
    """The photo as an RGB array resized to the input's height and width."""
    import numpy as np
    from PIL import Image

    from cnnkit.io import open_image

    img = open_image(path).convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(img)


def _plot(arch: Any, infos: list[Any], out: str, image_path: str | None) -> int:
    from cnnkit import plots, receptive

    ndim = len(arch.input_shape) - 1
    if ndim == 3:
        raise UsageError("--plot draws 1-D and 2-D inputs; this spec's input is 3-D")
    if image_path and ndim != 2:
        raise UsageError("--image needs a 2-D input (C H W)")
    regions = receptive.growth(arch, infos)
    image = _load_image(image_path, *arch.input_shape[1:]) if image_path else None
    fig = plots.receptive_field_figure(
        arch.input_shape[1:],
        regions,
        image=image,
        title=f"{arch.name}: receptive field of the centre unit, layer by layer",
    )
    plots.save_figure(fig, out)
    return len(regions)


def register(app: typer.Typer) -> None:
    """Add ``cnnkit receptive-field`` to the app."""

    @app.command("receptive-field", epilog=EXAMPLES)
    @friendly_errors
    def receptive_field(
        spec_source: str = typer.Argument(
            ...,
            metavar="SPEC",
            help="Shipped name, spec file, or inline 'input 1 8 8; conv 4 k=3'.",
        ),
        input_shape: str | None = typer.Option(
            None, "--input", "-i", help="Input shape CxHxW (or CxL, CxDxHxW); overrides SPEC's."
        ),
        unit: str | None = typer.Option(
            None, "--unit", help="Show the input region of this unit, e.g. 3,4 (0-based y,x)."
        ),
        layer: str | None = typer.Option(
            None,
            "--layer",
            help="Layer of --unit: 1-based number or name (conv2); default the last spatial one.",
        ),
        plot: str | None = typer.Option(
            None, "--plot", help="Draw the fields, layer by layer, into this image file."
        ),
        image: str | None = typer.Option(
            None, "--image", help="With --plot: draw over this photo instead of a grid."
        ),
        compare: list[str] | None = typer.Option(
            None,
            "--compare",
            help="Compare SPEC with this spec side by side (repeatable).",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Receptive field, effective stride and padding of every layer of SPEC."""
        from cnnkit import receptive, spec

        if layer is not None and unit is None:
            raise UsageError("--layer selects the layer of --unit; give --unit too")
        if image is not None and plot is None:
            raise UsageError("--image is drawn by --plot; give --plot out.png too")
        arch = load_arch(spec_source, input_shape)
        infos = spec.infer(arch)
        if compare:
            others = [load_arch(other, input_shape) for other in compare]
            summaries = [receptive.summary(a) for a in (arch, *others)]
            if as_json:
                typer.echo(json.dumps({"compare": summaries}, indent=2))
            else:
                _render_compare(summaries)
            return
        fields = receptive.fields(arch, infos)
        region = None
        if unit is not None:
            region = receptive.unit_region(arch, receptive.parse_unit(unit), layer, infos)
        drawn = _plot(arch, infos, plot, image) if plot else None
        if as_json:
            out: dict[str, Any] = {
                "name": arch.name,
                "input_shape": list(arch.input_shape),
                "layers": [_field_json(f) for f in fields],
            }
            if region is not None:
                out["unit"] = _region_json(region)
            if plot:
                out["plot"] = plot
            typer.echo(json.dumps(out, indent=2))
            return
        _render_fields(arch, fields)
        if region is not None:
            for line in _describe_region(arch, region):
                console.print(line, highlight=False)
        if plot:
            console.print(f"wrote {plot} ({drawn} layers drawn)", highlight=False)
