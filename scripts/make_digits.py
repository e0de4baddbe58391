"""Rebuild ``cnnkit/data/digits.npz`` from the copy of the UCI digits that scikit-learn ships.

cnnkit does not depend on scikit-learn; this script only documents (and can repeat) where the
shipped file came from. Run it once, in an environment that has scikit-learn installed::

    python scripts/make_digits.py            # writes cnnkit/data/digits.npz

Source: ``sklearn/datasets/data/digits.csv.gz`` -- 1,797 rows of 65 comma-separated integers,
the 64 pixels of an 8x8 image (row-major, values 0..16) followed by the label 0..9. See
``cnnkit/data/DIGITS.md`` for the provenance and licence.

The output holds ``images`` (uint8, (1797, 8, 8), 0..16) and ``labels`` (uint8, (1797,)).
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np

TARGET = Path(__file__).resolve().parent.parent / "cnnkit" / "data" / "digits.npz"


def find_source() -> Path:
    try:
        import sklearn
    except ImportError:
        sys.exit(
            "error: scikit-learn is needed once to extract the digits (pip install scikit-learn)"
        )
    return Path(sklearn.__file__).parent / "datasets" / "data" / "digits.csv.gz"


def main() -> None:
    source = find_source()
    with gzip.open(source, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    if table.shape != (1797, 65) or table.min() < 0 or table[:, :64].max() > 16:
        sys.exit(f"error: {source} is not the expected 1797 x 65 table of 0..16 pixels")
    images = table[:, :64].reshape(-1, 8, 8).astype(np.uint8)
    labels = table[:, 64].astype(np.uint8)
    np.savez_compressed(TARGET, images=images, labels=labels)
    print(f"wrote {TARGET} ({len(labels)} images, label counts {np.bincount(labels).tolist()})")


if __name__ == "__main__":
    main()
