"""`autograder grade`: grade a folder of submissions and write per-student results, grades.csv, feedback pages
and a run summary.

The batch process only reads folders and writes reports. Each student is graded in a worker process (trusted:
it holds the reference and the hidden graders) that starts the student's sandbox and runs the pytest graders
against it (`grade_one`). A student's files are written atomically (results.json last), so an interrupted run
never leaves a half-written result and `--resume` grades only who is missing. Before anyone, the same workers grade
the canaries (canary.py). The rest lives beside this module: one student's document in results.py, the class-wide
files in report.py, the local and Dask executors in executors.py.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from autograder.course import Assignment, Course
from autograder.files import remove_tree, write_atomic
from autograder.report import ClassTally, Progress, write_grades_csv, write_summary
from autograder.results import (MAX_LOAD_PROBLEMS, MAX_MESSAGE, MAX_TRACEBACK, RESULTS_FILE, already_graded,
                                crash_document, cut, empty_tests, results_document, student_dir)

GRADERS_DIR = Path(__file__).resolve().parent / "graders"


@dataclass(frozen=True)
class GradeOptions:
    assignment: Assignment
    out: Path
    timeout: float        # wall clock for one submission
    isolation: str        # what the sandbox uses: "bubblewrap" or "process"
    course: Course | None = None  # for the canaries' submissions (solutions/ and the release); None: course.yml


def grade_one(student: str, folder: str, options: GradeOptions, alone: bool = False) -> dict:
    """Grade one student (in a worker process) and write their files; returns their results document. `alone`:
    this is the regrade of a submission that hit a time limit while others were graded at the same time."""
    from autograder.feedback import write_feedback
    from autograder.plots import feedback_plots
    from autograder.pytest_plugin import HELPER_UNITS, GradingContext, Student, run_graders
    from autograder.reference import load_reference
    from autograder.sandbox import Sandbox
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
            units = submission.units + list(HELPER_UNITS)
            sandbox_limits = limits.sandbox_limits(options.timeout)
            with Sandbox(workdir, units, sandbox_limits, preload=tuple(options.assignment.preload),
                         deadline=started + options.timeout) as sandbox:
                load_report = [dict(r, error=cut(r["error"], MAX_MESSAGE), traceback=cut(r["traceback"], MAX_TRACEBACK))
                               for r in sandbox.load_report]
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
                                submission.files, submission.timestamp(options.assignment.zone))

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
    from autograder.vocabulary import Tolerance

    return Tolerance(options.assignment.tolerances.rtol, options.assignment.tolerances.atol)


def _grade_in_worker(student: str, folder: str, options: GradeOptions, alone: bool = False) -> dict:
    try:
        return grade_one(student, folder, options, alone)
    except Exception:  # a bug of ours must not lose this student's result
        return crash_document(student, options, traceback.format_exc())


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

    from autograder.executors import _grade_locally, _grade_on_dask

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
        self.scratch = Path(tempfile.mkdtemp(prefix="vg-canary-"))
        self.options = dataclasses.replace(options, out=self.scratch / "out")
        self.verdict = "not run"
        self.failed = False

    @functools.cached_property
    def folders(self) -> dict[str, Path]:
        """The canaries' submissions, built when first needed (a Dask client never needs them: workers build
        their own)."""
        from autograder.canary import build_canaries
        from autograder.course import load_course

        course = self.options.course or load_course()
        return build_canaries(course, self.options.assignment.id, self.scratch / "submissions")

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


