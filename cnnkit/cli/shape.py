"""``cnnkit shape``: output shape, parameters, multiply-adds and memory of every layer.

Imports only the architecture package and geometry (no numpy, no Numba), so it answers
instantly, for a 170-node ResNet-50 too. The numbers come from :func:`cnnkit.arch.infer`,
the JSON from :func:`cnnkit.arch.shapes.report`; this module parses options and renders.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING

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
from cnnkit.memory import human_bytes

if TYPE_CHECKING:
    from rich.table import Table

    from cnnkit.arch import Graph, LayerInfo
    from cnnkit.arch.shapes import Block

__all__ = ["register", "shape"]

EXAMPLES = """\
Examples:

  cnnkit shape lenet5

  cnnkit shape resnet50 --depth 1

  cnnkit shape vgg16 --input 3x32x32 --json

  cnnkit shape "input 1 8 8; conv 4 k=3; pool max k=2; fc 10" --compare-fc

  cnnkit shape "input 8 16 16; residual { conv 8 k=3 p=1; bn; relu; conv 8 k=3 p=1 }; relu"

SPEC is a shipped name (alexnet, digits, lecture-1d, lecture-3x3x2, lecture-5x5, \
lecture-fc, lecture-valid, lenet5, mobilenet_v2, resnet-digits, resnet18, resnet50, shapes, \
vgg16), a spec file (.txt or .json), or inline text with ';' between layers. Graphs: \
'residual { ... } shortcut { ... }', 'concat { ... } { ... }', 'repeat N { ... }'.
"""


def _spec_text(info: LayerInfo) -> str:
    """What the spec column shows: the source text, or what a merge node adds up."""
    node = info.layer
    if len(node.inputs) < 2:
        return node.text or ""
    scope = node.name.rsplit(".", 1)[0] + "." if "." in node.name else ""
    short = []
    for source in node.inputs:
        for prefix in (node.name + ".", scope):  # a concat's own branches, then its scope
            if prefix and source.startswith(prefix):
                source = source[len(prefix) :]
                break
        short.append(source)
    return (" + " if node.kind == "add" else " | ").join(short)


def _block_spec(block: Block) -> str:
    """A folded block's layer count, or a single node's spec text."""
    if block.key is None:
        return _spec_text(block.first)
    return f"({block.count} layer{'s' if block.count > 1 else ''})"


def _render(arch: Graph, infos: list[LayerInfo], compare_fc: bool, depth: int | None) -> None:
    from rich.table import Table

    from cnnkit.arch import format_shape as fmt
    from cnnkit.arch import totals
    from cnnkit.arch.shapes import fc_comparison, fold

    sums = totals(infos)
    blocks = fold(infos, depth)

    def make(dropped: set[str]) -> Table:
        table = Table(
            title=f"{arch.name}: input {fmt(arch.input_shape)}",
            title_justify="left",
            show_footer=True,
        )
        table.add_column("#", justify="right", footer="", no_wrap=True)
        table.add_column("layer", footer="total", overflow="fold")
        if "spec" not in dropped:
            table.add_column("spec", style="dim", footer="", overflow="fold")
        numbers = [
            ("output", ""),
            ("params", f"{sums['total_params']:,}"),
            ("MACs", human_count(sums["total_macs"])),
            ("memory", human_bytes(sums["total_activation_bytes"], table=True)),
        ]
        for title, footer in numbers:
            table.add_column(title, justify="right", footer=footer, no_wrap=True)
        for number, block in enumerate(blocks, start=1):
            cells = [str(number), block.name]
            if "spec" not in dropped:
                cells.append(_block_spec(block))
            elif block.key:
                cells[1] += f" {_block_spec(block)}"  # the folded block's layer count
            cells += [
                fmt(block.output_shape),
                f"{block.params:,}",
                human_count(block.macs),
                human_bytes(block.activation_bytes, table=True),
            ]
            table.add_row(*cells)
        return table

    console.print(fit_table(make, ["spec"]))
    merges = "add, concat, " if not arch.is_chain else ""
    console.print(
        f"[dim]MACs: multiply-accumulates (pools, gap, bn, {merges}activations: 0); memory: "
        "float32 activations, batch 1; bn params: scale+shift (running stats not counted).[/]"
    )
    notes = [(i.name, note) for i in infos for note in i.notes]
    if notes:
        console.print("[bold]What the arithmetic hides:[/]")
        for name, note in notes:
            # a hanging indent keeps each note one visual block when the terminal wraps it
            lines = textwrap.wrap(
                f"{name}: {note}", max(console.width - 2, 40), subsequent_indent="    "
            )
            for line in lines:
                console.print(f"  {line}", markup=False, highlight=False)
    if compare_fc:
        _render_fc_comparison(fc_comparison(arch, infos), fmt(arch.input_shape))


def _render_fc_comparison(cmp: dict, input_text: str) -> None:
    from rich.table import Table

    from cnnkit.arch import format_shape as fmt

    console.print(
        f"\nOne fully connected unit on the {input_text} input needs "
        f"[bold]{cmp['weights_per_fc_unit_on_input']:,}[/] weights.",
        highlight=False,
    )
    if not cmp["layers"]:
        return
    fc_table = Table(title="conv layers vs fully connected layers with the same shapes")
    for col in ("layer", "input", "output", "conv params", "fc params", "fc / conv"):
        left = col == "layer"
        fc_table.add_column(
            col,
            justify="left" if left else "right",
            no_wrap=not left,
            overflow="fold",
        )
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


@friendly_errors
def shape(
    spec_source: SpecArgument,
    input_shape: InputOption = None,
    depth: int | None = typer.Option(
        None,
        "--depth",
        help="Fold blocks nested deeper than this (layer1.0.conv1 is depth 3) into one row "
        "with their totals.",
    ),
    compare_fc: bool = typer.Option(
        False, "--compare-fc", help="Also show what fully connected layers would need."
    ),
    as_json: TableJsonOption = False,
    json_file: TableJsonFileOption = None,
) -> None:
    """Output shape, parameters, multiply-adds and memory of every layer of SPEC."""
    from cnnkit.arch import infer
    from cnnkit.arch.shapes import report

    if depth is not None and depth < 1:
        raise UsageError(f"--depth must be >= 1, got {depth}")
    arch = load_arch(spec_source, input_shape)
    infos = infer(arch)
    if as_json or json_file:
        if emit_json(report(arch, infos, compare_fc), as_json, json_file):
            return
    _render(arch, infos, compare_fc, depth)


def register(app: typer.Typer) -> None:
    """Add ``cnnkit shape`` to the app."""
    app.command("shape", epilog=EXAMPLES)(shape)
