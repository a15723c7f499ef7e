"""`autograder check NOTEBOOK...`: a student's self-check. Loads the notebook's folder exactly as `autograder grade`
loads a submission (the same reader, autograder/submission.py: every .ipynb and .py file, in sorted file-name order,
each code cell on its own, in the same sandbox, magics skipped, expensive experiments skipped with AUTOGRADER=1) and
reports every public check cell of the notebooks asked for: passed, or the message it failed with. It also prints
the reader's notes, among them which definition is graded when a graded function is defined more than once. It
uses only what is in the student's folder: no hidden tests, no reference."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autograder.notebook import nbgrader_meta
from autograder.sandbox import Sandbox, SandboxLimits
from autograder.submission import WARNING, Submission, private_copy, read_submission


@dataclass
class CheckResult:
    name: str           # the check cell's grade_id, e.g. check_rnn_backward
    passed: bool
    message: str = ""


def _check_cells(path: Path) -> dict[int, str]:
    """Cell index -> grade_id of the notebook's public check cells (none when it cannot be read)."""
    try:
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return {i: nbgrader_meta(c)["grade_id"] for i, c in enumerate(cells)
                if isinstance(c, dict) and c.get("cell_type") == "code"
                and str(nbgrader_meta(c).get("grade_id", "")).startswith("check_")}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, OSError):
        return {}


def check_folder(folder: Path, notebooks: list[str], limits: SandboxLimits = SandboxLimits(),
                 preload: tuple[str, ...] = ("numpy",), by_hand: tuple[str, ...] = ()
                 ) -> tuple[dict[str, list[CheckResult]], list[str]]:
    """Loads `folder` as the grader does and returns ({notebook file name: one result per public check cell},
    the reader's problems and warnings for the whole folder). `preload`: the libraries the grader's sandbox
    imports before student code (course.yml), so the check runs under the grader's memory limits; `by_hand`:
    the functions under the by-hand rule (course.yml), refused torch autograd here as in grading."""
    submission = read_submission(Submission("self-check", folder))
    loaded = set(submission.files)
    checks = {name: _check_cells(folder / name) if name in loaded else {} for name in notebooks}
    failures: dict[tuple[str, int], str] = {}
    if submission.units:
        with tempfile.TemporaryDirectory(prefix="vg-check-") as scratch:
            workdir = Path(scratch) / "work"
            private_copy(submission, workdir)  # later parts load earlier notebooks
            with Sandbox(workdir, submission.units, limits, preload=preload, by_hand=by_hand) as sandbox:
                failures = {(r["file"], r["index"]): r["error"] for r in sandbox.load_report}
    results = {name: [CheckResult(grade_id, (name, index) not in failures, failures.get((name, index), ""))
                      for index, grade_id in cells.items()]
               for name, cells in checks.items()}
    return results, submission.problems


def check_reference(reference: Path, notebooks: list[str], limits: SandboxLimits,
                    preload: tuple[str, ...], by_hand: tuple[str, ...] = ()) -> tuple[bool, str]:
    """The self-check's canary: the reference solution's notebooks checked the same way. (whether all its public
    checks pass, what to print): if they do not, the checks cannot be trusted in this environment."""
    results, _ = check_folder(reference, notebooks, limits, preload, by_hand)
    failing = [f"{name}: {r.name}: {r.message.strip().splitlines()[-1][:200] if r.message else ''}"
               for name, checks in results.items() for r in checks if not r.passed]
    if failing:
        return False, ("error: the canary failed: the reference solution fails its own public checks here, so the "
                       "checks cannot be trusted in this environment:\n  " + "\n  ".join(failing[:5]))
    return True, f"Canary: the reference passes its {sum(len(c) for c in results.values())} public checks here."


def check_notebook(path: Path, limits: SandboxLimits = SandboxLimits()) -> tuple[list[CheckResult], list[str]]:
    """(one result per public check cell of `path`, the reader's problems and warnings for its folder)."""
    results, problems = check_folder(path.parent, [path.name], limits)
    return results[path.name], problems


def format_results(path: Path, results: list[CheckResult], problems: list[str] = ()) -> str:
    lines = [f"{path.name}: {sum(r.passed for r in results)} of {len(results)} public checks pass" if results
             else f"{path.name}: no public checks in this notebook (it has no function to write)"]
    for problem in problems:
        lines.append(f"  problem: {problem}")
    for result in results:
        lines.append(f"  {'PASS' if result.passed else 'FAIL'}  {result.name}"
                     + (f": {result.message.strip().splitlines()[-1][:300]}" if result.message else ""))
    return "\n".join(lines)


def format_notes(folder: Path, problems: list[str]) -> str:
    """The reader's notes on a folder: problems (a file not loaded) and warnings (a graded function defined twice)."""
    lines = [f"Notes on {folder} (loaded as the grader loads it):"] if problems else []
    for problem in problems:
        lines.append(f"  {'WARNING' if problem.startswith(WARNING) else 'PROBLEM'}  "
                     f"{problem[len(WARNING):] if problem.startswith(WARNING) else problem}")
    return "\n".join(lines)


def is_error(problem: str) -> bool:
    """A problem that means the grader will not load something (warnings do not)."""
    return not problem.startswith(WARNING)
