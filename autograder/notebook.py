"""What the kit reads from nbgrader notebooks: which cells are graded answers, which are set-up.

The same rule is written into the released notebooks' `load_earlier_parts` cell (so a student's later parts can
use their earlier functions without this package): a notebook's *answer code* is its code cells tagged `setup`
(imports, constants, teaching helpers) and its nbgrader solution cells (the graded functions), in order.
"""

from __future__ import annotations

import json
from pathlib import Path


def read_notebook(path: str | Path):
    """A notebook as nbformat reads it (validated; attribute access to cells)."""
    import nbformat  # here, not above: importing it costs about 1.4 s (jsonschema's format checkers)

    return nbformat.read(str(path), as_version=nbformat.NO_CONVERT)


def read_trusted_notebook(path: str | Path) -> dict:
    """An instructor's notebook (solutions/, the release) as plain JSON, for the grading workers' start-up: no
    validation (the kit's tests validate those notebooks), and none of nbformat's import time."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cell_source(cell) -> str:
    """A cell's source, whether nbformat read it (a string) or plain JSON (a string or a list of lines)."""
    source = cell["source"]
    return source if isinstance(source, str) else "".join(source)


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_setup_cell(cell) -> bool:
    return cell.get("cell_type") == "code" and "setup" in cell.get("metadata", {}).get("tags", [])


def is_graded_function_cell(cell) -> bool:
    """A graded function: a code cell that is an nbgrader solution cell. In the kit's notebooks it is also a grade
    cell with the function's points (nbgrader's "Manually graded answer" type: nbgrader's own test cells do not
    grade it, the kit does), so the cells nbgrader records from them are the ones the kit grades into."""
    meta = nbgrader_meta(cell)
    return cell.get("cell_type") == "code" and bool(meta.get("solution"))


def is_written_answer_cell(cell) -> bool:
    """A manually graded written answer (markdown solution cell with points)."""
    meta = nbgrader_meta(cell)
    return cell.get("cell_type") == "markdown" and bool(meta.get("solution")) and bool(meta.get("grade"))


def answer_code(nb) -> list[str]:
    """Sources of the setup and graded function cells, in notebook order."""
    return [cell_source(cell) for cell in nb["cells"] if is_setup_cell(cell) or is_graded_function_cell(cell)]


def graded_function_ids(nb) -> list[str]:
    return [nbgrader_meta(cell)["grade_id"] for cell in nb["cells"] if is_graded_function_cell(cell)]


def written_answers(nb) -> dict[str, float]:
    """grade_id -> points of the manually graded written answers."""
    return {nbgrader_meta(c)["grade_id"]: float(nbgrader_meta(c).get("points", 0)) for c in nb["cells"]
            if is_written_answer_cell(c)}
