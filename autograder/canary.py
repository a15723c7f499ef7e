"""The canary: before anyone is graded, grade the reference solution and the untouched release in the same
workers, sandbox, limits and environment as the class, and stop if the reference is not at full marks or the
release not at zero.

Why: every way this kit can be silently wrong on a new machine (torch that cannot be imported under the memory
limit, a library missing in the sandbox, a too-short time limit, a grader that no longer matches the solutions)
shows up as the reference losing points, or the stubs gaining some. Grading the two known answers first turns
each of those into a loud failure, with the first error the reference met, before a single student is harmed.

    problems = judge(documents, assignment)   # documents: {canary name: results document}
    if problems: raise CanaryFailed(...)

The canaries are graded by the very code path that grades students (grade_one in a grading worker), so the
check costs about one submission per worker and reuses the warm workers.
"""

from __future__ import annotations

from pathlib import Path

from autograder import REPO_ROOT
from autograder.course import Assignment, Course

# name -> (where the submission comes from, the score it must get)
CANARIES = {"canary-reference": ("solutions", "full"), "canary-release": ("release", 0.0)}
MAX_DETAILS = 5  # problems quoted in the message


class CanaryFailed(Exception):
    """The reference or the release did not get its known score here: grades from this environment would be
    wrong. The message says which, and the first errors met."""


def build_canaries(course: Course, assignment_id: str, dest: Path, root: Path = REPO_ROOT) -> dict[str, Path]:
    """Writes the canary submissions (the solution notebooks as they are, the release as it is) into dest."""
    from autograder.build_class import build_student

    return {name: build_student(name, {"from": source}, course, assignment_id, dest, root=root)
            for name, (source, _) in CANARIES.items()}


def judge(documents: dict[str, dict], assignment: Assignment) -> list[str]:
    """What is wrong with the canaries' results (empty when the reference has full marks and the release 0)."""
    problems = []
    for name, (source, expected) in CANARIES.items():
        document = documents.get(name)
        if document is None:
            problems.append(f"the {_what(source)} was not graded")
            continue
        score, max_score = document["score"], assignment.max_score
        want = max_score if expected == "full" else float(expected)
        if abs(score - want) <= 1e-6:
            continue
        problems.append(f"the {_what(source)} scored {score:g} / {max_score:g} (it must score {want:g})"
                        + "".join(f"\n    {line}" for line in first_errors(document, passed=expected != "full")))
    return problems


def first_errors(document: dict, passed: bool = False) -> list[str]:
    """The first problems in a canary's results: files or cells that failed to load, then failing tests (or, for
    the release, the tests that wrongly passed)."""
    lines = []
    for problem in document.get("extra_data", {}).get("load_errors", []):
        where = problem["file"] + (f", cell {problem['index']}" if problem.get("index") is not None else "")
        lines.append(f"{where}: {_one_line(problem['error'])}")
    for test in document["tests"]:
        if (test["status"] == "passed") == passed:
            lines.append(f"{test['name']}: " + (_one_line(test["output"]) if not passed else "passed"))
    more = len(lines) - MAX_DETAILS
    return lines[:MAX_DETAILS] + ([f"... and {more} more"] if more > 0 else [])


def failure_message(problems: list[str], where: str = "") -> str:
    return ("The canary failed" + (f" on {where}" if where else "") + ": in this environment the grader does not "
            "give the known scores, so students' grades would be wrong. Nothing was graded.\n  "
            + "\n  ".join(problems)
            + "\nCommon causes: a library (torch) that cannot be imported under the sandbox's limits, a time limit "
              "too short for this machine, solutions/ and the graders out of step (run `autograder validate`).")


def _what(source: str) -> str:
    return "reference solution" if source == "solutions" else "untouched release"


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "(no message)")[:300]
