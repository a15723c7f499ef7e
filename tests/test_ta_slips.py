"""The slips a tired TA makes, each with a clear message (issue 13, items 5-10 and 13): a graded function without
points, Ctrl-C, a flat download or one student's folder, a course folder other than the kit's, a Dask cluster that
is not there, and `--help`; and the class summary."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from autograder import REPO_ROOT
from autograder.cli import main
from autograder.notebook import read_notebook, written_answers
from autograder.course import CourseConfigError, find_course_file, load_course

COURSE = load_course()
ASSIGNMENT = COURSE.assignment("vanishing_gradients")
AUTOGRADER = [sys.executable, "-m", "autograder"]


def course_file(tmp_path: Path, mutate=None, link: bool = True) -> Path:
    """A copy of course.yml in tmp_path (changed by `mutate`), the kit's solutions/ and release beside it."""
    data = yaml.safe_load((REPO_ROOT / "course.yml").read_text())
    if mutate:
        mutate(data["assignments"][0])
    (tmp_path / "course.yml").write_text(yaml.safe_dump(data))
    for folder in ("solutions", "assignments"):
        if link:
            (tmp_path / folder).symlink_to(REPO_ROOT / folder)
        else:
            shutil.copytree(REPO_ROOT / folder, tmp_path / folder)
    return tmp_path / "course.yml"


# ---- 10: --help ----

def all_commands(group: click.Group = main, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield prefix + (name,), command
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + (name,))


@pytest.mark.parametrize("path", [" ".join(p) for p, _ in all_commands()])
def test_every_command_has_complete_help(path):
    """Every command's help: exit statuses, an example, every option explained, no summary cut with '...'."""
    command = dict((" ".join(p), c) for p, c in all_commands())[path]
    result = CliRunner().invoke(main, [*path.split(), "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert "Exit status" in result.output and "Example" in result.output, result.output
    text = lambda output: "\n".join(line for line in output.splitlines() if not line.startswith("Usage:"))
    assert "..." not in text(result.output), result.output  # the usage line's "ARGS..." aside
    for param in command.params:
        if isinstance(param, click.Option) and param.name != "help":
            assert param.help, f"{path} {param.opts[0]} has no help"
    listing = CliRunner().invoke(main, [*path.split()[:-1], "--help"], terminal_width=100).output
    assert "..." not in text(listing) and command.short_help and command.short_help in " ".join(listing.split())


# ---- 8: one course root ----

def test_the_course_is_found_like_git_finds_its_repository(tmp_path):
    course = course_file(tmp_path)
    (tmp_path / "deep" / "er").mkdir(parents=True)
    assert find_course_file(start=tmp_path / "deep" / "er")[0] == course
    assert find_course_file(tmp_path)[0] == course  # --course FOLDER
    assert find_course_file(course)[0] == course  # --course FILE
    elsewhere = tmp_path.parent / f"{tmp_path.name}-empty"
    elsewhere.mkdir()
    path, how = find_course_file(start=elsewhere)
    assert path == REPO_ROOT / "course.yml" and "no course.yml in" in how and "the kit's own" in how


# ---- 5: course.yml against the graders, before anyone is graded ----

@pytest.mark.parametrize("mutate,named", [
    (lambda a: a["points"].pop("one_hot"), "one_hot is graded by graders/ but has no entry in points"),
    (lambda a: a["points"].update(gru_backward=3), "points.gru_backward: no grader tests for gru_backward"),
])
def test_points_without_a_grader_or_a_grader_without_points_exit_1_before_grading(tmp_path, mutate, named):
    course = course_file(tmp_path, mutate)
    (tmp_path / "subs" / "ada").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "solutions" / "vanishing_gradients" / "1_bptt.ipynb", tmp_path / "subs" / "ada")
    result = CliRunner().invoke(main, ["grade", str(tmp_path / "subs"), "--out", str(tmp_path / "out"),
                                       "--course", str(course)])
    assert result.exit_code == 1, result.output
    assert named in result.output and "Nothing was graded" in result.output
    assert not (tmp_path / "out").exists()


def test_a_course_root_without_solutions_is_named(tmp_path):
    from autograder.grade import GradeOptions, check_course

    (tmp_path / "course.yml").write_text((REPO_ROOT / "course.yml").read_text())
    options = GradeOptions(ASSIGNMENT, tmp_path / "out", 60, "process", course=COURSE, root=tmp_path)
    with pytest.raises(CourseConfigError, match="no solution notebooks in .*solutions/vanishing_gradients"):
        check_course(options)


# ---- 7: --student, --flat, one student's folder ----

def test_flat_download_names_map_to_students():
    from autograder.intake import flat_student

    notebooks = list(ASSIGNMENT.notebooks)
    assert flat_student("alice_1_bptt.ipynb", notebooks) == ("alice", "1_bptt.ipynb")
    assert flat_student("smithjane_12345_67890_3_clipping.ipynb", notebooks) == ("smithjane_12345_67890",
                                                                                "3_clipping.ipynb")
    assert flat_student("bob_2_gradient_decay-1.ipynb", notebooks) == ("bob", "2_gradient_decay.ipynb")
    assert flat_student("1_bptt.ipynb", notebooks) is None and flat_student("alice_notes.ipynb", notebooks) is None


def intake(tmp_path: Path, submissions: Path, *options: str):
    """What `autograder grade SUBMISSIONS OPTIONS` would grade: (class folder, students), or (exit code, message)."""
    from autograder.cli import _intake
    from autograder.intake import IntakeError

    students = tuple(options[i + 1] for i, o in enumerate(options) if o == "--student")
    staging = tmp_path / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        return _intake(submissions, ASSIGNMENT, students, "--flat" in options, staging)
    except IntakeError as exc:
        return 2, str(exc)


def test_student_flat_and_one_folder_choose_what_is_graded(tmp_path):
    from autograder.submission import find_submissions

    nb = REPO_ROOT / "assignments" / "vanishing_gradients" / "1_bptt.ipynb"
    klass = tmp_path / "class"
    for student in ("alice", "bob"):
        (klass / student).mkdir(parents=True)
        shutil.copy(nb, klass / student)
    assert intake(tmp_path, klass, "--student", "bob") == (klass, ("bob",))
    code, message = intake(tmp_path, klass, "--student", "alicia")
    assert code == 2 and "no folder for alicia (did you mean alice?)" in message
    # One student's own folder: flat, or nbgrader's <assignment>/ inside; without --student it is refused.
    for own in (klass / "alice", tmp_path / "carol"):
        if own.name == "carol":
            (own / "vanishing_gradients").mkdir(parents=True)
            shutil.copy(nb, own / "vanishing_gradients")
        code, message = intake(tmp_path, own)
        assert code == 2 and "--student ID" in message and ("directly (1_bptt.ipynb)" in message
                                                            or "only vanishing_gradients/" in message), message
        staged, chosen = intake(tmp_path, own, "--student", own.name)
        assert [s.student for s in find_submissions(staged, "vanishing_gradients")] == [own.name] and chosen == ()
    flat = tmp_path / "download"
    flat.mkdir()
    for name in ("alice_1_bptt.ipynb", "alice_2_gradient_decay.ipynb", "bob_12_1_bptt-2.ipynb"):
        shutil.copy(nb, flat / name)
    staged, chosen = intake(tmp_path, flat, "--flat")
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*.ipynb")) == [
        "alice/1_bptt.ipynb", "alice/2_gradient_decay.ipynb", "bob_12/1_bptt.ipynb"]
    (flat / "notes.ipynb").write_text("{}")
    code, message = intake(tmp_path, flat, "--flat")
    assert code == 2 and "not named <student>_<notebook>" in message and "notes.ipynb" in message


# ---- 13: the class summary ----

def written_points() -> float:
    """The written answers' points in the solution notebooks (their nbgrader metadata)."""
    return sum(sum(written_answers(read_notebook(REPO_ROOT / "solutions" / ASSIGNMENT.id / name)).values())
               for name in ASSIGNMENT.notebooks)


def results_document(student: str, fraction: float, submitted: str | None, raw: float | None = None) -> dict:
    tests = [{"name": f"{f}: all", "score": p * fraction, "max_score": p, "status": "passed" if fraction == 1 else
              "failed", "output": "", "tags": [f]} for f, p in ASSIGNMENT.points.items()]
    score = sum(t["score"] for t in tests)
    return {"score": score, "max_score": ASSIGNMENT.max_score, "tests": tests, "output": "",
            "extra_data": {"student": student, "submitted": submitted, "raw_score": raw if raw is not None else score}}


def test_class_summary_has_functions_lateness_and_written_answers(tmp_path):
    from autograder.feedback import histogram_figure
    from autograder.grade import GradeOptions
    from autograder.report import ClassTally, write_summary

    tally = ClassTally(list(ASSIGNMENT.points))
    tally.add("alice", results_document("alice", 1.0, "2026-12-18T20:00:00+00:00"))
    half = ASSIGNMENT.max_score / 2  # bob: half the points before the penalty, 20% off for 2 started days late
    tally.add("bob", results_document("bob", 0.4, "2026-12-20T12:00:00+00:00", raw=half))
    tally.add("carol", results_document("carol", 0.0, None))
    options = GradeOptions(ASSIGNMENT, tmp_path, 60, "process", course=COURSE, root=REPO_ROOT)
    summary = write_summary(tmp_path, tally, options, 1.0)
    functions = {row["function"]: row for row in summary["functions"]}
    assert functions["rnn_backward"] == {"function": "rnn_backward", "points": 10.0, "mean": 4.6667, "pass_rate": 0.3333}
    assert summary["lateness"] == {"on_time": 1, "late": 1, "no_timestamp": 1, "days_late": {"bob": 2},
                                   "points_taken_off": pytest.approx(half * 0.2)}
    assert summary["written"] == {"points": written_points(), "answers": summary["written"]["answers"],
                                  "known": False}
    page = (tmp_path / "summary.html").read_text()
    assert "bob (2 days)" in page and "rnn_backward</td>" in page and "grade with --gradebook to see it" in page
    fig = histogram_figure([0.0, 30.0, 60.0], 60.0)
    ticks = list(fig.axes[0].get_yticks())
    assert ticks and all(float(t).is_integer() for t in ticks)


@pytest.mark.slow
def test_written_answers_status_comes_from_the_gradebook(tmp_path):
    """Once formgrader has graded a student's written answers, the summary counts them (here: alice's, all of
    them), and the others wait."""
    from autograder.gradebook import alembic_on_path, record_grades
    from autograder.report import written_status

    db = tmp_path / "gradebook.db"
    documents = {s: dict(results_document(s, 1.0, None), visibility="visible") for s in ("alice", "bob")}
    record_grades(f"sqlite:///{db}", COURSE, "vanishing_gradients", documents)
    alembic_on_path()
    from nbgrader.api import Gradebook

    status = written_status(db, COURSE, "vanishing_gradients", REPO_ROOT / "solutions", ["alice", "bob"])
    assert status["known"] and status["graded"] == 0 and status["waiting"] == 2
    with Gradebook(f"sqlite:///{db}", course_id=COURSE.course_id) as gb:
        for nb in gb.find_submission("vanishing_gradients", "alice").notebooks:
            for grade in nb.grades:
                if grade.auto_score is None and grade.max_score and grade.name not in ASSIGNMENT.points:
                    grade.manual_score = grade.max_score / 2
        gb.db.commit()
    status = written_status(db, COURSE, "vanishing_gradients", REPO_ROOT / "solutions", ["alice", "bob"])
    assert status["graded"] == 1 and status["waiting"] == 1
    assert status["mean"] == pytest.approx(written_points() / 2)


# ---- 9: Dask that is not there ----

def test_a_malformed_dask_address_is_a_usage_error():
    from autograder.executors import DaskUnavailable, _connect

    with pytest.raises(DaskUnavailable, match="'nonsense://here' is not a Dask scheduler address") as error:
        _connect("nonsense://here", None, 1.0)
    assert error.value.usage  # exit 2

@pytest.mark.slow
def test_dask_bad_address_exits_2_and_no_worker_exits_3_with_a_message(tmp_path):
    from distributed import LocalCluster

    (tmp_path / "subs" / "ada").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "solutions" / "vanishing_gradients" / "1_bptt.ipynb", tmp_path / "subs" / "ada")
    grade = [*AUTOGRADER, "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "out"), "--executor", "dask",
             "--dask-timeout", "1.5", "--scheduler"]
    run = subprocess.run([*grade, "tcp://127.0.0.1:9"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "cannot reach the Dask scheduler at 'tcp://127.0.0.1:9' within 1.5 s" in run.stderr
    assert "Traceback" not in run.stderr
    with LocalCluster(n_workers=0, dashboard_address=None) as cluster:
        started = time.monotonic()
        run = subprocess.run([*grade, cluster.scheduler_address], capture_output=True, text=True, timeout=120)
    assert run.returncode == 3 and "has no worker: none joined within 1.5 s" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and time.monotonic() - started < 60


# ---- 6: Ctrl-C, then --resume ----

@pytest.mark.slow
def _live_in_group(pgid: int) -> list[int]:
    """Processes of the process group that have not ended (zombies aside)."""
    live = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = open(f"/proc/{name}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                live.append(int(name))
    return live


def test_ctrl_c_stops_writes_who_finished_and_resume_grades_the_rest(tmp_path):
    """A real SIGINT to the process group of a running `autograder grade` (what Ctrl-C in a terminal sends): it
    stops within seconds, writes grades.csv for the students who finished and prints the --resume command; that
    command then grades only the others."""
    from autograder.build_class import build_student

    subs, out = tmp_path / "subs", tmp_path / "out"
    folder = build_student("s1", {"from": "solutions", "as_python": True}, COURSE, "vanishing_gradients", subs)
    for name in ("s2", "s3"):
        shutil.copytree(folder, subs / name)
    run = subprocess.Popen([*AUTOGRADER, "grade", str(subs), "--out", str(out)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 300
    while not list(out.glob("s*/results.json")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run.poll() is None, run.communicate()
    os.killpg(run.pid, signal.SIGINT)
    interrupted = time.monotonic()
    try:
        _, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert time.monotonic() - interrupted < 15, "Ctrl-C took too long"
    assert run.returncode == 130, stderr
    finished = sorted(p.parent.name for p in out.glob("s*/results.json"))
    with open(out / "grades.csv", newline="") as f:
        assert [row["student"] for row in csv.DictReader(f)] == finished and 1 <= len(finished) < 3
    assert json.loads((out / "summary.json").read_text())["not_graded"] == 3 - len(finished)
    again = re.search(r"^  autograder (grade .* --resume)$", stderr, re.M)
    assert again and "Interrupted:" in stderr, stderr
    left = time.monotonic() + 10  # nothing of the run is left behind (its helpers end once it has); a zombie has
    while time.monotonic() < left:  # ended already (its parent, if alive, is listed itself)
        if not _live_in_group(run.pid):
            break
        time.sleep(0.2)
    else:
        pytest.fail("processes of the interrupted run are left: " + subprocess.run(
            ["ps", "-o", "pid,stat,args", "-g", str(run.pid)], capture_output=True, text=True).stdout)
    before = {s: (out / s / "results.json").stat().st_mtime_ns for s in finished}
    resumed = subprocess.run([*AUTOGRADER, *again.group(1).split()], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert before == {s: (out / s / "results.json").stat().st_mtime_ns for s in finished}
    with open(out / "grades.csv", newline="") as f:
        full = f"{ASSIGNMENT.max_score:g}"
        assert {row["student"]: row["score"] for row in csv.DictReader(f)} == {s: full for s in ("s1", "s2", "s3")}
    # Only a result that is current is kept: a resubmission (another file) is graded again.
    from autograder.grade import GradeOptions, current_result

    options = GradeOptions(ASSIGNMENT, out, 60, "process", course=COURSE, root=REPO_ROOT)
    assert current_result(options, "s2", subs / "s2")["score"] == ASSIGNMENT.max_score
    (subs / "s2" / "extra.py").write_text("x = 1\n")
    assert current_result(options, "s2", subs / "s2") is None


# ---- 7, 8 and 11 end to end: a flat download, graded from another course folder ----

@pytest.mark.slow
def test_flat_download_from_another_course_folder_gives_actionable_feedback(tmp_path):
    """From a copy of the course (its course.yml changed: rnn_step_forward is worth 4, the total 62) and without
    --course, `grade --flat --student alice` uses that course (and says so), grades only alice from an LMS-style
    download, and her feedback names the failing check, lists her missing notebook, shows failing tests first,
    draws her dWh against the reference, and keeps the isolation for the instructor."""
    from autograder.build_class import build_student

    root = tmp_path / "course"
    root.mkdir()
    course_file(root, lambda a: a["points"].update(rnn_step_forward=4), link=False)
    (root / "work").mkdir()
    alice = build_student("alice", {"from": "solutions", "edits": [
        {"file": "1_bptt.ipynb", "replace": "dWh += dWh_t", "with": "dWh += 2 * dWh_t"}]},
        COURSE, "vanishing_gradients", tmp_path / "built")
    bob = build_student("bob", {"from": "release"}, COURSE, "vanishing_gradients", tmp_path / "built")
    download = tmp_path / "download"
    download.mkdir()
    for student, folder in (("alice", alice), ("bob", bob)):
        for notebook in sorted(folder.glob("*.ipynb")):
            if not (student == "alice" and notebook.name == "3_clipping.ipynb"):
                shutil.copy(notebook, download / f"{student}_{notebook.name}")
    out = tmp_path / "out"
    run = subprocess.run([*AUTOGRADER, "grade", str(download), "--out", str(out), "--flat", "--student", "alice"],
                         cwd=root / "work", capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert f"Course: {root / 'course.yml'} (found from {root / 'work'})" in run.stderr
    with open(out / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["student"], r["max_score"], r["rnn_step_forward"]) for r in rows] == [
        ("alice", f"{ASSIGNMENT.max_score + 2:g}", "4")]
    document = json.loads((out / "alice" / "results.json").read_text())
    assert f"Canary: passed: canary-reference {ASSIGNMENT.max_score + 2:g}, canary-release 0" in run.stdout
    lines = document["output"].splitlines()
    assert lines[1].startswith("Missing notebook: 3_clipping.ipynb (expected: 1_bptt.ipynb, ")
    assert "1_bptt.ipynb, check_rnn_backward: AssertionError: dWh" in document["output"]
    assert not re.search(r", cell \d+:", document["output"])  # never a bare 0-based cell index
    assert "Isolation" not in document["output"] and "Memory limit" not in document["output"]
    assert document["extra_data"]["isolation"] in ("bubblewrap", "process") and document["extra_data"]["memory_limit"]
    assert (out / "alice" / "output.txt").read_text().startswith("[autograder] Isolation: ")
    statuses = [t["status"] for t in document["tests"]]
    assert statuses[0] == "failed" and statuses == sorted(statuses)  # "failed" < "passed": failing first
    page = (out / "alice" / "feedback.html").read_text()
    assert "<strong>Your rnn_backward.</strong>" in page and "Off or missing here: dWh." in page
    assert not (out / "bob").exists()


def test_the_gradescope_bundle_is_refused_for_a_graded_function_without_points(tmp_path):
    course = course_file(tmp_path, lambda a: a["points"].pop("one_hot"))
    result = CliRunner().invoke(main, ["bundle", "gradescope", "--out", str(tmp_path / "g.zip"), "--course",
                                       str(course)])
    assert result.exit_code == 1 and "one_hot is graded by graders/ but has no entry in points" in result.output
    assert not (tmp_path / "g.zip").exists()


def test_a_cell_that_failed_to_load_is_named_by_its_check(tmp_path):
    """What a student can find in their notebook: the check's nbgrader id, else the cell's number from 1 and its
    first line; a notebook that cannot be read leaves the number."""
    from autograder.grade import _name_cells

    notebook = REPO_ROOT / "assignments" / "vanishing_gradients" / "1_bptt.ipynb"
    shutil.copy(notebook, tmp_path / "1_bptt.ipynb")
    cells = json.loads(notebook.read_text())["cells"]
    plain = next(i for i, c in enumerate(cells) if c["cell_type"] == "code" and "nbgrader" not in c["metadata"])
    cells[plain]["source"] = "x = 1  # a cell of mine\n"
    (tmp_path / "mine.ipynb").write_text(json.dumps({"cells": cells}))
    (tmp_path / "broken.ipynb").write_text("{not json")
    report = [{"file": "1_bptt.ipynb", "index": 13}, {"file": "mine.ipynb", "index": plain},
              {"file": "broken.ipynb", "index": 4}, {"file": "helpers.py", "index": None}]
    _name_cells(report, tmp_path)
    assert [r.get("cell") for r in report] == ["check_rnn_backward", f"cell {plain + 1} (x = 1  # a cell of mine)",
                                               "cell 5", None]
