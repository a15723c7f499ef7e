"""The course secret (autograder/secret.py): hidden inputs that only the course staff can compute.

The attack it answers: course.yml's seed is public (a fork, a Gradescope zip), and the hidden inputs used to be
default_rng([seed, sha256(student id, purpose)]), so anyone with the kit and a student id could compute them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from autograder import REPO_ROOT
from autograder.cli import main
from autograder.course import CourseConfigError, load_course
from autograder.pytest_plugin import GradingContext
from autograder.secret import (MIN_LENGTH, PUBLIC_EXAMPLE_SECRET, SECRET_ENV, CourseSecret, CourseSecretError,
                               load_secret, make_secret, secret_path)
from autograder.vocabulary import Tolerance

COURSE = load_course()
ASSIGNMENT = COURSE.assignment("vanishing_gradients")
SECRET_A = "a" * 8 + os.urandom(24).hex()  # random per run: nothing could have been computed from it in advance
SECRET_B = "b" * 8 + os.urandom(24).hex()


def context(student: str, secret: str) -> GradingContext:
    return GradingContext(student, None, {}, ASSIGNMENT.seed, Tolerance(), secret=CourseSecret(secret.encode(), "t"))


def draws(ctx: GradingContext, purpose: str = "agreement") -> list[int]:
    return ctx.rng(purpose).integers(0, 2**62, size=8).tolist()


def public_recipe(seed: int, student: str, *purpose) -> list[int]:
    """What anyone with the kit and a student id computes: the former derivation from course.yml's seed."""
    digest = hashlib.sha256("\0".join([student, *purpose]).encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")]).integers(0, 2**62, size=8).tolist()


def test_the_kit_and_a_student_id_no_longer_give_the_hidden_inputs():
    """Before: the public recipe matched all 8 draws of every purpose; now it matches none, and neither does
    guessing the public example secret when the course has its own."""
    real = context("ada@example.edu", SECRET_A)
    for purpose in ("agreement", "rnn_backward", "clip"):
        assert sum(a == b for a, b in zip(draws(real, purpose), public_recipe(ASSIGNMENT.seed, "ada@example.edu",
                                                                                purpose))) == 0
    assert draws(real) != draws(context("ada@example.edu", PUBLIC_EXAMPLE_SECRET))


def test_same_secret_same_inputs_other_secret_or_student_other_inputs():
    assert draws(context("ada", SECRET_A)) == draws(context("ada", SECRET_A))  # a regrade
    assert draws(context("ada", SECRET_A)) != draws(context("ada", SECRET_B))
    assert draws(context("ada", SECRET_A)) != draws(context("bob", SECRET_A))
    assert draws(context("ada", SECRET_A), "x") != draws(context("ada", SECRET_A), "y")
    # The parts of the message cannot run into each other ("a\0b" + "c" vs "a" + "b\0c" used to be one string).
    assert draws(context("a\0b", SECRET_A), "c") != draws(context("a", SECRET_A), "b\0c")


def test_the_secret_is_not_shown_or_sent():
    secret = CourseSecret(SECRET_A.encode(), "$X")
    assert SECRET_A not in repr(secret) and SECRET_A not in repr(context("ada", SECRET_A))
    assert SECRET_A not in secret.describe() and secret.fingerprint in secret.describe()
    with pytest.raises(TypeError, match="not sent"):
        pickle.dumps(secret)


def test_environment_first_then_the_course_file_else_a_message_saying_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(CourseSecretError) as missing:
        load_secret(tmp_path)
    assert isinstance(missing.value, CourseConfigError)  # so every command reports it as a course problem
    assert "`autograder secret`" in str(missing.value) and str(secret_path(tmp_path)) in str(missing.value)
    assert SECRET_ENV in str(missing.value)
    made, created = make_secret(tmp_path)
    assert created and load_secret(tmp_path).key == made.key and load_secret(tmp_path).source == str(
        secret_path(tmp_path))
    monkeypatch.setenv(SECRET_ENV, SECRET_B)
    assert load_secret(tmp_path).key == SECRET_B.encode() and load_secret(tmp_path).source == f"${SECRET_ENV}"
    monkeypatch.setenv(SECRET_ENV, "short-secret")
    with pytest.raises(CourseSecretError, match=f"has 12 characters; it needs at least {MIN_LENGTH}") as short:
        load_secret(tmp_path)
    assert "short-secret" not in str(short.value)


def test_make_secret_writes_a_private_file_git_ignores_and_never_replaces_it(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    secret, created = make_secret(tmp_path)
    path = secret_path(tmp_path)
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert len(path.read_text().strip()) == 64 and int(path.read_text(), 16)  # 256 random bits, as hex
    status = subprocess.run(["git", "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=all"],
                            capture_output=True, text=True, check=True).stdout
    assert status == ""  # the folder ignores itself, whatever the course repository's own .gitignore says
    again, created = make_secret(tmp_path)
    assert not created and again.key == secret.key
    path.chmod(0o644)
    assert "others can read it" in load_secret(tmp_path).describe()


def test_the_secret_command_makes_it_once_and_never_prints_it(tmp_path, monkeypatch):
    monkeypatch.delenv(SECRET_ENV)
    (tmp_path / "course.yml").write_text((REPO_ROOT / "course.yml").read_text())
    first = CliRunner().invoke(main, ["secret", "--course", str(tmp_path)])
    assert first.exit_code == 0, first.output
    key = secret_path(tmp_path).read_text().strip()
    assert f"Made {secret_path(tmp_path)}" in first.output and "Back it up" in first.output
    second = CliRunner().invoke(main, ["secret", "--course", str(tmp_path)])
    assert second.exit_code == 0 and f"The course secret is {secret_path(tmp_path)}" in second.output
    assert secret_path(tmp_path).read_text().strip() == key
    assert key not in first.output + second.output
    monkeypatch.setenv(SECRET_ENV, SECRET_A)
    third = CliRunner().invoke(main, ["secret", "--course", str(tmp_path)])
    assert "DIFFERENT secret" in third.output and SECRET_A not in third.output


def test_grade_without_a_secret_stops_before_grading_and_says_how_to_make_one(tmp_path):
    (tmp_path / "course" / "course.yml").parent.mkdir()
    (tmp_path / "course" / "course.yml").write_text((REPO_ROOT / "course.yml").read_text())
    (tmp_path / "subs" / "ada").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "solutions" / "vanishing_gradients" / "1_bptt.ipynb", tmp_path / "subs" / "ada")
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    run = subprocess.run([sys.executable, "-m", "autograder", "grade", str(tmp_path / "subs"), "--out",
                          str(tmp_path / "out"), "--course", str(tmp_path / "course")], capture_output=True,
                         text=True, timeout=300, env=env)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "no course secret" in run.stderr and "autograder secret" in run.stderr
    assert "Nothing was graded" in run.stderr and not (tmp_path / "out").exists()


def test_a_worker_with_another_secret_or_none_refuses_to_grade(tmp_path, monkeypatch):
    """A Dask worker (or a local one) must grade with the batch's secret: its students would otherwise get other
    hidden inputs. The check runs before any grading, and is not turned into a student's crash result."""
    from autograder.executors import canaries_remote
    from autograder.grade import GradeOptions, _grade_in_worker

    options = GradeOptions(ASSIGNMENT, tmp_path / "out", 60, "process", course=COURSE,
                           secret_fingerprint=CourseSecret(SECRET_A.encode(), "t").fingerprint)
    monkeypatch.setenv(SECRET_ENV, SECRET_B)
    with pytest.raises(CourseSecretError, match="the Dask worker on .* has another course secret"):
        canaries_remote(options)
    with pytest.raises(CourseSecretError, match="another course secret"):
        _grade_in_worker("ada", str(tmp_path), options)
    assert not (tmp_path / "out").exists()
    monkeypatch.delenv(SECRET_ENV)
    monkeypatch.setattr("autograder.secret.secret_path", lambda root: tmp_path / "none")
    with pytest.raises(CourseSecretError, match="no course secret"):
        canaries_remote(dataclasses.replace(options, secret_fingerprint=None))


@pytest.mark.slow
def test_the_self_check_needs_no_secret(tmp_path):
    """`autograder check` runs a student's public checks only: no secret, as on a student's machine."""
    (tmp_path / "course.yml").write_text((REPO_ROOT / "course.yml").read_text())
    shutil.copy(REPO_ROOT / "solutions" / "vanishing_gradients" / "1_bptt.ipynb", tmp_path)
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
    run = subprocess.run([sys.executable, "-m", "autograder", "check", "--course", str(tmp_path),
                          str(tmp_path / "1_bptt.ipynb")], capture_output=True, text=True, timeout=300,
                         env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "public checks pass" in run.stdout


# ---- end to end: grades, regrades, and where the secret must never appear ----

SNOOP = """
import os
def _snoop():
    seen = ["ENV " + repr(dict(os.environ))]
    for path in ["/proc/self/environ", "/proc/%d/environ" % os.getppid(), "/proc/1/environ", "@SECRET_FILE@"]:
        try:
            with open(path, "rb") as f:
                seen.append(path + " " + repr(f.read()))
        except Exception as exc:
            seen.append(path + " " + type(exc).__name__)
    print("\\n".join(seen))
    return seen
SNOOPED = _snoop()
"""


def course_with_file_secret(tmp_path: Path, secret: str) -> Path:
    """A course root holding its secret in .autograder/course_secret (as an instructor's does)."""
    root = tmp_path / "course"
    root.mkdir()
    shutil.copy(REPO_ROOT / "course.yml", root)
    shutil.copytree(REPO_ROOT / "solutions", root / "solutions")
    secret_path(root).parent.mkdir()
    secret_path(root).write_text(secret + "\n")
    secret_path(root).chmod(0o600)
    return root


@pytest.mark.slow
def test_regrades_agree_another_secret_moves_hidden_inputs_not_correct_scores(tmp_path, monkeypatch):
    from autograder.build_class import build_student
    from autograder.grade import GradeOptions, current_result, grade_one

    subs = tmp_path / "subs"
    ada = build_student("ada", {"from": "solutions", "as_python": True}, COURSE, ASSIGNMENT.id, subs)
    bob = build_student("bob", {"from": "solutions", "as_python": True, "edits": [  # the query in the wrong place
        {"file": "5_long_range_pronoun.ipynb", "replace": "tokens[:, -1] = VOCAB.index(QUERY)",
         "with": "tokens[:, 1] = VOCAB.index(QUERY)"}]}, COURSE, ASSIGNMENT.id, subs)

    def graded(secret: str, run: str) -> dict[str, dict]:
        monkeypatch.setenv(SECRET_ENV, secret)
        options = GradeOptions(ASSIGNMENT, tmp_path / run, 300, "process", course=COURSE,
                               secret_fingerprint=CourseSecret(secret.encode(), "t").fingerprint)
        return {name: grade_one(name, str(folder), options) for name, folder in (("ada", ada), ("bob", bob))}

    first, again, other = graded(SECRET_A, "a1"), graded(SECRET_A, "a2"), graded(SECRET_B, "b")
    assert first["ada"]["score"] == other["ada"]["score"] == ASSIGNMENT.max_score
    for name in ("ada", "bob"):
        assert first[name]["tests"] == again[name]["tests"]  # a regrade with the same secret: the same tests[]
    bob_failures = {t["name"]: t["output"] for t in first["bob"]["tests"] if t["status"] != "passed"}
    assert bob_failures and "seed=" in " ".join(bob_failures.values())
    other_failures = {t["name"]: t["output"] for t in other["bob"]["tests"] if t["status"] != "passed"}
    assert other_failures.keys() == bob_failures.keys() and other_failures != bob_failures  # other hidden inputs
    fingerprints = {d["extra_data"]["course_secret_fingerprint"] for d in (first["ada"], again["ada"])}
    assert fingerprints == {CourseSecret(SECRET_A.encode(), "t").fingerprint}
    # --resume keeps a result only if it was graded with the same secret (the same hidden inputs).
    options_a = GradeOptions(ASSIGNMENT, tmp_path / "a1", 300, "process", course=COURSE,
                             secret_fingerprint=CourseSecret(SECRET_A.encode(), "t").fingerprint)
    assert current_result(options_a, "ada", ada) is not None
    assert current_result(dataclasses.replace(options_a, secret_fingerprint=CourseSecret(SECRET_B.encode(),
                                                                                          "t").fingerprint),
                          "ada", ada) is None


@pytest.mark.slow
def test_the_secret_never_reaches_the_sandbox_or_what_students_read(tmp_path, monkeypatch):
    """A submission that prints its environment, its parent's and the course's secret file: the secret appears in
    none of output.txt, results.json and feedback.html (0 occurrences), from the environment or from the file."""
    from autograder.build_class import build_student
    from autograder.grade import GradeOptions, grade_one
    from autograder.sandbox import isolation_level

    root = course_with_file_secret(tmp_path, SECRET_B)
    subs = tmp_path / "subs"
    for source in ("environment", "file"):
        if source == "environment":
            monkeypatch.setenv(SECRET_ENV, SECRET_A)
        else:
            monkeypatch.delenv(SECRET_ENV)
        secret = SECRET_A if source == "environment" else SECRET_B
        # Without bubblewrap the student runs with the grader's rights and reads whatever it can (the solutions,
        # the secret file: README, Known limits); the environments are still its own.
        bubblewrap = isolation_level() == "bubblewrap"
        snoop = SNOOP.replace("@SECRET_FILE@", str(secret_path(root)) if bubblewrap else "/nonexistent")
        folder = build_student(f"eve-{source}", {"from": "solutions", "as_python": True,
                                                  "files": {"snoop.py": snoop}}, COURSE, ASSIGNMENT.id, subs, root=root)
        options = GradeOptions(ASSIGNMENT, tmp_path / "out", 300, isolation_level(), course=COURSE, root=root)
        document = grade_one(f"eve-{source}", str(folder), options)
        assert document["extra_data"]["course_secret_fingerprint"] == CourseSecret(secret.encode(), "t").fingerprint
        out = tmp_path / "out" / f"eve-{source}"
        output = (out / "output.txt").read_text()
        assert "ENV {" in output and "/proc/self/environ b'PATH=" in output  # the snooping ran
        if bubblewrap:
            assert f"{secret_path(root)} FileNotFoundError" in output  # the course folder is not in the sandbox
        texts = {name: (out / name).read_text() for name in ("output.txt", "results.json", "feedback.html")}
        assert {name: text.count(secret) for name, text in texts.items()} == dict.fromkeys(texts, 0)
        assert SECRET_ENV not in output
        assert document["score"] == ASSIGNMENT.max_score


def test_make_demo_grades_the_example_class_with_the_public_example_secret():
    """A fresh clone (CI: no secret) runs `make demo` as it is: the Makefile passes the public example secret."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert f"EXAMPLE_SECRET := {PUBLIC_EXAMPLE_SECRET}\n" in makefile
    assert f"{SECRET_ENV}=$(EXAMPLE_SECRET) $(PY) -m autograder grade build/example_class" in makefile
