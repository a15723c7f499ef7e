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

    def add(self, student: str, document: dict) -> None:
        per_function = function_scores(document)
        self.students[student] = (document["score"], document["max_score"],
                                  tuple(per_function.get(f, 0.0) for f in self.functions))
        for test in document["tests"]:
            self.test_counts.setdefault(test["name"], [0, 0])[test["status"] != "passed"] += 1


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
                  canary: str = "not run", timing: dict | None = None) -> dict:
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
        "timing": timing or {},  # start-up and grading overhead of this run (grade.py: run_timing)
        "grader_errors": sorted(s for s in tally.students
                                if (student_dir(out, s) / "grader_errors.txt").exists()),
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


