"""The graders' own machinery, without a sandbox: which states a backward pass may be graded at
(autograder/graders/conftest.py), and the plugin's rules for points (shares exact to results.json's 6 decimals;
error-handling tests counted only beside passing valid-input tests)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from autograder.vocabulary import Case, Tolerance
from autograder.course import load_course
from autograder.graders.conftest import follows_the_recurrence, rnn_problem, state_candidates
from autograder.grade import GRADERS_DIR

TOL = Tolerance(1e-7, 1e-10)


def problem(T=6, seed=0):
    p = rnn_problem(np.random.default_rng(seed), 3, T, 4, 5)
    return Case(f"T={T}", p), p


def run_states(p, initial):
    h, prev = np.empty((3, p["x"].shape[1], 5)), initial
    for t in range(p["x"].shape[1]):
        prev = np.tanh(p["x"][:, t] @ p["Wx"] + prev @ p["Wh"] + p["b"])
        h[:, t] = prev
    return h


def follows(got, p):
    return follows_the_recurrence(got, p["x"], p["h0"], p["Wx"], p["Wh"], p["b"], TOL)


@pytest.mark.parametrize("T", [1, 6, 13])
def test_true_states_and_states_from_another_initial_state_follow_the_recurrence(T):
    _, p = problem(T)
    assert follows(run_states(p, p["h0"]), p)
    assert follows(run_states(p, np.zeros_like(p["h0"])), p)  # a forward that starts from zeros instead of h0


@pytest.mark.parametrize("T", [1, 6])
def test_chosen_states_do_not(T):
    _, p = problem(T)
    true = run_states(p, p["h0"])
    assert not follows(np.ones_like(true), p)  # saturated: tanh' = 0, every expected gradient 0
    assert not follows(np.full_like(true, 0.999999), p)
    assert not follows(np.full_like(true, np.nan), p)
    assert not follows(true[:, :, :-1], p)  # wrong shape
    assert not follows(true.astype(np.int64), p)
    assert not follows(run_states(p, np.full_like(p["h0"], 50.0)), p)  # an initial state out of any reach
    wh_transposed = dict(p, Wh=p["Wh"].T)
    assert not follows(run_states(wh_transposed, p["h0"]), p) or T == 1  # another recurrence (T = 1: one step)


def test_later_steps_must_follow_the_recurrence():
    _, p = problem(6)
    true = run_states(p, p["h0"])
    for t in (1, 5):
        wrong = true.copy()
        wrong[:, t] = 0.0
        assert not follows(wrong, p)


def test_state_candidates():
    case, p = problem(6)
    true = run_states(p, p["h0"])
    assert [c is true for c in state_candidates(true.copy(), true, case, TOL)] == [True]
    own = run_states(p, np.zeros_like(p["h0"]))
    candidates = state_candidates(own, true, case, TOL)
    assert candidates[0] is true and np.array_equal(candidates[1], own) and len(candidates) == 2
    assert [c is true for c in state_candidates(np.ones_like(true), true, case, TOL)] == [True]
    assert [c is true for c in state_candidates(None, true, case, TOL)] == [True]


# The plugin runs pytest sessions of its own: each of these runs in a fresh interpreter, not inside this session.
COLLECT = """
import json, queue, sys
import pytest
from autograder.pytest_plugin import GradingPlugin
graders, points = sys.argv[1], json.loads(sys.argv[2])
jobs = queue.Queue()
jobs.put(None)  # no student: the plugin's test loop returns at once
plugin = GradingPlugin(points, jobs)
code = pytest.main([graders, "--collect-only", "-c", graders + "/pytest.ini", "--rootdir", graders,
                    "-p", "no:cacheprovider", "-p", "no:terminal"], plugins=[plugin])
print("RESULT:" + json.dumps({"code": int(code), "templates": plugin.templates, "errors": plugin.collection_errors,
                              "error_handling": sorted(plugin.error_handling)}))
"""
GRADE = """
import json, sys
from autograder.vocabulary import Tolerance
from autograder.pytest_plugin import GradingContext, run_graders
from autograder.secret import PUBLIC_EXAMPLE_SECRET, CourseSecret
out = {}
for student in sys.argv[2:]:
    context = GradingContext(student, None, {"f": 2.0}, 1, Tolerance(),
                             secret=CourseSecret(PUBLIC_EXAMPLE_SECRET.encode(), "tests"))
    run_graders(context, sys.argv[1])
    out[student] = {"errors": context.collection_errors,
                    "results": {r.name: [r.score, r.status, r.output] for r in context.results}}
print("RESULT:" + json.dumps(out))
"""


def run_python(script, *args):
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT:")]
    assert lines, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(lines[-1][len("RESULT:"):])


def test_every_share_of_the_real_graders_is_exact_and_adds_up():
    points = dict(load_course().assignment("vanishing_gradients").points)
    collected = run_python(COLLECT, GRADERS_DIR, json.dumps(points))
    assert collected["code"] == 0 and collected["errors"] == []
    per_function = {}
    for _, name, function, share in collected["templates"]:
        assert round(share, 6) == share and share > 0, name
        per_function[function] = per_function.get(function, 0.0) + share
    assert set(per_function) == set(points)
    for function, total in per_function.items():
        assert math.isclose(total, points[function], abs_tol=1e-9), function
    assert {n.split("::")[1].split("[")[0] for n in collected["error_handling"]} == {
        "test_value_errors", "test_torch_value_error", "test_clip_error_if_nonfinite", "test_clip_empty",
        "test_agreement_value_errors",
        "test_one_hot_errors"}
    with_unmodified_test = {f for _, name, f, _ in collected["templates"] if "unchanged" in name}
    assert with_unmodified_test == set(points)


TOY_GRADERS = '''
from autograder.vocabulary import GradingFailure
from autograder.pytest_plugin import graded


@graded("f", "valid input one")
def test_valid_one(context):
    if context.student_id in ("stub", "half"):
        raise GradingFailure("f is wrong on valid input one")


@graded("f", "valid input two")
def test_valid_two(context):
    if context.student_id == "stub":
        raise GradingFailure("f is wrong on valid input two")


@graded("f", "raises ValueError", error_handling=True, points=0.5)
def test_errors(context):
    if context.student_id == "no errors":
        raise GradingFailure("f: should raise ValueError")
'''


@pytest.fixture
def toy_graders(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_toy.py").write_text(TOY_GRADERS)
    return tmp_path


def test_error_handling_counts_only_beside_passing_valid_input_tests(toy_graders):
    graded = run_python(GRADE, toy_graders, "good", "stub", "half", "no errors")
    assert all(g["errors"] == [] for g in graded.values())
    assert list(graded["good"]["results"].values()) == [[0.75, "passed", ""], [0.75, "passed", ""],
                                                        [0.5, "passed", ""]]
    for student, failing in (("stub", 2), ("half", 1)):
        assert graded[student]["results"]["f: raises ValueError"] == [0.0, "failed", (
            "not counted: f passes this test, but error handling and edge cases a stub passes earn points only "
            f"when f also passes its valid-input tests, and {failing} of 2 fail (first: 'f: valid input one')")]
    no_errors = graded["no errors"]["results"]
    assert no_errors["f: raises ValueError"] == [0.0, "failed", "f: should raise ValueError"]
    assert sum(score for score, _, _ in no_errors.values()) == 1.5


def test_fixed_points_that_do_not_fit_are_a_collection_error(toy_graders):
    (toy_graders / "test_toy.py").write_text(TOY_GRADERS.replace("points=0.5", "points=2.5"))
    collected = run_python(COLLECT, toy_graders, json.dumps({"f": 2.0}))
    assert collected["errors"] == ["f: the fixed points of its tests (2.5) do not fit its 2 points in course.yml"]
