"""The typer application. Each subcommand lives in its own module and registers itself here.

Subcommand modules must not import Numba or the kernels at module level: ``cnnkit shape`` and
``cnnkit receptive-field`` answer in well under half a second because nothing heavy loads.
"""

from __future__ import annotations

import gc
import importlib
from typing import Any

import typer
import typer.core

app = typer.Typer(
    name="cnnkit",
    help="The building blocks of convolutional neural networks, runnable: filters, shapes, "
    "receptive fields, training and benchmarks on a Numba core.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Modules that define working subcommands, in the order `cnnkit --help` lists them.
# Each module exposes ``register(app)``.
COMMAND_MODULES: list[str] = ["filter", "shape", "receptive", "bench", "train", "export"]


def _version_callback(value: bool) -> None:
    if value:
        from cnnkit import __version__

        typer.echo(f"cnnkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        "-V",
        callback=_version_callback,
        is_eager=True,
        help="Show the version and exit.",
    ),
) -> None:
    """The building blocks of convolutional neural networks, runnable."""


def _option_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """Help shows a value's type (``<int>``) but nothing for an on/off flag (no ``<bool>``)."""
    if self.is_flag:
        return None
    return _typed(self, ctx)


_typed = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]


def reflow(text: str) -> str:
    """Join the hard-wrapped lines of each prose paragraph, so the terminal wraps them.

    Typer prints an epilog's lines as they are and then wraps each one to the terminal, which
    leaves ragged half-lines. Paragraphs with an indented line (examples) keep their lines.
    """
    paragraphs = text.split("\n\n")
    return "\n\n".join(
        p
        if any(line.startswith((" ", "\t")) for line in p.splitlines())
        else " ".join(p.split("\n"))
        for p in paragraphs
    )


for _name in COMMAND_MODULES:
    importlib.import_module(f"cnnkit.cli.{_name}").register(app)
for _command in app.registered_commands:
    if _command.epilog:
        _command.epilog = reflow(_command.epilog)


def main() -> None:
    """Entry point of the ``cnnkit`` console script."""
    # A command creates some 70,000 objects (typer, Numba) that live until the process ends:
    # the collector's passes over them cost ~50 ms while it runs and ~80 ms at exit.
    gc.set_threshold(50_000, 20, 20)
    try:
        app()
    finally:
        gc.freeze()  # exit without a collection over what is still alive
