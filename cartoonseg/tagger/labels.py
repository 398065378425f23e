"""Label file of the WD (SmilingWolf) booru taggers: ``selected_tags.csv``.

Format (as shipped in the SmilingWolf tagger repositories): CSV with header ``tag_id,name,category,count``; row *i* after the header
is output index *i*. Categories: 9 = rating (``general``, ``sensitive``, ``questionable``, ``explicit``),
0 = general, 4 = character. Rows are selected by category value, never by position.

Names are unique within the rating rows and within the general + character rows (Danbooru tag names are unique;
the label files published with the WD taggers have no duplicates). A file that repeats a name there is refused: the
reference Space turns the outputs into ``{name: prob}`` dicts, so a repeated name silently kept only one of its
outputs' probabilities, whichever came last.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["TagLabels", "load_labels", "RATING", "GENERAL", "CHARACTER"]

GENERAL = 0
CHARACTER = 4
RATING = 9


@dataclasses.dataclass(frozen=True)
class TagLabels:
    """Tag names and categories, indexed like the model outputs.

    Attributes:
        names: tag names as in the CSV (underscores kept).
        categories: int category per tag (0 general, 4 character, 9 rating; others are treated as general).
    """

    names: tuple[str, ...]
    categories: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.categories):
            raise ValueError(f"{len(self.names)} names but {len(self.categories)} categories")

    def __len__(self) -> int:
        return len(self.names)

    def indices(self, category: int) -> Tensor:
        """int64 indices of one category (general also takes any category other than 4 and 9)."""
        if category == GENERAL:
            keep = [c not in (CHARACTER, RATING) for c in self.categories]
        else:
            keep = [c == category for c in self.categories]
        return torch.tensor([i for i, k in enumerate(keep) if k], dtype=torch.long)

    @classmethod
    def from_csv_text(cls, text: str, source: str = "<text>") -> TagLabels:
        """Parse the CSV text (real CSV: names may hold commas and quotes)."""
        reader = csv.DictReader(io.StringIO(text))
        fields = set(reader.fieldnames or ())
        if not {"name", "category"} <= fields:
            raise ValueError(f"{source}: expected a header with 'name' and 'category' columns, got {sorted(fields)}")
        names: list[str] = []
        categories: list[int] = []
        for line, row in enumerate(reader, start=2):
            name, category = row.get("name"), row.get("category")
            if name is None or category is None or not name:
                raise ValueError(f"{source}: line {line} has no name or category: {row}")
            try:
                categories.append(int(category))
            except ValueError:
                raise ValueError(f"{source}: line {line}: category {category!r} is not an integer") from None
            names.append(name)
        if not names:
            raise ValueError(f"{source}: no tags")
        _check_unique(names, categories, source)
        return cls(tuple(names), tuple(categories))


def _check_unique(names: list[str], categories: list[int], source: str) -> None:
    """Refuse a name that appears twice among the ratings, or twice among the general + character tags (the outputs
    that share one ``{name: prob}`` dict); a rating and a tag of the same name are in different dicts and allowed."""
    lines: dict[tuple[bool, str], list[int]] = {}
    for row, (name, category) in enumerate(zip(names, categories)):
        lines.setdefault((category == RATING, name), []).append(row + 2)  # line 1 is the header
    repeated = [f"{name!r} (lines {', '.join(map(str, rows))})" for (_, name), rows in lines.items() if len(rows) > 1]
    if repeated:
        shown = "; ".join(repeated[:5]) + (f"; and {len(repeated) - 5} more" if len(repeated) > 5 else "")
        raise ValueError(
            f"{source}: {len(repeated)} tag name(s) appear more than once: {shown}. Each output of the model needs "
            "its own name (a repeated name would keep only one of their probabilities); fix or re-download the file"
        )


def load_labels(path: str | Path) -> TagLabels:
    """Read ``selected_tags.csv`` (UTF-8; a byte-order mark, as spreadsheet programs write, is skipped)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise FileNotFoundError(f"tag label file not found: {path}") from None
    return TagLabels.from_csv_text(text, source=str(path))
