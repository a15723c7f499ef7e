"""The Gradescope entry point (`python -m autograder.gradescope_run`, started by the bundle's run_autograder).

Layout (the root is /autograder, or $AUTOGRADER_ROOT):
    <root>/submission/                 the student's .ipynb/.py files (or nbgrader's <assignment>/ folder inside,
                                       or one folder holding them, as a zip of a folder gives)
    <root>/submission_metadata.json    users[0].email (else .id) is the student id that seeds the hidden inputs
    <kit>/.autograder/course_secret    the course secret they derive from (the bundle carries it; grade_one reads it)
    <root>/results/results.json        what Gradescope reads; always written, with score 0 and a message if
                                       grading failed (Gradescope shows nothing otherwise)

Grading is `autograder grade`'s, for one student: grade_one() with the same sandbox and isolation level
(bubblewrap where it works, else process; printed, and in results.json), into a scratch folder, and the result is
copied atomically. The kit is the package's own checkout: autograder.REPO_ROOT, which must hold course.yml and
solutions/<assignment>/ (the reference). The bundle installs the kit editable and run_autograder puts it first on
PYTHONPATH, so that is the bundle's source/ folder; a package imported from site-packages is refused (no kit
beside it).

Only the standard library is imported before grading starts, so even a broken environment gives a results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import autograder
from autograder.files import write_atomic

DEFAULT_ROOT = "/autograder"
DEFAULT_STUDENT = "student"
CODE_SUFFIXES = (".ipynb", ".py")
FAILURE_MESSAGE = ("The autograder could not grade this submission because of an internal error (this is not a "
                   "verdict on your code). Your score is 0 for now; please tell your instructor, who can see the "
                   "details.")


class KitError(Exception):
    """The bundle is incomplete or the wrong autograder package was imported."""


def autograder_root() -> Path:
    return Path(os.environ.get("AUTOGRADER_ROOT") or DEFAULT_ROOT)


def kit_root() -> Path:
    """The folder of the imported package's checkout, checked to be a kit (course.yml beside the package)."""
    kit = autograder.REPO_ROOT
    if not (kit / "course.yml").is_file():
        raise KitError(f"the autograder package was imported from {Path(autograder.__file__).parent}, which has no "
                       "course.yml beside it (installed without -e?). Run the bundle's run_autograder, which imports "
                       "the bundled kit.")
    return kit


def student_id(metadata_file: Path) -> tuple[str, str]:
    """(id, where it came from): users[0].email, else users[0].id, else "student". Made safe as a folder name."""
    try:
        metadata = json.loads(metadata_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return DEFAULT_STUDENT, f"no {metadata_file.name}"
    except (OSError, ValueError) as exc:
        return DEFAULT_STUDENT, f"{metadata_file.name} unreadable ({type(exc).__name__})"
    users = metadata.get("users") if isinstance(metadata, dict) else None
    if isinstance(users, list) and users and isinstance(users[0], dict):
        for key in ("email", "id"):
            value = users[0].get(key)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
                safe = re.sub(r"[^A-Za-z0-9@._+-]", "_", str(value).strip()).lstrip(".")[:120]
                if safe:
                    return safe, f"users[0].{key}"
    return DEFAULT_STUDENT, f"no user in {metadata_file.name}"


def _has_code(folder: Path) -> bool:
    return any(p.suffix in CODE_SUFFIXES and not p.name.startswith(".") and p.is_file() and not p.is_symlink()
               for p in folder.iterdir())


def submission_folder(submission: Path, assignment_id: str) -> Path | None:
    """Where the student's files are: <submission>/<assignment>/ (nbgrader's layout), else <submission> itself,
    unless it holds no code file and exactly one folder that does (a zipped folder). None if there is no folder,
    or only a symbolic link to one: no link is followed, here or when the files are read (grade_one reads the
    regular files of that folder only, and copies at most submission.MAX_COPY_ENTRIES files and folders, so an
    upload of 100,000 files is graded in bounded time, with a note)."""
    if not submission.is_dir() or submission.is_symlink():
        return None
    nbgrader_layout = submission / assignment_id
    if nbgrader_layout.is_dir() and not nbgrader_layout.is_symlink():
        return nbgrader_layout
    if not _has_code(submission):
        folders = [d for d in submission.iterdir() if d.is_dir() and not d.is_symlink()
                   and not d.name.startswith((".", "__MACOSX"))]
        if len(folders) == 1 and _has_code(folders[0]):
            return folders[0]
    return submission


def choose_assignment(course, kit: Path, wanted: str | None) -> str:
    """--assignment, else $AUTOGRADER_ASSIGNMENT, else the one assignment whose solutions are in the kit."""
    wanted = wanted or os.environ.get("AUTOGRADER_ASSIGNMENT")
    if wanted:
        return wanted
    bundled = [a.id for a in course.assignments if (kit / course.solutions_dir / a.id).is_dir()]
    if len(bundled) != 1:
        raise KitError(f"cannot tell which assignment to grade (solutions for: {', '.join(bundled) or 'none'}); "
                       "pass --assignment")
    return bundled[0]


def failure_document(error: str, seconds: float, assignment=None) -> dict:
    """Score 0 with a clear message, one zero entry per graded function when the assignment is known."""
    tests: list[dict] = []
    max_score = None
    if assignment is not None:
        try:
            from autograder.results import empty_tests

            tests = empty_tests(assignment, "not graded: internal autograder error")
            max_score = assignment.max_score
        except Exception:  # the failure may be that the engine cannot be imported at all
            tests = []
    document = {"score": 0.0, "execution_time": round(seconds, 3), "output": f"{FAILURE_MESSAGE}\n{error}",
                "visibility": "visible", "stdout_visibility": "hidden", "tests": tests,
                "extra_data": {"error": error}}
    if max_score is not None:
        document["max_score"] = max_score
    return document


def _print_file(title: str, path: Path, limit: int = 64 * 1024) -> None:
    if path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace")
        print(f"----- {title} -----\n{text[:limit]}{'[... truncated ...]' if len(text) > limit else ''}\n"
              f"----- end of {title} -----", flush=True)


def grade_submission(root: Path, assignment_id: str | None) -> dict:
    """Grade <root>/submission and write <root>/results/results.json; returns the results document."""
    from autograder.course import load_course
    from autograder.grade import GradeOptions, grade_one
    from autograder.results import RESULTS_FILE
    from autograder.reference import solution_notebooks
    from autograder.sandbox import isolation_level

    kit = kit_root()
    print(f"gradescope_run: autograder package {Path(autograder.__file__).resolve().parent}; kit {kit}", flush=True)
    course = load_course(kit / "course.yml")
    assignment = course.assignment(choose_assignment(course, kit, assignment_id))
    solution_notebooks(assignment.id)  # the reference the graders will load: fail now, clearly, if it is missing
    student, source = student_id(root / "submission_metadata.json")
    isolation = isolation_level()
    print(f"gradescope_run: assignment {assignment.id}, student {student} ({source}), isolation: {isolation}",
          flush=True)
    note = isolation_note(isolation)
    if isolation != "bubblewrap":
        print(f"gradescope_run: warning: {note} (set AUTOGRADER_ISOLATION=bubblewrap in run_autograder to refuse "
              "grading without it)", flush=True)
    with tempfile.TemporaryDirectory(prefix="vg-gradescope-") as scratch:
        folder = submission_folder(root / "submission", assignment.id)
        if folder is None:
            print(f"gradescope_run: no folder {root / 'submission'}; grading an empty submission", flush=True)
            folder = Path(scratch) / "empty"
            folder.mkdir()
        else:
            print(f"gradescope_run: files from {folder}", flush=True)
        out = Path(scratch) / "out"
        options = GradeOptions(assignment, out, assignment.limits.timeout_seconds, isolation, course=course)
        check_canaries(course, options, Path(scratch) / "canary", kit)
        grade_one(student, str(folder), options)
        document = json.loads((out / student / RESULTS_FILE).read_text(encoding="utf-8"))
        document["extra_data"]["isolation_note"] = note  # for the instructor: what protected this grading
        text = json.dumps(document, indent=2, allow_nan=False)
        _print_file("grader errors (instructor only)", out / student / "grader_errors.txt")
        _print_file("student output", out / student / "output.txt")
        write_atomic(root / "results" / "results.json", text)
    return document


def isolation_note(isolation: str) -> str:
    """What protects the grading here, in a sentence for the instructor (printed, and in results.json)."""
    if isolation == "bubblewrap":
        return "bubblewrap: the student's code sees no file of the grader, no network, and runs as nobody"
    from autograder.sandbox.bwrap import _bwrap_problem

    who = ("each as a uid of its own, which cannot write the results or signal the grader" if os.geteuid() == 0
           else "with the grader's own user's rights")
    return (f"process isolation (bubblewrap: {_bwrap_problem() or 'turned off by AUTOGRADER_ISOLATION'}): student code "
            f"runs in separate processes {who}, under resource limits, with no filesystem or network isolation; "
            "every process it starts is killed before the result is written")


def check_canaries(course, options, scratch: Path, kit: Path) -> None:
    """Grades the reference and the untouched release here first (same sandbox, limits, image): if they do not
    score full marks and 0, this image would grade wrongly, so the student is not graded (CanaryFailed)."""
    import dataclasses

    from autograder.canary import CanaryFailed, build_canaries, failure_message, judge
    from autograder.grade import _grade_in_worker

    canary_options = dataclasses.replace(options, out=scratch / "out")
    folders = build_canaries(course, options.assignment.id, scratch / "submissions", root=kit)
    documents = {name: _grade_in_worker(name, str(folder), canary_options) for name, folder in folders.items()}
    problems = judge(documents, options.assignment)
    if problems:
        raise CanaryFailed(failure_message(problems, "this Gradescope image"))
    print("gradescope_run: canary passed: " + ", ".join(f"{n} {d['score']:g}" for n, d in documents.items()),
          flush=True)


class Terminated(Exception):
    pass


def _terminated(signum, frame):
    raise Terminated("grading was stopped by SIGTERM (the time limit of the Gradescope assignment?)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autograder.gradescope_run",
                                     description="Grade the Gradescope submission in $AUTOGRADER_ROOT "
                                                 f"(default {DEFAULT_ROOT}) into results/results.json.")
    parser.add_argument("--assignment", help="assignment id in course.yml (default: the one bundled)")
    args = parser.parse_args(argv)
    root = autograder_root()
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _terminated)  # Gradescope's time limit: still leave a results.json
    try:
        document = grade_submission(root, args.assignment)
    except BaseException as exc:  # noqa: BLE001 - whatever happened, Gradescope must get a results.json
        traceback.print_exc()
        error = f"{type(exc).__name__}: {exc}"
        assignment = None
        try:
            from autograder.course import load_course

            course = load_course(kit_root() / "course.yml")
            assignment = course.assignment(args.assignment or choose_assignment(course, kit_root(), None))
        except BaseException:  # noqa: BLE001
            pass
        write_atomic(root / "results" / "results.json",
                     json.dumps(failure_document(error, time.monotonic() - started, assignment), indent=2))
        print(f"gradescope_run: FAILED ({error}); wrote a score of 0 to {root / 'results' / 'results.json'}",
              flush=True)
        return 1
    print(f"gradescope_run: score {document['score']:g} / {document.get('max_score', 0):g} in "
          f"{time.monotonic() - started:.1f} s; wrote {root / 'results' / 'results.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
