"""The kit as a normal (non-root) user, where most instructors run it: the same grades as root, the warm start, the
sandbox's isolation and the canary. Runs when the suite runs as root (as CI does): it makes a normal user with its
own checkout and virtualenv (tests/normal_user.py) and runs the kit there. Run as a normal user, the whole suite
is already the test, and this module is skipped."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from autograder import REPO_ROOT
from autograder.build_class import build_class, expectations
from autograder.course import load_course
from autograder.sandbox import isolation_level
from autograder.secret import SECRET_ENV
from normal_user import NAME, Unavailable, prepare_checkout, run_as

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="as a normal user the whole suite runs as one already")]
CLASS_SPEC = REPO_ROOT / "examples" / "class.yml"


@pytest.fixture(scope="module")
def instructor():
    try:
        return prepare_checkout()
    except Unavailable as exc:
        pytest.skip(f"no normal user here: {exc}")


def read_grades(path) -> dict[str, dict]:
    with open(path, newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


def test_example_class_gets_the_same_grades_as_root_with_the_warm_start(instructor, tmp_path):
    user, kit = instructor
    build_class(CLASS_SPEC, tmp_path / "submissions", load_course())
    as_root = subprocess.run([sys.executable, "-m", "autograder", "grade", str(tmp_path / "submissions"), "--out",
                              str(tmp_path / "out"), "--jobs", "2"], capture_output=True, text=True, timeout=900)
    assert as_root.returncode == 0, as_root.stderr[-3000:]

    python = str(kit / ".venv" / "bin" / "python")
    built = run_as(user, [python, "-m", "autograder", "build-class", "examples/class.yml", "build/class"], kit, 300)
    assert built.returncode == 0, built.stderr[-3000:]
    graded = run_as(user, [python, "-m", "autograder", "grade", "build/class", "--out", "build/results", "--jobs",
                           "2"], kit, 900, **{SECRET_ENV: os.environ[SECRET_ENV]})  # as root's: the same grades
    assert graded.returncode == 0, graded.stderr[-3000:]
    assert "Canary: passed" in graded.stdout

    root_grades, user_grades = read_grades(tmp_path / "out" / "grades.csv"), read_grades(kit / "build/results/grades.csv")
    assert user_grades == root_grades
    assert set(user_grades) == set(expectations(CLASS_SPEC))
    for student in user_grades:
        document = json.loads((kit / "build" / "results" / student / "results.json").read_text())
        assert document["extra_data"]["isolation"] == isolation_level()
        if document["extra_data"]["warm_start"] is not None:  # None: nothing of the student could be loaded
            assert document["extra_data"]["warm_start"] is True, f"{student} started cold as {NAME}"
            assert document["extra_data"]["zygote"] == "warm parent", f"{student}: its worker started its zygote late"


def test_sandbox_and_canary_tests_pass_as_a_normal_user(instructor):
    """The sandbox matrix (hostile payloads, warm and cold, each isolation level), the self-check and the canary,
    run by the normal user in its own checkout; the warm start must not be skipped."""
    user, kit = instructor
    run = run_as(user, [str(kit / ".venv" / "bin" / "python"), "-m", "pytest", "-q", "-rs", "-n", "2", "-p",
                        "no:cacheprovider", "tests/test_sandbox.py", "tests/test_check.py", "tests/test_canary.py"],
                 kit, 1200)
    tail = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    assert " passed" in run.stdout and " failed" not in run.stdout, tail
    assert "no warm start" not in run.stdout, tail
