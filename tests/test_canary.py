"""The canary: the reference and the untouched release are graded before the class, and a grader that cannot give
them their known scores stops with exit 1 and says why, instead of grading anyone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autograder import REPO_ROOT
from autograder.canary import CanaryFailed, failure_message, judge
from autograder.course import load_course

ASSIGNMENT = load_course().assignment("vanishing_gradients")
FULL = f"{ASSIGNMENT.max_score:g}"  # full marks as the messages print them


def document(score: float, failed: list[tuple[str, str]] = (), load_errors: list[dict] = ()) -> dict:
    tests = [{"name": name, "score": 0.0, "max_score": 1.0, "status": "failed", "output": output}
             for name, output in failed]
    tests.append({"name": "rnn_forward: h", "score": score, "max_score": score, "status": "passed", "output": ""})
    return {"score": score, "tests": tests, "extra_data": {"load_errors": list(load_errors)}}


def test_judge_accepts_full_marks_and_zero():
    assert judge({"canary-reference": document(ASSIGNMENT.max_score), "canary-release": document(0.0)},
                 ASSIGNMENT) == []


def test_judge_names_the_first_load_error_of_a_reference_short_of_full_marks():
    broken = document(55.75, failed=[("rnn_backward: dWh", "Traceback ...\nNameError: name 'torch' is not defined")],
                      load_errors=[{"file": "1_bptt.ipynb", "index": 2,
                                    "error": "ImportError: libtorch_cpu.so: failed to map segment from shared object"}])
    problems = judge({"canary-reference": broken, "canary-release": document(0.0)}, ASSIGNMENT)
    assert len(problems) == 1
    assert f"reference solution scored 55.75 / {FULL} (it must score {FULL})" in problems[0]
    assert "1_bptt.ipynb, cell 2: ImportError: libtorch_cpu.so" in problems[0]
    assert "rnn_backward: dWh: NameError: name 'torch' is not defined" in problems[0]
    assert "Nothing was graded" in failure_message(problems)


def test_judge_flags_a_release_that_scores_and_a_canary_that_is_missing():
    problems = judge({"canary-release": document(4.75)}, ASSIGNMENT)
    assert problems[0] == "the reference solution was not graded"
    assert f"untouched release scored 4.75 / {FULL} (it must score 0)" in problems[1]
    assert "rnn_forward: h: passed" in problems[1]  # for the release, the tests that wrongly pass are named


def small_memory_course(tmp_path: Path) -> Path:
    """course.yml where torch is not preloaded and student code may use only 64 MB: importing torch in a cell
    fails (a deliberately broken environment, as an instructor who trims the limits might make)."""
    data = yaml.safe_load((REPO_ROOT / "course.yml").read_text())
    data["assignments"][0]["limits"]["memory_mb"] = 64
    data["assignments"][0]["preload"] = ["numpy"]
    path = tmp_path / "course.yml"
    path.write_text(yaml.safe_dump(data))
    for folder in ("solutions", "assignments"):  # the course root is course.yml's folder: the kit's notebooks
        (tmp_path / folder).symlink_to(REPO_ROOT / folder)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("executor", [[], ["--executor", "dask", "--scheduler", "local"]], ids=["local", "dask"])
def test_grade_stops_before_grading_when_the_reference_fails_here(tmp_path, executor):
    from autograder.build_class import build_student

    course = load_course()
    submissions = tmp_path / "submissions"
    build_student("ada", {"from": "solutions"}, course, "vanishing_gradients", submissions)
    build_student("ben", {"from": "release"}, course, "vanishing_gradients", submissions)
    out = tmp_path / "out"
    (tmp_path / "tmp").mkdir()
    run = subprocess.run([sys.executable, "-m", "autograder", "grade", str(submissions), "--out", str(out),
                          "--jobs", "2", "--course", str(small_memory_course(tmp_path)), *executor],
                         capture_output=True, text=True, timeout=600, env=dict(os.environ, TMPDIR=str(tmp_path / "tmp")))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "The canary failed" in run.stderr
    assert "reference solution scored" in run.stderr
    assert "import torch" in run.stderr or "torch" in run.stderr  # the first error it met names what failed
    # The first students are graded beside the canaries (held out of OUT until they pass): none of it may stay.
    assert not list(out.rglob("results.json")), "nobody may be graded in an environment that fails the canary"
    assert not list(out.glob(".held-*"))
    assert not (out / "grades.csv").exists()
    kept = Path(run.stderr.split("The canaries' results and feedback pages: ")[1].split()[0])
    assert (kept / "canary-reference" / "results.json").is_file()  # kept for the instructor to look at


def test_canary_failed_is_an_exception_with_the_message():
    with pytest.raises(CanaryFailed, match="reference"):
        raise CanaryFailed(failure_message(["the reference solution scored 1 / 60 (it must score 60)"]))
