"""How the CLI shows a small matrix: one number format, as aligned text or as a rich table.

``cnnkit filter`` prints kernels and small results as plain aligned lines (they are copied
into notes and must not wrap); ``filter --demo`` and ``bench --explain`` lay matrices side by
side, which needs rich tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.table import Table

if TYPE_CHECKING:
    import numpy as np


def number_cell(v: float, digits: int = 4, decimals: int | None = None) -> str:
    """``v`` as a matrix cell: an integer value without a point, any other value with
    ``digits`` significant digits (or, when given, exactly ``decimals`` decimals)."""
    v = float(v)
    if v.is_integer():
        return str(int(v))
    return f"{v:.{decimals}f}" if decimals is not None else f"{v:.{digits}g}"


def aligned_rows(m: np.ndarray, digits: int = 4) -> list[str]:
    """A 1-D or 2-D array as lines of right-aligned :func:`number_cell` numbers."""
    rows = m if m.ndim == 2 else m[None]
    cells = [[number_cell(v, digits) for v in row] for row in rows]
    size = max(len(c) for row in cells for c in row)
    return [" ".join(c.rjust(size) for c in row) for row in cells]


def matrix_table(
    m: np.ndarray,
    *,
    title: str = "",
    row_label: str = "",
    boxed: bool = False,
    digits: int = 6,
    decimals: int | None = None,
) -> Table:
    """A 1-D or 2-D array as a rich table of right-aligned :func:`number_cell` numbers.

    ``row_label`` adds a dim first column numbering the rows (``k1``, ``k2``, ...); ``boxed``
    draws a frame with a space either side of each number, at least as wide as the title;
    without it the numbers stand in columns of at least 4 characters and no rules.
    """
    rows = m if m.ndim == 2 else m[None]
    if boxed:
        table = Table(
            title=title or None,
            show_header=False,
            box=box.SQUARE,
            padding=(0, 1),
            min_width=len(title) + 2,
        )
    else:
        table = Table(title=title or None, box=None, padding=(0, 0), show_header=False)
    if row_label:
        table.add_column(justify="right", style="dim", no_wrap=True)
    for _ in range(rows.shape[1]):
        if boxed:
            table.add_column(justify="right")
        else:
            table.add_column(justify="right", min_width=4, no_wrap=True)
    for i, row in enumerate(rows):
        label = [f"{row_label}{i + 1} "] if row_label else []
        table.add_row(*label, *(number_cell(v, digits, decimals) for v in row))
    return table
