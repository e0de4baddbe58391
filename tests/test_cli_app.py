"""The root command: every subcommand is listed and works, help text reads cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
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


def test_short_version_flag():
    result = CliRunner().invoke(app, ["-V"])
    assert result.exit_code == 0 and result.output.strip() == f"cnnkit {__version__}"


def test_help_has_no_bool_noise_on_flags():
    for args in (["--help"], ["filter", "--help"], ["train", "--help"]):
        text = CliRunner().invoke(app, args, env={"COLUMNS": "100"}).output
        assert "<bool>" not in text, args
    # options that take a value still say what kind
    assert "FILE" in CliRunner().invoke(app, ["filter", "--help"], env={"COLUMNS": "100"}).output


def test_shell_completion_completes_commands_and_options(tmp_path):
    import os
    import subprocess
    import sys

    def complete(words: str, cword: int) -> list[str]:
        env = {
            **os.environ,
            "_CNNKIT_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(cword),
        }
        done = subprocess.run([script], env=env, capture_output=True, text=True, timeout=60)
        return done.stdout.split()

    # completion runs through the installed console script, as in a user's shell
    script = Path(sys.executable).with_name("cnnkit")
    if not script.exists():
        pytest.skip("the cnnkit console script is not installed next to this Python")

    assert complete("cnnkit fil", 1) == ["filter"]
    assert "--pad-mode" in complete("cnnkit filter --pad", 2)
    shown = CliRunner().invoke(app, ["--show-completion", "bash"])
    assert shown.exit_code == 0 and "_CNNKIT_COMPLETE" in shown.output
    env = {"HOME": str(tmp_path), "SHELL": "/bin/bash"}
    installed = CliRunner().invoke(app, ["--install-completion", "bash"], env=env)
    assert installed.exit_code == 0, installed.output
    assert "cnnkit" in (tmp_path / ".bashrc").read_text()
