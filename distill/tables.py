"""One markdown table writer for every report (benchmark results, the evaluation report)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A markdown table as lines: the header, its rule, then one line per row of cell texts.

    Cells are written as given (format numbers before); a row must have one cell per column.
    """
    lines = [_line(header), _line(["---"] * len(header))]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a table row has {len(row)} cells for {len(header)} columns: {list(row)}")
        lines.append(_line(row))
    return lines


def _line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"
