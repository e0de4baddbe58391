"""``cnnkit shape``: output shape, parameters, multiply-adds and memory of every layer.

Imports only the architecture package and geometry (no numpy, no Numba), so it answers
instantly, for a 170-node ResNet-50 too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from cnnkit.cli.common import UsageError, console, emit_json, friendly_errors
from cnnkit.memory import human_bytes

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


def human_count(n: int) -> str:
    """``15470264320`` -> ``"15.47 G"``; small numbers with thousands separators."""
    if n < 100_000:
        return f"{n:,}"
    for unit, scale in (("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:,}"  # pragma: no cover


def load_arch(source: str, input_text: str | None) -> Any:
    """Parse SPEC, with ``--input CxHxW`` overriding its input line."""
    from cnnkit import arch

    override = arch.parse_shape(input_text, "--input") if input_text else None
    return arch.parse(source, override)


def fit_table(make: Callable[[set[str]], Any], optional: list[str]) -> Any:
    """The table ``make(dropped)`` builds, dropping ``optional`` columns in order until it
    fits the terminal (numbers are never cut; text columns may wrap).

    Column widths are set from the plain cell text, which spares rich from measuring every
    cell of a 170-row table again (ResNet-50 answers in a fraction of a second).
    """
    dropped: set[str] = set()
    while True:
        table = make(dropped)
        widths = [
            max(len(str(c.header)), len(str(c.footer or "")), *(len(str(x)) for x in c.cells))
            for c in table.columns
        ]
        if sum(widths) + 3 * len(widths) + 1 <= console.width or not optional:
            break
        dropped.add(optional.pop(0))
    for column, width in zip(table.columns, widths):
        if column.no_wrap:
            column.width = width
    return table


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
    from cnnkit.arch import totals

    out: dict[str, Any] = {
        "name": arch.name,
        "input_shape": list(arch.input_shape),
        "layers": [
            {
                "name": i.name,
                "kind": i.kind,
                "inputs": list(i.inputs),
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
        **totals(infos),
    }
    if compare_fc:
        out["compare_fc"] = fc_comparison(arch, infos)
    return out


def _spec_text(info: Any) -> str:
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


def rows(infos: list[Any], depth: int | None) -> list[dict[str, Any]]:
    """Table rows: one per node, or (``depth``) blocks nested deeper folded into one row
    with their totals and their last node's output."""
    out: list[dict[str, Any]] = []
    for info in infos:
        parts = info.name.split(".")
        key = ".".join(parts[:depth]) if depth is not None and len(parts) > depth else None
        if key is not None and out and out[-1]["key"] == key:
            row = out[-1]
            row["count"] += 1
            row["output"] = info.output_shape
            row["params"] += info.params
            row["macs"] += info.macs
            row["bytes"] += info.activation_bytes
            row["spec"] = f"({row['count']} layers)"
            continue
        out.append(
            {
                "key": key,
                "name": key or info.name,
                "spec": "(1 layer)" if key else _spec_text(info),
                "count": 1,
                "output": info.output_shape,
                "params": info.params,
                "macs": info.macs,
                "bytes": info.activation_bytes,
            }
        )
    return out


def _render(arch: Any, infos: list[Any], compare_fc: bool, depth: int | None) -> None:
    from rich.table import Table

    from cnnkit.arch import format_shape as fmt
    from cnnkit.arch import totals

    sums = totals(infos)
    table_rows = rows(infos, depth)

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
        for number, row in enumerate(table_rows, start=1):
            cells = [str(number), row["name"]]
            if "spec" not in dropped:
                cells.append(row["spec"])
            elif row["key"]:
                cells[1] += f" {row['spec']}"  # the folded block's layer count
            cells += [
                fmt(row["output"]),
                f"{row['params']:,}",
                human_count(row["macs"]),
                human_bytes(row["bytes"], table=True),
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
        depth: int | None = typer.Option(
            None,
            "--depth",
            help="Fold blocks nested deeper than this (layer1.0.conv1 is depth 3) into one row "
            "with their totals.",
        ),
        compare_fc: bool = typer.Option(
            False, "--compare-fc", help="Also show what fully connected layers would need."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
        json_file: str | None = typer.Option(
            None, "--json-file", metavar="PATH", help="Also write the JSON here ('-': stdout)."
        ),
    ) -> None:
        """Output shape, parameters, multiply-adds and memory of every layer of SPEC."""
        from cnnkit.arch import infer

        if depth is not None and depth < 1:
            raise UsageError(f"--depth must be >= 1, got {depth}")
        arch = load_arch(spec_source, input_shape)
        infos = infer(arch)
        if as_json or json_file:
            if emit_json(_json(arch, infos, compare_fc), as_json, json_file):
                return
        _render(arch, infos, compare_fc, depth)
