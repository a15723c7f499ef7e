"""The class-wide files of a grading run: grades.csv, summary.json and summary.html, built from a compact tally of
every student's document; and the progress shown while grading."""

from __future__ import annotations

import csv
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from autograder.files import write_atomic
from autograder.results import function_scores, student_dir

if TYPE_CHECKING:
    from autograder.grade import GradeOptions

@dataclass
class ClassTally:
    """What the class-wide files (grades.csv, summary.json, summary.html) need, gathered student by student: a few
    numbers per student and a pass/fail count per test, so the batch process stays small however big the class."""
    functions: list[str]
    students: dict[str, tuple[float, float, tuple[float, ...]]] = field(default_factory=dict)  # score, max, per function
    test_counts: dict[str, list[int]] = field(default_factory=dict)  # test name -> [passed, failed]
    submitted: dict[str, tuple[str | None, float]] = field(default_factory=dict)  # student -> (when, points taken off)
    by_hand_rule_broken: dict[str, list[str]] = field(default_factory=dict)  # student -> functions that used autograd

    def add(self, student: str, document: dict) -> None:
        per_function = function_scores(document)
        self.students[student] = (document["score"], document["max_score"],
                                  tuple(per_function.get(f, 0.0) for f in self.functions))
        for test in document["tests"]:
            self.test_counts.setdefault(test["name"], [0, 0])[test["status"] != "passed"] += 1
        extra = document.get("extra_data", {})
        raw = extra.get("raw_score", document["score"])
        self.submitted[student] = (extra.get("submitted"), max(0.0, round(raw - document["score"], 6)))
        broken = extra.get("by_hand_rule_broken") or {}
        if broken:
            self.by_hand_rule_broken[student] = sorted(broken)
        else:
            self.by_hand_rule_broken.pop(student, None)  # a regrade that kept the rule


def function_table(tally: ClassTally, points: dict[str, float]) -> list[dict]:
    """Per graded function: its points, the class mean and the share of students with all of its points."""
    rows = []
    for i, function in enumerate(tally.functions):
        got = [per_function[i] for _, _, per_function in tally.students.values()]
        full = points.get(function, 0.0)
        rows.append({"function": function, "points": full,
                     "mean": round(sum(got) / len(got), 4) if got else None,
                     "pass_rate": round(sum(1 for g in got if g >= full - 1e-6) / len(got), 4) if got else None})
    return rows


def lateness(tally: ClassTally, assignment) -> dict:
    """Who submitted on time, late (by started days after the due date and grace period), or without a timestamp
    (nbgrader's timestamp.txt), and the points the late policy took off."""
    import math
    from datetime import datetime

    on_time, late, unknown, days = 0, 0, 0, {}
    for student, (when, _) in tally.submitted.items():
        if not when:
            unknown += 1
            continue
        seconds = (datetime.fromisoformat(when) - assignment.due).total_seconds() \
            - 60 * assignment.late_policy.grace_minutes
        if seconds <= 0:
            on_time += 1
        else:
            late += 1
            days[student] = math.ceil(seconds / 86400)
    return {"on_time": on_time, "late": late, "no_timestamp": unknown, "days_late": dict(sorted(days.items())),
            "points_taken_off": round(sum(off for _, off in tally.submitted.values()), 4)}


def written_status(gradebook: Path | None, course, assignment_id: str, solutions: Path, students: list[str]) -> dict:
    """The written answers (graded by hand in formgrader): their points, from the solution notebooks, and, when an
    nbgrader gradebook is given, for how many of these students every written answer has a manual grade and their
    mean. Without a gradebook their status is unknown here, and the summary says so."""
    from autograder.notebook import read_trusted_notebook, written_answers

    answers: dict[str, float] = {}
    for path in sorted((solutions / assignment_id).glob("*.ipynb")):
        answers.update(written_answers(read_trusted_notebook(path)))
    status = {"points": sum(answers.values()), "answers": len(answers), "known": False}
    if gradebook is None or not Path(gradebook).is_file() or not answers:
        return status
    from autograder.gradebook import alembic_on_path

    alembic_on_path()
    from nbgrader.api import Gradebook, MissingEntry

    graded, scores = 0, []
    with Gradebook(f"sqlite:///{Path(gradebook).resolve()}", course_id=course.course_id) as gb:
        for student in students:
            try:
                submission = gb.find_submission(assignment_id, student)
            except MissingEntry:
                continue
            grades = [g for nb in submission.notebooks for g in nb.grades if g.name in answers]
            if grades and all(g.manual_score is not None for g in grades):
                graded += 1
                scores.append(sum(g.manual_score for g in grades))
    status.update(known=True, graded=graded, waiting=len(students) - graded,
                  mean=round(sum(scores) / len(scores), 4) if scores else None)
    return status


def write_grades_csv(out: Path, tally: ClassTally) -> Path:
    """OUT/grades.csv, one row a student. A student id (a folder name, chosen by whoever made the folder) that a
    spreadsheet would read as a formula, i.e. one beginning with =, +, -, @, a tab or a carriage return, is written
    with a single quote in front, as OWASP's CSV-injection guidance recommends; the csv module quotes separators
    and double quotes."""
    def spreadsheet_safe(text: str) -> str:
        return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text

    path = out / "grades.csv"
    tmp = out / ".grades.csv.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["student", "score", "max_score", *tally.functions])
        for student in sorted(tally.students):
            score, max_score, per_function = tally.students[student]
            writer.writerow([spreadsheet_safe(student), f"{score:g}", f"{max_score:g}",
                             *(f"{v:.6g}" for v in per_function)])
    os.replace(tmp, path)
    return path


def write_summary(out: Path, tally: ClassTally, options: GradeOptions, seconds: float,
                  canary: str = "not run", not_graded: int = 0, timing: dict | None = None) -> dict:
    scores = [score for score, _, _ in tally.students.values()]
    summary = {
        "assignment": options.assignment.id,
        "students": len(scores),
        "max_score": options.assignment.max_score,
        "mean_score": round(sum(scores) / len(scores), 4) if scores else None,
        "full_marks": sum(1 for s in scores if s >= options.assignment.max_score - 1e-9),
        "zero": sum(1 for s in scores if s == 0),
        "isolation": options.isolation,
        "wall_seconds": round(seconds, 2),
        "canary": canary,
        "not_graded": not_graded,  # interrupted (Ctrl-C): submissions left for --resume
        "timing": timing or {},  # start-up and grading overhead of this run (grade.py: run_timing)
        "grader_errors": sorted(s for s in tally.students
                                if (student_dir(out, s) / "grader_errors.txt").exists()),
        "by_hand_rule_broken": dict(sorted(tally.by_hand_rule_broken.items())),
        "functions": function_table(tally, dict(options.assignment.points)),
        "lateness": lateness(tally, options.assignment),
        "written": written_status(options.gradebook, options.course, options.assignment.id, options.solutions_dir,
                                  sorted(tally.students)) if options.course is not None else {"known": False},
    }
    write_atomic(out / "summary.json", json.dumps(summary, indent=2))
    from autograder.feedback import write_class_summary

    write_class_summary(out / "summary.html", {s: v[0] for s, v in tally.students.items()}, tally.test_counts,
                        summary, {s: student_dir(out, s).name for s in tally.students})
    return summary


class Progress:
    """A progress bar on a terminal, plain lines in CI logs."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="student", file=sys.stderr)

    def update(self, student: str, document: dict) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"{student} {document['score']:g}/{document['max_score']:g}")
            self.bar.update(1)
        else:
            print(f"[{self.done}/{self.total}] {student}: {document['score']:g}/{document['max_score']:g}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


