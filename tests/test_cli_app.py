"""The root command: every subcommand is listed and works, help text reads cleanly."""

from __future__ import annotations

from typer.testing import CliRunner

from cnnkit import __version__
from cnnkit.cli.app import app, reflow

COMMANDS = [
    "filter",
    "shape",
    "receptive-field",
    "bench",
    "train",
    "evaluate",
    "predict",
    "visualize",
    "export",
    "import",
]


def test_every_subcommand_is_listed_and_has_help_with_an_example():
    runner = CliRunner()
    listed = runner.invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert listed.exit_code == 0
    for name in COMMANDS:
        assert name in listed.output
        own = runner.invoke(app, [name, "--help"], env={"COLUMNS": "120"})
        assert own.exit_code == 0, name
        assert f"cnnkit {name}" in own.output, f"{name} --help shows no example"


def test_version():
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"cnnkit {__version__}"


def test_reflow_joins_prose_and_keeps_examples():
    text = "Examples:\n\n  cnnkit a\n  cnnkit b\n\nOne sentence\nwrapped by hand."
    assert reflow(text) == "Examples:\n\n  cnnkit a\n  cnnkit b\n\nOne sentence wrapped by hand."
