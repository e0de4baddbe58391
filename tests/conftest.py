"""Shared fixtures. Optional oracles (torch, scipy, cv2) are imported with
``pytest.importorskip`` in the tests that use them, so the suite runs without them."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# What a person's terminal looks like to the commands the tests run as real processes.
CLI_ENV = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@dataclass(frozen=True)
class DefaultTraining:
    """The README's plain ``cnnkit train``, run once: its folder and what it printed."""

    folder: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def default_training(tmp_path_factory: pytest.TempPathFactory) -> DefaultTraining:
    """``cnnkit train`` with no options, in a fresh folder, as a real process.

    Training the default model takes seconds; the README test and the accuracy test share
    this one run instead of training it twice.
    """
    folder = tmp_path_factory.mktemp("default-training")
    done = subprocess.run(
        [sys.executable, "-m", "cnnkit", "train"],
        cwd=folder,
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    return DefaultTraining(folder, done.returncode, done.stdout, done.stderr)
