"""`autograder validate` over the whole corpus (tests/submissions/: mutants, variants, attacks, plus the reference
and the untouched release), run once; each case's verdict is a test of its own, and so are the batch's side
conditions: no process survives, nothing reaches the network, an honest bystander graded beside the attacks gets
exactly what it gets alone. The course here has a 3 s limit per call (20 s per cell: importing torch on a busy
machine takes seconds) so the hanging attacks cost seconds, not minutes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from autograder import REPO_ROOT
from autograder.build_class import load_spec
from autograder.course import load_course
from autograder.validate import BUILTIN_CASES, CORPORA, CORPUS_DIR

pytestmark = pytest.mark.slow

CASES = list(BUILTIN_CASES) + [name for corpus in CORPORA for name in load_spec(CORPUS_DIR / f"{corpus}.yml")["students"]]


def fast_course(tmp_path: Path) -> Path:
    data = yaml.safe_load((REPO_ROOT / "course.yml").read_text())
    data["assignments"][0]["limits"]["call_timeout_seconds"] = 3
    data["assignments"][0]["limits"]["cell_timeout_seconds"] = 20
    path = tmp_path / "course.yml"
    path.write_text(yaml.safe_dump(data))
    for folder in ("solutions", "assignments"):  # the course root is course.yml's folder: the kit's notebooks
        (tmp_path / folder).symlink_to(REPO_ROOT / folder)
    return path


@pytest.fixture(scope="module")
def validation(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate")
    course = fast_course(root)
    command = [sys.executable, "-m", "autograder", "validate", "--out", str(root / "out"), "--jobs", "2",
               "--course", str(course)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    report = json.loads((root / "out" / "validation.json").read_text())
    return root, course, result, report


@pytest.mark.parametrize("case", CASES)
def test_case_verdict(validation, case):
    _, _, _, report = validation
    verdict = next(c for c in report["cases"] if c["case"] == case)
    if verdict["skipped"]:
        pytest.skip(verdict["skipped"])
    assert verdict["ok"], "\n".join(verdict["problems"])


def test_validate_exit_status_and_table(validation):
    _, _, result, report = validation
    assert report["ok"] and result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "case" in result.stdout and "verdict" in result.stdout
    assert f"{len(CASES)} cases" in result.stdout


def test_validate_fails_and_names_the_miss(tmp_path):
    """A corpus whose expectation is wrong: validate exits 1 and names the case and what was wrong."""
    (tmp_path / "mutants.yml").write_text("students:\n  wrongly_expected:\n    from: solutions\n"
                                          "    as_python: true\n    expect: {score: 0}\n")
    run = subprocess.run([sys.executable, "-m", "autograder", "validate", "--corpus", "mutants", "--corpus-dir",
                          str(tmp_path), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    full = load_course().assignment("vanishing_gradients").max_score
    assert f"MISS wrongly_expected: expected 0, got {full:g}" in run.stdout
    assert "3 cases, 1 missed" in run.stdout


def test_no_process_survives(validation):
    assert validation[3]["survivors"] == []


def test_nothing_reached_the_network(validation):
    assert validation[3]["network_received"] == []


def test_bystander_gets_what_it_gets_alone(validation, tmp_path):
    root, course, _, _ = validation
    alone = tmp_path / "alone"
    subprocess.run([sys.executable, "-m", "autograder", "build-class", str(CORPUS_DIR / "attacks.yml"), str(alone)],
                   check=True, capture_output=True)
    for folder in alone.iterdir():
        if folder.name != "bystander":
            subprocess.run(["rm", "-rf", str(folder)], check=True)
    subprocess.run([sys.executable, "-m", "autograder", "grade", str(alone), "--out", str(tmp_path / "out"),
                    "--course", str(course)], check=True, capture_output=True, timeout=600)
    in_batch = json.loads((root / "out" / "bystander" / "results.json").read_text())
    by_itself = json.loads((tmp_path / "out" / "bystander" / "results.json").read_text())
    assert in_batch["tests"] == by_itself["tests"]


def test_student_output_is_capped(validation):
    root = validation[0]
    limit = yaml.safe_load((REPO_ROOT / "course.yml").read_text())["assignments"][0]["limits"]["output_kb"] * 1024
    assert (root / "out" / "huge_stdout" / "output.txt").stat().st_size <= limit + 4096


def test_grades_csv_has_no_formula_cells(validation):
    assert validation[3]["csv_formulas"] == []
