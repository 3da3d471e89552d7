"""Plain-text tables, the one way the package prints them (stage tables, training histories, the
degradation experiment, the unit orderings at initialisation): columns two spaces apart, a rule under the
header."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["text_table", "shape_text"]


def text_table(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    right: Sequence[bool] | None = None,
    widths: Sequence[int] | None = None,
    rule: bool = True,
    total: bool = False,
) -> str:
    """``header`` and ``rows`` (cells as ``str()`` shows them) as aligned text columns.

    ``right`` says which columns are right-aligned (default: all but the first); ``widths`` gives
    columns a minimum width (default: as wide as their widest cell); ``rule`` draws a line of
    dashes under the header, ``total`` another one above the last row. Trailing spaces are cut.
    """
    header = [str(cell) for cell in header]
    rows = [[str(cell) for cell in row] for row in rows]
    right = [i > 0 for i in range(len(header))] if right is None else list(right)
    minimum = [0] * len(header) if widths is None else list(widths)
    sizes = [max(least, *(len(line[i]) for line in [header, *rows])) for i, least in enumerate(minimum)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, sizes, right)).rstrip()

    dashes = ["-" * len(line(header))] if rule else []
    body = [line(row) for row in rows]
    if total and body:
        body[-1:] = [*dashes, body[-1]]
    return "\n".join([line(header), *dashes, *body])


def shape_text(shape: Sequence[int], times: str = "×") -> str:
    """A tensor shape as people write it, e.g. ``256×56×56`` (``times="x"`` for plain ASCII)."""
    return times.join(str(n) for n in shape)
