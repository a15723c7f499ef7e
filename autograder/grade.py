"""`autograder grade`: grade a folder of submissions and write per-student results, grades.csv, feedback pages
and a run summary.

The batch process only reads folders and writes reports. Each student is graded in a worker process (trusted:
it holds the reference and the hidden graders) that starts the student's sandbox and runs the pytest graders
against it. A student's files are written atomically (results.json last), so an interrupted run never leaves a
half-written result and `--resume` grades only who is missing.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from autograder.course import Assignment, Course
from autograder.files import remove_tree, write_atomic

GRADERS_DIR = Path(__file__).resolve().parent / "graders"
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


@dataclass(frozen=True)
class GradeOptions:
    assignment: Assignment
    out: Path
    timeout: float        # wall clock for one submission
    isolation: str        # what the sandbox uses: "bubblewrap" or "process"
    course: Course | None = None  # for the canaries' submissions (solutions/ and the release); None: course.yml


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
    late = (submitted - assignment.due).total_seconds() - 60 * assignment.late_policy.grace_minutes
    if late <= 0:
        return 1.0, f"Submitted {submitted:%Y-%m-%d %H:%M %Z}, on time."
    days = math.ceil(late / 86400)
    kept = max(0.0, 1.0 - days * assignment.late_policy.penalty_per_day)
    return kept, (f"Submitted {submitted:%Y-%m-%d %H:%M %Z}, {days} day{'s' if days > 1 else ''} late: "
                  f"the score is multiplied by {kept:g} (late policy: {assignment.late_policy.penalty_per_day:g} "
                  "per started day).")


def results_document(student: str, tests: list[dict], options: GradeOptions, seconds: float, notes: list[str],
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
        where = f"{problem['file']}" + (f", cell {problem['index']}" if problem.get("index") is not None else "")
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
                       "submitted": submitted.isoformat() if submitted else None},
    }


def grade_one(student: str, folder: str, options: GradeOptions, alone: bool = False) -> dict:
    """Grade one student (in a worker process) and write their files; returns their results document. `alone`:
    this is the regrade of a submission that hit a time limit while others were graded at the same time."""
    from autograder.feedback import write_feedback
    from autograder.plots import feedback_plots
    from autograder.pytest_plugin import ECHO_SOURCE, GradingContext, Student, run_graders
    from autograder.reference import load_reference
    from autograder.sandbox import LoadUnit, Sandbox
    from autograder.submission import Submission, private_copy, read_submission

    started = time.monotonic()
    out_dir = student_dir(options.out, student)
    limits = options.assignment.limits
    submission = read_submission(Submission(student, Path(folder)))
    problems = [cut(problem, MAX_MESSAGE) for problem in submission.problems[:MAX_LOAD_PROBLEMS]]
    if len(submission.problems) > MAX_LOAD_PROBLEMS:
        problems.append(f"... and {len(submission.problems) - MAX_LOAD_PROBLEMS} more problems with the files "
                        "(output was cut)")
    notes = [f"Isolation: {options.isolation}."] + problems
    if alone:
        notes.append("Graded again on its own: a time limit was hit while other submissions were graded at the "
                     "same time, so this result, with nothing else running, is the one that counts.")
    grader_errors, load_report, output, figures = [], [], "", []
    student_seconds, warm, timed_out = 0.0, None, False
    if not submission.units:
        tests = empty_tests(options.assignment, cut("nothing in the submission could be loaded: "
                                                    + "; ".join(submission.problems), MAX_MESSAGE))
    else:
        scratch = tempfile.mkdtemp(prefix="vg-work-")
        try:
            workdir = Path(scratch) / "work"
            notes += private_copy(submission, workdir)
            units = submission.units + [LoadUnit(file="(autograder)", index=None, source=ECHO_SOURCE, kind="module")]
            sandbox_limits = limits.sandbox_limits(options.timeout)
            with Sandbox(workdir, units, sandbox_limits, preload=tuple(options.assignment.preload),
                         deadline=started + options.timeout) as sandbox:
                load_report = [dict(r, error=cut(r["error"], MAX_MESSAGE), traceback=cut(r["traceback"], MAX_TRACEBACK))
                               for r in sandbox.load_report if r.get("file") != "(autograder)"]
                context = GradingContext(student, sandbox, dict(options.assignment.points), options.assignment.seed,
                                         _tolerance(options), deadline=started + options.timeout)
                run_graders(context, str(GRADERS_DIR))
                if context.results and any(r.score > 0 for r in context.results):
                    figures = feedback_plots(Student(sandbox, context.deadline), load_reference())
                output = sandbox.output()
                student_seconds = sandbox.student_seconds
                warm = sandbox.warm
                notes.append(f"Memory limit: {sandbox.memory_scope}.")
                timed_out = sandbox.timeouts > 0 or time.monotonic() >= context.deadline
        finally:
            remove_tree(scratch)  # whatever the student left there (without bubblewrap it writes to this disk)
        grader_errors = context.collection_errors + [f"{r.name}:\n{r.grader_error}" for r in context.results
                                                     if r.grader_error]
        tests = [{"name": r.name, "score": round(r.score, 6), "max_score": round(r.max_score, 6),
                  "status": r.status, "output": cut(r.output, MAX_MESSAGE), "visibility": "visible",
                  "tags": [r.function]} for r in context.results]
        if context.collection_errors:
            tests = empty_tests(options.assignment, "internal grader error: the graders could not be collected")
    document = results_document(student, tests, options, time.monotonic() - started, notes, load_report,
                                submission.files, submission.timestamp())

    write_atomic(out_dir / "output.txt", output or "(no output)\n")
    if grader_errors:
        write_atomic(out_dir / "grader_errors.txt", "\n\n".join(grader_errors))
    write_feedback(out_dir / "feedback.html", document, figures)
    # Where the time went: the student's code (loading cells, calls) and everything else (the grading overhead).
    document["extra_data"]["timing"] = {"total": round(time.monotonic() - started, 4),
                                        "student": round(student_seconds, 4),
                                        "grader_peak_rss_mb": _peak_rss_mb()}  # this worker's, so far
    document["extra_data"]["warm_start"] = warm  # forked from a warm zygote (None: no student code was run)
    document["extra_data"]["timed_out"] = timed_out  # a call, a cell or the whole submission hit its time limit
    document["extra_data"]["graded_alone"] = alone
    write_atomic(out_dir / RESULTS_FILE, json.dumps(document, indent=2, allow_nan=False))
    return document


def _peak_rss_mb() -> float:
    """The highest resident memory of this (trusted) process so far, in MB (VmHWM)."""
    try:
        with open("/proc/self/status") as f:
            return round(next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024, 1)
    except (OSError, StopIteration, ValueError):
        return 0.0


def _tolerance(options: GradeOptions):
    from autograder.checks import Tolerance

    return Tolerance(options.assignment.tolerances.rtol, options.assignment.tolerances.atol)


def crash_document(student: str, options: GradeOptions, error: str) -> dict:
    """When the grader itself failed for this student: zero with a message, so the batch still has everyone."""
    tests = empty_tests(options.assignment, "internal grader error while grading this submission; the instructor "
                        "has the details")
    document = results_document(student, tests, options, 0.0, [f"Isolation: {options.isolation}."], [], [])
    out_dir = student_dir(options.out, student)
    write_atomic(out_dir / "grader_errors.txt", error)
    from autograder.feedback import write_feedback

    write_feedback(out_dir / "feedback.html", document)
    write_atomic(out_dir / RESULTS_FILE, json.dumps(document, indent=2))
    return document


def _grade_in_worker(student: str, folder: str, options: GradeOptions, alone: bool = False) -> dict:
    try:
        return grade_one(student, folder, options, alone)
    except Exception:  # a bug of ours must not lose this student's result
        return crash_document(student, options, traceback.format_exc())


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
                  canary: str = "not run") -> dict:
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


def grade_batch(submissions_dir: Path, options: GradeOptions, jobs: int = 1, resume: bool = False,
                scheduler: str | None = None, canary: bool = True) -> dict:
    """Grade every submission folder; `scheduler` (a Dask scheduler address, or "local") spreads the work over a
    Dask cluster instead of `jobs` worker processes here.

    Before any student, the same workers grade the canaries (the reference solution and the untouched release,
    autograder/canary.py): if either does not get its known score, CanaryFailed is raised and nobody is graded."""
    from autograder.submission import find_submissions

    started = time.monotonic()
    options.out.mkdir(parents=True, exist_ok=True)
    submissions = find_submissions(submissions_dir, options.assignment.id)
    tally = ClassTally(list(options.assignment.points))
    pending = []
    for sub in submissions:
        previous = already_graded(options.out, sub.student) if resume else None
        if previous is not None:
            tally.add(sub.student, previous)
        else:
            pending.append(sub)
    canaries = _Canaries(options) if canary and pending else None
    progress = Progress(len(pending))

    def finished(student: str, document: dict) -> None:
        tally.add(student, document)
        progress.update(student, document)

    try:
        if scheduler:
            _grade_on_dask(submissions_dir, pending, options, scheduler, jobs, finished, canaries)
        else:
            _grade_locally(pending, options, jobs, finished, canaries)
    finally:
        progress.close()
        if canaries is not None:
            canaries.cleanup()
    write_grades_csv(options.out, tally)
    return write_summary(options.out, tally, options, time.monotonic() - started,
                         canaries.verdict if canaries is not None else "not run")


class _Canaries:
    """The reference and the untouched release, built in a scratch folder, graded like students (see canary.py).
    Their results stay in the scratch folder; it is kept when the canary fails, for the instructor to look at."""

    def __init__(self, options: GradeOptions):
        from autograder.canary import build_canaries
        from autograder.course import load_course

        self.scratch = Path(tempfile.mkdtemp(prefix="vg-canary-"))
        self.options = dataclasses.replace(options, out=self.scratch / "out")
        course = options.course or load_course()
        self.folders = build_canaries(course, options.assignment.id, self.scratch / "submissions")
        self.verdict = "not run"
        self.failed = False

    def check(self, documents: dict[str, dict], where: str = "") -> None:
        """Raises CanaryFailed unless the canaries got their known scores."""
        from autograder.canary import CanaryFailed, failure_message, judge

        problems = judge(documents, self.options.assignment)
        if problems:
            self.failed = True
            for name, document in documents.items():  # graded elsewhere (a Dask worker): keep them here too
                path = student_dir(self.options.out, name) / RESULTS_FILE
                if not path.exists():
                    write_atomic(path, json.dumps(document, indent=2))
            raise CanaryFailed(failure_message(problems, where) + f"\nThe canaries' results and feedback pages: "
                               f"{self.options.out}")
        self.verdict = "passed: " + ", ".join(f"{name} {documents[name]['score']:g}" for name in sorted(documents))

    def cleanup(self) -> None:
        if not self.failed:
            shutil.rmtree(self.scratch, ignore_errors=True)


# ------------------------------------------------------------------------------------------- executors
def _grade_locally(pending: list, options: GradeOptions, jobs: int, finished, canaries: "_Canaries | None") -> None:
    """Worker processes on this machine, spawned fresh (no state inherited from this process); each grades
    students one after another, with its own grader session and warm sandbox. The canaries go first, to the
    same workers."""
    context = multiprocessing.get_context("spawn")
    remaining = {sub.student: sub for sub in pending}
    attempts = {sub.student: 0 for sub in pending}
    alone: set[str] = set()  # hit a time limit while others were graded too: graded again, on their own, at the end
    while remaining:
        with concurrent.futures.ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=context) as pool:
            if canaries is not None:
                runs = {name: pool.submit(_grade_in_worker, name, str(folder), canaries.options)
                        for name, folder in canaries.folders.items()}
                canaries.check({name: run.result() for name, run in runs.items()})
                canaries = None  # once per batch: every local worker runs in the same environment
            futures = {pool.submit(_grade_in_worker, s.student, str(s.folder), options): s.student
                       for s in remaining.values() if s.student not in alone}
            try:
                for future in concurrent.futures.as_completed(futures):
                    student = futures.pop(future)  # a done future holds its whole document: let it go
                    document = _result(future, student, options)
                    if jobs > 1 and document["extra_data"].get("timed_out"):
                        alone.add(student)  # maybe a classmate's load, not its own code: no timeout charged yet
                        continue
                    remaining.pop(student, None)
                    finished(student, document)
                for student in sorted(alone & set(remaining)):  # one at a time: nothing else is graded meanwhile
                    run = pool.submit(_grade_in_worker, student, str(remaining[student].folder), options, True)
                    document = _result(run, student, options)
                    remaining.pop(student)
                    finished(student, document)
            except concurrent.futures.process.BrokenProcessPool:
                # A worker died (it should not: student code runs in its own sandbox). Retry who is left in a
                # fresh pool; after two failed attempts a student gets an error result rather than stopping the batch.
                for student in list(remaining):
                    attempts[student] += 1
                    if attempts[student] >= 2:
                        finished(student, crash_document(student, options, "the grading worker died twice"))
                        remaining.pop(student)


def _result(future, student: str, options: GradeOptions) -> dict:
    """A grading future's document; a crash of ours becomes an error result (a dead worker is the caller's)."""
    try:
        return future.result()
    except concurrent.futures.process.BrokenProcessPool:
        raise
    except Exception:
        return crash_document(student, options, traceback.format_exc())


def pack_folder(folder: Path) -> list[tuple[str, str, bytes]]:
    """A student's folder as data, to send to another machine: (relative path, "dir"/"file"/"link", content);
    symbolic links stay links (never followed), so a remote grader sees what a local one sees."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = base / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                entries.append((rel, "link", os.readlink(path).encode()))
            elif path.is_dir():
                entries.append((rel, "dir", b""))
            elif path.is_file():
                entries.append((rel, "file", path.read_bytes()))
    return entries


def _within(rel: str) -> bool:
    """Whether a relative path from elsewhere stays inside the folder it is joined to."""
    return not Path(rel).is_absolute() and ".." not in Path(rel).parts


def unpack_folder(entries: list[tuple[str, str, bytes]], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for rel, kind, data in entries:
        path = dest / rel
        if not _within(rel):
            raise ValueError(f"refusing to unpack {rel!r} outside the folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dir":
            path.mkdir(exist_ok=True)
        elif kind == "link":
            os.symlink(data.decode(), path)
        else:
            path.write_bytes(data)


def grade_remote(student: str, entries: list, inner: str, options: GradeOptions,
                 alone: bool = False) -> dict[str, bytes]:
    """Runs on a Dask worker: grades a student sent as data and returns their output files as data (the worker
    needs the kit installed, not a file system shared with the instructor's machine)."""
    with tempfile.TemporaryDirectory(prefix="vg-remote-") as scratch:
        entry = Path(scratch) / "submissions" / student
        unpack_folder(entries, entry)
        out = Path(scratch) / "out"
        from autograder.sandbox import isolation_level

        here = dataclasses.replace(options, out=out, isolation=isolation_level())  # this worker's, not the client's
        _grade_in_worker(student, str(entry / inner), here, alone)
        folder = student_dir(out, student)
        return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _write_remote_results(out_dir: Path, files: dict[str, bytes]) -> dict:
    for name in sorted(files, key=lambda n: n == RESULTS_FILE):  # results.json last, as locally
        if _within(name):
            write_atomic(out_dir / name, files[name])
    return json.loads(files[RESULTS_FILE])


def canaries_remote(options: GradeOptions) -> dict[str, dict]:
    """Runs on a Dask worker: grades the canaries built from the worker's own checkout, in that worker (its own
    environment, sandbox and limits); returns their results documents."""
    from autograder.sandbox import isolation_level

    canaries = _Canaries(dataclasses.replace(options, isolation=isolation_level()))
    try:
        return {name: _grade_in_worker(name, str(folder), canaries.options)
                for name, folder in canaries.folders.items()}
    finally:
        shutil.rmtree(canaries.scratch, ignore_errors=True)


def _grade_on_dask(root: Path, pending: list, options: GradeOptions, scheduler: str, jobs: int, finished,
                   canaries: "_Canaries | None") -> None:
    """Submissions spread over a Dask distributed cluster (`scheduler`: its address, or "local" for a LocalCluster
    of `jobs` processes here). Each worker process keeps its own grader session and warm sandbox, as a local
    worker does; at most a few submissions per worker are in flight, so memory stays flat for large classes.
    Every worker first grades the canaries in its own environment; a worker that fails them takes no
    submissions, and if every worker fails, CanaryFailed says why."""
    from distributed import Client, LocalCluster, as_completed

    cluster = LocalCluster(n_workers=max(1, jobs), threads_per_worker=1, processes=True,
                           dashboard_address=None) if scheduler == "local" else None
    try:
        with Client(cluster if cluster is not None else scheduler) as client:
            addresses = sorted(client.scheduler_info().get("workers", {}))
            good = _dask_workers_passing_canaries(client, addresses, options, canaries) if canaries else addresses
            waiting = iter(pending)
            running = as_completed()
            students = {}
            by_name = {sub.student: sub for sub in pending}
            alone = []  # hit a time limit while others were graded too: graded again, on their own, at the end

            def submit(sub, regrade: bool = False):
                entry = root / sub.student  # the whole student folder: nbgrader's timestamp.txt sits above
                return client.submit(grade_remote, sub.student, pack_folder(entry), str(sub.folder.relative_to(entry)),
                                     options, regrade, pure=False, key=f"grade-{sub.student}-{os.urandom(4).hex()}",
                                     workers=good or None, allow_other_workers=False)

            def submit_next():
                sub = next(waiting, None)
                if sub is not None:
                    future = submit(sub)
                    students[future.key] = sub.student
                    running.add(future)

            def collect(future, student: str) -> dict:
                try:
                    return _write_remote_results(student_dir(options.out, student), future.result())
                except Exception:  # a worker lost twice (KilledWorker), a broken result: an error result, go on
                    return crash_document(student, options, traceback.format_exc())
                finally:
                    future.release()

            for _ in range(4 * max(1, len(good))):
                submit_next()
            for future in running:
                student = students.pop(future.key)
                document = collect(future, student)
                if (len(good) > 1 or jobs > 1) and document["extra_data"].get("timed_out"):
                    alone.append(student)
                else:
                    finished(student, document)
                submit_next()
            for student in alone:  # one at a time: nothing else is graded meanwhile
                finished(student, collect(submit(by_name[student], regrade=True), student))
    finally:
        if cluster is not None:
            cluster.close()


def _dask_workers_passing_canaries(client, addresses: list[str], options: GradeOptions,
                                   canaries: "_Canaries") -> list[str]:
    """The workers whose canaries got their known scores; raises CanaryFailed when there is none."""
    from autograder.canary import CanaryFailed

    runs = {address: client.submit(canaries_remote, options, pure=False, workers=[address],
                                   allow_other_workers=False, key=f"canary-{os.urandom(4).hex()}")
            for address in addresses}
    good, failures = [], []
    for address, run in runs.items():
        try:
            canaries.check(run.result(), where=f"worker {address}")
            good.append(address)
        except CanaryFailed as exc:
            failures.append(str(exc))
            print(f"warning: Dask worker {address} failed the canary and takes no submissions:\n{exc}",
                  file=sys.stderr)
        except Exception as exc:  # the worker could not even run it (lost, no kit): it takes no submissions
            failures.append(f"worker {address}: {type(exc).__name__}: {exc}")
    if not good:
        canaries.failed = True
        raise CanaryFailed("\n".join(failures) if failures else "the Dask cluster has no workers")
    canaries.failed = False
    return good
