"""Every solution notebook runs top to bottom (each cell within the course's time limit); every release notebook runs up to
its first stub error (a NotImplementedError), so the public checks fail cleanly on the stubs."""

from __future__ import annotations

import shutil
import time

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from autograder import REPO_ROOT
from autograder.course import load_course
from autograder.notebook import is_graded_function_cell

ASSIGNMENT = "vanishing_gradients"
COURSE = load_course()
LIMITS = COURSE.assignment(ASSIGNMENT).limits
NOTEBOOKS = COURSE.assignment(ASSIGNMENT).notebooks

pytestmark = pytest.mark.slow


def execute(folder, name):
    """Run a notebook with a fresh kernel in `folder`; return (notebook, seconds, first error or None)."""
    nb = nbformat.read(folder / name, as_version=4)
    client = NotebookClient(nb, timeout=LIMITS.timeout_seconds, kernel_name="python3",
                            resources={"metadata": {"path": str(folder)}})
    start = time.perf_counter()
    try:
        client.execute()
        error = None
    except CellExecutionError as exc:
        error = exc
    return nb, time.perf_counter() - start, error


@pytest.fixture
def course_copy(tmp_path, monkeypatch):
    """Copies of the solution and release folders, so executing writes nothing into the repository."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for kind in (COURSE.solutions_dir, COURSE.release_dir):
        shutil.copytree(REPO_ROOT / kind / ASSIGNMENT, tmp_path / kind)
    return tmp_path


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_solution_notebook_runs_top_to_bottom(course_copy, name):
    _, _, error = execute(course_copy / COURSE.solutions_dir, name)
    assert error is None, f"{name} failed:\n{error}"  # how long it takes is a benchmark's question, not a test's


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_release_notebook_runs_up_to_its_first_stub_error(course_copy, name):
    nb, _, error = execute(course_copy / COURSE.release_dir, name)
    calls_stubs = any(is_graded_function_cell(c) for c in nb.cells) or "load_part(" in str(nb.cells)
    if calls_stubs:
        assert error is not None, f"{name} ran to the end on the stubs"
    if error is not None:
        assert error.ename == "NotImplementedError", f"{name}: first error is {error.ename}, not a stub:\n{error}"
