"""``cnnkit export`` and ``cnnkit import``: cnnkit model files to and from ONNX (the onnx
extra)."""

from __future__ import annotations

from pathlib import Path

import typer

from cnnkit.cli.common import Failure, console, emit_json, friendly_errors
from cnnkit.geometry import format_shape

EXAMPLES = """\
Examples:

  cnnkit export model.npz model.onnx

  cnnkit export model.npz model.onnx --opset 18 --json

  cnnkit export model.npz model.onnx --verify     # check it in onnxruntime first

The file's input is the image as cnnkit's loader reads it before normalisation (the \
model's (x - mean) / std is part of the graph); its output 'logits' gives cnnkit \
predict's probabilities after a softmax. Class names, mean, std and the spec are in the \
file's metadata. Needs the onnx extra: pip install "cnnkit\\[onnx]".
"""


IMPORT_EXAMPLES = """\
Examples:

  cnnkit import model.onnx model.npz

  cnnkit import resnet.onnx resnet.npz --input 3x64x64 --json

  cnnkit predict model.npz my_digit.png

Architecture and weights become a cnnkit model file that predict, evaluate, visualize \
and train --resume read. Only files cnnkit computes exactly as onnxruntime does are \
imported; anything else is refused naming the node. Class names and normalisation come \
back from files cnnkit exported; other files get classes 0..K-1 and no normalisation.
"""


@friendly_errors
def export(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="A model or checkpoint."),
    output: Path = typer.Argument(..., metavar="OUT.onnx", help="The ONNX file to write."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset version (17 or newer)."),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Before writing, run the file in onnxruntime on random inputs and require "
        "cnnkit's logits within 1e-4.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
    json_file: str | None = typer.Option(
        None, "--json-file", metavar="PATH", help="Also write the JSON here ('-': stdout)."
    ),
) -> None:
    """Write MODEL as an ONNX file for onnxruntime, Netron or PyTorch."""
    from cnnkit.onnx.writer import ExportMismatch, export_onnx

    try:
        done = export_onnx(model_path, output, opset, verify=verify)
    except ExportMismatch as exc:
        raise Failure(str(exc)) from None
    if (as_json or json_file) and emit_json(done, as_json, json_file):
        return
    shape = format_shape(done["input"]["shape"])
    classes = len(done["classes"])
    console.print(
        f"wrote {done['output']}: opset {done['opset']}, {done['nodes']} nodes, "
        f"{done['parameters']:,} parameters",
        highlight=False,
        markup=False,
    )
    console.print(
        f"input '{done['input']['name']}' {shape} (before normalisation), "
        f"output '{done['output_name']}' ({classes} classes)",
        highlight=False,
        markup=False,
    )
    if verify:
        console.print(
            "verified: onnxruntime's logits within "
            f"{done['verified_max_abs_diff']:.1e} of cnnkit's on 32 random inputs",
            highlight=False,
            markup=False,
        )


@friendly_errors
def import_(
    onnx_path: Path = typer.Argument(..., metavar="MODEL.onnx", help="The ONNX file."),
    output: Path = typer.Argument(..., metavar="OUT.npz", help="The model file to write."),
    input_shape: str | None = typer.Option(
        None, "--input", "-i", help="Input shape CxHxW, when the file's is dynamic."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print what was written as JSON."),
    json_file: str | None = typer.Option(
        None, "--json-file", metavar="PATH", help="Also write the JSON here ('-': stdout)."
    ),
) -> None:
    """Read an ONNX model with its weights into a cnnkit model file."""
    from cnnkit.arch import parse_shape
    from cnnkit.onnx.weights import import_onnx

    shape = parse_shape(input_shape, "--input") if input_shape else None
    done = import_onnx(onnx_path, output, shape)
    if (as_json or json_file) and emit_json(done, as_json, json_file):
        return
    console.print(
        f"wrote {done['output']}: {done['parameters']:,} parameters, input "
        f"{format_shape(done['input_shape'])}, {len(done['classes'])} classes",
        highlight=False,
        markup=False,
    )
    console.print(
        "class names and normalisation from the file's cnnkit metadata"
        if done["normalised"]
        else "no cnnkit metadata: classes numbered, no input normalisation",
        highlight=False,
        markup=False,
    )


def register(app: typer.Typer) -> None:
    """Add ``cnnkit export`` and ``cnnkit import`` to the app."""
    app.command("export", epilog=EXAMPLES)(export)
    app.command("import", epilog=IMPORT_EXAMPLES)(import_)
