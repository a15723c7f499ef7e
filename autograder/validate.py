"""`autograder validate`: prove the graders. Grades the reference (must get full marks), the untouched release
(must get 0), and every case of the corpora in tests/submissions/ (mutants: one realistic mistake each; variants:
correct code written differently; attacks: hostile submissions), checks each against what its spec declares, and
prints a table: case, expected, got, verdict. Any miss makes the command fail.

A spec entry's `expect` may hold:
    score: full | <number>     the total score
    lose: [functions]          each must lose points
    keep: [functions]          each must keep all its points (with `lose` and no `keep`: every other function)
    zero: [functions]          each must score nothing at all
    names: [words]             each must appear in the message of some failed test
    notes: [words]             each must appear in the notes at the top of the results (results.json's output)
    short_numbers: true        no failure message holds a number of more than 4 significant digits (integers of
                               up to 6 digits, such as shapes and seeds, aside)
    csv_student: text          the case's cell in the student column of grades.csv (e.g. an escaped formula)
    max_seconds: <number>      grading it took at most this long (results.json's execution_time)
    max_kb: <number>           its results.json and feedback.html are each at most this many KB
    flagged: [functions]       exactly these are flagged for breaking the by-hand rule (course.yml's by_hand: torch
                               autograd called inside them); without `flagged`, no function may be flagged
    requires: bubblewrap       only checked where bubblewrap is available
A spec entry may also set `timeout: <seconds>`, the wall-clock limit of the whole submission for that case (graded
in a batch of its own), so that an attack on the time limits is proved in seconds rather than minutes.
Side conditions checked for the whole batch: no process left whose command line holds one of the spec's
`markers`, nothing received on the loopback port that attacks are given as @PORT@, no cell of grades.csv that a
spreadsheet would run as a formula, and no grading worker (trusted: it holds the reference) whose resident memory
ever went over GRADER_RSS_LIMIT_MB, whatever the students sent it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from autograder import REPO_ROOT
from autograder.course import Assignment, Course
from autograder.results import function_scores, student_dir

CORPUS_DIR = REPO_ROOT / "tests" / "submissions"
CORPORA = ("mutants", "variants", "attacks")
BUILTIN_CASES = {"reference": {"from": "solutions", "expect": {"score": "full"}},
                 "untouched_release": {"from": "release", "expect": {"score": 0}}}


@dataclass
class Verdict:
    case: str
    corpus: str
    expected: str
    got: str
    problems: list[str] = field(default_factory=list)
    skipped: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems


def describe_expectation(expect: dict) -> str:
    parts = []
    if "score" in expect:
        parts.append(f"score {expect['score']}")
    if expect.get("lose"):
        parts.append("loses " + ", ".join(expect["lose"]))
    if expect.get("keep"):
        parts.append(f"keeps {len(expect['keep'])} functions")
    return "; ".join(parts) or "(nothing declared)"


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
GRADER_RSS_LIMIT_MB = 2500  # a grading worker holds torch, the reference and one student's replies at a time


def check_expectation(expect: dict, document: dict, assignment: Assignment, grader_errors: str = "",
                      csv_cell: str | None = None) -> list[str]:
    """What is wrong with `document` (and the case's grades.csv cell, when given) against `expect` (empty when it
    matches)."""
    problems = []
    if grader_errors:
        problems.append("grader errors: " + grader_errors.strip().splitlines()[-1][:200])
    scores = function_scores(document)
    score = document["score"]
    if expect.get("score") == "full":
        if abs(score - assignment.max_score) > 1e-6:
            failed = [t["name"] for t in document["tests"] if t["status"] != "passed"]
            problems.append(f"expected full marks, got {score:g}; failed: {'; '.join(failed)[:300]}")
    elif "score" in expect and abs(score - float(expect["score"])) > 1e-6:
        passed = [t["name"] for t in document["tests"] if t["status"] == "passed"]
        problems.append(f"expected {expect['score']}, got {score:g}; passed: {'; '.join(passed)[:300]}")
    for function in expect.get("lose", []):
        if scores.get(function, 0.0) >= assignment.points[function] - 1e-9:
            problems.append(f"{function} kept all its points")
    for function in expect.get("zero", []):
        if scores.get(function, 0.0) > 1e-9:
            passed = [t["name"] for t in document["tests"] if t["tags"][0] == function and t["status"] == "passed"]
            problems.append(f"{function} scored {scores[function]:g}, expected 0; passed: {'; '.join(passed)[:300]}")
    keep = expect.get("keep")
    if keep is None and "lose" in expect:
        keep = [f for f in assignment.points if f not in expect["lose"]]
    for function in keep or []:
        if abs(scores.get(function, 0.0) - assignment.points[function]) > 1e-6:
            messages = [t["output"] for t in document["tests"] if t["tags"][0] == function and t["status"] != "passed"]
            problems.append(f"{function} lost points: {'; '.join(messages)[:300]}")
    flagged = sorted((document.get("extra_data") or {}).get("by_hand_rule_broken") or {})
    if flagged != sorted(expect.get("flagged", [])):
        problems.append(f"flagged for the by-hand rule: {flagged or 'none'}, expected {expect.get('flagged') or 'none'}")
    if "max_seconds" in expect and document["execution_time"] > float(expect["max_seconds"]):
        problems.append(f"grading took {document['execution_time']:g} s, over {expect['max_seconds']} s")
    failed_messages = " ".join(t["output"] for t in document["tests"] if t["status"] != "passed")
    for word in expect.get("names", []):
        if word not in failed_messages:
            problems.append(f"no failure message names {word!r}")
    if expect.get("short_numbers"):
        long_numbers = long_numbers_in(failed_messages)
        if long_numbers:
            problems.append(f"failure messages show numbers at full precision: {long_numbers[:3]}")
    for word in expect.get("notes", []):
        if word not in document["output"]:
            problems.append(f"the notes do not say {word!r}: {document['output'][-300:]!r}")
    if "csv_student" in expect and csv_cell != expect["csv_student"]:
        problems.append(f"grades.csv has {csv_cell!r} for this student, expected {expect['csv_student']!r}")
    return problems


def long_numbers_in(text: str) -> list[str]:
    """Numbers in `text` with more than 4 significant digits (integers of up to 6 digits aside)."""
    found = []
    for token in re.findall(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])", text):
        mantissa = re.split(r"[eE]", token.lstrip("+-"))[0]
        if re.fullmatch(r"\d{1,6}", mantissa):
            continue
        if len(mantissa.replace(".", "").lstrip("0").rstrip("0") if "." in mantissa else mantissa.lstrip("0")) > 4:
            found.append(token)
    return found


def grades_csv_cells(out: Path) -> list[str]:
    """The student column of OUT/grades.csv."""
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        return [row[0] for row in list(csv.reader(f))[1:]]


def csv_cell_of(case: str, cells: list[str]) -> str | None:
    """The grades.csv cell that stands for `case` (the id itself, or the id escaped with a leading quote)."""
    return next((cell for cell in cells if cell in (case, "'" + case)), None)


class Listener:
    """A loopback server that records whatever reaches it (attacks try to connect to it)."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.5)
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while self._running:
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.received.append(conn.recv(1024) or b"(connected)")
                except OSError:
                    self.received.append(b"(connected)")

    def close(self):
        self._running = False
        self._thread.join(timeout=5)
        self.server.close()


def leftover_processes(markers: list[str]) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(marker in cmdline for marker in markers):
            found.append(f"pid {pid}: {cmdline.strip()}")
    return found


def validate(course: Course, assignment_id: str, out: Path, corpus_dir: Path = CORPUS_DIR,
             corpora: tuple[str, ...] = CORPORA, jobs: int = 2, timeout: float | None = None,
             root: Path = REPO_ROOT) -> dict:
    """Build and grade every case, then judge it; returns a report (also written to OUT/validation.json)."""
    from autograder.build_class import build_student, load_spec
    from autograder.grade import GradeOptions, grade_batch
    from autograder.sandbox import isolation_level

    assignment = course.assignment(assignment_id)
    isolation = isolation_level()
    listener = Listener()
    cases: dict[str, tuple[str, dict]] = {name: ("builtin", spec) for name, spec in BUILTIN_CASES.items()}
    markers: list[str] = []
    folders: dict[str, Path] = {}  # case -> where its results are
    try:
        with tempfile.TemporaryDirectory(prefix="vg-validate-") as scratch:
            for corpus in corpora:
                spec = load_spec(corpus_dir / f"{corpus}.yml")
                markers += [str(m) for m in spec.get("markers", [])]
                for name, student in spec["students"].items():
                    if name in cases:
                        raise ValueError(f"case {name!r} appears twice")
                    cases[name] = (corpus, student or {})
            batches: dict[float | None, list[str]] = {}  # a case's own time limit -> its cases
            for name, (_, student) in cases.items():
                batches.setdefault(student.get("timeout"), []).append(name)
            for limit, names in batches.items():
                submissions = Path(scratch) / f"submissions-{limit}"
                batch_out = out if limit is None else out / f"time-limit-{limit:g}s"
                for name in names:
                    build_student(name, cases[name][1], course, assignment_id, submissions, root=root,
                                  substitutions={"@PORT@": str(listener.port), "@REPO@": str(REPO_ROOT)})
                    folders[name] = student_dir(batch_out, name)
                options = GradeOptions(assignment, batch_out, float(limit or timeout or assignment.limits.timeout_seconds),
                                       isolation, course=course, root=root)
                grade_batch(submissions, options, jobs=jobs, canary=False)  # it grades the reference itself
    finally:
        listener.close()

    verdicts = []
    cells = grades_csv_cells(out)
    grader_rss = 0.0
    for name, (corpus, student) in cases.items():
        expect = student.get("expect", {})
        document = json.loads((folders[name] / "results.json").read_text())
        grader_rss = max(grader_rss, document["extra_data"].get("timing", {}).get("grader_peak_rss_mb", 0.0))
        errors_file = folders[name] / "grader_errors.txt"
        verdict = Verdict(name, corpus, describe_expectation(expect), f"{document['score']:g}")
        if expect.get("requires") == "bubblewrap" and isolation != "bubblewrap":
            verdict.skipped = "needs bubblewrap"
        else:
            verdict.problems = check_expectation(expect, document, assignment,
                                                 errors_file.read_text() if errors_file.exists() else "",
                                                 csv_cell_of(name, cells))
            for page in ("results.json", "feedback.html"):
                size_kb = (folders[name] / page).stat().st_size / 1024
                if "max_kb" in expect and size_kb > float(expect["max_kb"]):
                    verdict.problems.append(f"{page} is {size_kb:.0f} KB, over {expect['max_kb']} KB")
        verdicts.append(verdict)
    survivors = leftover_processes(markers) if markers else []
    # At the process level nothing stops a student from reaching the network: the check cannot pass there, so it
    # is reported as not run rather than silently passed.
    network = [r.decode(errors="replace") for r in listener.received] if isolation == "bubblewrap" else []
    network_check = ("run" if isolation == "bubblewrap" else
                     "not run: at the process level (no bubblewrap) student code can reach the network")
    formulas = [cell for cell in cells if cell.startswith(FORMULA_START)]
    report = {
        "isolation": isolation,
        "cases": [vars(v) | {"ok": v.ok} for v in verdicts],
        "survivors": survivors,
        "network_received": network,
        "network_check": network_check,
        "csv_formulas": formulas,
        "grader_peak_rss_mb": round(grader_rss, 1),
        "ok": all(v.ok for v in verdicts) and not survivors and not network and not formulas
        and grader_rss <= GRADER_RSS_LIMIT_MB,
    }
    (out / "validation.json").write_text(json.dumps(report, indent=2))
    return report


def format_table(report: dict) -> str:
    rows = [("case", "corpus", "expected", "got", "verdict")]
    for case in report["cases"]:
        verdict = "skipped: " + case["skipped"] if case["skipped"] else ("ok" if case["ok"] else "MISS")
        rows.append((case["case"], case["corpus"], case["expected"], case["got"], verdict))
    widths = [min(max(len(r[i]) for r in rows), 60) for i in range(5)]
    lines = ["  ".join(cell[:60].ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    for case in report["cases"]:
        for problem in case["problems"]:
            lines.append(f"MISS {case['case']}: {problem}")
    for survivor in report["survivors"]:
        lines.append(f"MISS a process outlived grading: {survivor}")
    if report.get("network_check", "run") != "run":
        lines.append(f"note: the network check was {report['network_check']}")
    if report["network_received"]:
        lines.append(f"MISS the loopback listener received data: {report['network_received']}")
    if report.get("grader_peak_rss_mb", 0) > GRADER_RSS_LIMIT_MB:
        lines.append(f"MISS a grading worker's resident memory reached {report['grader_peak_rss_mb']:g} MB "
                     f"(limit {GRADER_RSS_LIMIT_MB} MB)")
    for cell in report.get("csv_formulas", []):
        lines.append(f"MISS grades.csv has a cell a spreadsheet would run as a formula: {cell!r}")
    return "\n".join(lines)
