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
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from autograder import REPO_ROOT
from autograder.course import Assignment, Course, CourseConfigError
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
    root: Path | None = None      # the course root (the folder of course.yml): solutions/, the release; None: the kit's
    gradebook: Path | None = None  # an nbgrader gradebook, for the written answers' status in the class summary
    # The course secret the batch started with, by its fingerprint (never the secret itself: each worker reads its
    # own, autograder/secret.py): a worker whose secret differs refuses to grade. None: whichever is found.
    secret_fingerprint: str | None = None

    @property
    def course_root(self) -> Path:
        return self.root or REPO_ROOT

    @property
    def solutions_dir(self) -> Path:
        """Where this course's solution notebooks (the reference) are: ROOT/<solutions_dir>."""
        return self.course_root / (self.course.solutions_dir if self.course else "solutions")


def reference_for(options: GradeOptions):
    """The reference of this course (its own solutions/, not necessarily the kit's), loaded once per process."""
    from autograder.reference import load_reference

    return load_reference(options.assignment.id, options.solutions_dir)


def course_secret(options: GradeOptions, where: str = "this machine"):
    """The course secret this process grades with (CourseSecretError if it has none, or not the batch's)."""
    from autograder.secret import expect_fingerprint, load_secret

    return expect_fingerprint(load_secret(options.course_root), options.secret_fingerprint, where)


def check_course(options: GradeOptions) -> None:
    """course.yml against the graders and the solution notebooks, before anyone is graded: a graded function
    without points (or points without a grader) would otherwise give the whole class an internal error.
    Raises CourseConfigError naming each function."""
    from autograder.notebook import graded_function_ids, read_trusted_notebook
    from autograder.pytest_plugin import grader_functions

    assignment = options.assignment
    points = set(assignment.points)
    graders = grader_functions(str(GRADERS_DIR))
    folder = options.solutions_dir / assignment.id
    if not folder.is_dir() or not any(folder.glob("*.ipynb")):
        raise CourseConfigError(f"no solution notebooks in {folder}: the reference is read from the course root "
                                f"(the folder of course.yml, {options.course_root}); put solutions/ there, or use "
                                "--course with the course.yml of the course that has them")
    in_notebooks = {function: path.name for path in sorted(folder.glob("*.ipynb"))
                    for function in graded_function_ids(read_trusted_notebook(path))}
    problems = [f"{function} is graded by {GRADERS_DIR.name}/ but has no entry in points" for function in
                sorted(graders - points)]
    problems += [f"{function} is a graded solution cell of {in_notebooks[function]} but has no entry in points"
                 for function in sorted(set(in_notebooks) - points - graders)]
    problems += [f"points.{function}: no grader tests for {function} in {GRADERS_DIR.name}/"
                 for function in sorted(points - graders)]
    if problems:
        raise CourseConfigError(f"course.yml, assignment {assignment.id}: points and graders do not match:\n  "
                                + "\n  ".join(problems))


def grade_one(student: str, folder: str, options: GradeOptions, alone: bool = False) -> dict:
    """Grade one student (in a worker process) and write their files; returns their results document. `alone`:
    this is the regrade of a submission that hit a time limit while others were graded at the same time."""
    from autograder.feedback import write_feedback
    from autograder.plots import feedback_plots
    from autograder.pytest_plugin import HELPER_UNITS, GradingContext, Student, run_graders
    from autograder.sandbox import Sandbox
    from autograder.submission import Submission, private_copy, read_submission

    started, began = time.monotonic(), time.time()
    secret = course_secret(options)  # first: without it nothing can be graded (_grade_in_worker lets it through)
    out_dir = student_dir(options.out, student)
    limits = options.assignment.limits
    submission = read_submission(Submission(student, Path(folder)))
    problems = [cut(problem, MAX_MESSAGE) for problem in submission.problems[:MAX_LOAD_PROBLEMS]]
    if len(submission.problems) > MAX_LOAD_PROBLEMS:
        problems.append(f"... and {len(submission.problems) - MAX_LOAD_PROBLEMS} more problems with the files "
                        "(output was cut)")
    # What students read is what they can act on: the isolation and memory limit are the instructor's, in
    # extra_data and output.txt. Notebooks the assignment expects and the submission lacks come first.
    missing = [name for name in options.assignment.notebooks if name not in submission.files]
    notes = ([f"Missing notebook{'s' if len(missing) > 1 else ''}: {', '.join(missing)} (expected: "
              f"{', '.join(options.assignment.notebooks)}); what they define could not be graded."] if missing else [])
    notes += problems
    memory_limit = None
    if alone:
        notes.append("Graded again on its own: a time limit was hit while other submissions were graded at the "
                     "same time, so this result, with nothing else running, is the one that counts.")
    grader_errors, load_report, output, figures, rule_breaks = [], [], "", [], {}
    student_seconds, warm, timed_out, zygote_source = 0.0, None, False, None
    if not submission.units:
        tests = empty_tests(options.assignment, cut("nothing in the submission could be loaded: "
                                                    + "; ".join(submission.problems), MAX_MESSAGE))
    else:
        _finish_closing()  # the previous student's sandbox, if it is still being closed: its zygote is this one's
        scratch = tempfile.mkdtemp(prefix="vg-work-")
        sandbox = None
        try:
            workdir = Path(scratch) / "work"
            notes += private_copy(submission, workdir)
            units = submission.units + list(HELPER_UNITS)
            sandbox_limits = limits.sandbox_limits(options.timeout)
            sandbox = Sandbox(workdir, units, sandbox_limits, preload=tuple(options.assignment.preload),
                              deadline=started + options.timeout, by_hand=tuple(options.assignment.by_hand))
            sandbox.__enter__()
            load_report = [dict(r, error=cut(r["error"], MAX_MESSAGE), traceback=cut(r["traceback"], MAX_TRACEBACK))
                           for r in sandbox.load_report]
            _name_cells(load_report, submission.folder)
            reference = reference_for(options)
            context = GradingContext(student, sandbox, dict(options.assignment.points), options.assignment.seed,
                                     _tolerance(options), deadline=started + options.timeout, reference=reference,
                                     secret=secret)
            run_graders(context, str(GRADERS_DIR))
            if context.results and any(r.score > 0 for r in context.results):
                failed = {r.function for r in context.results if r.status != "passed"}
                figures = feedback_plots(Student(sandbox, context.deadline), reference, failed)
            output = sandbox.output()
            student_seconds = sandbox.student_seconds
            warm = sandbox.warm
            zygote_source = sandbox.zygote_source
            memory_limit = sandbox.memory_scope
            rule_breaks = dict(sandbox.rule_breaks)
            timed_out = sandbox.timeouts > 0 or time.monotonic() >= context.deadline
        finally:
            # Without bubblewrap the student's processes could still reach OUT: every one of them is gone before
            # anything of this student is written (a cgroup that cannot be emptied fails the student here).
            _close(sandbox, scratch, background=options.isolation == "bubblewrap")
        grader_errors = context.collection_errors + [f"{r.name}:\n{r.grader_error}" for r in context.results
                                                     if r.grader_error]
        tests = [{"name": r.name, "score": round(r.score, 6), "max_score": round(r.max_score, 6),
                  "status": r.status, "output": cut(r.output, MAX_MESSAGE), "visibility": "visible",
                  "tags": [r.function]} for r in context.results]
        if context.collection_errors:
            tests = empty_tests(options.assignment, "internal grader error: the graders could not be collected")
    tests.sort(key=lambda test: test["status"] == "passed")  # failing tests first (stable: graders' order within)
    document = results_document(student, tests, options, time.monotonic() - started, notes, load_report,
                                submission.files, submission.timestamp(options.assignment.zone))
    document["extra_data"]["memory_limit"] = memory_limit  # None: no student code was run
    document["extra_data"]["missing_notebooks"] = missing
    # Functions that called torch autograd while the by-hand rule held (course.yml's by_hand): function -> how.
    # Their tests already failed with the rule's message; this is for the instructor (the class summary lists them).
    document["extra_data"]["by_hand_rule_broken"] = rule_breaks

    write_atomic(out_dir / "output.txt", f"[autograder] Isolation: {options.isolation}. Memory limit: "
                 f"{memory_limit or 'none applied (no student code was run)'}.\n" + (output or "(no output)\n"))
    if grader_errors:
        write_atomic(out_dir / "grader_errors.txt", "\n\n".join(grader_errors))
    write_feedback(out_dir / "feedback.html", document, figures)
    # Where the time went: the student's code (loading cells, calls) and everything else (the grading overhead).
    document["extra_data"]["timing"] = {"began": round(began, 3),  # seconds since the epoch
                                        "total": round(time.monotonic() - started, 4),
                                        "student": round(student_seconds, 4),
                                        "grader_peak_rss_mb": _peak_rss_mb()}  # this worker's, so far
    document["extra_data"]["warm_start"] = warm  # forked from a warm zygote (None: no student code was run)
    document["extra_data"]["zygote"] = zygote_source  # "warm parent": started beside the trusted imports
    document["extra_data"]["timed_out"] = timed_out  # a call, a cell or the whole submission hit its time limit
    document["extra_data"]["graded_alone"] = alone
    document["extra_data"]["submission_sha256"] = submission_digest(  # what --resume compares
        Path(folder), student_entry(Path(folder), student, options.assignment.id))
    document["extra_data"]["course_secret_fingerprint"] = secret.fingerprint  # which hidden inputs: --resume too
    write_atomic(out_dir / RESULTS_FILE, json.dumps(document, indent=2, allow_nan=False))
    return document


def _name_cells(load_report: list[dict], folder: Path) -> None:
    """Adds to each cell's load problem the name a student can find it by (`cell`): the nbgrader id of the cell
    (check_rnn_backward, the public check that failed), else its number counted from 1 and its first line, in
    place of a 0-based index over all cells."""
    notebooks: dict[str, list] = {}
    for problem in load_report:
        name, index = str(problem.get("file")), problem.get("index")
        if not isinstance(index, int) or not name.endswith(".ipynb"):
            continue
        if name not in notebooks:
            notebooks[name] = _cells(folder / name)
        cells = notebooks[name]
        cell = cells[index] if 0 <= index < len(cells) and isinstance(cells[index], dict) else {}
        nbgrader = (cell.get("metadata") or {}).get("nbgrader") if isinstance(cell.get("metadata"), dict) else None
        grade_id = nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None
        source = cell.get("source", "")
        source = "".join(map(str, source)) if isinstance(source, list) else str(source)
        first = next((line.strip() for line in source.splitlines() if line.strip()), "")
        first = first if len(first) <= 50 else first[:50] + "..."
        problem["cell"] = str(grade_id)[:80] if grade_id else f"cell {index + 1}" + (f" ({first})" if first else "")


def _cells(path: Path) -> list:
    """A notebook's cells, read as data (JSON) as the submission reader reads them; [] when it cannot be."""
    from autograder.submission import MAX_NOTEBOOK_FILE_BYTES

    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > MAX_NOTEBOOK_FILE_BYTES:
            return []
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return []
    return cells if isinstance(cells, list) else []


# In a local grading worker, a student's sandbox is closed (its processes killed, which takes tens of ms for a
# process that mapped torch) while this student's files are written and the next one's are read; the next
# student waits for it before its own sandbox starts (_finish_closing), so at most one closes at a time.
_close_in_background = False  # set by executors._start_worker
_closer = None
_closing = None


def _close(sandbox, scratch: str, background: bool = True) -> None:
    def close() -> None:
        try:
            if sandbox is not None:
                sandbox.close()
        finally:
            remove_tree(scratch)  # whatever the student left there (without bubblewrap it writes to this disk)

    def close_and_report() -> None:
        try:
            close()
        except Exception:  # a bug of ours, after this student's results: say so, do not blame the next student
            print(f"autograder: closing a sandbox failed:\n{traceback.format_exc()}", file=sys.stderr)

    global _closer, _closing
    if not (_close_in_background and background):
        return close()
    if _closer is None:
        import concurrent.futures

        _closer = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sandbox-closer")
    _closing = _closer.submit(close_and_report)


def _finish_closing() -> None:
    """Waits for the sandbox being closed in the background, if any (before the next sandbox, and at exit)."""
    global _closing
    if _closing is not None:
        try:
            _closing.result()
        finally:
            _closing = None


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
    from autograder.secret import CourseSecretError

    try:
        return grade_one(student, folder, options, alone)
    except CourseSecretError:  # the machine's, not the student's: the canaries (graded first) stop the run with it
        raise
    except Exception:  # a bug of ours must not lose this student's result
        return crash_document(student, options, traceback.format_exc())


class GradingInterrupted(Exception):
    """Ctrl-C: grading stopped; grades.csv and the summary hold the students who finished (`summary`)."""

    def __init__(self, summary: dict, pending: int):
        super().__init__(f"interrupted: {pending} submission(s) not graded")
        self.summary, self.pending = summary, pending


def student_entry(folder: Path, student: str, assignment_id: str) -> Path:
    """The student's whole folder: SUBMISSIONS/<student>/ around nbgrader's <student>/<assignment>/, else `folder`."""
    return folder.parent if folder.name == assignment_id and folder.parent.name == student else folder


DIGEST_FILE_BYTES = 100 * 2**20  # a file larger than this is fingerprinted by its size and time, not read


def submission_digest(folder: Path, entry: Path | None = None) -> str:
    """A fingerprint of a student's files (names, contents, link targets), recorded in results.json so that --resume
    can tell a result that is still current from a resubmission. With `entry` (the student's folder around
    nbgrader's <assignment>/), the files directly in it count too: nbgrader's timestamp.txt, and a results.json a
    student put there, which therefore can never hold the digest it would have to match. Bounded work: the entries
    private_copy would take (MAX_COPY_ENTRIES, MAX_COPY_DEPTH)."""
    import hashlib
    import os
    import stat as stat_module

    from autograder.files import walk_bounded
    from autograder.submission import MAX_COPY_DEPTH, MAX_COPY_ENTRIES

    entry = entry if entry is not None and entry != folder else None
    base = folder.parent
    walked, note = walk_bounded(folder, MAX_COPY_ENTRIES, MAX_COPY_DEPTH)
    listed = [(folder / relative, info) for relative, info in walked]
    if entry is not None:
        beside, _ = walk_bounded(entry, MAX_COPY_ENTRIES, 1)
        listed += [(entry / relative, info) for relative, info in beside if not stat_module.S_ISDIR(info.st_mode)]
        base = entry.parent
    digest = hashlib.sha256(note.encode())
    for path, info in listed:
        if stat_module.S_ISLNK(info.st_mode):
            content = b"link " + os.readlink(path).encode(errors="surrogateescape")
        elif not stat_module.S_ISREG(info.st_mode):
            continue
        elif info.st_nlink > 1:  # never read (submission.HARD_LINK_NOTE); as a remote grader receives it
            content = b"hard link"
        elif info.st_size > DIGEST_FILE_BYTES:
            content = f"large {info.st_size} {info.st_mtime_ns}".encode()
        else:
            try:
                with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NOFOLLOW | os.O_NONBLOCK)) as f:
                    content = f.read(DIGEST_FILE_BYTES + 1)
            except OSError as exc:
                content = f"unreadable {exc.errno}".encode()
        digest.update(str(path.relative_to(base)).encode(errors="surrogateescape") + b"\0" + content + b"\0")
    return digest.hexdigest()


def current_result(options: GradeOptions, student: str, folder: Path) -> dict | None:
    """The student's results.json in OUT if it is complete and current: graded for this assignment and these
    points, without a grader error, from exactly the files there now, with the course secret of
    options.secret_fingerprint when it is set (the same hidden inputs; grade_batch sets it); else None (they are
    graded again). A results.json inside the student's own folder (OUT/<student> being that folder) is never one:
    it is theirs."""
    entry = student_entry(folder, student, options.assignment.id)
    results = student_dir(options.out, student) / RESULTS_FILE
    if results.resolve().is_relative_to(entry.resolve()):
        return None
    document = already_graded(options.out, student)
    if document is None or (student_dir(options.out, student) / "grader_errors.txt").exists():
        return None
    extra = document.get("extra_data", {})
    tested = {(t.get("tags") or [""])[0] for t in document.get("tests", [])}
    if (extra.get("assignment") != options.assignment.id or document.get("max_score") != options.assignment.max_score
            or tested != set(options.assignment.points) or extra.get("student") != student
            or extra.get("submission_sha256") != submission_digest(folder, entry)
            or options.secret_fingerprint not in (None, extra.get("course_secret_fingerprint"))):
        return None
    return document


def grade_batch(submissions_dir: Path, options: GradeOptions, jobs: int = 1, resume: bool = False,
                scheduler: str | None = None, canary: bool = True, students: tuple[str, ...] = (),
                dask_timeout: float = 60.0) -> dict:
    """Grade every submission folder (or only `students`); `scheduler` (a Dask scheduler address, or "local")
    spreads the work over a Dask cluster instead of `jobs` worker processes here.

    The course secret is read first (autograder/secret.py; CourseSecretError, a CourseConfigError, saying how to
    make one when there is none), then course.yml is checked against the graders (CourseConfigError). Before any
    student, the same workers grade the canaries (the reference solution and the untouched release,
    autograder/canary.py): if either does not get its known score, CanaryFailed is raised and nobody is graded. On
    Ctrl-C the workers are stopped, the class files are written for who finished, and GradingInterrupted is
    raised."""
    from autograder.submission import find_submissions

    started = time.monotonic()
    secret = course_secret(options)  # here, before any worker: a course without one stops with what to do
    print(secret.describe(), file=sys.stderr)
    options = dataclasses.replace(options, secret_fingerprint=secret.fingerprint)
    if not scheduler:
        from autograder.executors import start_warm_parent

        # Its imports (and its zygotes') overlap with the course check, reading the submissions and building the
        # canaries (where the check fails, it ends with this process, having graded nothing).
        start_warm_parent(options.assignment, options.solutions_dir, max(1, jobs))
    check_course(options)
    options.out.mkdir(parents=True, exist_ok=True)
    submissions = find_submissions(submissions_dir, options.assignment.id)
    if students:
        submissions = [sub for sub in submissions if sub.student in students]
    tally = ClassTally(list(options.assignment.points))
    timings: list[dict] = []
    pending = []
    for sub in submissions:
        previous = current_result(options, sub.student, sub.folder) if resume else None
        if previous is not None:
            tally.add(sub.student, previous)
        else:
            pending.append(sub)
    canaries = _Canaries(options) if canary and pending else None
    progress = Progress(len(pending))

    def finished(student: str, document: dict) -> None:
        timings.append(document.get("extra_data", {}).get("timing") or {})
        tally.add(student, document)
        progress.update(student, document)

    from autograder.executors import _grade_locally, _grade_on_dask

    interrupted = False
    try:
        if scheduler:
            _grade_on_dask(submissions_dir, pending, options, scheduler, jobs, finished, canaries, dask_timeout)
        else:
            _grade_locally(pending, options, jobs, finished, canaries)
    except KeyboardInterrupt:  # the executors have stopped their workers: write what is there
        interrupted = True
    finally:
        progress.close()
        if canaries is not None:
            canaries.cleanup()
    write_grades_csv(options.out, tally)
    not_graded = len({sub.student for sub in submissions} - set(tally.students))
    summary = write_summary(options.out, tally, options, time.monotonic() - started,
                            canaries.verdict if canaries is not None else "not run", not_graded,
                            run_timing(timings))
    if interrupted:
        raise GradingInterrupted(summary, not_graded)
    return summary


def run_timing(timings: list[dict]) -> dict:
    """Where a run's time went, for benchmarks/ and the instructor: `startup_seconds`, from this process's start to
    the moment the first student's grading began (imports, workers, zygotes, canaries); the median
    `overhead_seconds` a submission cost beyond the student's own compute (sandbox, graders, reports)."""
    import statistics

    began = [t["began"] for t in timings if isinstance(t.get("began"), (int, float))]
    overheads = [t["total"] - t["student"] for t in timings if "total" in t and "student" in t]
    timing = {}
    start = _process_start()
    if began and start is not None:
        timing["startup_seconds"] = round(min(began) - start, 3)
    if overheads:
        timing["overhead_seconds_median"] = round(statistics.median(overheads), 4)
    return timing


def _process_start() -> float | None:
    """When this process started, in seconds since the epoch (Linux: /proc), else None."""
    import os

    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime, in clock ticks after boot
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return None


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
        return build_canaries(course, self.options.assignment.id, self.scratch / "submissions",
                              root=self.options.course_root)

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


