"""Hostile submission folders met before any student code runs (issue 20, items 6 and 7): links out of the folder,
a results.json planted for --resume, floods of empty files, what the Gradescope entry point takes as the student's
files. Fast: no sandbox (the corpus cases in tests/submissions/attacks.yml grade the same shapes end to end)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from autograder import REPO_ROOT
from autograder.course import load_course
from autograder.results import RESULTS_FILE
from autograder.submission import (MAX_COPY_DEPTH, MAX_COPY_ENTRIES, Submission, find_submissions, private_copy,
                                   read_submission)

COURSE = load_course()
ASSIGNMENT = COURSE.assignment("vanishing_gradients")
SOLUTIONS = REPO_ROOT / "solutions" / "vanishing_gradients"


def hard_link(target, link, outside):
    """link as a second name of a copy of target made in `outside` (the repository's solutions and the system's
    files never gain a name: a name left in a kept tmp folder would make the reference a hard link)."""
    outside.mkdir(exist_ok=True)
    copy = outside / f"{len(list(outside.iterdir()))}-{target.name}"
    shutil.copyfile(target, copy)
    os.link(copy, link)


# ---- --resume never takes a student's own file as their previous result ----

def forged_result(student: str, folder) -> dict:
    """Full marks, with every field current_result checks, computed as the student can (their own files)."""
    from autograder.grade import submission_digest

    return {"score": ASSIGNMENT.max_score, "max_score": ASSIGNMENT.max_score, "output": "", "tests": [
        {"name": f"{f}: forged", "score": p, "max_score": p, "status": "passed", "output": "", "tags": [f]}
        for f, p in ASSIGNMENT.points.items()],
        "extra_data": {"assignment": ASSIGNMENT.id, "student": student, "submission_sha256": submission_digest(folder)}}


@pytest.mark.parametrize("layout", ["nbgrader", "flat"])
def test_resume_never_takes_a_results_json_the_student_submitted(tmp_path, layout):
    """OUT/<student>/results.json is the student's own file where OUT is the parent of their folder (`autograder
    grade OUT/alice --student alice --out OUT`, staged, or grade_batch given OUT = SUBMISSIONS): a full-marks
    results.json beside nbgrader's <assignment>/ folder, with the digest of that folder, was taken as current."""
    from autograder.grade import GradeOptions, current_result

    entry = tmp_path / "alice"
    folder = entry / ASSIGNMENT.id if layout == "nbgrader" else entry
    folder.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "assignments" / ASSIGNMENT.id / "1_bptt.ipynb", folder)
    (entry / RESULTS_FILE).write_text(json.dumps(forged_result("alice", folder)))
    (sub,) = find_submissions(tmp_path, ASSIGNMENT.id)
    options = GradeOptions(ASSIGNMENT, tmp_path, 60, "process", course=COURSE, root=REPO_ROOT)
    assert current_result(options, sub.student, sub.folder) is None
    honest = GradeOptions(ASSIGNMENT, tmp_path / "out", 60, "process", course=COURSE, root=REPO_ROOT)
    (tmp_path / "out" / "alice").mkdir(parents=True)  # what grading wrote, in an OUT of its own: still taken
    from autograder.grade import student_entry, submission_digest

    genuine = dict(forged_result("alice", folder), extra_data={
        "assignment": ASSIGNMENT.id, "student": "alice",
        "submission_sha256": submission_digest(sub.folder, student_entry(sub.folder, "alice", ASSIGNMENT.id))})
    (tmp_path / "out" / "alice" / RESULTS_FILE).write_text(json.dumps(genuine))
    assert current_result(honest, sub.student, sub.folder)["score"] == ASSIGNMENT.max_score
    staged = tmp_path / "staged"  # the same folder staged (copied) elsewhere, OUT still its parent
    shutil.copytree(entry, staged / "alice")
    (sub,) = find_submissions(staged, ASSIGNMENT.id)
    assert current_result(options, sub.student, sub.folder) is None


# ---- links out of the folder: never read, never copied, and the student is told ----

def test_hard_and_symbolic_links_are_neither_loaded_nor_copied(tmp_path):
    """Hard links (another name of the same file) to a solutions notebook and to /etc/passwd were loaded and
    copied as the student's own files (hard_links_out in the corpus: 60 of 80 points from the release)."""
    classmate = tmp_path / "classmate"
    classmate.mkdir()
    shutil.copy(SOLUTIONS / "3_clipping.ipynb", classmate)
    student = tmp_path / "mallory"
    (student / "sub").mkdir(parents=True)
    hard_link(SOLUTIONS / "1_bptt.ipynb", student / "1_bptt.ipynb", tmp_path / "outside")
    os.link(classmate / "3_clipping.ipynb", student / "sub" / "3_clipping.ipynb")
    (student / "2_gradient_decay.ipynb").symlink_to(SOLUTIONS / "2_gradient_decay.ipynb")
    (student / "classmate").symlink_to("../classmate")
    (student / "sub" / "passwd").symlink_to("/etc/passwd")
    (student / "own.py").write_text("def rnn_forward(x, h0, Wx, Wh, b):\n    return None\n")
    hard_link(Path("/etc/passwd"), student / "passwd.py", tmp_path / "outside")
    sub = read_submission(Submission("mallory", student))
    assert sub.files == ["own.py"] and {u.file for u in sub.units} == {"own.py"}
    assert "1_bptt.ipynb: a hard link" in "\n".join(sub.problems)
    assert "2_gradient_decay.ipynb: a symbolic link" in "\n".join(sub.problems)
    assert "passwd.py: a hard link" in "\n".join(sub.problems)
    notes = private_copy(sub, tmp_path / "work")
    copied = sorted(str(p.relative_to(tmp_path / "work")) for p in (tmp_path / "work").rglob("*"))
    assert copied == ["own.py", "sub"], copied
    assert any(n.startswith("1_bptt.ipynb, ") and "a hard link" in n and "sub/3_clipping.ipynb" in n for n in notes)
    assert any("2_gradient_decay.ipynb, classmate, sub/passwd: a symbolic link" in n for n in notes), notes
    everything = "\n".join(sub.problems + notes)
    assert "root:" not in everything and "def rnn_forward" not in everything


# ---- floods of empty files and folders ----

def test_a_flood_of_empty_files_and_folders_is_copied_up_to_the_limit(tmp_path):
    """Empty files and folders beyond the limit beside the notebooks (inode_flood in the corpus, 20,000 files and
    2,000 folders: all copied, 20.7 s to grade against 7.7 s for the bystander beside it): at most
    MAX_COPY_ENTRIES are copied, code first (a folder's files come before its subfolders'), with one note."""
    student = tmp_path / "flood"
    (student / "junk").mkdir(parents=True)
    shutil.copy(SOLUTIONS / "1_bptt.ipynb", student)
    for i in range(MAX_COPY_ENTRIES + 500):
        (student / "junk" / f"f{i}").touch()
    for i in range(200):
        (student / "junk" / f"d{i}").mkdir()
    sub = read_submission(Submission("flood", student))
    notes = private_copy(sub, tmp_path / "work")
    copied = sum(1 for _ in (tmp_path / "work").rglob("*"))
    assert copied == MAX_COPY_ENTRIES and (tmp_path / "work" / "1_bptt.ipynb").is_file()
    assert notes == [f"more than {MAX_COPY_ENTRIES} files and folders: only the first {MAX_COPY_ENTRIES} (in name "
                     "order) were taken, the rest left out; not copied"]


def test_folders_nested_deeper_than_the_limit_are_not_copied(tmp_path):
    student = tmp_path / "deep"
    path = student
    for _ in range(MAX_COPY_DEPTH + 40):
        path = path / "d"
    path.mkdir(parents=True)
    shutil.copy(SOLUTIONS / "1_bptt.ipynb", student)
    notes = private_copy(read_submission(Submission("deep", student)), tmp_path / "work")
    deepest = max(len(p.relative_to(tmp_path / "work").parts) for p in (tmp_path / "work").rglob("*"))
    assert deepest == MAX_COPY_DEPTH
    assert notes == [f"1 folder(s) nested more than {MAX_COPY_DEPTH} deep: what they hold was left out; not copied"]


# ---- empty cells cost nothing ----

def test_empty_blank_and_comment_cells_are_not_loaded_nor_counted(tmp_path):
    """5,000 empty cells in a notebook loaded first used up the 2,000-unit cap, so the honest notebooks after it
    were not loaded (empty_cells_first in the corpus: 0 of 80 points)."""
    def cell(source):
        return {"cell_type": "code", "source": source, "metadata": {}, "outputs": [], "execution_count": None}

    cells = ([cell("")] * 3000 + [cell("  \n\t\n")] * 1000 + [cell(f"# nothing {i}\n   # nor here") for i in range(1000)]
             + [cell("x = 1  # something")])
    (tmp_path / "0_padding.ipynb").write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                                          "nbformat_minor": 5}))
    shutil.copy(SOLUTIONS / "1_bptt.ipynb", tmp_path)
    sub = read_submission(Submission("s", tmp_path))
    padding = [u for u in sub.units if u.file == "0_padding.ipynb"]
    assert [(u.index, u.source) for u in padding] == [(5000, "x = 1  # something\n")]
    assert any("def rnn_step_forward(" in u.source for u in sub.units)
    assert not [p for p in sub.problems if "only the first" in p]


@pytest.mark.parametrize("how", ["one", "flat"])
def test_staging_keeps_a_hard_link_a_link(tmp_path, how):
    """`--student ID` on one folder and `--flat` copy the files into a scratch class folder: a plain copy made a
    hard link to the solutions an ordinary file of the student's, loaded in full."""
    from autograder.intake import stage_flat, stage_one

    folder = tmp_path / "given"
    folder.mkdir()
    name = "1_bptt.ipynb" if how == "one" else "mallory_1_bptt.ipynb"
    hard_link(SOLUTIONS / "1_bptt.ipynb", folder / name, tmp_path / "outside")
    shutil.copy(REPO_ROOT / "assignments" / ASSIGNMENT.id / "3_clipping.ipynb",
                folder / ("3_clipping.ipynb" if how == "one" else "mallory_3_clipping.ipynb"))
    if how == "one":
        stage_one(folder, "mallory", tmp_path / "staged")
    else:
        stage_flat(folder, list(ASSIGNMENT.notebooks), tmp_path / "staged")
    (sub,) = find_submissions(tmp_path / "staged", ASSIGNMENT.id)
    read_submission(sub)
    assert sub.files == ["3_clipping.ipynb"] and "1_bptt.ipynb: a hard link" in "\n".join(sub.problems)


# ---- the Gradescope entry point ----

def test_gradescope_takes_no_link_as_the_submission_folder(tmp_path):
    """Gradescope unzips the upload into /autograder/submission (a name holding `..` cannot be a folder entry, so
    there is no zip-slip for the kit to meet; it extracts nothing itself): links it may hold are never followed."""
    from autograder.gradescope_run import submission_folder

    solutions_link = tmp_path / "linked" / "submission"
    solutions_link.parent.mkdir()
    solutions_link.symlink_to(SOLUTIONS)
    assert submission_folder(solutions_link, ASSIGNMENT.id) is None
    nbgrader_link = tmp_path / "nbgrader" / "submission"
    nbgrader_link.mkdir(parents=True)
    (nbgrader_link / ASSIGNMENT.id).symlink_to(SOLUTIONS)
    assert submission_folder(nbgrader_link, ASSIGNMENT.id) == nbgrader_link  # which holds no file of code
    zipped_link = tmp_path / "zipped" / "submission"
    zipped_link.mkdir(parents=True)
    (zipped_link / "homework").symlink_to(SOLUTIONS)
    assert submission_folder(zipped_link, ASSIGNMENT.id) == zipped_link
    absolute = tmp_path / "absolute" / "submission"
    absolute.mkdir(parents=True)
    (absolute / "1_bptt.ipynb").symlink_to(SOLUTIONS / "1_bptt.ipynb")
    (absolute / "..1_bptt.ipynb").write_text("x = 1\n")  # dots in a name are only a name
    for folder in (nbgrader_link, zipped_link, absolute):
        sub = read_submission(Submission("s", submission_folder(folder, ASSIGNMENT.id)))
        assert not any("def " in unit.source for unit in sub.units), folder
        private_copy(sub, tmp_path / f"work-{folder.parent.name}")
        copied = (tmp_path / f"work-{folder.parent.name}").rglob("*")
        assert not [p for p in copied if p.is_symlink() or "def rnn_" in p.read_text()], folder


@pytest.mark.slow
def test_gradescope_grades_an_upload_of_100000_files(tmp_path):
    """100,000 empty files beside the solutions notebooks: before, the sandbox's copy of them did not finish and
    Gradescope got an internal error, score 0 (114.6 s); now the first MAX_COPY_ENTRIES are copied, the score is
    full and the note says what was left out."""
    import subprocess
    import sys

    submission = tmp_path / "submission"
    (submission / "junk").mkdir(parents=True)
    for notebook in ASSIGNMENT.notebooks:
        shutil.copy(SOLUTIONS / notebook, submission)
    for i in range(100_000):
        (submission / "junk" / f"f{i}").touch()
    (tmp_path / "submission_metadata.json").write_text('{"users": [{"email": "flood@example.edu"}]}')
    run = subprocess.run([sys.executable, "-m", "autograder.gradescope_run"], capture_output=True, text=True,
                         timeout=900, env={**os.environ, "AUTOGRADER_ROOT": str(tmp_path),
                                           "PYTHONPATH": str(REPO_ROOT)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    document = json.loads((tmp_path / "results" / "results.json").read_text())
    assert document["score"] == ASSIGNMENT.max_score
    assert f"more than {MAX_COPY_ENTRIES} files and folders: only the first {MAX_COPY_ENTRIES}" in document["output"]


def test_a_hard_link_sent_to_a_remote_grader_stays_a_link_without_its_content(tmp_path):
    """Dask grading sends the student's folder as data: a hard link was sent as the file it names, which the
    remote grader then loaded as the student's own."""
    from autograder.executors import pack_folder, unpack_folder
    from autograder.grade import submission_digest

    student = tmp_path / "mallory"
    student.mkdir()
    hard_link(SOLUTIONS / "1_bptt.ipynb", student / "1_bptt.ipynb", tmp_path / "outside")
    shutil.copy(REPO_ROOT / "assignments" / ASSIGNMENT.id / "3_clipping.ipynb", student)
    entries = pack_folder(student)
    assert ("1_bptt.ipynb", "hardlink", b"") in entries
    unpack_folder(entries, tmp_path / "remote" / "mallory")
    sub = read_submission(Submission("mallory", tmp_path / "remote" / "mallory"))
    assert sub.files == ["3_clipping.ipynb"] and "1_bptt.ipynb: a hard link" in "\n".join(sub.problems)
    assert submission_digest(tmp_path / "remote" / "mallory") == submission_digest(student)  # --resume agrees
