"""Plain-text tables: the one way kgraph lines up columns (stats, plans, the CLI).

Example:
    >>> print(table(["layer", "params"], [["conv1", "832"]], total=["total", "832"]))
    layer  params
    -----  ------
    conv1     832
    -----  ------
    total     832
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["table"]


def table(
    header: Sequence[Any],
    rows: Sequence[Sequence[Any]],
    total: Sequence[Any] = (),
    align: str = "",
) -> str:
    """Columns aligned by `align` ("l"/"r" each; default: the first left, the others right),
    under a rule, with `total` below a second rule."""
    align = align or "l" + "r" * (len(header) - 1)
    every = [header, *rows, *([total] if total else [])]
    widths = [max(len(str(row[i])) for row in every) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)

    def line(row: Sequence[Any]) -> str:
        cells = [
            str(c).ljust(w) if a == "l" else str(c).rjust(w) for c, w, a in zip(row, widths, align)
        ]
        return "  ".join(cells).rstrip()

    lines = [line(header), rule, *map(line, rows)]
    return "\n".join([*lines, rule, line(total)] if total else lines)
