"""Write the points into the solution notebooks' text, from the data that grades them.

Each graded function's section heading ends with "(`name`, N points, autograded)" (N from course.yml), each written
question starts "**Question X (..., N points, written).**" (N from its answer cell's nbgrader metadata), and Part 1's
intro states the split: "The assignment has T points: A autograded, ... and W for written answers". Run it after
changing points or adding a part or a question, then `autograder release`; it only rewrites those labels, so running
it twice changes nothing. tests/test_course_content.py checks that the notebooks agree with the data.

    .venv/bin/python scripts/label_points.py [--course course.yml]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import nbformat

from autograder.course import load_course

AUTOGRADED = re.compile(r" \(`[\w]+`, [\d.]+ points?, autograded\)$")
QUESTION = re.compile(r"\*\*Question ([^*]*?)\.\*\*")
SPLIT = re.compile(r"The assignment has [\d.]+ points: [\d.]+ autograded(.*?)and [\d.]+ for written answers", re.S)


def plural(n: float) -> str:
    return f"{n:g} point{'s' if n != 1 else ''}"


def label_question(match: re.Match, points: float) -> str:
    """'**Question 2 (the RNN).**' -> '**Question 2 (the RNN, 3 points, written).**' (old labels replaced)."""
    name = re.sub(r", [\d.]+ points?, written\)$", ")", match.group(1))  # "1 (a derivation, 3 points, written)"
    name = re.sub(r" \([\d.]+ points?, written\)$", "", name)  # "6.1 (2 points, written)"
    if name.endswith(")"):  # "1 (a derivation)": the points go inside the parentheses
        return f"**Question {name[:-1]}, {plural(points)}, written).**"
    return f"**Question {name} ({plural(points)}, written).**"


def label(folder: Path, notebooks: list[str], points: dict[str, float]) -> tuple[float, float]:
    written = 0.0
    paths = [folder / name for name in notebooks]
    books = {path: nbformat.read(path, as_version=4) for path in paths}
    for path, nb in books.items():
        cells = nb.cells
        for i, cell in enumerate(cells):
            meta = cell.metadata.get("nbgrader", {})
            name = meta.get("grade_id")
            if cell.cell_type == "code" and meta.get("solution") and name in points:
                j = max(k for k in range(i) if cells[k].cell_type == "markdown"
                        and re.search(r"^## ", cells[k].source, re.M))
                lines = cells[j].source.split("\n")
                h = max(n for n, line in enumerate(lines) if line.startswith("## "))
                lines[h] = AUTOGRADED.sub("", lines[h]) + f" (`{name}`, {plural(points[name])}, autograded)"
                cells[j].source = "\n".join(lines)
            if cell.cell_type == "markdown" and meta.get("grade") and meta.get("solution"):
                written += meta["points"]
                question = cells[i - 1]
                if not QUESTION.search(question.source):
                    raise SystemExit(f"{path.name}: the cell before answer {name} has no '**Question ...**'")
                question.source = QUESTION.sub(lambda m: label_question(m, meta["points"]), question.source, count=1)
    autograded = float(sum(points.values()))
    intro = books[paths[0]].cells[0]
    if not SPLIT.search(intro.source):
        raise SystemExit(f"{paths[0].name}: its first cell has no 'The assignment has ... points' paragraph")
    intro.source = SPLIT.sub(lambda m: f"The assignment has {autograded + written:g} points: {autograded:g} autograded"
                             f"{m.group(1)}and {written:g} for written answers", intro.source, count=1)
    for path, nb in books.items():
        nbformat.write(nb, path)
    return autograded, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--course", default=str(Path(__file__).resolve().parents[1] / "course.yml"))
    args = parser.parse_args()
    course = load_course(args.course)
    for assignment in course.assignments:
        folder = Path(args.course).resolve().parent / course.solutions_dir / assignment.id
        autograded, written = label(folder, list(assignment.notebooks), dict(assignment.points))
        print(f"{assignment.id}: {autograded:g} autograded + {written:g} written points, labelled in {folder}")


if __name__ == "__main__":
    main()
