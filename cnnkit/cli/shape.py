"""``cnnkit shape``: output shape, parameters, multiply-adds and memory of every layer.

Imports only the spec parser and geometry (no numpy, no Numba), so it answers instantly.
"""

from __future__ import annotations

import json
from typing import Any

import typer

from cnnkit.cli.common import console, friendly_errors

EXAMPLES = """\
Examples:

  cnnkit shape lenet5

  cnnkit shape vgg16 --input 3x32x32 --json

  cnnkit shape "input 1 8 8; conv 4 k=3; pool max k=2; fc 10" --compare-fc

SPEC is a shipped name (alexnet, digits, lecture-1d, lecture-3x3x2, lecture-5x5, \
lecture-fc, lecture-valid, lenet5, shapes, vgg16), a spec file (.txt or .json), or inline \
text with ';' between layers.
"""


def human_count(n: int) -> str:
    """``15470264320`` -> ``"15.47 G"``; small numbers with thousands separators."""
    if n < 100_000:
        return f"{n:,}"
    for unit, scale in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:,}"  # pragma: no cover


def human_bytes(n: int) -> str:
    """Bytes in B, KiB, MiB or GiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.2f} GiB"


def load_arch(source: str, input_text: str | None) -> Any:
    """Parse SPEC, with ``--input CxHxW`` overriding its input line."""
    from cnnkit import arch as spec

    override = spec.parse_shape(input_text, "--input") if input_text else None
    return spec.parse(source, override)


def fc_comparison(arch: Any, infos: list[Any]) -> dict[str, Any]:
    """What fully connected layers would need where the spec uses convolutions."""
    import math

    one_unit = math.prod(arch.input_shape)
    rows = []
    for info in infos:
        if info.kind != "conv":
            continue
        n_in, n_out = math.prod(info.input_shape), math.prod(info.output_shape)
        fc_params = n_in * n_out + (n_out if info.layer.bias else 0)
        rows.append(
            {
                "name": info.name,
                "input_shape": list(info.input_shape),
                "output_shape": list(info.output_shape),
                "conv_params": info.params,
                "fc_params": fc_params,
                "ratio": fc_params / info.params,
            }
        )
    return {"weights_per_fc_unit_on_input": one_unit, "layers": rows}


def _json(arch: Any, infos: list[Any], compare_fc: bool) -> dict[str, Any]:
    from cnnkit import arch as spec

    out: dict[str, Any] = {
        "name": arch.name,
        "input_shape": list(arch.input_shape),
        "layers": [
            {
                "name": i.name,
                "kind": i.kind,
                "line": i.layer.line,
                "text": i.layer.text,
                "input_shape": list(i.input_shape),
                "output_shape": list(i.output_shape),
                "pads": [list(p) for p in i.pads],
                "params": i.params,
                "macs": i.macs,
                "other_ops": i.other_ops,
                "activations": i.activations,
                "activation_bytes": i.activation_bytes,
                "dropped_by_stride": list(i.dropped),
                "border_lost": list(i.border_lost),
                "notes": list(i.notes),
            }
            for i in infos
        ],
        **spec.totals(infos),
    }
    if compare_fc:
        out["compare_fc"] = fc_comparison(arch, infos)
    return out


def _render(arch: Any, infos: list[Any], compare_fc: bool) -> None:
    from rich.table import Table

    from cnnkit import arch as spec

    fmt = spec.format_shape
    table = Table(
        title=f"{arch.name}: input {fmt(arch.input_shape)}",
        title_justify="left",
        show_footer=True,
    )
    totals = spec.totals(infos)
    table.add_column("#", justify="right", footer="")
    table.add_column("layer", footer="total")
    table.add_column("spec", style="dim", footer="")
    table.add_column("output", justify="right", footer="")
    table.add_column("params", justify="right", footer=f"{totals['total_params']:,}")
    table.add_column("MACs", justify="right", footer=human_count(totals["total_macs"]))
    table.add_column(
        "memory", justify="right", footer=human_bytes(totals["total_activation_bytes"])
    )
    for number, info in enumerate(infos, start=1):
        table.add_row(
            str(number),
            info.name,
            info.layer.text,
            fmt(info.output_shape),
            f"{info.params:,}",
            human_count(info.macs),
            human_bytes(info.activation_bytes),
        )
    console.print(table)
    console.print(
        "[dim]MACs: multiply-accumulates (pools, gap, bn, activations: 0); memory: float32 "
        "activations, batch 1; bn params: scale+shift (running stats not counted).[/]"
    )
    notes = [(i.name, note) for i in infos for note in i.notes]
    if notes:
        console.print("[bold]What the arithmetic hides:[/]")
        for name, note in notes:
            console.print(f"  {name}: {note}", highlight=False)
    if compare_fc:
        cmp = fc_comparison(arch, infos)
        console.print(
            f"\nOne fully connected unit on the {fmt(arch.input_shape)} input needs "
            f"[bold]{cmp['weights_per_fc_unit_on_input']:,}[/] weights.",
            highlight=False,
        )
        if cmp["layers"]:
            fc_table = Table(title="conv layers vs fully connected layers with the same shapes")
            for col in ("layer", "input", "output", "conv params", "fc params", "fc / conv"):
                fc_table.add_column(col, justify="right" if col != "layer" else "left")
            for row in cmp["layers"]:
                fc_table.add_row(
                    row["name"],
                    fmt(tuple(row["input_shape"])),
                    fmt(tuple(row["output_shape"])),
                    f"{row['conv_params']:,}",
                    f"{row['fc_params']:,}",
                    f"{row['ratio']:,.0f}x",
                )
            console.print(fc_table)


def register(app: typer.Typer) -> None:
    """Add ``cnnkit shape`` to the app."""

    @app.command("shape", epilog=EXAMPLES)
    @friendly_errors
    def shape(
        spec_source: str = typer.Argument(
            ...,
            metavar="SPEC",
            help="Shipped name, spec file, or inline 'input 1 8 8; conv 4 k=3'.",
        ),
        input_shape: str | None = typer.Option(
            None, "--input", "-i", help="Input shape CxHxW (or CxL, CxDxHxW); overrides SPEC's."
        ),
        compare_fc: bool = typer.Option(
            False, "--compare-fc", help="Also show what fully connected layers would need."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """Output shape, parameters, multiply-adds and memory of every layer of SPEC."""
        from cnnkit import arch as spec

        arch = load_arch(spec_source, input_shape)
        infos = spec.infer(arch)
        if as_json:
            typer.echo(json.dumps(_json(arch, infos, compare_fc), indent=2))
        else:
            _render(arch, infos, compare_fc)
