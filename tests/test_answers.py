"""`autograder answers`: a student's written answers under the release's questions, as HTML or a PDF."""

from __future__ import annotations

import shutil

import nbformat
import pytest
from click.testing import CliRunner

from autograder import REPO_ROOT
from autograder.answers import find_chromium
from autograder.cli import main
from autograder.course import load_course
from autograder.notebook import nbgrader_meta, read_notebook, written_answers

COURSE = load_course()
ASSIGNMENT = COURSE.assignment("vanishing_gradients")
RELEASE = REPO_ROOT / COURSE.release_dir / ASSIGNMENT.id
SOURCE = REPO_ROOT / COURSE.solutions_dir / ASSIGNMENT.id


@pytest.fixture
def student(tmp_path):
    """The release with every written answer filled in, one deleted, and one that tries to run a script; the
    student also rewrote a question."""
    folder = tmp_path / "ada" / ASSIGNMENT.id  # nbgrader's layout
    shutil.copytree(RELEASE, folder)
    path = folder / "2_gradient_decay.ipynb"
    nb = read_notebook(path)
    for i, cell in enumerate(nb.cells):
        grade_id = nbgrader_meta(cell).get("grade_id", "")
        if grade_id == "answer_saturation":
            cell.source = "The tanh derivative $1 - h^2$ is tiny when saturated. <script>alert('x')</script>"
            nb.cells[i - 1].source = "**Question 1.** Say anything you like."
        elif grade_id == "answer_horizon":
            cell.source = "Only the LSTM: the horizon is 20 steps."
    nbformat.write(nb, str(path))
    bptt = folder / "1_bptt.ipynb"
    nb = read_notebook(bptt)
    nb.cells = [c for c in nb.cells if nbgrader_meta(c).get("grade_id") not in written_answers(nb)]
    nbformat.write(nb, str(bptt))
    return tmp_path / "ada"


def test_answers_as_html(student, tmp_path):
    dest = tmp_path / "ada.html"
    result = CliRunner().invoke(main, ["answers", str(student), "--to", str(dest)])
    assert result.exit_code == 0, result.output
    html = dest.read_text()
    missing = len(written_answers(read_notebook(SOURCE / "1_bptt.ipynb")))
    assert f"({missing} answers not found in the notebooks)" in result.output
    assert html.count("(no answer found in 1_bptt.ipynb)") == missing
    for name in ASSIGNMENT.notebooks:
        for grade_id, points in written_answers(read_notebook(SOURCE / name)).items():
            assert f"{name}: {grade_id} ({points:g} points)" in html
    assert "The tanh derivative" in html and "Only the LSTM: the horizon is 20 steps." in html
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html  # sanitized: shown, never run
    assert "In Part 5 the network must use a word seen up to about 40 steps earlier" in html  # the release's question
    assert "Say anything you like" not in html


@pytest.mark.slow
@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed: the PDF is printed by it")
def test_answers_as_pdf(student, tmp_path):
    dest = tmp_path / "ada.pdf"
    result = CliRunner().invoke(main, ["answers", str(student), "--to", str(dest), "--title", "Ada L."])
    assert result.exit_code == 0, result.output
    data = dest.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 10_000 and data.count(b"/Type /Page") >= 2


def test_answers_refuses_other_formats(student, tmp_path):
    result = CliRunner().invoke(main, ["answers", str(student), "--to", str(tmp_path / "ada.docx")])
    assert result.exit_code == 2 and "write a .html or a .pdf file" in result.output
