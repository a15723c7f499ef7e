"""Our scores in an nbgrader gradebook: `nbgrader export` totals, regrades, manual grades of the written answers
(through the Gradebook API and through formgrader's own HTTP API), with the real nbgrader package."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from autograder import REPO_ROOT
from autograder.course import load_course
from autograder.gradebook import GradebookError, function_scores, record_grades, stage_for_formgrader
from autograder.notebook import nbgrader_meta, read_notebook, written_answers

pytestmark = pytest.mark.slow

ASSIGNMENT = "vanishing_gradients"
COURSE = load_course()
POINTS = dict(COURSE.assignment(ASSIGNMENT).points)
SOURCE = REPO_ROOT / COURSE.solutions_dir / ASSIGNMENT
RELEASE = REPO_ROOT / COURSE.release_dir / ASSIGNMENT
NOTEBOOKS = COURSE.assignment(ASSIGNMENT).notebooks
WRITTEN = {name: written_answers(read_notebook(SOURCE / name)) for name in NOTEBOOKS}
WRITTEN_MAX = sum(sum(cells.values()) for cells in WRITTEN.values())
AUTO_MAX = sum(POINTS.values())
GRADE_CELLS = len(POINTS) + sum(len(cells) for cells in WRITTEN.values())
VENV_BIN = str(Path(sys.executable).parent)


def document(student: str, fractions: dict[str, float] | None = None) -> dict:
    """A results.json document: two tests per graded function, each worth half its points; `fractions` gives the
    share of a function's points earned (default: all of them)."""
    fractions = fractions or {}
    tests = []
    for function, points in POINTS.items():
        earned = fractions.get(function, 1.0) * points
        for part, score in (("case 1", earned / 2), ("case 2", earned / 2)):
            tests.append({"name": f"{function}: {part}", "score": round(score, 6), "max_score": points / 2,
                          "status": "passed" if score == points / 2 else "failed", "output": "",
                          "visibility": "visible", "tags": [function]})
    return {"score": round(sum(t["score"] for t in tests), 6), "max_score": AUTO_MAX, "execution_time": 1.0,
            "output": "", "visibility": "visible", "stdout_visibility": "hidden", "tests": tests,
            "extra_data": {"student": student, "assignment": ASSIGNMENT, "isolation": "process", "files": [],
                           "load_errors": []}}


DOCUMENTS = {
    "alice": document("alice"),
    "bob": document("bob", {"rnn_backward": 0.4, "clip_grad_norm": 0.0, "one_hot": 0.5, "effective_horizon": 1 / 3}),
    "carol": document("carol", {function: 0.0 for function in POINTS}),
}


def db_url(db: Path) -> str:
    return f"sqlite:///{db}"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Path:
    """A gradebook created by record_grades from nothing, with the three documents; tests work on copies."""
    db = tmp_path_factory.mktemp("gradebook-template") / "gradebook.db"
    record_grades(db_url(db), COURSE, ASSIGNMENT, DOCUMENTS)
    return db


@pytest.fixture
def course_dir(tmp_path, recorded) -> Path:
    root = tmp_path / "course"
    root.mkdir()
    shutil.copyfile(recorded, root / "gradebook.db")
    return root


def nbgrader_env(root: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")  # nbgrader runs `alembic`
    env["JUPYTER_CONFIG_DIR"] = str(root / ".jupyter")          # no user-level configuration
    env["JUPYTER_RUNTIME_DIR"] = str(root / ".jupyter-runtime")
    env["JUPYTER_DATA_DIR"] = str(root / ".jupyter-data")
    return env


def export(root: Path) -> dict[str, dict]:
    """`nbgrader export` of the course's gradebook: student -> CSV row of the assignment."""
    out = root / "grades.csv"
    command = [sys.executable, "-m", "nbgrader", "export", f"--to={out}", f"--CourseDirectory.root={root}",
               f"--CourseDirectory.db_url={db_url(root / 'gradebook.db')}",
               f"--CourseDirectory.course_id={COURSE.course_id}"]
    result = subprocess.run(command, cwd=root, env=nbgrader_env(root), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert all(row["assignment"] == ASSIGNMENT for row in rows)
    return {row["student_id"]: row for row in rows}


def gradebook(root: Path):
    from nbgrader.api import Gradebook

    return Gradebook(db_url(root / "gradebook.db"), course_id=COURSE.course_id)


def written_grade(gb, student: str):
    """The grade of one written answer (a markdown solution cell with points) of `student`."""
    for name in NOTEBOOKS:
        notebook = gb.find_notebook(Path(name).stem, ASSIGNMENT)
        for cell in notebook.grade_cells:
            if cell.cell_type == "markdown":
                return gb.find_grade(cell.name, notebook.name, ASSIGNMENT, student)
    raise AssertionError("no written-answer grade cell in the gradebook")


def assert_one_row_per_student_and_cell(gb) -> None:
    from nbgrader.api import Grade, SubmittedAssignment

    submissions = gb.db.query(SubmittedAssignment).all()
    assert sorted(s.student.id for s in submissions) == sorted(DOCUMENTS)
    pairs = [(g.student.id, g.cell_id) for g in gb.db.query(Grade).all()]
    assert len(pairs) == len(set(pairs)) == len(DOCUMENTS) * GRADE_CELLS


def test_gradebook_mirrors_the_notebooks_and_the_documents(course_dir):
    with gradebook(course_dir) as gb:
        assignment = gb.find_assignment(ASSIGNMENT)
        assert sorted(nb.name for nb in assignment.notebooks) == sorted(Path(n).stem for n in NOTEBOOKS)
        assert assignment.max_score == pytest.approx(AUTO_MAX + WRITTEN_MAX)
        assert assignment.duedate is not None
        for name in NOTEBOOKS:
            nb = read_notebook(SOURCE / name)
            notebook = gb.find_notebook(Path(name).stem, ASSIGNMENT)
            functions = {nbgrader_meta(c)["grade_id"] for c in nb.cells if nbgrader_meta(c).get("solution")
                         and c.cell_type == "code"}
            expected = {f: (float(POINTS[f]), "code") for f in functions}
            expected |= {cell: (points, "markdown") for cell, points in WRITTEN[name].items()}
            assert {c.name: (c.max_score, c.cell_type) for c in notebook.grade_cells} == expected, name
            # nbgrader's own records: every solution cell, and a source cell for each locked/solution/grade cell
            assert {c.name for c in notebook.solution_cells} == {nbgrader_meta(c)["grade_id"] for c in nb.cells
                                                                 if nbgrader_meta(c).get("solution")}
            assert {c.name for c in notebook.source_cells} == {nbgrader_meta(c)["grade_id"] for c in nb.cells
                                                               if nbgrader_meta(c).get("grade_id")}
        for student, doc in DOCUMENTS.items():
            submission = gb.find_submission(ASSIGNMENT, student)
            assert submission.code_score == pytest.approx(doc["score"])
            assert submission.written_score == 0
            assert submission.needs_manual_grade  # the written answers wait for formgrader
            expected = function_scores(student, doc, COURSE.assignment(ASSIGNMENT))
            for notebook in submission.notebooks:
                for grade in notebook.grades:
                    if grade.cell_type == "code":
                        assert grade.auto_score == pytest.approx(expected[grade.name])
                        assert not grade.needs_manual_grade
                    else:
                        assert grade.auto_score is None and grade.manual_score is None
                        assert grade.needs_manual_grade
        assert_one_row_per_student_and_cell(gb)


def test_export_has_each_students_autograded_total(course_dir):
    rows = export(course_dir)
    assert sorted(rows) == sorted(DOCUMENTS)
    for student, doc in DOCUMENTS.items():
        assert float(rows[student]["raw_score"]) == pytest.approx(doc["score"])
        assert float(rows[student]["score"]) == pytest.approx(doc["score"])
        assert float(rows[student]["max_score"]) == pytest.approx(AUTO_MAX + WRITTEN_MAX)
    assert float(rows["alice"]["score"]) == pytest.approx(AUTO_MAX)
    assert float(rows["carol"]["score"]) == 0


def test_regrade_and_a_manual_grade_update_the_same_rows(course_dir, monkeypatch):
    """A regrade (bob's new scores) and a manual score on a written answer (carol's) both reach the export; the
    gradebook keeps one submission per student and one grade per (student, cell); a regrade keeps manual scores."""
    import autograder.gradebook as module

    def must_not_run(*args):
        raise AssertionError("generate_assignment ran although the notebooks did not change")

    monkeypatch.setattr(module, "_generate_assignment", must_not_run)
    url = db_url(course_dir / "gradebook.db")
    regraded = dict(DOCUMENTS, bob=document("bob", {"rnn_backward": 0.9, "hidden_grad_norms": 0.25}))
    assert regraded["bob"]["score"] != DOCUMENTS["bob"]["score"]
    record_grades(url, COURSE, ASSIGNMENT, regraded)
    record_grades(url, COURSE, ASSIGNMENT, regraded)  # twice: still no duplicates
    with gradebook(course_dir) as gb:
        grade = written_grade(gb, "carol")
        manual = grade.max_score / 2
        grade.manual_score = manual
        grade.needs_manual_grade = False
        gb.db.commit()

    rows = export(course_dir)
    assert float(rows["alice"]["score"]) == pytest.approx(DOCUMENTS["alice"]["score"])
    assert float(rows["bob"]["score"]) == pytest.approx(regraded["bob"]["score"])
    assert float(rows["carol"]["score"]) == pytest.approx(DOCUMENTS["carol"]["score"] + manual)
    with gradebook(course_dir) as gb:
        assert_one_row_per_student_and_cell(gb)
        assert gb.find_grade("rnn_backward", "1_bptt", ASSIGNMENT, "bob").auto_score == pytest.approx(9.0)

    record_grades(url, COURSE, ASSIGNMENT, DOCUMENTS)  # a regrade keeps the manual score
    with gradebook(course_dir) as gb:
        assert gb.find_submission(ASSIGNMENT, "carol").score == pytest.approx(DOCUMENTS["carol"]["score"] + manual)
        assert written_grade(gb, "carol").manual_score == manual
        assert gb.find_submission(ASSIGNMENT, "bob").score == pytest.approx(DOCUMENTS["bob"]["score"])
        assert_one_row_per_student_and_cell(gb)


def test_changed_notebooks_are_recorded_again(tmp_path, course_dir):
    """An edited notebook and new points reach the gradebook (nbgrader keeps the submissions); a notebook whose
    cells changed while submissions exist is refused with nbgrader's reason."""
    root = tmp_path / "kit"
    shutil.copytree(SOURCE, root / COURSE.solutions_dir / ASSIGNMENT)
    path = root / COURSE.solutions_dir / ASSIGNMENT / "1_bptt.ipynb"
    nb = read_notebook(path)
    check = next(c for c in nb.cells if nbgrader_meta(c).get("grade_id") == "check_rnn_step")
    check.source += "\n# an instructor's edit\n"
    import nbformat

    nbformat.write(nb, str(path))
    assignment = COURSE.assignment(ASSIGNMENT)
    course = COURSE.model_copy(update={"assignments": [
        assignment.model_copy(update={"points": dict(POINTS, rnn_backward=12.0)})]})
    url = db_url(course_dir / "gradebook.db")

    record_grades(url, course, ASSIGNMENT, DOCUMENTS, root=root)
    with gradebook(course_dir) as gb:
        assert gb.find_source_cell("check_rnn_step", "1_bptt", ASSIGNMENT).source.endswith("# an instructor's edit\n")
        assert gb.find_grade_cell("rnn_backward", "1_bptt", ASSIGNMENT).max_score == 12.0
        assert gb.find_assignment(ASSIGNMENT).max_score == pytest.approx(AUTO_MAX + 2 + WRITTEN_MAX)
        assert_one_row_per_student_and_cell(gb)

    extra = nbformat.v4.new_markdown_cell("Another question?", metadata={"nbgrader": {
        "grade": True, "solution": True, "locked": False, "task": False, "points": 1, "grade_id": "answer_extra",
        "schema_version": 3}})
    nb.cells.append(extra)
    nbformat.write(nb, str(path))
    with pytest.raises(GradebookError, match="Cannot add or remove cells"):
        record_grades(url, course, ASSIGNMENT, DOCUMENTS, root=root)


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("tests"), "not a results document"),
    (lambda d: d["extra_data"].update(student="mallory"), "for student 'mallory'"),
    (lambda d: d["extra_data"].update(assignment="other"), "for assignment 'other'"),
    (lambda d: d["tests"][0].update(score=float("nan")), "invalid score"),
    (lambda d: d["tests"][0].update(score=100.0), "more than its"),
])
def test_bad_documents_are_refused_before_the_gradebook_is_touched(tmp_path, change, message):
    doc = document("alice")
    change(doc)
    with pytest.raises(GradebookError, match=message):
        record_grades(db_url(tmp_path / "gradebook.db"), COURSE, ASSIGNMENT, {"alice": doc})
    assert not (tmp_path / "gradebook.db").exists()


# ---------------------------------------------------------------------------------------------------------------
# formgrader: a real Jupyter server with nbgrader's server extension, driven through formgrader's HTTP API


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path):
        self.root, self.token, self.port = root, uuid.uuid4().hex, free_port()
        self.log = open(root / "server.log", "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_server", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", "--ServerApp.ip=127.0.0.1",
             "--ServerApp.open_browser=False", f"--ServerApp.root_dir={root}", "--allow-root",
             # only what formgrader needs (nbgrader's extensions stay as the environment enables them)
             *(f"--ServerApp.jpserver_extensions={name}=False" for name in
               ("jupyterlab", "jupyter_lsp", "jupyterlab_jupytext", "jupyter_server_terminals", "notebook"))],
            cwd=root, env=nbgrader_env(root), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, str]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def api(self, method: str, path: str, body: dict | None = None):
        status, text = self.request(method, path, body)
        assert status == 200, f"{method} {path}: HTTP {status}\n{text[:2000]}\n{self.output()}"
        return json.loads(text)

    def wait_ready(self, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"jupyter server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if self.request("GET", "/formgrader/api/status")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"jupyter server did not answer within {seconds} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return (self.root / "server.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()


@pytest.mark.timeout(240)
def test_formgrader_http_api_grades_a_written_answer(course_dir, tmp_path):
    (course_dir / "exchange").mkdir()
    (course_dir / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course_dir)!r}\n"
        f"c.CourseDirectory.db_url = {db_url(course_dir / 'gradebook.db')!r}\n"
        f"c.CourseDirectory.course_id = {COURSE.course_id!r}\n"
        f"c.Exchange.root = {str(course_dir / 'exchange')!r}\n")
    # formgrader lists a submission and renders its grading page only from the notebooks on disk
    submission = tmp_path / "submissions" / "bob"
    shutil.copytree(RELEASE, submission)
    stage_for_formgrader(course_dir, ASSIGNMENT, {"bob": submission})
    notebook = Path(NOTEBOOKS[0]).stem
    written = next(iter(WRITTEN[NOTEBOOKS[0]]))

    server = Server(course_dir)
    try:
        server.wait_ready()
        listed = server.api("GET", f"/formgrader/api/submitted_notebooks/{ASSIGNMENT}/{notebook}")
        [entry] = [s for s in listed if s["student"] == "bob"]
        grades = {g["name"]: g for g in server.api("GET", f"/formgrader/api/grades?submission_id={entry['id']}")}
        assert grades["rnn_backward"]["auto_score"] == pytest.approx(4.0)  # what record_grades wrote
        assert grades[written]["needs_manual_grade"] and grades[written]["auto_score"] is None

        manual = WRITTEN[NOTEBOOKS[0]][written] - 0.5
        updated = server.api("PUT", f"/formgrader/api/grade/{grades[written]['id']}", {"manual_score": manual})
        assert updated["manual_score"] == manual and not updated["needs_manual_grade"]
        comments = {c["name"]: c for c in server.api("GET", f"/formgrader/api/comments?submission_id={entry['id']}")}
        text = "Right idea; say which factor vanishes."
        server.api("PUT", f"/formgrader/api/comment/{comments[written]['id']}", {"manual_comment": text})

        summary = server.api("GET", f"/formgrader/api/submission/{ASSIGNMENT}/bob")
        assert summary["autograded"] and summary["score"] == pytest.approx(DOCUMENTS["bob"]["score"] + manual)
        status, page = server.request("GET", f"/formgrader/submissions/{entry['id']}/")  # the grading page
        assert status == 200 and written in page, page[:2000]
    finally:
        server.stop()

    rows = export(course_dir)
    assert float(rows["bob"]["score"]) == pytest.approx(DOCUMENTS["bob"]["score"] + manual)
    assert float(rows["alice"]["score"]) == pytest.approx(DOCUMENTS["alice"]["score"])
    with gradebook(course_dir) as gb:
        assert gb.find_comment(written, notebook, ASSIGNMENT, "bob").manual_comment == text


def test_release_to_export_round_trip(tmp_path):
    """release -> simulated students (the example class's reference, a mistake, the untouched release) ->
    `autograder grade --gradebook` -> `nbgrader export`: the exported autograded scores are the graded ones."""
    from autograder.build_class import build_student, load_spec

    students = load_spec(REPO_ROOT / "examples" / "class.yml")["students"]
    subs = tmp_path / "submitted"
    for name in ("ada_reference", "cleo_no_carried_gradient", "ben_untouched_release"):
        build_student(name, students[name], COURSE, "vanishing_gradients", subs)
    course_root = tmp_path / "course"
    course_root.mkdir()
    db = course_root / "gradebook.db"
    out = tmp_path / "out"
    command = [sys.executable, "-m", "autograder", "grade", str(subs), "--out", str(out), "--jobs", "2",
               "--gradebook", str(db)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "nbgrader gradebook" in result.stdout
    rows = export(course_root)
    for name in ("ada_reference", "cleo_no_carried_gradient", "ben_untouched_release"):
        graded = json.loads((out / name / "results.json").read_text())["score"]
        assert float(rows[name]["raw_score"]) == pytest.approx(graded), name
    assert float(rows["ada_reference"]["raw_score"]) == pytest.approx(AUTO_MAX)
    assert float(rows["ben_untouched_release"]["raw_score"]) == 0
