"""`autograder check`: the student's self-check reports each public check cell of a notebook."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from autograder import REPO_ROOT
from autograder.course import load_course
from autograder.build_class import build_student, load_spec

pytestmark = pytest.mark.slow


def run_check(*notebooks, options=("--no-canary",)):
    return subprocess.run([sys.executable, "-m", "autograder", "check", *options, *map(str, notebooks)],
                          capture_output=True, text=True, timeout=300)


def test_the_canary_checks_the_reference_first_and_stops_where_it_fails(tmp_path):
    """With the reference in the checkout, check runs its public checks first; under limits where the reference
    cannot pass (torch not preloaded, 64 MB), it stops with exit 1 before judging the student's notebook."""
    import yaml

    notebook = REPO_ROOT / "assignments" / "vanishing_gradients" / "1_bptt.ipynb"
    result = run_check(notebook, options=())
    assert "Canary: the reference passes its" in result.stdout, result.stdout + result.stderr
    data = yaml.safe_load((REPO_ROOT / "course.yml").read_text())
    data["assignments"][0]["limits"]["memory_mb"] = 64
    data["assignments"][0]["preload"] = ["numpy"]
    (tmp_path / "course.yml").write_text(yaml.safe_dump(data))
    (tmp_path / "solutions").symlink_to(REPO_ROOT / "solutions")
    broken = run_check(notebook, options=("--course", str(tmp_path / "course.yml")))
    assert broken.returncode == 1
    assert "the canary failed: the reference solution fails its own public checks here" in broken.stderr
    assert "public checks pass" not in broken.stdout  # the student's notebook was not judged


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


def test_check_loads_the_folder_as_the_grader_and_names_the_graded_definition(tmp_path):
    """A stray scratch.py that redefines a graded function: the notebook's checks run (and pass) before it loads,
    as in grading, and the notes say which definition is graded."""
    for path in (REPO_ROOT / "solutions" / "vanishing_gradients").glob("[12]_*.ipynb"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "scratch.py").write_text("def effective_horizon(norms, threshold=1e-3):\n    return 1\n")
    result = run_check(tmp_path / "2_gradient_decay.ipynb")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2_gradient_decay.ipynb: 4 of 4 public checks pass" in result.stdout
    cell = next(i for i, c in enumerate(json.loads((tmp_path / "2_gradient_decay.ipynb").read_text())["cells"])
                if c["metadata"].get("nbgrader", {}).get("grade_id") == "effective_horizon")
    assert ("WARNING  effective_horizon is defined in 2 places. The one graded is the last one loaded (files in "
            "sorted name order, cells in notebook order): scratch.py line 1. Not graded: 2_gradient_decay.ipynb "
            f"cell {cell} (line 1).") in result.stdout


def test_check_reports_a_corrupt_file_of_the_folder(tmp_path):
    (tmp_path / "1_bptt.ipynb").write_bytes((REPO_ROOT / "solutions" / "vanishing_gradients" / "1_bptt.ipynb")
                                            .read_bytes())
    (tmp_path / "0_deep.ipynb").write_text('{"cells": ' + "[" * 5000 + "]" * 5000 + "}")
    result = run_check(tmp_path / "1_bptt.ipynb")
    assert result.returncode == 1
    assert "1_bptt.ipynb: 2 of 2 public checks pass" in result.stdout
    assert "PROBLEM  0_deep.ipynb: not a valid notebook (its JSON is nested too deeply to read); not loaded" \
        in result.stdout


@pytest.mark.parametrize("case,notebook,message", [
    ("m_step_backward_modifies_dnext_h", "1_bptt.ipynb",
     "FAIL  check_rnn_step: AssertionError: rnn_step_backward modified its input dnext_h; it must leave its inputs "
     "unchanged (work on a copy)"),
    ("m_horizon_normalises_in_place", "2_gradient_decay.ipynb",
     "FAIL  check_effective_horizon: AssertionError: effective_horizon modified its input norms; it must leave its "
     "inputs unchanged (work on a copy)"),
    ("m_clip_value_in_place", "3_clipping.ipynb",
     "FAIL  check_clip_grad_value: AssertionError: clip_grad_value modified its input grads; it must leave its inputs "
     "unchanged (work on a copy)"),
])
def test_a_changed_input_is_what_the_public_check_reports(tmp_path, case, notebook, message):
    """The public checks test 'inputs are not modified' before anything that a changed input would make fail."""
    spec = dict(load_spec(REPO_ROOT / "tests" / "submissions" / "mutants.yml")["students"][case], as_python=False)
    folder = build_student(case, spec, load_course(), "vanishing_gradients", tmp_path)
    result = run_check(folder / notebook)
    assert result.returncode == 1
    assert message in result.stdout, result.stdout


def test_a_part1_mistake_is_not_blamed_on_the_later_parts(tmp_path):
    """Parts 2, 4 and 5 call the student's Part 1 functions: their checks say to fix Part 1 first."""
    spec = load_spec(REPO_ROOT / "examples" / "class.yml")["students"]["cleo_no_carried_gradient"]
    folder = build_student("cleo", spec, load_course(), "vanishing_gradients", tmp_path)
    result = run_check(folder / "2_gradient_decay.ipynb", folder / "6_exploding_vs_vanishing.ipynb")
    assert result.returncode == 1
    assert ("FAIL  check_hidden_grad_norms: AssertionError: (uses your Part 1 code; make Part 1 pass first)"
            in result.stdout), result.stdout
    assert "PASS  check_effective_horizon" in result.stdout  # a check that does not use Part 1 still passes
    assert "6_exploding_vs_vanishing.ipynb: no public checks in this notebook" in result.stdout


def test_the_self_check_applies_the_by_hand_rule(tmp_path):
    """A solution notebook whose rnn_backward is torch autograd: its public check fails with the rule's message, as
    grading would fail it, while the forward's check (autograd-free) still passes."""
    import shutil

    folder = tmp_path / "student"
    folder.mkdir()
    notebook = folder / "1_bptt.ipynb"
    shutil.copy(REPO_ROOT / "solutions" / "vanishing_gradients" / "1_bptt.ipynb", notebook)
    nb = json.loads(notebook.read_text())
    autograd = ("def rnn_backward(dh, cache):\n"
                "    import torch\n"
                "    w = torch.ones(2, dtype=torch.float64, requires_grad=True)\n"
                "    (w * 2).sum().backward()\n"
                "    return None\n")
    index = next(i for i, c in enumerate(nb["cells"]) if "".join(c["source"]).startswith("def rnn_backward("))
    nb["cells"].insert(index + 1, {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                                   "source": autograd})
    notebook.write_text(json.dumps(nb))
    result = run_check(notebook)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PASS  check_rnn_step" in result.stdout
    assert ("FAIL  check_rnn_backward: AutogradForbidden: rnn_backward must compute the gradient by hand: torch "
            "autograd was called (Tensor.backward)") in result.stdout, result.stdout
