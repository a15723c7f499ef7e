"""On demand (not part of the tests): `autograder grade` against nbgrader's own `nbgrader autograde`, on one class.

    .venv/bin/python benchmarks/bench_nbgrader.py [--students 50] [--chunks 5] [--jobs 2] [--keep] [--workdir DIR]

What it does:

1. Builds a class of notebook submissions with `autograder build-class` (default 50): about 30% correct (the
   reference, plus the two notebook variants of tests/submissions/variants.yml), 60% buggy (mutants of
   tests/submissions/mutants.yml, submitted as the six notebooks instead of .py files, spread over all parts) and
   10% untouched release stubs. The order is shuffled with a fixed seed, so every chunk holds a mix.
2. Builds an nbgrader course that grades the same assignment with equivalent test cells: the source notebooks are
   the solution notebooks with, after each graded function's cell, an autograder-test cell (grade_id
   test_<function>, the points of course.yml) whose hidden tests call the function on seeded random inputs (the
   shapes and edge cases of autograder/graders, on a smaller scale) and compare it with the reference
   implementation, which the cell execs into a private namespace. nbgrader gives a test cell all or nothing, where
   our graders give partial credit per test, so only the direction of the scores is compared (full marks, zero).
   `nbgrader generate_assignment` records the cells in the gradebook; each student's notebooks get the same test
   cells at the same places under submitted_<chunk>/<student>/vanishing_gradients/.
3. Grades the class in chunks (default 5), alternating which tool goes first, and times each tool's whole command
   (its start-up included: that is what an instructor waits for). nbgrader runs one notebook after another with a
   fresh kernel each; ours runs --jobs submissions at once.
4. Prints a table per chunk, the median seconds per submission of each tool, their ratio, our median
   results.json execution_time and our grading overhead beyond the student's own compute (from
   extra_data.timing when the grader reports it), the machine, our isolation level, and how the scores of the two
   tools compare.

Both tools run the same cells: AUTOGRADER=1 is exported to nbgrader (the notebooks then skip their training
experiments, as in our sandbox), and the locked self-check cell, whose only line is a shell command (`!python -m
autograder check ...`, which our grader turns into `pass`), is made `pass` in nbgrader's notebooks too. Students'
own magics run as IPython runs them, under nbgrader. The variant v_notebook_magics is used without its added
`!pip install` cell (no package manager runs during a benchmark).

The kit benchmarked is the `autograder` package this interpreter imports (normally /work/main; set PYTHONPATH to a
clone to benchmark a stable copy); all subprocesses run in the work directory, not in the repository.
"""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import yaml

import autograder
from common import option_parser, run_in_work_folder  # benchmarks/common.py, next to this script
from autograder.course import load_course
from autograder.notebook import answer_code, is_graded_function_cell, nbgrader_meta

KIT = autograder.REPO_ROOT
ASSIGNMENT = "vanishing_gradients"
PYTHON = sys.executable
VENV_BIN = str(Path(sys.executable).parent)
SEED = 20261126

# ------------------------------------------------------------------------------------------------ the class ------


def class_spec(students: int) -> tuple[dict, dict[str, str]]:
    """The build-class spec of the benchmark class and each student's kind (correct / buggy / stub)."""
    mutants = yaml.safe_load((KIT / "tests/submissions/mutants.yml").read_text())["students"]
    variants = yaml.safe_load((KIT / "tests/submissions/variants.yml").read_text())["students"]
    n_stub = max(1, round(students * 0.1))
    n_correct = max(1, round(students * 0.3))
    n_buggy = students - n_stub - n_correct
    if n_buggy < 1:
        raise SystemExit("--students: need at least 3 students (correct, buggy and stub)")

    entries: list[tuple[str, dict, str]] = []  # (name, spec, kind)
    notebook_variants = []
    for name, spec in variants.items():
        if spec.get("as_python"):
            continue  # their code is in a .py file, which nbgrader would not run
        spec = {k: v for k, v in spec.items() if k != "expect"}
        if "add_cells" in spec:  # no `!pip install` during a benchmark
            spec["add_cells"] = [c for c in spec["add_cells"] if "pip install" not in c["source"]]
        notebook_variants.append((name, spec))
    for i in range(n_correct):
        if i < len(notebook_variants) and n_correct > len(notebook_variants):
            name, spec = notebook_variants[i]
            entries.append((name, spec, "correct"))
        else:
            entries.append((f"reference_{i:02d}", {"from": "solutions"}, "correct"))
    names = list(mutants)
    for i in range(n_buggy):  # evenly spread over the mutants, so every part has buggy students
        name = names[(i * len(names)) // n_buggy] if n_buggy <= len(names) else names[i % len(names)]
        spec = {k: v for k, v in mutants[name].items() if k not in ("expect", "as_python")}
        entries.append((name if n_buggy <= len(names) else f"{name}_{i:03d}", spec, "buggy"))
    for i in range(n_stub):
        entries.append((f"stub_{i:02d}", {"from": "release"}, "stub"))

    random.Random(SEED).shuffle(entries)
    spec = {"students": {}}
    kinds = {}
    for i, (name, student, kind) in enumerate(entries):
        student_id = f"s{i:03d}_{name}"
        spec["students"][student_id] = student
        kinds[student_id] = kind
    return spec, kinds


def build_class(spec: dict, dest: Path, work: Path) -> None:
    spec_file = work / "class.yml"
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    run([PYTHON, "-m", "autograder", "build-class", str(spec_file), str(dest), "--course", str(KIT / "course.yml")],
        cwd=work, log=work / "build-class.log")


def notebook_folder(student_dir: Path) -> Path:
    """A built student's notebooks: flat, or in nbgrader's <student>/<assignment>/ layout."""
    nested = student_dir / ASSIGNMENT
    return nested if nested.is_dir() else student_dir


# ------------------------------------------------------------------------------------- nbgrader test cells ------

# Shared by every test cell, inside the cell's private function (so nothing leaks into the student's namespace).
HELPERS = '''
import numpy as np
ref = {"__name__": "reference"}
exec(compile(REFERENCE_SOURCE, "<reference>", "exec"), ref)
rng = np.random.default_rng(SEED)
SHAPES = [(2, 1, 3, 5), (3, 6, 4, 2), (2, 13, 5, 3)]  # (N, T, D, H): a single step, D != H, T > 10
GRADS = ["dx", "dh0", "dWx", "dWh", "db"]

def close(got, want, what, rtol=1e-7, atol=1e-10):
    assert not isinstance(got, np.ndarray) or got.dtype.kind == "f", f"{what}: expected floats, got {got.dtype}"
    want = np.asarray(want, dtype=float)
    got = np.asarray(got, dtype=float)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True), f"{what}: wrong values"

def close_any(got, wants, what):
    errors = []
    for want in wants:
        try:
            return close(got, want, what)
        except AssertionError as exc:
            errors.append(exc)
    raise errors[0]

def raises(exc_type, function, *args):
    try:
        function(*args)
    except exc_type:
        return
    except Exception as exc:
        raise AssertionError(f"{function.__name__}: raised {type(exc).__name__}, expected {exc_type.__name__}")
    raise AssertionError(f"{function.__name__}: did not raise {exc_type.__name__}")

def copies(*arrays):
    return [a.copy() for a in arrays]

def unchanged(sent, kept, function):
    for a, b in zip(sent, kept):
        assert np.array_equal(a, b), f"{function} modified its inputs"

def problem(N, T, D, H, scale=0.6):
    return (rng.standard_normal((N, T, D)), rng.standard_normal((N, H)) * 0.5,
            rng.standard_normal((D, H)) * scale, rng.standard_normal((H, H)) * scale / np.sqrt(H) * 1.5,
            rng.standard_normal(H) * 0.2, rng.standard_normal((N, T, H)))

def ref_cache(x, h0, Wx, Wh, h):  # the reference's rnn_forward cache at given states
    return [(x[:, t], h0 if t == 0 else h[:, t - 1], Wx, Wh, h[:, t]) for t in range(x.shape[1])]

def states(got, want):  # backward passes are checked at the student's own states, else at the true ones
    if isinstance(got, np.ndarray) and got.shape == want.shape and np.all(np.isfinite(got)):
        got = got.astype(float)
        return [got] if np.array_equal(got, want) else [got, want]
    return [want]

def lstm_problem(N, T, D, H):  # Part 7: Wx (D, 4H), Wh (H, 4H), b (4H,); upstream dh
    return (rng.standard_normal((N, T, D)), rng.standard_normal((N, H)) * 0.5, rng.standard_normal((D, 4 * H)) * 0.5,
            rng.standard_normal((H, 4 * H)) * 0.5 / np.sqrt(H), rng.standard_normal(4 * H) * 0.2,
            rng.standard_normal((N, T, H)))

def grad_arrays(total=None):
    grads = [rng.standard_normal((4, 3)) * 3.0, rng.standard_normal((3, 3)) * 0.05, rng.standard_normal(3) * 0.7]
    if total is not None:
        grads = [g * total / np.sqrt(sum(np.sum(a * a) for a in grads)) for g in grads]
    return grads

def close_list(got, want, what, rtol=1e-10, atol=1e-14):
    assert isinstance(got, (list, tuple)) and len(got) == len(want), f"{what}: expected a list of {len(want)} arrays"
    for i, (g, w) in enumerate(zip(got, want)):
        close(g, w, f"{what}[{i}]", rtol, atol)
'''

# What each hidden test checks: the function's outputs against the reference on seeded random inputs.
TESTS = {
    "lstm_step_forward": '''
for N, T, D, H in SHAPES:
    x, h0, Wx, Wh, b, _ = lstm_problem(N, T, D, H)
    c0 = rng.standard_normal((N, H)) * 0.5
    sent = copies(x[:, 0], h0, c0, Wx, Wh, b)
    got, want = lstm_step_forward(*sent), ref["lstm_step_forward"](x[:, 0], h0, c0, Wx, Wh, b)
    close(got[0], want[0], "next_h")
    close(got[1], want[1], "next_c")
    unchanged(sent, (x[:, 0], h0, c0, Wx, Wh, b), "lstm_step_forward")
''',
    "lstm_step_backward": '''
for N, T, D, H in SHAPES:
    x, h0, Wx, Wh, b, dh = lstm_problem(N, T, D, H)
    c0, dc = rng.standard_normal((N, H)) * 0.5, rng.standard_normal((N, H))
    cache = lstm_step_forward(*copies(x[:, 0], h0, c0, Wx, Wh, b))[2]
    got = lstm_step_backward(dh[:, 0].copy(), dc.copy(), cache)
    assert len(got) == 6, "lstm_step_backward must return six arrays"
    want = ref["lstm_step_backward"](dh[:, 0], dc, ref["lstm_step_forward"](x[:, 0], h0, c0, Wx, Wh, b)[2])
    for i, name in enumerate(["dx", "dprev_h", "dprev_c", "dWx", "dWh", "db"]):
        close(got[i], want[i], name)
''',
    "lstm_forward": '''
for N, T, D, H in SHAPES:
    x, h0, Wx, Wh, b, _ = lstm_problem(N, T, D, H)
    sent = copies(x, h0, Wx, Wh, b)
    close(lstm_forward(*sent)[0], ref["lstm_forward"](x, h0, Wx, Wh, b)[0], "h")
    unchanged(sent, (x, h0, Wx, Wh, b), "lstm_forward")
''',
    "lstm_backward": '''
for N, T, D, H in SHAPES:
    x, h0, Wx, Wh, b, dh = lstm_problem(N, T, D, H)
    cache = lstm_forward(*copies(x, h0, Wx, Wh, b))[1]
    got = lstm_backward(dh.copy(), cache)
    assert len(got) == 5, "lstm_backward must return five arrays"
    want = ref["lstm_backward"](dh, ref["lstm_forward"](x, h0, Wx, Wh, b)[1])
    for i, name in enumerate(GRADS):
        close(got[i], want[i], name)
''',
    "rnn_step_forward": '''
for N, T, D, H in SHAPES:
    x, h0, Wx, Wh, b, _ = problem(N, T, D, H)
    want = ref["rnn_step_forward"](x[:, 0], h0, Wx, Wh, b)[0]
    sent = copies(x[:, 0], h0, Wx, Wh, b)
    close(rnn_step_forward(*sent)[0], want, "next_h")
    unchanged(sent, (x[:, 0], h0, Wx, Wh, b), "rnn_step_forward")
''',
    "rnn_step_backward": '''
for N, T, D, H in SHAPES:
    x, h0, Wx, Wh, b, dh = problem(N, T, D, H)
    next_h, cache = rnn_step_forward(*copies(x[:, 0], h0, Wx, Wh, b))
    got = rnn_step_backward(dh[:, 0].copy(), cache)
    assert len(got) == 5, "rnn_step_backward must return five arrays"
    wants = [ref["rnn_step_backward"](dh[:, 0], (x[:, 0], h0, Wx, Wh, s))
             for s in states(next_h, ref["rnn_step_forward"](x[:, 0], h0, Wx, Wh, b)[0])]
    for i, name in enumerate(["dx", "dprev_h", "dWx", "dWh", "db"]):
        close_any(got[i], [w[i] for w in wants], name)
''',
    "rnn_forward": '''
for N, T, D, H in SHAPES:
    x, h0, Wx, Wh, b, _ = problem(N, T, D, H)
    want = ref["rnn_forward"](x, h0, Wx, Wh, b)[0]
    sent = copies(x, h0, Wx, Wh, b)
    close(rnn_forward(*sent)[0], want, "h")
    unchanged(sent, (x, h0, Wx, Wh, b), "rnn_forward")
''',
    "rnn_backward": '''
for N, T, D, H in SHAPES:
    x, h0, Wx, Wh, b, dh = problem(N, T, D, H)
    h, cache = rnn_forward(*copies(x, h0, Wx, Wh, b))
    got = rnn_backward(dh.copy(), cache)
    assert len(got) == 5, "rnn_backward must return five arrays"
    wants = [ref["rnn_backward"](dh, ref_cache(x, h0, Wx, Wh, s))
             for s in states(h, ref["rnn_forward"](x, h0, Wx, Wh, b)[0])]
    for i, name in enumerate(GRADS):
        close_any(got[i], [w[i] for w in wants], name)
''',
    "hidden_grad_norms": '''
for N, T, D, H in SHAPES:
    x, h0, Wx, Wh, b, dh = problem(N, T, D, H)
    last = np.zeros_like(dh)
    last[:, -1] = dh[:, -1]
    for upstream in (dh, last):
        h, cache = rnn_forward(*copies(x, h0, Wx, Wh, b))
        got = hidden_grad_norms(upstream.copy(), cache)
        wants = [ref["hidden_grad_norms"](upstream, ref_cache(x, h0, Wx, Wh, s))
                 for s in states(h, ref["rnn_forward"](x, h0, Wx, Wh, b)[0])]
        close_any(got, wants, "norms")
''',
    "jacobian_norm_bound": '''
for H, T, gamma in [(2, 1, 1.0), (3, 7, 1.0), (4, 12, 0.25), (5, 9, 1.0)]:
    Wh = np.diag(rng.uniform(0.3, 0.6, H)) + np.triu(rng.standard_normal((H, H)), 1) * 2.0  # non-normal
    close(jacobian_norm_bound(Wh.copy(), T, gamma), ref["jacobian_norm_bound"](Wh, T, gamma), "bound")
S = rng.standard_normal((3, 3))
close(jacobian_norm_bound((S + S.T) / 2, 6), ref["jacobian_norm_bound"]((S + S.T) / 2, 6), "bound (default gamma)")
''',
    "effective_horizon": '''
decay = 10.0 ** -np.arange(8)[::-1]
for norms, threshold in [(decay, 1e-3), (decay, 0.05), (np.array([1e-9, 5.0, 0.5, 2.0]), 1e-3),
                         (np.array([2e-3, 2e-2, 0.5, 3.0]) * 7, 1e-3), (rng.uniform(0.5, 2.0, 6), 1e-3),
                         (np.array([2.5]), 1e-3), (np.array([0.25, 0.5, 1.0]), 0.25)]:
    got = effective_horizon(norms.copy(), threshold)
    want = ref["effective_horizon"](norms, threshold)
    assert got == want, f"horizon {got!r}, expected {want!r} for threshold {threshold}"
assert effective_horizon(decay[2:].copy()) == ref["effective_horizon"](decay[2:]), "default threshold"
''',
    "clip_grad_norm": '''
def check(grads, max_norm, p=2.0):
    sent = copies(*grads)
    got = clip_grad_norm(grads, max_norm, p)
    want = ref["clip_grad_norm"](sent, max_norm, p)
    assert isinstance(got, (list, tuple)) and len(got) == 2, "clip_grad_norm must return (clipped, total_norm)"
    close(got[1], want[1], "total_norm", 1e-10, 1e-14)
    close_list(got[0], want[0], "clipped")
    for g, s in zip(grads, sent):
        assert np.array_equal(g, s, equal_nan=True), "clip_grad_norm modified its input"

def total(grads, p):
    return float(np.linalg.norm(np.concatenate([g.ravel() for g in grads]), p))

for p in (2.0, np.inf, 1.0):
    grads = grad_arrays()
    check(grads, total(grads, p) / rng.uniform(3, 20), p)  # above the threshold
grads = grad_arrays()
check(grads, total(grads, 2.0) * rng.uniform(1.5, 3))      # below
check(grad_arrays(1.0), 1.0)                               # exactly at max_norm: the 1e-6 eps matters
grads = grad_arrays()
grads[1][0, 1] = np.nan
check(grads, 1.0)                                          # a NaN entry
grads = grad_arrays()
grads[0][1, 1] = np.nan
raises(RuntimeError, lambda g: clip_grad_norm(g, 1.0, 2.0, error_if_nonfinite=True), grads)
''',
    "clip_grad_value": '''
for clip_value in (0.1, 1.0, 50.0):
    grads = grad_arrays()
    grads[2][1] = np.nan
    sent = copies(*grads)
    close_list(clip_grad_value(grads, clip_value), ref["clip_grad_value"](sent, clip_value), "clipped")
    for g, s in zip(grads, sent):
        assert np.array_equal(g, s, equal_nan=True), "clip_grad_value modified its input"
''',
    "clip_grad_norm_per_array": '''
for max_norm in (0.5, 0.08, 100.0):
    grads = grad_arrays()
    sent = copies(*grads)
    close_list(clip_grad_norm_per_array(grads, max_norm), ref["clip_grad_norm_per_array"](sent, max_norm), "clipped")
    for g, s in zip(grads, sent):
        assert np.array_equal(g, s), "clip_grad_norm_per_array modified its input"
''',
    "rnn_backward_truncated": '''
for N, T, D, H in [(2, 12, 3, 4), (3, 12, 5, 2)]:
    x, h0, Wx, Wh, b, dh = problem(N, T, D, H, scale=0.9)
    true_h = ref["rnn_forward"](x, h0, Wx, Wh, b)[0]
    for k1, k2 in [(3, 5), (2, 7), (1, 4), (1, 1), (4, 4), (12, 12)]:
        h, cache = rnn_forward(*copies(x, h0, Wx, Wh, b))
        got = rnn_backward_truncated(dh.copy(), cache, k1, k2)
        assert len(got) == 5, "rnn_backward_truncated must return five arrays"
        wants = [ref["rnn_backward_truncated"](dh, ref_cache(x, h0, Wx, Wh, s), k1, k2) for s in states(h, true_h)]
        for i, name in enumerate(GRADS):
            close_any(got[i], [w[i] for w in wants], f"{name} for k1={k1}, k2={k2}")
    for k1, k2 in [(4, 2), (0, 3), (5, 5)]:
        raises(ValueError, rnn_backward_truncated, dh.copy(), cache, k1, k2)
''',
    "torch_truncated_grads": '''
for N, T, D, H in [(2, 12, 3, 4), (3, 12, 5, 2)]:
    x, h0, Wx, Wh, b, dh = problem(N, T, D, H, scale=0.9)
    for k in (1, np.int64(3), 12):
        got = torch_truncated_grads(*copies(x, h0, Wx, Wh, b, dh), k)
        want = ref["torch_truncated_grads"](x, h0, Wx, Wh, b, dh, k)
        assert len(got) == 3, "torch_truncated_grads must return dWx, dWh, db"
        for name, g, w in zip(["dWx", "dWh", "db"], got, want):
            close(g, w, f"{name} for k={k}")
    raises(ValueError, torch_truncated_grads, *copies(x, h0, Wx, Wh, b, dh), 5)
''',
    "make_agreement_data": '''
names, fillers = len(ref["NAMES"]), len(ref["FILLERS"])
query = ref["VOCAB"].index(ref["QUERY"])
seed = int(rng.integers(1000))
for n, distance in [(64, 5), (40, 0), (8, 30)]:
    tokens, labels = make_agreement_data(n, distance, seed)
    assert isinstance(tokens, np.ndarray) and tokens.dtype == np.int64 and tokens.shape == (n, distance + 2), "tokens"
    assert isinstance(labels, np.ndarray) and labels.dtype == np.int64 and labels.shape == (n,), "labels"
    assert np.all(tokens[:, 0] < names), "tokens[:, 0] must be names"
    assert np.all((tokens[:, 1:-1] >= names) & (tokens[:, 1:-1] < names + fillers)), "the middle must be fillers"
    assert np.all(tokens[:, -1] == query), "the last token must be the query"
    assert np.array_equal(labels, (tokens[:, 0] >= names // 2).astype(np.int64)), "labels from the name"
a, b, c = (make_agreement_data(400, 6, s) for s in (3, 3, 4))
assert all(np.array_equal(u, v) for u, v in zip(a, b)), "the same seed must give the same data"
assert not np.array_equal(a[0], c[0]), "different seeds must give different data"
assert 0.3 < a[1].mean() < 0.7, "labels should be balanced"
for args in [(0, 3), (5, -1), (5.0, 3)]:
    raises(ValueError, make_agreement_data, *args)
''',
    "one_hot": '''
for N, T, V in [(3, 5, 25), (1, 1, 4), (4, 9, 7)]:
    tokens = rng.integers(0, V, size=(N, T))
    close(one_hot(tokens.copy(), V), ref["one_hot"](tokens, V), "one_hot")
raises(ValueError, one_hot, np.array([[0, 5]]), 5)
raises(ValueError, one_hot, np.array([[-1, 2]]), 5)
''',
    "antecedent_gradient_ratio": '''
for N, distance, H, scale in [(3, 4, 6, 1.0), (2, 10, 5, 1.5), (4, 7, 8, 0.6)]:
    tokens, _ = ref["make_agreement_data"](N, distance, seed=int(rng.integers(10_000)))
    x = ref["one_hot"](tokens, len(ref["VOCAB"]))
    D, T = x.shape[2], x.shape[1]
    args = (x, rng.standard_normal((N, H)) * 0.3, rng.standard_normal((D, H)) * 0.5,
            rng.standard_normal((H, H)) * scale / np.sqrt(H), rng.standard_normal(H) * 0.1,
            rng.standard_normal((N, H)))
    for k2 in (None, 2, T - 1, T, T + 3):
        close(antecedent_gradient_ratio(*copies(*args), k2), ref["antecedent_gradient_ratio"](*args, k2),
              f"the ratio for k2={k2}")
''',
}


def neutralise_magics(source: str) -> str:
    """What our grader does to IPython lines: `%...` and `!...` become `pass` (same indentation)."""
    lines = source.splitlines()
    return "\n".join(line[: len(line) - len(line.lstrip())] + "pass" if line.lstrip()[:1] in ("%", "!") else line
                     for line in lines)


def without_markers(source: str) -> str:
    """Drops nbgrader's `### BEGIN SOLUTION`-style marker lines (comments), which must not appear in a test cell."""
    return "\n".join(line for line in source.splitlines()
                     if not line.strip().startswith(("### BEGIN ", "### END ")))


def reference_sources() -> dict[str, str]:
    """Per notebook: the reference code a test cell of that notebook execs (answer code of it and earlier parts)."""
    sources, code = {}, []
    for path in sorted((KIT / "solutions" / ASSIGNMENT).glob("*.ipynb")):
        code += [without_markers(neutralise_magics(s)) for s in answer_code(nbformat.read(path, as_version=4))]
        sources[path.name] = "\n\n".join(code) + "\n"
    return sources


def test_cell(function: str, points: float, reference: str, index: int) -> nbformat.NotebookNode:
    body = HELPERS + TESTS[function]
    indented = "\n".join(("    " + line) if line.strip() else "" for line in body.strip("\n").splitlines())
    source = (f"# Hidden test of {function} ({points:g} points), written by benchmarks/bench_nbgrader.py\n"
              "### BEGIN HIDDEN TESTS\n"
              f"def _hidden_test_{function}(REFERENCE_SOURCE, SEED):\n{indented}\n\n\n"
              f"_hidden_test_{function}({reference!r}, {SEED + index})\n"
              f"del _hidden_test_{function}\n"
              "### END HIDDEN TESTS")
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["deletable"] = False
    cell.metadata["editable"] = False
    cell.metadata["nbgrader"] = {"grade": True, "grade_id": f"test_{function}", "locked": True, "points": points,
                                 "schema_version": 3, "solution": False, "task": False}
    cell.id = f"test-{function.replace('_', '-')}"
    return cell


class TestCells:
    """Inserts the nbgrader test cells into a notebook (the source or a student's), the same cells everywhere."""

    def __init__(self):
        points = load_course(KIT / "course.yml").assignment(ASSIGNMENT).points
        missing = set(points) - set(TESTS)
        if missing:
            raise SystemExit(f"no nbgrader test written for {sorted(missing)}: update TESTS in {__file__}")
        references = reference_sources()
        self.cells = {}  # notebook name -> {function: cell}
        index = 0
        for path in sorted((KIT / "solutions" / ASSIGNMENT).glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            self.cells[path.name] = {}
            for cell in nb.cells:
                if is_graded_function_cell(cell):
                    function = nbgrader_meta(cell)["grade_id"]
                    self.cells[path.name][function] = test_cell(function, float(points[function]),
                                                                references[path.name], index)
                    index += 1

    def apply(self, nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
        tests = self.cells.get(name, {})
        cells = []
        for cell in nb.cells:
            if nbgrader_meta(cell).get("grade_id") in ("self_check",) and cell.cell_type == "code":
                cell.source = neutralise_magics(cell.source)
            cells.append(cell)
            function = nbgrader_meta(cell).get("grade_id")
            if is_graded_function_cell(cell) and function in tests:
                cells.append(nbformat.from_dict(json.loads(json.dumps(tests[function]))))
        nb.cells = cells
        return nb


def write_nbgrader_notebooks(src: Path, dest: Path, tests: TestCells) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.write(tests.apply(nb, path.name), dest / path.name)
    timestamp = src / "timestamp.txt"
    if timestamp.exists():
        shutil.copy(timestamp, dest / "timestamp.txt")


def nbgrader_env() -> dict[str, str]:
    env = dict(os.environ, AUTOGRADER="1")
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")  # nbgrader's gradebook runs `alembic` from here
    return env


def build_nbgrader_course(course: Path, tests: TestCells) -> None:
    (course / "source").mkdir(parents=True)
    write_nbgrader_notebooks(KIT / "solutions" / ASSIGNMENT, course / "source" / ASSIGNMENT, tests)
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        f"c.CourseDirectory.course_id = {load_course(KIT / 'course.yml').course_id!r}\n"
        f"c.CourseDirectory.db_url = {'sqlite:///' + str(course / 'gradebook.db')!r}\n")
    run([PYTHON, "-m", "nbgrader", "generate_assignment", ASSIGNMENT, "--force"], cwd=course, env=nbgrader_env(),
        log=course / "generate_assignment.log")


def nbgrader_function_scores(course: Path, students: list[str]) -> dict[str, dict[str, tuple[float, float]]]:
    """{student: {function: (score, max)}} from the gradebook's test_<function> cells (the written answers wait
    for manual grading and are left out)."""
    from nbgrader.api import Gradebook, MissingEntry

    scores = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student in students:
            try:
                submission = gb.find_submission(ASSIGNMENT, student)
            except MissingEntry:
                continue
            scores[student] = {grade.name[len("test_"):]: (grade.score or 0.0, grade.max_score)
                               for notebook in submission.notebooks for grade in notebook.grades
                               if grade.name.startswith("test_")}
    return scores


def nbgrader_scores(course: Path, students: list[str]) -> dict[str, tuple[float, float]]:
    """(autograded score, autograded max) per student."""
    return {student: (sum(g for g, _ in functions.values()), sum(t for _, t in functions.values()))
            for student, functions in nbgrader_function_scores(course, students).items()}


# ------------------------------------------------------------------------------------------------ running -------


def run(argv: list[str], cwd: Path, log: Path, env: dict | None = None) -> float:
    """Run a command to the end, its output into `log`; returns its wall time. Fails loudly on a non-zero exit."""
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(argv[:4])} ... failed with exit code {code}; log {log}:\n{tail}")
    return seconds


def our_results(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/results.json"))}


def isolation_of(document: dict) -> str:
    extra = document.get("extra_data") or {}
    if extra.get("isolation"):
        return extra["isolation"]
    for line in document.get("output", "").splitlines():
        if line.startswith("Isolation:"):
            return line.split(":", 1)[1].strip().rstrip(".")
    return "unknown"


def median_or_na(values: list[float], fmt: str = "{:.2f} s") -> str:
    return fmt.format(statistics.median(values)) if values else "n/a"


def function_scores(document: dict) -> dict[str, float]:
    """Our points per graded function: the sum of its tests (each test's tags[0] names its function)."""
    scores: dict[str, float] = {}
    for test in document.get("tests", []):
        function = (test.get("tags") or [test["name"].split(":")[0]])[0]
        scores[function] = scores.get(function, 0.0) + test["score"]
    return scores


def direction(score: float, top: float) -> str:
    return "full" if score >= top - 1e-9 else "zero" if score <= 1e-9 else "partial"


def main() -> None:
    parser = option_parser(__doc__.splitlines()[0], students=50)
    parser.add_argument("--chunks", type=int, default=5, help="how many chunks the class is graded in (default 5)")
    parser.add_argument("--normal-user", action="store_true",
                        help="as root: then run the same benchmark again as the normal user of tests/normal_user.py "
                             "(its own copy of this checkout and virtualenv) and print both side by side")
    parser.add_argument("--figures-json", type=Path, help="also write the headline figures to this JSON file")
    args = parser.parse_args()
    if not 1 <= args.chunks <= args.students:
        parser.error("--chunks must be between 1 and --students")
    if args.normal_user and os.geteuid() != 0:
        parser.error("--normal-user: run as root (as a normal user, the plain run already is one)")
    figures = {}
    run_in_work_folder(args, "bench-nbgrader-", lambda a, work: figures.update(benchmark(a, work)))
    if args.figures_json:
        args.figures_json.write_text(json.dumps(figures, indent=2))
    if args.normal_user:
        side_by_side({"root": figures, **run_as_normal_user(args)})


def run_as_normal_user(args) -> dict[str, dict]:
    """The same benchmark as tests/normal_user.py's user, from its own checkout (refreshed from this one) and
    virtualenv; returns {user name: its headline figures}. Its whole output is printed as it was."""
    sys.path.insert(0, str(KIT / "tests"))
    import normal_user

    user, kit = normal_user.prepare_checkout()
    figures_file = Path("/tmp") / f"bench-nbgrader-{user.pw_name}-{os.getpid()}.json"
    argv = [str(kit / ".venv/bin/python"), "benchmarks/bench_nbgrader.py", "--students", str(args.students),
            "--chunks", str(args.chunks), "--jobs", str(args.jobs), "--figures-json", str(figures_file)]
    print(f"\n==================== the same benchmark as the normal user {user.pw_name} ({kit}) ====================",
          flush=True)
    run = normal_user.run_as(user, argv, kit, timeout=6 * 3600)
    print(run.stdout + run.stderr, flush=True)
    if run.returncode != 0:
        raise SystemExit(f"the benchmark failed as {user.pw_name} (exit {run.returncode})")
    figures = json.loads(figures_file.read_text())
    figures_file.unlink()
    return {user.pw_name: figures}


def side_by_side(runs: dict[str, dict]) -> None:
    print("\nSide by side (medians over the chunks of each run):")
    print(f"{'user':>14}  {'isolation':>22}  {'warm':>5}  {'start-up (s)':>12}  {'overhead/sub (s)':>16}  "
          f"{'nbgrader s/sub':>14}  {'ours s/sub':>10}  {'nbgrader/ours':>13}")
    for user, f in runs.items():
        print(f"{user:>14}  {f['isolation']:>22}  {str(f['warm_start']):>5}  {f['startup_seconds']:12.2f}  "
              f"{f['overhead_seconds']:16.3f}  {f['nbgrader_per_submission']:14.2f}  {f['ours_per_submission']:10.2f}  "
              f"{f['ratio']:13.1f}")


def benchmark(args, work: Path) -> dict:
    load_start = os.getloadavg()
    print(f"Machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), load average "
          f"{' '.join(f'{x:.2f}' for x in load_start)}; python {sys.version.split()[0]}; kit {KIT}")
    print(f"Class: {args.students} students in {args.chunks} chunks; autograder --jobs {args.jobs}; work {work}")

    spec, kinds = class_spec(args.students)
    built = work / "class"
    t = time.perf_counter()
    build_class(spec, built, work)
    students = list(spec["students"])
    print(f"Built {len(students)} submissions ({sum(k == 'correct' for k in kinds.values())} correct, "
          f"{sum(k == 'buggy' for k in kinds.values())} buggy, {sum(k == 'stub' for k in kinds.values())} stubs) "
          f"in {time.perf_counter() - t:.1f} s")

    course = work / "nbgrader_course"
    t = time.perf_counter()
    tests = TestCells()
    build_nbgrader_course(course, tests)
    print(f"nbgrader course with {sum(len(v) for v in tests.cells.values())} test cells, generate_assignment "
          f"done in {time.perf_counter() - t:.1f} s")

    n, c = len(students), args.chunks
    chunks = [students[k * n // c:(k + 1) * n // c] for k in range(c)]  # c chunks, sizes differing by at most 1
    for k, chunk in enumerate(chunks):
        for student in chunk:
            shutil.copytree(built / student, work / f"ours_{k}" / student)
            write_nbgrader_notebooks(notebook_folder(built / student),
                                     course / f"submitted_{k}" / student / ASSIGNMENT, tests)

    rows = []
    env_ours = dict(os.environ)
    for k, chunk in enumerate(chunks):
        order = ["nbgrader", "autograder"] if k % 2 == 0 else ["autograder", "nbgrader"]
        seconds = {}
        for tool in order:
            if tool == "nbgrader":
                seconds[tool] = run([PYTHON, "-m", "nbgrader", "autograde", ASSIGNMENT,
                                     f"--CourseDirectory.submitted_directory=submitted_{k}"],
                                    cwd=course, env=nbgrader_env(), log=work / f"nbgrader_{k}.log")
            else:
                seconds[tool] = run([PYTHON, "-m", "autograder", "grade", str(work / f"ours_{k}"), "--out",
                                     str(work / f"out_{k}"), "--jobs", str(args.jobs), "--course",
                                     str(KIT / "course.yml")], cwd=work, env=env_ours, log=work / f"autograder_{k}.log")
        rows.append((k, len(chunk), order[0], seconds["nbgrader"], seconds["autograder"]))
        print(f"  chunk {k}: {len(chunk)} students, {order[0]} first: nbgrader {seconds['nbgrader']:.1f} s, "
              f"autograder {seconds['autograder']:.1f} s", flush=True)

    # ------------------------------------------------------------------------------------------- report ---------
    print()
    print(f"{'chunk':>5}  {'students':>8}  {'first':>10}  {'nbgrader (s)':>12}  {'per sub':>8}  "
          f"{'autograder (s)':>14}  {'per sub':>8}  {'ratio':>6}")
    nb_per, ours_per = [], []
    for k, n, first, nb_s, ours_s in rows:
        nb_per.append(nb_s / n)
        ours_per.append(ours_s / n)
        print(f"{k:>5}  {n:>8}  {first:>10}  {nb_s:12.1f}  {nb_s / n:8.2f}  {ours_s:14.1f}  {ours_s / n:8.2f}  "
              f"{nb_s / ours_s:6.2f}")
    nb_median, ours_median = statistics.median(nb_per), statistics.median(ours_per)
    print()
    print(f"Median seconds per submission over the chunks: nbgrader {nb_median:.2f}, autograder {ours_median:.2f} "
          f"(--jobs {args.jobs}); nbgrader / autograder = {nb_median / ours_median:.2f}")
    # Start-up: from `autograder grade`'s process start to the first student's grading (summary.json's timing).
    startups = [json.loads((work / f"out_{k}" / "summary.json").read_text()).get("timing", {}).get("startup_seconds")
                for k in range(len(chunks))]
    startups = [x for x in startups if x is not None]
    print(f"Ours, start-up (process start to the first student's grading, canaries beside it): median "
          f"{median_or_na(startups)} over {len(startups)} runs ({', '.join(f'{x:.2f}' for x in startups)})")

    documents = {}
    for k in range(len(chunks)):
        documents.update(our_results(work / f"out_{k}"))
    exec_times = [d["execution_time"] for d in documents.values() if "execution_time" in d]
    timings = [(d.get("extra_data") or {}).get("timing") for d in documents.values()]
    overheads = [t["total"] - t["student"] for t in timings if isinstance(t, dict) and "total" in t and "student" in t]
    print(f"Ours, per submission: median results.json execution_time {median_or_na(exec_times)}; grading overhead "
          f"beyond the student's own compute (median of timing.total - timing.student) {median_or_na(overheads)}"
          + (f" over {len(overheads)} submissions" if overheads else " (extra_data.timing not reported)"))
    # Each worker's first submission also pays the worker's start-up (imports, reference, grader collection, the
    # zygote): leave out the `jobs` slowest of each chunk to see the steady state, what a large class costs.
    steady = []
    for k in range(len(chunks)):
        times = sorted(d["execution_time"] for d in our_results(work / f"out_{k}").values() if "execution_time" in d)
        steady += times[:max(0, len(times) - args.jobs)]
    if steady:
        steady_per_sub = statistics.median(steady) / args.jobs
        print(f"Ours in the steady state (each worker's first submission left out): median execution_time "
              f"{statistics.median(steady):.2f} s, i.e. {steady_per_sub:.2f} s per submission with --jobs {args.jobs}; "
              f"nbgrader's chunk median / that = {nb_median / steady_per_sub:.1f}")
    isolations = sorted({isolation_of(d) for d in documents.values()})
    load_end = os.getloadavg()
    print(f"Isolation reported by our results.json: {', '.join(isolations) or 'none'}")
    print(f"Machine: nproc {len(os.sched_getaffinity(0))}; load average at start "
          f"{' '.join(f'{x:.2f}' for x in load_start)}, at end {' '.join(f'{x:.2f}' for x in load_end)}")

    # ------------------------------------------------------------------------------------------- scores ---------
    nb_scores = nbgrader_scores(course, students)
    print()
    print("Scores (nbgrader: autograded test cells, all or nothing per function; ours: partial credit per test):")
    print(f"{'':>22}  {'full':>5}  {'zero':>5}  {'partial':>7}  {'missing':>7}")
    for tool, scores in (("nbgrader", nb_scores),
                         ("autograder", {s: (d["score"], d["max_score"]) for s, d in documents.items()})):
        dirs = [direction(*scores[s]) for s in students if s in scores]
        print(f"{tool:>22}  {dirs.count('full'):>5}  {dirs.count('zero'):>5}  {dirs.count('partial'):>7}  "
              f"{len(students) - len(dirs):>7}")
    print(f"{'':>22}  by kind (full / zero / partial), nbgrader vs autograder:")
    for kind in ("correct", "buggy", "stub"):
        members = [s for s in students if kinds[s] == kind]
        def counts(scores):
            dirs = [direction(*scores[s]) for s in members if s in scores]
            return f"{dirs.count('full')}/{dirs.count('zero')}/{dirs.count('partial')}"
        print(f"{kind + f' ({len(members)})':>22}  nbgrader {counts(nb_scores):>9}   autograder "
              f"{counts({s: (d['score'], d['max_score']) for s, d in documents.items()}):>9}")
    disagree = []
    for s in students:
        if s in nb_scores and s in documents:
            if direction(*nb_scores[s]) != direction(documents[s]["score"], documents[s]["max_score"]):
                disagree.append((s, nb_scores[s], documents[s]["score"], documents[s]["max_score"]))
    refs = [s for s in students if kinds[s] == "correct" and s in nb_scores]
    stubs = [s for s in students if kinds[s] == "stub" and s in nb_scores]
    print(f"nbgrader sanity: correct submissions with all autograded points: "
          f"{sum(direction(*nb_scores[s]) == 'full' for s in refs)} of {len(refs)}; stubs with 0: "
          f"{sum(nb_scores[s][0] == 0 for s in stubs)} of {len(stubs)}")
    print(f"Agreement in direction (full / zero / partial): {len(students) - len(disagree)} of {len(students)} "
          "students")
    for s, (nb_got, nb_top), ours, top in disagree:
        print(f"  differs: {s} ({kinds[s]}): nbgrader {nb_got:g}/{nb_top:g}, autograder {ours:g}/{top:g}")
    # Per function: does each tool give the function all its points?
    nb_functions = nbgrader_function_scores(course, students)
    pairs = agree = 0
    differing = []
    for s in students:
        if s not in nb_functions or s not in documents:
            continue
        ours = function_scores(documents[s])
        for function, (got, top) in nb_functions[s].items():
            pairs += 1
            nb_full, ours_full = got >= top - 1e-9, ours.get(function, 0.0) >= top - 1e-9
            agree += nb_full == ours_full
            if nb_full != ours_full:
                differing.append(f"{s}:{function} (nbgrader {'full' if nb_full else 'lost'}, "
                                 f"autograder {ours.get(function, 0.0):g}/{top:g})")
    print(f"Agreement per function (all points or not): {agree} of {pairs} (student, function) pairs")
    for line in differing:
        print(f"  differs: {line}")
    warm = {(d.get("extra_data") or {}).get("warm_start") for d in documents.values()} - {None}
    return {"user": pwd.getpwuid(os.geteuid()).pw_name, "isolation": ", ".join(isolations),
            "warm_start": warm == {True} if warm else None,
            "startup_seconds": statistics.median(startups) if startups else float("nan"),
            "overhead_seconds": statistics.median(overheads) if overheads else float("nan"),
            "nbgrader_per_submission": nb_median, "ours_per_submission": ours_median,
            "ratio": nb_median / ours_median, "students": len(students), "chunks": len(chunks),
            "agreement_per_function": f"{agree} of {pairs}"}


if __name__ == "__main__":
    main()
