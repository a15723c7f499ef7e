"""`autograder grade` end to end on the example class and on broken inputs: scores, files, resume, exit codes."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import REPO_ROOT
from autograder.course import load_course
from autograder.build_class import build_class, expectations
from autograder.sandbox import isolation_level, warm_available
from autograder.validate import check_expectation

COURSE = load_course()
ASSIGNMENT = COURSE.assignment("vanishing_gradients")
CLASS_SPEC = REPO_ROOT / "examples" / "class.yml"

pytestmark = pytest.mark.slow


def run_grade(submissions: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "autograder", "grade", str(submissions), "--out", str(out), *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def results(out: Path, student: str) -> dict:
    return json.loads((out / student / "results.json").read_text())


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory):
    root = tmp_path_factory.mktemp("class")
    build_class(CLASS_SPEC, root / "submissions", COURSE)
    result = run_grade(root / "submissions", root / "out", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    return root / "out", result


@pytest.mark.parametrize("student", list(expectations(CLASS_SPEC)))
def test_example_class_scores(graded_class, student):
    out, _ = graded_class
    document = results(out, student)
    errors = out / student / "grader_errors.txt"
    assert not errors.exists(), errors.read_text()
    assert check_expectation(expectations(CLASS_SPEC)[student], document, ASSIGNMENT) == []


def test_the_run_records_its_start_up_and_leaves_no_held_results(graded_class):
    """The first students are graded beside the canaries into a holding folder in OUT, moved in once the canaries
    pass; summary.json says how long the run took to start and what a submission cost beyond its own code."""
    out, _ = graded_class
    assert not list(out.glob(".held-*"))
    assert all((out / student / "results.json").is_file() for student in expectations(CLASS_SPEC))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["canary"].startswith("passed")
    assert 0 < summary["timing"]["startup_seconds"] < 600
    assert 0 <= summary["timing"]["overhead_seconds_median"] < 60
    began = [results(out, s)["extra_data"]["timing"]["began"] for s in expectations(CLASS_SPEC)]
    assert max(began) - min(began) < 900
    # Every student ran in a zygote the warm parent started beside its imports (none started by a worker later).
    sources = {results(out, s)["extra_data"]["zygote"] for s in expectations(CLASS_SPEC)} - {None}
    assert sources == ({"warm parent"} if warm_available(isolation_level()) else set())


def test_results_follow_gradescope_schema(graded_class):
    out, _ = graded_class
    for student in expectations(CLASS_SPEC):
        document = results(out, student)
        assert set(document) >= {"score", "max_score", "execution_time", "output", "tests"}
        for test in document["tests"]:
            assert set(test) >= {"name", "score", "max_score", "status", "output"}
            assert test["status"] in ("passed", "failed")
            assert test["name"].split(":")[0] in ASSIGNMENT.points
        assert sum(t["max_score"] for t in document["tests"]) == pytest.approx(ASSIGNMENT.max_score)


def test_failure_messages_name_the_output_and_hide_expected_values(graded_class):
    out, _ = graded_class
    document = results(out, "cleo_no_carried_gradient")
    failed = {t["name"]: t["output"] for t in document["tests"] if t["status"] == "failed"}
    assert "rnn_backward: dWh on random sequences, with your own forward cache" in failed
    assert "dWh" in failed["rnn_backward: dWh on random sequences, with your own forward cache"]
    assert all("relative error" in message or "0.0" not in message for message in failed.values())
    untouched = results(out, "ben_untouched_release")
    assert any("NotImplementedError" in t["output"] for t in untouched["tests"])


def test_grades_csv_summary_and_feedback(graded_class):
    out, completed = graded_class
    with open(out / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["student"] for r in rows] == sorted(expectations(CLASS_SPEC))
    assert set(rows[0]) == {"student", "score", "max_score", *ASSIGNMENT.points}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["students"] == len(rows) and summary["isolation"] in ("bubblewrap", "process")
    page = (out / "ada_reference" / "feedback.html").read_text()
    assert "rnn_backward: dWh" in page and "Model answer" not in page
    assert page.count("data:image/png;base64,") == 3 and "Public inputs" in page  # decay, clipping, truncation
    assert "http://" not in page and "https://" not in page  # opens without a network
    assert "data:image/png" not in (out / "ben_untouched_release" / "feedback.html").read_text()
    class_page = (out / "summary.html").read_text()
    assert "class summary" in class_page and "data:image/png;base64," in class_page
    assert "rnn_backward: dWh on random sequences" in class_page
    assert "grades.csv" in completed.stdout and "summary.html" in completed.stdout


def test_resume_grades_only_the_missing(graded_class, tmp_path):
    out, _ = graded_class
    subs = tmp_path / "subs"
    build_class(CLASS_SPEC, subs, COURSE)
    copy = tmp_path / "out"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    (copy / "dan_no_eps" / "results.json").unlink()
    before = {s: (copy / s / "results.json").stat().st_mtime_ns for s in expectations(CLASS_SPEC) if s != "dan_no_eps"}
    result = run_grade(subs, copy, "--resume")
    assert result.returncode == 0, result.stderr
    assert "[1/1] dan_no_eps" in result.stderr
    assert results(copy, "dan_no_eps")["score"] == results(out, "dan_no_eps")["score"]
    assert before == {s: (copy / s / "results.json").stat().st_mtime_ns for s in before}


def test_bad_inputs_each_get_a_message_and_the_batch_completes(tmp_path):
    subs = tmp_path / "subs"
    (subs / "empty").mkdir(parents=True)
    (subs / "latin1").mkdir()
    (subs / "latin1" / "code.py").write_bytes("x = 'café'\n".encode("latin-1"))
    (subs / "binary").mkdir()
    (subs / "binary" / "code.py").write_bytes(os.urandom(2000) + b"\0")
    (subs / "linked").mkdir()
    (subs / "linked" / "1_bptt.ipynb").symlink_to(REPO_ROOT / "solutions" / "vanishing_gradients" / "1_bptt.ipynb")
    (subs / "huge").mkdir()
    (subs / "huge" / "big.py").write_text("# " + "x" * (9 * 2**20))
    (subs / "not_json").mkdir()
    (subs / "not_json" / "a.ipynb").write_text("\x00\x01 not a notebook")
    result = run_grade(subs, tmp_path / "out", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    expected = {"empty": "no notebook", "latin1": "not UTF-8", "binary": "binary file", "linked": "symbolic link",
                "huge": "larger than", "not_json": "binary file"}
    for student, phrase in expected.items():
        document = results(tmp_path / "out", student)
        assert document["score"] == 0
        assert phrase in document["output"], (student, document["output"])
        assert len(document["tests"]) >= len(ASSIGNMENT.points)


def test_no_student_folders_is_a_usage_error(tmp_path):
    """An empty folder, or a flat folder of notebooks (one student's, or an LMS download), grades nobody: exit 2
    with the expected layout and what is there, not "Graded 0 submissions" with exit 0."""
    (tmp_path / "subs").mkdir()
    result = run_grade(tmp_path / "subs", tmp_path / "out")
    assert result.returncode == 2 and "it holds no student folder" in result.stderr, result.stderr
    assert "SUBMISSIONS/<student>/*.ipynb" in result.stderr and not (tmp_path / "out" / "summary.json").exists()
    (tmp_path / "subs" / "1_bptt.ipynb").write_text("{}")
    result = run_grade(tmp_path / "subs", tmp_path / "out")
    assert result.returncode == 2 and "1 notebook or .py file(s) directly (1_bptt.ipynb)" in result.stderr


def test_misuse_exits_non_zero_with_a_message(tmp_path):
    result = run_grade(tmp_path / "missing", tmp_path / "out")
    assert result.returncode == 2 and "does not exist" in result.stderr
    (tmp_path / "subs").mkdir()
    bad = tmp_path / "course.yml"
    bad.write_text((REPO_ROOT / "course.yml").read_text().replace("memory_mb: 2048", "memory_mb: lots"))
    result = run_grade(tmp_path / "subs", tmp_path / "out", "--course", str(bad))
    assert result.returncode == 1 and "assignments.0.limits.memory_mb" in result.stderr


def _comparable(document: dict) -> dict:
    """A results document without what differs between two runs of the same grading (times; where the zygote came
    from: a local run's warm parent, a Dask worker's own)."""
    document = json.loads(json.dumps(document))
    document.pop("execution_time")
    document["extra_data"].pop("timing")
    document["extra_data"].pop("zygote")
    return document


def test_dask_executor_gives_the_local_results(graded_class, tmp_path):
    """`--executor dask --scheduler ADDRESS` on a LocalCluster grades the example class exactly as the local
    executor did: every results.json (times aside) and grades.csv."""
    from distributed import LocalCluster

    out, _ = graded_class
    submissions = out.parent / "submissions"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        result = run_grade(submissions, tmp_path / "dask", "--executor", "dask", "--scheduler",
                           cluster.scheduler_address)
    assert result.returncode == 0, result.stderr
    for student in expectations(CLASS_SPEC):
        assert _comparable(results(tmp_path / "dask", student)) == _comparable(results(out, student)), student
        assert (tmp_path / "dask" / student / "feedback.html").is_file()
    assert (tmp_path / "dask" / "grades.csv").read_text() == (out / "grades.csv").read_text()


def test_dask_executor_needs_a_scheduler(tmp_path):
    (tmp_path / "submissions").mkdir()
    result = run_grade(tmp_path / "submissions", tmp_path / "out", "--executor", "dask")
    assert result.returncode != 0 and "--scheduler" in result.stderr


@pytest.mark.parametrize("executor", [[], ["--executor", "dask", "--scheduler", "local"]], ids=["local", "dask"])
def test_a_submission_that_hit_a_time_limit_is_graded_again_on_its_own(tmp_path, executor):
    """With --jobs 2 a time limit may be a classmate's load, not the student's code: such a submission is graded
    again at the end with nothing else running, and that result counts (it says so). A real infinite loop still
    costs its function's points, once."""
    from autograder.build_class import build_student

    submissions = tmp_path / "submissions"
    build_student("ada", {"from": "solutions"}, COURSE, "vanishing_gradients", submissions)
    build_student("hal", {"from": "solutions", "add_cells": [{"file": "6_exploding_vs_vanishing.ipynb", "source":
                  "def effective_horizon(norms, threshold=1e-3):\n    while True:\n        pass\n"}]},
                  COURSE, "vanishing_gradients", submissions)
    result = run_grade(submissions, tmp_path / "out", "--jobs", "2", *executor)
    assert result.returncode == 0, result.stderr
    ada, hal = results(tmp_path / "out", "ada"), results(tmp_path / "out", "hal")
    assert ada["score"] == ASSIGNMENT.max_score and not ada["extra_data"]["graded_alone"]
    assert hal["extra_data"]["graded_alone"] and hal["extra_data"]["timed_out"]
    assert "Graded again on its own" in hal["output"]
    assert check_expectation({"lose": ["effective_horizon"]}, hal, ASSIGNMENT) == []
    hung = [t["output"] for t in hal["tests"] if t["tags"][0] == "effective_horizon" and t["status"] == "failed"]
    assert sum("timed out after" in message for message in hung) == 1  # charged once; later calls fail at once


def test_output_amplification_is_capped(tmp_path):
    """A 3,000-cell notebook whose every cell raises with 4 KB of text (with the reference's own answers first):
    results.json and feedback.html stay under 1 MB, the output says it was cut, and the answers keep their
    points."""
    import nbformat

    from autograder.build_class import build_student

    submissions = tmp_path / "submissions"
    folder = build_student("amp", {"from": "solutions"}, COURSE, "vanishing_gradients", submissions)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"raise ValueError('{i}' + 'x' * 4096)") for i in range(3000)]
    nbformat.write(nb, folder / "7_noise.ipynb")
    result = run_grade(submissions, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out" / "amp"
    assert (out / "results.json").stat().st_size < 2**20
    assert (out / "feedback.html").stat().st_size < 2**20
    document = results(tmp_path / "out", "amp")
    assert "more cells or files that failed to load (output was cut" in document["output"]
    assert 1900 < document["extra_data"]["load_errors_total"] < 2000  # every loaded noise cell, counted
    assert "only the first 2000 are loaded" in document["output"]  # the cap on cells
    assert document["score"] == ASSIGNMENT.max_score


def test_student_folders_named_like_class_files_do_not_collide(tmp_path):
    """Student folders called grades.csv and summary.json are graded; their files go to OUT/student-<id>/, and
    the class-wide files are still written, with their real ids."""
    from autograder.build_class import build_student

    submissions = tmp_path / "submissions"
    for student in ("grades.csv", "summary.json"):
        build_student(student, {"from": "solutions"}, COURSE, "vanishing_gradients", submissions)
    result = run_grade(submissions, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "out" / "grades.csv", newline="") as f:
        rows = {row["student"]: row["score"] for row in csv.DictReader(f)}
    full = f"{ASSIGNMENT.max_score:g}"
    assert rows == {"grades.csv": full, "summary.json": full}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["students"] == 2
    assert results(tmp_path / "out", "student-summary.json")["extra_data"]["student"] == "summary.json"
    assert 'href="student-grades.csv/feedback.html"' in (tmp_path / "out" / "summary.html").read_text()


@pytest.mark.parametrize("isolation", ["default", "process"])
def test_nothing_is_left_on_the_host_after_a_run(tmp_path, isolation):
    """A student writes 96 MB of files and a chain of 1,300 nested folders into its work folder and /tmp: after the
    run nothing of it (and nothing of the grader's own scratch) is left in the temporary folder. Under bubblewrap
    the student writes to tmpfs of its own; without it, to the host, and the cleanup must cope with the chain."""
    from autograder.build_class import build_student

    spill = tmp_path / "tmp"
    spill.mkdir()
    submissions = tmp_path / "submissions"
    build_student("filler", {"from": "solutions", "add_cells": [{"file": "6_exploding_vs_vanishing.ipynb", "source":
                  "import os, tempfile\nfor folder in ('.', tempfile.gettempdir()):\n"
                  "    for i in range(6):\n        with open(os.path.join(folder, f'fill{i}'), 'wb') as f:\n"
                  "            f.write(bytes(8 * 2**20))\n    here = folder\n    for _ in range(1300):\n"
                  "        here = os.path.join(here, 'd')\n        os.mkdir(here)\n"}]},
                  COURSE, "vanishing_gradients", submissions)
    env = dict(os.environ, TMPDIR=str(spill))
    if isolation == "process":
        env["AUTOGRADER_ISOLATION"] = "process"
    run = subprocess.run([sys.executable, "-m", "autograder", "grade", str(submissions), "--out", str(tmp_path / "out"),
                          "--jobs", "2"], capture_output=True, text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stderr
    assert results(tmp_path / "out", "filler")["score"] == ASSIGNMENT.max_score
    assert sorted(p.name for p in spill.iterdir()) == []


def test_the_class_summary_lists_who_broke_the_by_hand_rule(tmp_path):
    """summary.json and summary.html name each student and function flagged in its results.json (gathered by the
    class tally as results come in)."""
    import json as _json

    from autograder.feedback import write_class_summary
    from autograder.report import ClassTally

    tally = ClassTally(functions=["rnn_backward", "lstm_backward"])
    for student, broken in (("ada", {"rnn_backward": "Tensor.backward", "lstm_backward": "torch.autograd.grad"}),
                            ("bob", {}), ("carol", None)):  # carol: an older results.json, without the field
        extra = {} if broken is None else {"by_hand_rule_broken": broken}
        tally.add(student, _json.loads(_json.dumps({"score": 0.0, "max_score": 80.0, "tests": [], "extra_data": extra})))
    flagged = tally.by_hand_rule_broken
    assert flagged == {"ada": ["lstm_backward", "rnn_backward"]}
    summary = {"assignment": "vanishing_gradients", "students": 2, "mean_score": 40, "max_score": 80,
               "full_marks": 0, "zero": 0, "isolation": "bubblewrap", "grader_errors": [],
               "by_hand_rule_broken": flagged, "functions": [], "written": {"known": False}}
    write_class_summary(tmp_path / "summary.html", {"ada": 39.0, "bob": 80.0}, {}, summary,
                        {"ada": "ada", "bob": "bob"})
    page = (tmp_path / "summary.html").read_text()
    assert "By-hand rule broken" in page and "ada (lstm_backward, rnn_backward)" in page
