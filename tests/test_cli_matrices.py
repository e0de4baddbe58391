"""The CLI's one matrix renderer: number format, aligned text and rich tables."""

import io

import numpy as np
from rich.console import Console

from cnnkit.cli.matrices import aligned_rows, matrix_table, number_cell


def _text(table) -> str:
    console = Console(width=120, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_number_cell_integers_digits_and_decimals():
    assert number_cell(3.0) == "3"
    assert number_cell(-2.0, decimals=2) == "-2"
    assert number_cell(1 / 3) == "0.3333"
    assert number_cell(10 / 3, digits=2) == "3.3"
    assert number_cell(10 / 3, decimals=2) == "3.33"


def test_aligned_rows_right_aligns_one_width():
    assert aligned_rows(np.array([[1.0, -10.0], [0.5, 2.0]])) == ["  1 -10", "0.5   2"]
    assert aligned_rows(np.array([1.0, 2.0, 3.0])) == ["1 2 3"]


def test_matrix_table_plain_with_row_labels():
    text = _text(matrix_table(np.array([[1.0, 2.5], [3.0, 4.0]]), row_label="k"))
    assert text.splitlines() == [" k1   1 2.5", " k2   3   4"]


def test_matrix_table_boxed_has_frame_and_title():
    lines = _text(matrix_table(np.array([1 / 3, 2.0]), title="avg", boxed=True, decimals=2))
    assert "avg" in lines.splitlines()[0]
    assert "│ 0.33 │ 2 │" in lines
    assert lines.splitlines()[1].startswith("┌")
