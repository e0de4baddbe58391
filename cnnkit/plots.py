"""Figures (matplotlib, Agg backend) and image grids.

Shared by several subcommands: add functions, keep each one self-contained, import
matplotlib inside the function (through :func:`pyplot`) so that commands that draw nothing
never pay for it. Figures are saved with :func:`save_figure`, which writes atomically.
"""

from __future__ import annotations

import os
from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot with the non-interactive Agg backend selected."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike[str], dpi: int = 120) -> None:
    """Save ``fig`` to ``path`` through a temporary file, then close it."""
    from cnnkit.io import atomic_path

    plt = pyplot()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
