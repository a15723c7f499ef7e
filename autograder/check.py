"""`autograder check NOTEBOOK`: a student's self-check. Runs the notebook the way the grader loads it (each code
cell on its own, in the same sandbox, magics skipped, expensive experiments skipped with AUTOGRADER=1) and reports
every public check cell: passed, or the message it failed with. It uses only what is in the student's folder:
no hidden tests, no reference."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from autograder.notebook import nbgrader_meta
from autograder.sandbox import Sandbox, SandboxLimits
from autograder.submission import Submission, _notebook_units, private_copy


@dataclass
class CheckResult:
    name: str           # the check cell's grade_id, e.g. check_rnn_backward
    passed: bool
    message: str = ""


def check_notebook(path: Path, limits: SandboxLimits = SandboxLimits(),
                   preload: tuple[str, ...] = ("numpy",)) -> tuple[list[CheckResult], list[str]]:
    """(one result per public check cell, problems with the notebook itself); `preload`: the libraries the
    grader's sandbox imports before student code (course.yml), so the check runs under the grader's limits."""
    problems: list[str] = []
    text = path.read_text(encoding="utf-8")
    units = _notebook_units(path, text, problems)
    if problems:
        return [], problems
    cells = json.loads(text)["cells"]
    checks = {i: nbgrader_meta(c)["grade_id"] for i, c in enumerate(cells)
              if c.get("cell_type") == "code" and nbgrader_meta(c).get("grade_id", "").startswith("check_")}
    with tempfile.TemporaryDirectory(prefix="vg-check-") as scratch:
        workdir = Path(scratch) / "work"
        private_copy(Submission("self-check", path.parent), workdir)  # later parts load earlier notebooks
        with Sandbox(workdir, units, limits, preload=preload) as sandbox:
            failures = {r["index"]: r["error"] for r in sandbox.load_report if r.get("file") == path.name}
    results = [CheckResult(name, index not in failures, failures.get(index, "")) for index, name in checks.items()]
    return results, problems


def format_results(path: Path, results: list[CheckResult], problems: list[str]) -> str:
    lines = [f"{path.name}: {sum(r.passed for r in results)} of {len(results)} public checks pass"]
    for problem in problems:
        lines.append(f"  problem: {problem}")
    for result in results:
        lines.append(f"  {'PASS' if result.passed else 'FAIL'}  {result.name}"
                     + (f": {result.message.strip().splitlines()[-1][:300]}" if result.message else ""))
    return "\n".join(lines)
