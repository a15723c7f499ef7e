"""`autograder check`: the student's self-check reports each public check cell of a notebook."""

from __future__ import annotations

import subprocess
import sys

import pytest

from autograder import REPO_ROOT
from autograder.course import load_course
from autograder.examples import build_student, load_spec

pytestmark = pytest.mark.slow


def run_check(*notebooks):
    return subprocess.run([sys.executable, "-m", "autograder", "check", *map(str, notebooks)], capture_output=True,
                          text=True, timeout=300)


def test_solution_passes_every_public_check():
    result = run_check(REPO_ROOT / "solutions" / "vanishing_gradients" / "1_bptt.ipynb")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 of 2 public checks pass" in result.stdout


def test_stubs_fail_with_not_implemented():
    result = run_check(REPO_ROOT / "assignments" / "vanishing_gradients" / "3_clipping.ipynb")
    assert result.returncode == 1
    assert "FAIL  check_clip_grad_norm: NotImplementedError" in result.stdout


def test_a_mistake_is_reported_with_its_message(tmp_path):
    spec = load_spec(REPO_ROOT / "examples" / "class.yml")["students"]["cleo_no_carried_gradient"]
    folder = build_student("cleo", spec, load_course(), "vanishing_gradients", tmp_path)
    result = run_check(folder / "1_bptt.ipynb", folder / "3_clipping.ipynb")
    assert result.returncode == 1
    assert "PASS  check_rnn_step" in result.stdout
    assert "FAIL  check_rnn_backward: AssertionError: dx does not match the numerical gradient" in result.stdout
    assert "3_clipping.ipynb: 4 of 4 public checks pass" in result.stdout
