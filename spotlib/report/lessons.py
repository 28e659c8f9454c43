"""A notebook read the way the report shows it: its figures in the notebook's order, with its lessons.

A markdown cell tagged `lesson` (cell metadata `tags`) is a lesson: the report prints it where the
notebook has it, next to the figures around it, so a reader of report.md sees the derivation and
the reading that a student sees in the notebook. Code cells give the figures they draw
(`plots.<name>(` for a figure of the stage) and the lines they print (`tether.<name>(` inside
`print(...)`), which the report computes again from the stage's files. A cell tagged `exercise` is
the student's to run and is left out.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

LESSON_TAG, EXERCISE_TAG = "lesson", "exercise"
_FIGURE_CALL = re.compile(r"\bplots\.(\w+)\(")
_PRINTED_CALL = re.compile(r"print\(\s*tether\.(\w+)\(")


@dataclass(frozen=True)
class Item:
    kind: str   # "lesson" (markdown text), "figure" (a plots function), "printed" (a tether function)
    value: str


def tags(cell: dict) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def read(notebook: Path, figures: set[str]) -> list[Item]:
    """The notebook's lessons, figures of `figures` and printed lines, in cell order."""
    items = []
    for cell in json.loads(Path(notebook).read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "markdown" and LESSON_TAG in tags(cell):
            items.append(Item("lesson", source.strip()))
        elif cell["cell_type"] == "code" and EXERCISE_TAG not in tags(cell):
            items += [Item("printed", name) for name in _PRINTED_CALL.findall(source)]
            items += [Item("figure", name) for name in _FIGURE_CALL.findall(source) if name in figures]
    return items


def lesson_cells(notebook: Path) -> list[str]:
    """The text of every lesson cell of a notebook."""
    return [item.value for item in read(notebook, set()) if item.kind == "lesson"]


def demote_headings(text: str, levels: int = 1) -> str:
    """A notebook's `## ` is a report's `### ` (the report's stages are `## `)."""
    return re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + levels) + " ", text, flags=re.M)
