"""The README's examples run, and print what the README says they print.

Every ``$ cnnkit ...`` line of a ```console block is run as a real process (in a temporary
folder that sees ``sample_images/``) and must exit 0. Where the README shows its output, the
output must match line by line (trailing blanks ignored), except for blocks that elide
output with ``...`` and for lines that report a measured time. The ```python block is
executed and each ``print(...)  # expected`` comment is compared with what it printed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _console_examples() -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for every ``$ `` line of the console blocks."""
    examples: list[tuple[str, list[str]]] = []
    for block in _blocks("console"):
        for line in block.splitlines():
            if line.startswith("$ "):
                examples.append((line[2:], []))
            elif examples:
                examples[-1][1].append(line)
    return examples


def _draw_seven(path: Path) -> None:
    """A hand-drawn 7, dark ink on white, as a user would make it in a paint program."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(img).line([(14, 12), (50, 12), (28, 54)], fill=0, width=6)
    img.save(path)


def _comparable(lines: list[str]) -> list[str]:
    return [line.rstrip() for line in lines if "time" not in line and line.strip()]


@pytest.mark.slow
def test_console_examples_run_and_print_what_the_readme_shows(tmp_path: Path) -> None:
    examples = _console_examples()
    assert len(examples) >= 10, "the README should show its commands in console blocks"
    (tmp_path / "sample_images").symlink_to(ROOT / "sample_images")
    _draw_seven(tmp_path / "my_seven.png")
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    for command, expected in examples:
        if ".onnx" in command and importlib.util.find_spec("onnx") is None:
            continue  # needs the onnx extra: pip install "cnnkit[onnx]"
        argv = shlex.split(command)
        assert argv[0] == "cnnkit", command
        done = subprocess.run(
            [sys.executable, "-m", "cnnkit", *argv[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        if expected and not any(line.strip() == "..." for line in expected):
            assert _comparable(done.stdout.splitlines()) == _comparable(expected), command


def test_python_example_prints_what_its_comments_say() -> None:
    (block,) = _blocks("python")
    expected = [
        line.split("#", 1)[1].strip()
        for line in block.splitlines()
        if line.lstrip().startswith("print(") and "#" in line
    ]
    assert expected, "the python example should state its outputs"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {})
    printed = [" ".join(line.split()) for line in out.getvalue().splitlines()]
    assert printed == [" ".join(line.split()) for line in expected]
