"""Shared fixtures. Optional oracles (torch, scipy, cv2) are imported with
``pytest.importorskip`` in the tests that use them, so the suite runs without them."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
