"""The names of the built-in data sets, and the check that forgives case and underscores."""

from __future__ import annotations

import difflib

DATASETS = ("digits", "shapes", "mnist", "fashion-mnist", "folder", "npz")


def check_name(name: str) -> str:
    """Return ``name`` if it is a known data set; otherwise a ValueError naming the closest."""
    if name in DATASETS:
        return name
    guess = str(name).lower().replace("_", "-")
    if guess in DATASETS:
        return guess
    close = difflib.get_close_matches(guess, DATASETS, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown dataset {name!r}{hint} (known: {', '.join(DATASETS)})")
