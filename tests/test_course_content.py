"""What the notebooks tell the student about the assignment itself: the points of every graded function and written
question (they must agree with course.yml and the nbgrader metadata, and Part 1's intro states the split), and the
public checks of later parts naming the earlier part to fix first."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import numpy as np
import pytest

from autograder import REPO_ROOT
from autograder.check import CheckResult, format_results
from autograder.course import load_course

ASSIGNMENT = load_course().assignment("vanishing_gradients")
SOLUTIONS = REPO_ROOT / "solutions" / "vanishing_gradients"
POINTS = dict(ASSIGNMENT.points)


def cells(name):
    return nbformat.read(SOLUTIONS / name, as_version=4).cells


def nbgrader(cell):
    return cell.metadata.get("nbgrader", {})


def written_answers():
    """(notebook, index, points) of every answer cell graded by hand."""
    return [(name, i, nbgrader(c)["points"]) for name in ASSIGNMENT.notebooks for i, c in enumerate(cells(name))
            if c.cell_type == "markdown" and nbgrader(c).get("grade") and nbgrader(c).get("solution")]


@pytest.mark.parametrize("name", ASSIGNMENT.notebooks)
def test_each_graded_function_shows_its_points_from_course_yml(name):
    nb = cells(name)
    for i, cell in enumerate(nb):
        function = nbgrader(cell).get("grade_id")
        if cell.cell_type == "code" and nbgrader(cell).get("solution") and function in POINTS:
            heading = next(c.source for c in reversed(nb[:i]) if c.cell_type == "markdown"
                           and re.search(r"^## ", c.source, re.M))
            assert f"(`{function}`, {POINTS[function]:g} point" in heading, f"{name}: {function}'s heading"


def test_each_written_question_shows_its_points_from_the_metadata():
    for name, index, points in written_answers():
        question = cells(name)[index - 1].source
        assert re.search(rf"\*\*Question [^*]*\b{points} points?, written\)\.\*\*", question), f"{name} cell {index}"


def test_part1_states_the_split_of_autograded_and_written_points():
    autograded, written = sum(POINTS.values()), sum(points for *_, points in written_answers())
    intro = re.sub(r"\s+", " ", cells("1_bptt.ipynb")[0].source)
    assert (f"The assignment has {autograded + written:g} points: {autograded:g} autograded" in intro
            and f"and {written:g} for written answers" in intro), "update the points paragraph of Part 1's intro"


def load_reference(edits=()):
    """Parts 1 and 4's setup and solution cells, with exact text edits, executed into a namespace."""
    namespace = {}
    for name in ["1_bptt.ipynb", "4_truncated_bptt.ipynb"]:
        for cell in cells(name):
            if cell.cell_type == "code" and ("setup" in cell.metadata.get("tags", []) or nbgrader(cell).get("solution")):
                source = cell.source
                for old, new in edits:
                    source = source.replace(old, new)
                exec(source, namespace)
    return namespace


@pytest.mark.parametrize("edit, part_to_fix", [
    (("rnn_step_backward(dh[:, t] + carried, cache[t])", "rnn_step_backward(dh[:, t], cache[t])"), 1),
    (("db = da.sum(axis=0)", "db = da.mean(axis=0)"), 1),
    (("stop = max(tau - k2, 0)", "stop = max(tau - k2 - 1, 0)"), 4),
])
def test_later_checks_name_the_earlier_part_to_fix(edit, part_to_fix):
    assert edit[0] in "".join(c.source for n in ["1_bptt.ipynb", "4_truncated_bptt.ipynb"] for c in cells(n))
    reference = load_reference()
    reference["require_part"](1)
    reference["require_part"](4)
    broken = load_reference([edit])
    with pytest.raises(AssertionError, match=re.escape(f"(uses your Part {part_to_fix} code; make Part "
                                                       f"{part_to_fix} pass first)")):
        broken["require_part"](4)
    if part_to_fix == 4:
        broken["require_part"](1)  # Part 1 is fine: no blame there


def test_the_check_cells_of_parts_2_4_and_5_call_require_part_first():
    for name in ["2_gradient_decay.ipynb", "4_truncated_bptt.ipynb", "5_long_range_pronoun.ipynb"]:
        for cell in cells(name):
            source = cell.source
            if nbgrader(cell).get("grade_id", "").startswith("check_") and ("rnn_forward" in source
                                                                           or "antecedent_gradient_ratio" in source):
                assert source.startswith("require_part("), f"{name}: {nbgrader(cell)['grade_id']}"


def test_check_says_so_when_a_notebook_has_no_public_checks():
    text = format_results(Path("6_exploding_vs_vanishing.ipynb"), [])
    assert "no public checks" in text and "0 of 0" not in text
    assert "1 of 1 public checks pass" in format_results(Path("x.ipynb"), [CheckResult("check_x", True, "")])


def test_label_points_script_writes_the_labels_from_the_data(tmp_path):
    """scripts/label_points.py: on the repository's notebooks it changes nothing; with other points, or a question
    without its label, it writes the new figures (the lead runs it after adding a part)."""
    import importlib.util
    import shutil

    spec = importlib.util.spec_from_file_location("label_points", REPO_ROOT / "scripts" / "label_points.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    folder = tmp_path / "vanishing_gradients"
    shutil.copytree(SOLUTIONS, folder)
    notebooks = list(ASSIGNMENT.notebooks)
    assert script.label(folder, notebooks, POINTS) == (sum(POINTS.values()), sum(p for *_, p in written_answers()))
    for name in notebooks:
        assert (folder / name).read_bytes() == (SOLUTIONS / name).read_bytes(), f"{name} changed"
    part6 = nbformat.read(folder / "6_exploding_vs_vanishing.ipynb", as_version=4)
    question = next(c for c in part6.cells if "**Question 6.3" in c.source)
    question.source = re.sub(r"\*\*Question 6\.3 \([^)]*\)\.\*\*", "**Question 6.3.**", question.source)
    nbformat.write(part6, folder / "6_exploding_vs_vanishing.ipynb")
    script.label(folder, notebooks, {**POINTS, "rnn_backward": 12})
    text = "".join(c.source for c in nbformat.read(folder / "1_bptt.ipynb", as_version=4).cells)
    assert "(`rnn_backward`, 12 points, autograded)" in text and "(`rnn_backward`, 10 points" not in text
    assert f"{sum(POINTS.values()) + 2:g} autograded" in re.sub(r"\s+", " ", text)
    part6_text = "".join(c.source for c in nbformat.read(folder / "6_exploding_vs_vanishing.ipynb", as_version=4).cells)
    assert "**Question 6.3 (3 points, written).**" in part6_text
