"""One student's results: the document in Gradescope's results.json schema (score, tests, output, our extra data),
the late penalty, the points per graded function, and where a student's files go in OUT. Plain data, no grading."""

from __future__ import annotations

import json
import math
from pathlib import Path

from autograder.course import Assignment
from autograder.files import write_atomic

RESULTS_FILE = "results.json"
# Whatever a submission does (3,000 raising cells, a megabyte of exception text), its results.json and
# feedback page stay small: every message is cut, and only the first load problems are listed in full.
MAX_MESSAGE = 2000  # characters of one test's message or one load problem
MAX_TRACEBACK = 4000  # characters of one load problem's traceback (results.json only)
MAX_LOAD_PROBLEMS = 20  # load problems listed; the rest are counted
CLASS_FILES = frozenset({"grades.csv", "summary.html", "summary.json", "validation.json"})  # at the top of OUT


def student_dir(out: Path, student: str) -> Path:
    """Where a student's files go: OUT/<student>, unless the id is the name of a class-wide file (a student folder
    called grades.csv), which would collide with it: then OUT/student-<id>."""
    return out / (f"student-{student}" if student in CLASS_FILES else student)



def cut(text: str, limit: int) -> str:
    """text, cut to `limit` characters with a visible mark where it was cut."""
    return text if len(text) <= limit else text[:limit] + " [... cut: too long]"


def empty_tests(assignment: Assignment, message: str) -> list[dict]:
    """One zero-score entry per graded function, for a submission that could not be graded at all."""
    return [{"name": f"{function}: could not be graded", "score": 0.0, "max_score": float(points),
             "status": "failed", "output": message, "visibility": "visible", "tags": [function]}
            for function, points in assignment.points.items()]


def late_penalty(submitted, assignment: Assignment) -> tuple[float, str]:
    """(fraction of the score kept, a note for the student) under course.yml's late policy."""
    if submitted is None:
        return 1.0, ""
    submitted = submitted.astimezone(assignment.zone)  # shown in the course's time zone
    late = (submitted - assignment.due).total_seconds() - 60 * assignment.late_policy.grace_minutes
    if late <= 0:
        return 1.0, f"Submitted {submitted:%Y-%m-%d %H:%M %Z}, on time."
    days = math.ceil(late / 86400)
    kept = max(0.0, 1.0 - days * assignment.late_policy.penalty_per_day)
    return kept, (f"Submitted {submitted:%Y-%m-%d %H:%M %Z}, {days} day{'s' if days > 1 else ''} late: "
                  f"the score is multiplied by {kept:g} (late policy: {assignment.late_policy.penalty_per_day:g} "
                  "per started day).")


def results_document(student: str, tests: list[dict], options, seconds: float, notes: list[str],
                     load_report: list[dict], files: list[str], submitted=None) -> dict:
    """Gradescope's results.json schema, with our extra data under extra_data."""
    raw = round(sum(t["score"] for t in tests), 6)
    kept, late_note = late_penalty(submitted, options.assignment)
    score = round(raw * kept, 6)
    lines = [f"Score: {score:g} / {options.assignment.max_score:g}" + (f" ({raw:g} before the late penalty)"
                                                                         if kept < 1 else "")]
    lines += [late_note] if late_note else []
    lines += notes
    for problem in load_report[:MAX_LOAD_PROBLEMS]:
        cell = problem.get("cell") or (f"cell {problem['index'] + 1}" if problem.get("index") is not None else "")
        where = problem["file"] + (f", {cell}" if cell else "")
        lines.append(f"{where}: {problem['error']}")
    if len(load_report) > MAX_LOAD_PROBLEMS:
        lines.append(f"... and {len(load_report) - MAX_LOAD_PROBLEMS} more cells or files that failed to load "
                     "(output was cut; the first ones are listed above)")
    return {
        "score": score,
        "max_score": options.assignment.max_score,
        "execution_time": round(seconds, 3),
        "output": "\n".join(lines),
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
        "extra_data": {"student": student, "assignment": options.assignment.id, "isolation": options.isolation,
                       "files": files[:1000], "load_errors": load_report[:MAX_LOAD_PROBLEMS],
                       "load_errors_total": len(load_report), "raw_score": raw,
                       "submitted": submitted.isoformat() if submitted else None, "late_kept": kept},
    }


def crash_document(student: str, options, error: str) -> dict:
    """When the grader itself failed for this student: zero with a message, so the batch still has everyone."""
    tests = empty_tests(options.assignment, "internal grader error while grading this submission; the instructor "
                        "has the details")
    document = results_document(student, tests, options, 0.0, [], [], [])
    out_dir = student_dir(options.out, student)
    write_atomic(out_dir / "grader_errors.txt", error)
    from autograder.feedback import write_feedback

    write_feedback(out_dir / "feedback.html", document)
    write_atomic(out_dir / RESULTS_FILE, json.dumps(document, indent=2))
    return document


def already_graded(out: Path, student: str) -> dict | None:
    try:
        return json.loads((student_dir(out, student) / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def function_scores(document: dict) -> dict[str, float]:
    """Points per graded function in a results document (the sum of its tests; tags[0] names the function)."""
    scores: dict[str, float] = {}
    for test in document["tests"]:
        function = (test.get("tags") or [test["name"].split(":")[0]])[0]
        scores[function] = scores.get(function, 0.0) + test["score"]
    return scores


