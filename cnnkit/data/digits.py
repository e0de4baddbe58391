"""The built-in 8x8 handwritten digits (UCI optical digits test set; see DIGITS.md)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DIGITS_FILE = Path(__file__).with_name("digits.npz")
DIGITS_CLASSES = [str(d) for d in range(10)]


def load_digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """Return the 1,797 digits as float32 (N, 1, 8, 8) on their raw 0..16 scale, int64 labels.

    Notes
    -----
    Pixel ``v`` in 0..16 is the number of "on" pixels in a 4x4 block of a 32x32 bitmap:
    white (16) ink on a black (0) background. The raw scale is kept; normalisation happens
    with the training statistics in :func:`cnnkit.data.dataset.build_dataset`.
    """
    with np.load(DIGITS_FILE, allow_pickle=False) as data:
        images = data["images"]
        labels = data["labels"]
    return images.astype(np.float32)[:, None], labels.astype(np.int64)
