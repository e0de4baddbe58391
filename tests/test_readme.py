"""The README's examples run, and print what the README says they print.

One test per ``$ cnnkit ...`` line of a ```console block, so a failure names its command.
Each runs as a real process in one shared folder that sees ``sample_images/`` (the commands
build on each other: ``train`` writes the model that ``evaluate`` reads). Where the README
shows output, the output must match line by line, with

* a ``...`` line standing for any number of lines;
* whitespace runs and table rules compared as one blank or one rule (columns widen with
  their content);
* what a run cannot repeat masked: measured times everywhere, and every decimal number (and
  a speed target's met/missed) in the output of commands whose numbers come from training
  or timing (train, evaluate, predict, bench). Their stable facts are still compared: the
  table layout, the counts, and for ``predict`` the top class.

The ```python block is executed and each ``print(...)  # expected`` comment is compared with
what it printed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CLI_ENV, ROOT, DefaultTraining

README = (ROOT / "README.md").read_text(encoding="utf-8")

# Commands whose printed numbers depend on training or timing, not only on their input.
VOLATILE = ("train", "evaluate", "predict", "bench")
_TIME = re.compile(r"\d+(\.\d+)? ?(ms|µs|us|ns|s)(?![=\w])")
_DECIMAL = re.compile(r"\d+\.\d+")
_VERDICT = re.compile(r"\b(met|missed)\b")  # a speed target's verdict in that run
_RULE = re.compile(r"[─━═]+")


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


EXAMPLES = _console_examples()


def _normalise(line: str, subcommand: str) -> str:
    line = _TIME.sub("<time>", line)
    if subcommand in VOLATILE:
        line = _DECIMAL.sub("#", line)
        line = _VERDICT.sub("<met?>", line)
    line = _RULE.sub("─", line)
    return " ".join(line.split())


def _segments(expected: list[str], subcommand: str) -> list[list[str]]:
    """The expected lines between ``...`` markers, normalised, blank lines dropped."""
    segments: list[list[str]] = [[]]
    for line in expected:
        if line.strip() == "...":
            segments.append([])
        elif line.strip():
            segments[-1].append(_normalise(line, subcommand))
    return segments


def _matches(printed: list[str], segments: list[list[str]]) -> bool:
    """Each segment appears, contiguous and in order; the first at the top and the last at
    the bottom unless a ``...`` stands before or after it."""
    if len(segments) == 1:
        return printed == segments[0]
    first, *middle, last = segments
    if printed[: len(first)] != first:
        return False
    position = len(first)
    for segment in middle:
        for start in range(position, len(printed) - len(segment) + 1):
            if printed[start : start + len(segment)] == segment:
                position = start + len(segment)
                break
        else:
            return False
    return not last or (
        len(printed) - len(last) >= position and printed[len(printed) - len(last) :] == last
    )


def _draw_seven(path: Path) -> None:
    """A hand-drawn 7, dark ink on white, as a user would make it in a paint program."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(img).line([(14, 12), (50, 12), (28, 54)], fill=0, width=6)
    img.save(path)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    (folder / "sample_images").symlink_to(ROOT / "sample_images")
    _draw_seven(folder / "my_seven.png")
    return folder


def test_readme_shows_its_commands() -> None:
    assert len(EXAMPLES) >= 10, "the README should show its commands in console blocks"
    assert all(shlex.split(command)[0] == "cnnkit" for command, _ in EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize(("command", "expected"), EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_console_example(
    command: str, expected: list[str], workspace: Path, default_training: DefaultTraining
) -> None:
    if ".onnx" in command and importlib.util.find_spec("onnx") is None:
        pytest.skip('needs the onnx extra: pip install "cnnkit[onnx]"')
    argv = shlex.split(command)[1:]
    subcommand = argv[0]
    if argv == ["train"]:
        # the same plain command the accuracy test needs: run once for both
        done = default_training
        for name in ("model.npz", "model.ckpt.npz"):
            shutil.copy(default_training.folder / name, workspace / name)
    else:
        done = subprocess.run(
            [sys.executable, "-m", "cnnkit", *argv],
            cwd=workspace,
            env=CLI_ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    if not any(line.strip() for line in expected):
        return
    printed = [_normalise(line, subcommand) for line in done.stdout.splitlines() if line.strip()]
    segments = _segments(expected, subcommand)
    assert _matches(printed, segments), (
        f"{command} printed\n"
        + "\n".join(printed)
        + "\n\nREADME shows\n"
        + "\n".join("\n".join(segment) for segment in segments)
    )
    if subcommand == "predict":
        top = re.compile(r"│ (\S+) │ (\S+) \(")
        shown = [m.groups() for m in map(top.search, expected) if m]
        got = [m.groups() for m in map(top.search, done.stdout.splitlines()) if m]
        assert shown and got == shown, f"top class: README {shown}, printed {got}"


def test_normalising_masks_only_what_a_run_cannot_repeat() -> None:
    assert _normalise("│ 7 (99.4 %) │ 3 (0.4 %) │", "predict") == "│ 7 (# %) │ 3 (# %) │"
    assert _normalise("│ time │ 0.2 ms (x) │", "filter") == "│ time │ <time> (x) │"
    assert _normalise("│ conv1 │ 117.60 k │", "shape") == "│ conv1 │ 117.60 k │"
    assert _normalise("conv 16 s=2", "shape") == "conv 16 s=2"
    assert _normalise("│ >= 0.8x │ missed │", "bench") == _normalise("│ >= 0.8x │ met │", "bench")
    assert _normalise("┏━━━┳━━━━━┓", "shape") == _normalise("┏━┳━━━━━━━┓", "shape")
    assert _matches(["a", "b", "c", "d"], [["a"], ["c"], ["d"]])
    assert not _matches(["a", "b", "c", "d"], [["a"], ["d"], ["c"]])
    assert not _matches(["a", "b"], [["a", "b", "c"]])
    assert _matches(["x", "a", "b"], [[], ["a", "b"]])
    assert not _matches(["a", "b", "x"], [[], ["a", "b"]])


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
