"""Plain-text tables for the command line."""

from __future__ import annotations

from collections.abc import Sequence

from pcam.data.split import PCamSplit
from pcam.outputs import human_size


def format_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A left-aligned text table with a rule under the header."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def split_summary(splits: Sequence[PCamSplit]) -> str:
    """The ``pcam check`` table: one row per split."""
    rows = [
        (
            s.split,
            f"{len(s):,}",
            f"{s.positive_fraction:.4f}",
            s.layout,
            human_size(s.size_bytes),
            "yes" if s.meta_path else "no",
            "yes" if s.has_mask else "no",
        )
        for s in splits
    ]
    header = ("split", "patches", "positive", "layout", "size", "meta", "mask")
    return format_table(header, rows)
