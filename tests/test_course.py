"""course.yml: loads, matches the solution notebooks, and reports bad keys by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autograder import REPO_ROOT
from autograder.course import CourseConfigError, load_course
from autograder.notebook import graded_function_ids, read_notebook, written_answers


@pytest.fixture(scope="module")
def course():
    return load_course()


def test_points_cover_exactly_the_graded_functions(course):
    assignment = course.assignment("vanishing_gradients")
    folder = REPO_ROOT / course.solutions_dir / assignment.id
    assert sorted(p.name for p in folder.glob("*.ipynb")) == sorted(assignment.notebooks)
    graded = [gid for name in assignment.notebooks for gid in graded_function_ids(read_notebook(folder / name))]
    assert len(graded) == len(set(graded)), "a graded function is defined in two notebooks"
    assert set(graded) == set(assignment.points)
    # each is an nbgrader grade cell worth course.yml's points, so nbgrader's own generate_assignment records the
    # cells the kit grades into (autograder/gradebook.py)
    for name in assignment.notebooks:
        for cell in read_notebook(folder / name).cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if meta.get("grade_id") in assignment.points and cell.cell_type == "code":
                assert meta.get("grade") is True and meta.get("solution") is True, meta["grade_id"]
                assert float(meta["points"]) == assignment.points[meta["grade_id"]], meta["grade_id"]


def test_every_written_answer_has_points(course):
    folder = REPO_ROOT / course.solutions_dir / "vanishing_gradients"
    answers = {}
    for name in course.assignment("vanishing_gradients").notebooks:
        answers.update(written_answers(read_notebook(folder / name)))
    assert answers and all(points > 0 for points in answers.values())


def _write(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load((REPO_ROOT / "course.yml").read_text())
    mutate(data)
    path = tmp_path / "course.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("mutate,key", [
    (lambda d: d["assignments"][0]["points"].update(rnn_backward="ten"), "assignments.0.points.rnn_backward"),
    (lambda d: d["assignments"][0]["limits"].pop("memory_mb"), "assignments.0.limits.memory_mb"),
    (lambda d: d["assignments"][0]["limits"].update(timeout_seconds=-1), "assignments.0.limits.timeout_seconds"),
    (lambda d: d.update(gradebook="x.db"), "gradebook"),
    (lambda d: d["assignments"][0].update(due="next friday"), "assignments.0.due"),
    (lambda d: d.update(timezone="Mars/Olympus_Mons"), "timezone"),
    (lambda d: d["assignments"][0].update(timezone="CEST+1"), "assignments.0.timezone"),
])
def test_bad_course_file_names_the_key(tmp_path, mutate, key):
    with pytest.raises(CourseConfigError) as error:
        load_course(_write(tmp_path, mutate))
    assert key in str(error.value)


def test_missing_and_non_yaml_course_files(tmp_path):
    with pytest.raises(CourseConfigError, match="not found"):
        load_course(tmp_path / "nope.yml")
    (tmp_path / "bad.yml").write_text("course_id: [unclosed\n")
    with pytest.raises(CourseConfigError, match="not valid YAML"):
        load_course(tmp_path / "bad.yml")


def test_unknown_assignment_lists_the_known_ones(course):
    with pytest.raises(CourseConfigError, match="vanishing_gradients"):
        course.assignment("lstm_intro")
