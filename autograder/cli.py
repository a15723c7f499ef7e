"""The `autograder` command line: one thin command per verb; the work lives in the verb's module."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from autograder.course import CourseConfigError, find_course_file, load_course

course_option = click.option(
    "--course", "course_file", type=click.Path(path_type=Path), default=None,
    help="The course: its course.yml, or the folder holding it [default: course.yml in the current folder or the "
         "nearest parent, else the kit's own]. Its folder is the course root: solutions/ and the release are read "
         "from there.")


def _exit_codes(*lines: str) -> str:
    """An epilog: exit statuses and examples, kept line by line by click (\\b); "" starts a new paragraph."""
    paragraphs = "\n".join(lines).split("\n\n")
    return "\n\n".join("\b\n" + paragraph for paragraph in paragraphs)


def _load(course_file: Path | None):
    """(course, course.yml's path) for --course or the course found from the current folder; says which, on
    stderr, so that no command silently uses another course than the one meant."""
    path, how = find_course_file(course_file)
    click.echo(f"Course: {path} ({how})", err=True)
    try:
        return load_course(path), path
    except CourseConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vg-autograder")
def main():
    """Release, check and grade the vanishing-gradients assignment.

    Every command works on one course: the course.yml given with --course, else the one in the current folder or
    the nearest parent (as git and nbgrader find theirs), else the kit's own; it prints which on stderr. Run
    `autograder COMMAND --help` for a command's options, exit statuses and an example."""


@main.command(short_help="Regenerate the student release from solutions/ with nbgrader.",
              epilog=_exit_codes("Exit status: 0 written (or up to date with --check); 1 the release is stale",
                                 "(--check), course.yml is bad or nbgrader failed; 2 a usage error.",
                                 "Example: autograder release --check"))
@click.option("--assignment", default="vanishing_gradients", show_default=True, help="Assignment id in course.yml.")
@click.option("--check", is_flag=True, help="Do not write: fail if the committed release differs from a fresh build.")
@course_option
def release(assignment: str, check: bool, course_file: Path | None):
    """Regenerate the course's assignments/ASSIGNMENT from its solutions/ASSIGNMENT with nbgrader's
    generate_assignment (solutions stubbed, rubrics and outputs removed, cells locked)."""
    from autograder import release as releasing

    course, course_file = _load(course_file)
    _assignment(course, assignment)  # fails early with the known ids if the name is wrong
    root = course_file.parent
    try:
        if check:
            problems = releasing.stale_files(course, assignment, root)
            if problems:
                click.echo(f"The committed release of {assignment} is stale; run `autograder release`:", err=True)
                for problem in problems:
                    click.echo(f"  {problem}", err=True)
                sys.exit(1)
            click.echo(f"{course.release_dir}/{assignment} is up to date with {course.solutions_dir}/{assignment}.")
        else:
            dest = releasing.release(course, assignment, root)
            click.echo(f"Wrote the student release to {dest}")
    except releasing.ReleaseError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("build-class", short_help="Write example submissions described by a spec (examples/class.yml).",
              epilog=_exit_codes("Exit status: 0 written; 1 a bad spec or course.yml; 2 a usage error.",
                                 "Example: autograder build-class examples/class.yml build/example_class"))
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@click.option("--assignment", default="vanishing_gradients", show_default=True, help="Assignment id in course.yml.")
@course_option
def build_class_command(spec: Path, dest: Path, assignment: str, course_file: Path | None):
    """Write the submissions described by SPEC (e.g. examples/class.yml) into DEST, one folder per student, built
    from the course's solutions/ and release."""
    from autograder.build_class import SpecError, build_class

    course, course_file = _load(course_file)
    try:
        students = build_class(spec, dest, course, assignment, root=course_file.parent)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Wrote {len(students)} submissions to {dest}")


GRADE_EPILOG = _exit_codes(
    "Exit status:",
    "  0    the batch completed, whatever the scores",
    "  1    course.yml is bad (the message names the key, or a graded function",
    "       without points), or the canary failed",
    "  2    a usage error: a missing folder, no student folder in it (the message",
    "       shows the expected layout and what it found), an unknown --student,",
    "       files --flat cannot map, or a Dask scheduler address that is malformed",
    "       or does not answer within --dask-timeout",
    "  3    the Dask scheduler has no worker within --dask-timeout",
    "  130  interrupted (Ctrl-C): grades.csv and the summary hold who finished;",
    "       the command that grades the rest (--resume) is printed",
    "",
    "Examples:",
    "  autograder grade submitted/ --out results/ --jobs 2",
    "  autograder grade submitted/ --out results/ --student alice --student bob",
    "  autograder grade ~/Downloads/alice/ --out results/ --student alice",
    "  autograder grade lms_download/ --out results/ --flat",
    "  autograder grade submitted/ --out results/ --resume")


@main.command(short_help="Grade a folder of submissions: results, feedback pages, grades.csv, summary.",
              epilog=GRADE_EPILOG)
@click.argument("submissions", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where results go: OUT/<student>/results.json, feedback.html, OUT/grades.csv, OUT/summary.json.")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(min=1),
              help="How many submissions are graded at once.")
@click.option("--timeout", type=click.FloatRange(min=1), default=None,
              help="Wall-clock limit of one submission in seconds [default: course.yml's timeout_seconds].")
@click.option("--resume", is_flag=True,
              help="Keep the results already in OUT that are complete and current (same assignment and points, no "
                   "grader error, the same files); grade only the others.")
@click.option("--student", "students", multiple=True, metavar="ID",
              help="Grade only this student (repeatable): their folder in SUBMISSIONS, or, when SUBMISSIONS is one "
                   "student's own folder of notebooks, that folder under this id.")
@click.option("--flat", is_flag=True,
              help="SUBMISSIONS is a flat download (an LMS's): files named <student>_<notebook> with one of "
                   "course.yml's notebooks (alice_1_bptt.ipynb; a resubmission's -1 suffix is allowed), graded as "
                   "one folder per student.")
@click.option("--gradebook", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also record the scores in this nbgrader gradebook database (created if missing), for "
                   "formgrader and `nbgrader export`: this run's students, their timestamps and late penalties; "
                   "their notebooks go to autograded/ in the gradebook's folder (the nbgrader course directory).")
@click.option("--executor", type=click.Choice(["local", "dask"]), default="local", show_default=True,
              help="Where submissions are graded: worker processes on this machine, or a Dask distributed cluster.")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="With --executor dask: the Dask scheduler's address (e.g. tcp://10.0.0.5:8786), or 'local' "
                   "for a cluster of --jobs processes on this machine. Each worker needs the kit installed.")
@click.option("--dask-timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True, metavar="SECONDS",
              help="With --executor dask: how long to wait for the scheduler to answer and for a first worker "
                   "(exit 2 or 3 after that, with a message).")
@click.option("--assignment", default="vanishing_gradients", show_default=True, help="Assignment id in course.yml.")
@course_option
def grade(submissions: Path, out: Path, jobs: int, timeout: float | None, resume: bool, students: tuple[str, ...],
          flat: bool, gradebook: Path | None, executor: str, scheduler: str | None, dask_timeout: float,
          assignment: str, course_file: Path | None):
    """Grade every student folder in SUBMISSIONS (SUBMISSIONS/<student>/*.ipynb, or nbgrader's
    SUBMISSIONS/<student>/<assignment>/*.ipynb), or the students chosen with --student, or a flat download with
    --flat.

    Before any student, course.yml is checked against the graders, and the same workers grade the reference
    solution and the untouched release (the canary): unless they score full marks and 0, nothing is graded and the
    command exits 1 with the first errors met (e.g. torch cannot be imported under the memory limit)."""
    import tempfile

    course, course_file = _load(course_file)
    spec = _assignment(course, assignment)
    if out.resolve() == submissions.resolve() or submissions.resolve() in out.resolve().parents:
        raise click.ClickException("--out must not be inside SUBMISSIONS")
    if (executor == "dask") != (scheduler is not None):
        raise click.ClickException("--executor dask needs --scheduler ADDRESS (or --scheduler local), and "
                                   "--scheduler needs --executor dask")
    if executor == "local":
        from autograder.executors import start_warm_parent

        # First: its imports and its zygotes' (torch: seconds) start while this process reads everything else.
        start_warm_parent(spec, course_file.parent / course.solutions_dir, max(1, jobs))
    from autograder.grade import GradeOptions
    from autograder.sandbox import isolation_level

    isolation = isolation_level()
    if isolation != "bubblewrap":
        click.echo("warning: bubblewrap is not available here: student code runs as separate processes with "
                   "resource limits only (no filesystem or network isolation). Install bubblewrap for full isolation.",
                   err=True)
    options = GradeOptions(spec, out, timeout or spec.limits.timeout_seconds, isolation, course=course,
                           root=course_file.parent, gradebook=gradebook)
    staging = tempfile.TemporaryDirectory(prefix="vg-staged-")  # a flat download or one student's folder, as a class
    try:
        _grade_and_record(submissions, out, jobs, resume, students, flat, gradebook, scheduler, dask_timeout, spec,
                          course, course_file, options, isolation, Path(staging.name))
    finally:
        staging.cleanup()


def _grade_and_record(submissions, out, jobs, resume, students, flat, gradebook, scheduler, dask_timeout, spec,
                      course, course_file, options, isolation, staging: Path) -> None:
    """`grade`'s work once the options are known (the staged folder lives until the gradebook has the notebooks)."""
    from autograder.canary import CanaryFailed
    from autograder.executors import DaskUnavailable
    from autograder.grade import GradingInterrupted, grade_batch
    from autograder.intake import IntakeError

    try:
        folder, students = _intake(submissions, spec, students, flat, staging)
        summary = grade_batch(folder, options, jobs=jobs, resume=resume, scheduler=scheduler, students=students,
                              dask_timeout=dask_timeout)
    except IntakeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except CourseConfigError as exc:
        click.echo(f"error: {exc}\nNothing was graded.", err=True)
        sys.exit(1)
    except CanaryFailed as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except DaskUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2 if exc.usage else 3)
    except GradingInterrupted as exc:
        import shlex

        again = [a for a in sys.argv[1:] if a != "--resume"]
        click.echo(f"\nInterrupted: {exc.summary['students']} submission(s) graded, {exc.pending} not. "
                   f"{out / 'grades.csv'} and {out / 'summary.html'} list the students who finished.\n"
                   f"To grade the rest, run the same command with --resume:\n"
                   f"  autograder {shlex.join(again)} --resume", err=True)
        sys.exit(130)
    click.echo(f"Graded {summary['students']} submissions of {spec.id} in {summary['wall_seconds']:.1f} s "
               f"(isolation: {isolation}); mean {summary['mean_score']} / {summary['max_score']:g}, "
               f"{summary['full_marks']} full marks, {summary['zero']} zero. Canary: {summary['canary']}.")
    if summary["grader_errors"]:
        click.echo(f"Grader errors for: {', '.join(summary['grader_errors'])} (see OUT/<student>/grader_errors.txt)",
                   err=True)
    click.echo(f"Results: {out / '<student>' / 'results.json'}, feedback pages: {out / '<student>' / 'feedback.html'}")
    click.echo(f"Grades: {out / 'grades.csv'}; class summary: {out / 'summary.html'} (and summary.json)")
    if gradebook is not None:
        _record_in_gradebook(gradebook, course, spec.id, folder, out, course_file.resolve().parent, students)


def _record_in_gradebook(gradebook: Path, course, assignment_id: str, submissions: Path, out: Path,
                         root: Path, students: tuple[str, ...] = ()) -> None:
    """The students of this run (not other folders in OUT; only `students` when given) into the gradebook, their
    notebooks into autograded/ beside it (the gradebook's folder is the nbgrader course directory) for formgrader."""
    import json

    from autograder.gradebook import GradebookError, record_grades
    from autograder.results import student_dir
    from autograder.submission import find_submissions

    documents, folders = {}, {}
    for sub in find_submissions(submissions, assignment_id):
        if students and sub.student not in students:
            continue
        path = student_dir(out, sub.student) / "results.json"
        if path.is_file():
            documents[sub.student] = json.loads(path.read_text(encoding="utf-8"))
            folders[sub.student] = sub.folder
    course_dir = gradebook.resolve().parent
    try:
        warned = record_grades(f"sqlite:///{gradebook.resolve()}", course, assignment_id, documents, root,
                               folders=folders, course_dir=course_dir)
    except GradebookError as exc:
        raise click.ClickException(f"gradebook: {exc}") from None
    for warning in warned:
        click.echo(f"warning: gradebook: {warning}", err=True)
    click.echo(f"Recorded {len(documents)} students in the nbgrader gradebook {gradebook}; their notebooks are in "
               f"{course_dir / 'autograded'} for formgrader")


LAYOUT = ("Expected one folder per student, named by student id: SUBMISSIONS/<student>/*.ipynb, or nbgrader's "
          "SUBMISSIONS/<student>/{assignment}/*.ipynb. For one student's own folder add --student ID; for a flat "
          "download (files named <student>_<notebook>) add --flat.")


def _intake(submissions: Path, spec, students: tuple[str, ...], flat: bool, staging: Path) -> tuple[Path, tuple]:
    """The class folder to grade and the students chosen in it; a flat download or one student's own folder is
    staged as a class folder first (autograder/intake.py). IntakeError (exit 2) says what was expected and found."""
    from autograder.intake import IntakeError, code_files, select, stage_flat, stage_one
    from autograder.submission import find_submissions

    code = code_files(submissions)
    if flat:
        staged = stage_flat(submissions, list(spec.notebooks), staging)
        return staging, tuple(select(staged, students)) if students else ()
    names = [sub.student for sub in find_submissions(submissions, spec.id)]
    own_folder = (code or names == [spec.id]) and not set(students) & set(names)
    if students and own_folder:  # SUBMISSIONS is one student's folder (flat, or nbgrader's <assignment>/ inside)
        if len(students) > 1:
            raise IntakeError(f"{submissions} is one student's folder (it holds {', '.join((code or names)[:3])}): "
                              "give one --student ID for it")
        click.echo(f"Grading {submissions} as the folder of student {students[0]}.", err=True)
        stage_one(submissions, students[0], staging)
        return staging, ()
    if names and names != [spec.id]:
        return submissions, tuple(select(names, students)) if students else ()
    found = (f"it holds {len(code)} notebook or .py file(s) directly ({', '.join(code[:3])}"
             f"{', ...' if len(code) > 3 else ''}): one student's folder, or a flat download?" if code
             else f"it holds only {spec.id}/: one student's nbgrader folder?" if names
             else "it holds no student folder")
    raise IntakeError(f"no submissions in {submissions}: {found}\n{LAYOUT.format(assignment=spec.id)}")


@main.command(short_help="Self-check notebooks: run their public checks the way the grader loads them.",
              epilog=_exit_codes("Exit status: 0 every check passed; 1 a check failed, a file cannot be loaded, the",
                                 "canary failed or course.yml is bad; 2 a usage error (e.g. a notebook that does not",
                                 "exist).",
                                 "Example: autograder check 1_bptt.ipynb 2_gradient_decay.ipynb"))
@click.argument("notebooks", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--assignment", "assignment_id", default="vanishing_gradients", show_default=True,
              help="Assignment id in course.yml (its limits and preloaded libraries apply).")
@click.option("--canary/--no-canary", default=True, show_default=True,
              help="First check the reference solution's notebooks the same way, where this checkout has them.")
@course_option
def check(notebooks: tuple[Path, ...], assignment_id: str, canary: bool, course_file: Path | None):
    """Self-check: load each NOTEBOOK's folder exactly as the grader loads a submission (every .ipynb and .py file,
    in sorted file-name order, under the assignment's limits and preloaded libraries) and report the public checks
    of each NOTEBOOK (seconds; no hidden tests), then notes on the folder (files not loaded; graded functions
    defined more than once). Where the course has the reference solution, its notebooks are checked first the
    same way (the canary): if the reference fails a check here, the environment is broken and nothing else is
    judged."""
    from autograder.check import check_folder, check_reference, format_notes, format_results, is_error

    course, course_file = _load(course_file)
    assignment = _assignment(course, assignment_id)
    limits, preload, by_hand = assignment.limits.sandbox_limits(), tuple(assignment.preload), tuple(assignment.by_hand)
    reference = course_file.parent / course.solutions_dir / assignment.id
    if canary and all((reference / name).is_file() for name in assignment.notebooks):
        passed, message = check_reference(reference, list(assignment.notebooks), limits, preload, by_hand)
        click.echo(message, err=not passed)
        if not passed:
            sys.exit(1)
    folders: dict[Path, list[str]] = {}
    for notebook in notebooks:
        folders.setdefault(notebook.resolve().parent, []).append(notebook.name)
    failed = False
    for folder, names in folders.items():
        results, problems = check_folder(folder, list(dict.fromkeys(names)), limits, preload, by_hand)
        for name, checks in results.items():
            click.echo(format_results(Path(name), checks))
            failed |= not all(r.passed for r in checks)
        if problems:
            click.echo(format_notes(folder, problems))
        failed |= any(is_error(p) for p in problems)
    if failed:
        sys.exit(1)


@main.group(short_help="Package the grader for another platform (Gradescope).",
            epilog=_exit_codes("Exit status: that of the subcommand; 2 a usage error.",
                               "Example: autograder bundle gradescope --out build/gradescope.zip"))
def bundle():
    """Package the grader for another platform: `autograder bundle gradescope` writes Gradescope's autograder
    zip."""


@bundle.command("gradescope", short_help="Write the Gradescope autograder zip (solutions and course secret).",
                epilog=_exit_codes("Exit status: 0 written; 1 course.yml is bad or the zip cannot be built; 2 a "
                                   "usage error.", "Example: autograder bundle gradescope --out build/gradescope.zip"))
@click.option("--assignment", default="vanishing_gradients", show_default=True, help="Assignment id in course.yml.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the zip [default: build/gradescope_<ASSIGNMENT>.zip].")
@course_option
def bundle_gradescope(assignment: str, out: Path | None, course_file: Path | None):
    """Write the Gradescope autograder zip of ASSIGNMENT: setup.sh, run_autograder and the kit (engine, hidden
    graders, solutions, course.yml). Upload it as the assignment's autograder; it grades each submission with the
    same engine and sandbox as `autograder grade`. The same sources always give the same bytes. The zip contains
    the solutions and the course secret (`autograder secret`): keep it private."""
    from autograder.bundle import BundleError, build_gradescope_bundle
    from autograder.secret import load_secret

    course, course_file = _load(course_file)
    out = out or Path("build") / f"gradescope_{assignment}.zip"
    try:
        path = build_gradescope_bundle(course, assignment, out, course_file.parent, course_file=course_file)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Wrote {path} ({path.stat().st_size / 1024:.0f} KB). It holds the solutions and the course secret: "
               f"keep it private.\n{load_secret(course_file.parent).describe()}")


@main.command(short_help="Prove the graders on the reference, the release and the mutant/variant/attack corpora.",
              epilog=_exit_codes("Exit status: 0 every case got what its spec declares; 1 a case was missed, or",
                                 "course.yml is bad; 2 a usage error.",
                                 "Example: autograder validate --corpus mutants --jobs 2"))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("build/validation"),
              show_default=True, help="Where the graded cases and validation.json go.")
@click.option("--jobs", "-j", default=2, show_default=True, type=click.IntRange(min=1),
              help="How many cases are graded at once.")
@click.option("--corpus", "corpora", multiple=True, type=click.Choice(["mutants", "variants", "attacks"]),
              help="Only these corpora (default: all).")
@click.option("--corpus-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Where the corpora (mutants.yml, variants.yml, attacks.yml) are [default: tests/submissions].")
@click.option("--assignment", default="vanishing_gradients", show_default=True, help="Assignment id in course.yml.")
@course_option
def validate(out: Path, jobs: int, corpora: tuple[str, ...], corpus_dir: Path | None, assignment: str,
             course_file: Path | None):
    """Prove the graders: the reference gets full marks, the release 0, every mutant, variant and attack in
    tests/submissions/ what its spec declares. Prints a table (case, expected, got, verdict)."""
    from autograder import validate as validating
    from autograder.grade import GradingInterrupted

    course, course_file = _load(course_file)
    try:
        report = validating.validate(course, assignment, out, corpus_dir=corpus_dir or validating.CORPUS_DIR,
                                     corpora=corpora or validating.CORPORA, jobs=jobs, root=course_file.parent)
    except CourseConfigError as exc:
        raise click.ClickException(str(exc)) from None
    except GradingInterrupted:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    click.echo(validating.format_table(report))
    misses = sum(1 for case in report["cases"] if not case["ok"])
    click.echo(f"{len(report['cases'])} cases, {misses} missed, isolation {report['isolation']}; "
               f"report: {out / 'validation.json'}")
    if not report["ok"]:
        sys.exit(1)


@main.command("report", short_help="One page per student: autograded and written scores, total.")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--gradebook", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True,
              help="The nbgrader gradebook the grades were recorded in (`grade --gradebook`), with the written "
                   "answers graded in formgrader.")
@click.option("--assignment", default="vanishing_gradients", show_default=True, help="Assignment id in course.yml.")
@course_option
def report_command(out: Path, gradebook: Path, assignment: str, course_file: Path):
    """One page per student with everything: write OUT/<student>/report.html with the autograded functions (from
    OUT/<student>/results.json), the written answers' points and comments from formgrader (from the gradebook), the
    late penalty and the total out of the whole assignment, as `nbgrader export` counts it.

    Answers not graded yet are shown as such and counted; run it again when they are.

    \b
    Example:
      autograder report build/results --gradebook course/gradebook.db
    \b
    Exit status: 0 pages written (even with answers not graded yet), 1 bad course.yml, 2 OUT or the gradebook
    cannot be used (e.g. no results in OUT, the assignment is not in the gradebook)."""
    from autograder.final_grades import FinalGradesError, collect, write_reports

    course, course_file = _load(course_file)
    spec = _assignment(course, assignment)
    try:
        grades = collect(out, spec, gradebook, course.course_id)
    except FinalGradesError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    grades = _in_gradebook(grades)
    write_reports(grades, out, spec)
    pending = sum(len(g.pending) for g in grades)
    click.echo(f"Wrote {len(grades)} pages: {out / '<student>' / 'report.html'}")
    if pending:
        click.echo(f"{pending} written answers are not graded yet (shown as such on the pages).")


def _in_grades_csv(grades: list, out: Path) -> list:
    """The students of OUT/grades.csv (the last grading run, resumed students included), where there is one;
    other folders in OUT (an earlier run's) are left out, by name."""
    import csv

    path = out / "grades.csv"
    if not path.is_file():
        return grades
    with open(path, newline="", encoding="utf-8") as f:
        listed = {row["student"] for row in csv.DictReader(f)}
    # grades.csv writes a formula-like id with a leading quote (report.py)
    listed |= {s[1:] for s in listed if s[:1] == "'" and s[1:2] in ("=", "+", "-", "@", "\t", "\r")}
    left_out = [g.student for g in grades if g.student not in listed]
    if left_out:
        click.echo(f"warning: results in OUT but not in OUT/grades.csv, left out: {', '.join(left_out)}", err=True)
    return [g for g in grades if g.student in listed]


def _assignment(course, assignment_id: str):
    """The assignment, or exit 1 naming the ids course.yml has."""
    try:
        return course.assignment(assignment_id)
    except CourseConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _in_gradebook(grades: list) -> list:
    """The students the gradebook has; results in OUT it does not have (an earlier run's) are left out, by name."""
    left_out = [g.student for g in grades if not g.in_gradebook]
    if left_out:
        click.echo(f"warning: results in OUT but not in the gradebook, left out: {', '.join(left_out)}", err=True)
    kept = [g for g in grades if g.in_gradebook]
    if not kept:
        click.echo("error: none of the students in OUT is in the gradebook", err=True)
        sys.exit(2)
    return kept


@main.command("export", short_help="Grades as a CSV for Canvas or Moodle to import.")
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "lms", type=click.Choice(["canvas", "moodle"]), required=True,
              help="Which LMS's gradebook import the CSV is for.")
@click.option("--to", "dest", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The CSV file to write.")
@click.option("--gradebook", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Add the written answers graded in formgrader (the totals are then `nbgrader export`'s); "
                   "without it, the autograded scores of the students in OUT/grades.csv.")
@click.option("--roster", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A CSV with the LMS's identity columns, e.g. the LMS's own gradebook export; each student's "
                   "identity columns are copied from the row whose --roster-key is their student id.")
@click.option("--roster-key", default=None,
              help="The roster's column holding the kit's student ids [default: 'SIS Login ID' for canvas, "
                   "'ID number' for moodle].")
@click.option("--column", default=None,
              help="The header of the grade column [default: the assignment's title]. For an existing Canvas "
                   "assignment use Canvas's own header, e.g. 'Vanishing gradients (12345)'.")
@click.option("--assignment", default="vanishing_gradients", show_default=True, help="Assignment id in course.yml.")
@course_option
def export_command(out: Path, lms: str, dest: Path, gradebook: Path | None, roster: Path | None,
                   roster_key: str | None, column: str | None, assignment: str, course_file: Path):
    """Write the grades in OUT as a CSV that Canvas's or Moodle's gradebook imports (README: "With nbgrader", step 6).

    canvas: columns Student, ID, SIS User ID, SIS Login ID, Section, then the grade column; without --roster the
    student id goes into Student and SIS Login ID (Canvas matches rows on ID, SIS User ID or SIS Login ID).
    moodle: columns ID number, Email address, then the grade column; on import map "ID number" to useridnumber
    (or "Email address" to useremail, with a roster that has them) and the grade column to the grade item.

    \b
    Example:
      autograder export build/results --format canvas --to canvas.csv --gradebook course/gradebook.db
    \b
    Exit status: 0 written, 1 bad course.yml, 2 OUT, the gradebook or the roster cannot be used, or a student is
    missing from the roster (nothing is written)."""
    from autograder.final_grades import FinalGradesError, collect, lms_csv, read_roster

    course, course_file = _load(course_file)
    spec = _assignment(course, assignment)
    key = roster_key or {"canvas": "SIS Login ID", "moodle": "ID number"}[lms]
    try:
        grades = collect(out, spec, gradebook, course.course_id)
        rows = read_roster(roster, key) if roster else None
    except FinalGradesError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    grades = _in_gradebook(grades) if gradebook is not None else _in_grades_csv(grades, out)
    text, missing = lms_csv(grades, lms, column or spec.title, rows)
    if missing:
        click.echo(f"error: not in the roster {roster} (column {key!r}): {', '.join(missing)}; nothing written",
                   err=True)
        sys.exit(2)
    from autograder.files import write_atomic

    write_atomic(dest, text)
    pending = sum(len(g.pending) for g in grades)
    click.echo(f"Wrote {len(grades)} students' grades for {lms} to {dest}"
               + ("" if gradebook else " (autograded scores only: no --gradebook)")
               + (f"; {pending} written answers are not graded yet and count 0" if pending else ""))


@main.command("answers", short_help="A student's written answers as one PDF or HTML document.")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--to", "dest", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The document to write: .pdf (printed by headless Chromium) or .html.")
@click.option("--title", default=None, help="The heading, e.g. the student's name [default: FOLDER's name].")
@click.option("--assignment", default="vanishing_gradients", show_default=True, help="Assignment id in course.yml.")
@course_option
def answers_command(folder: Path, dest: Path, title: str | None, assignment: str, course_file: Path):
    """Write the written answers in FOLDER's notebooks (one student's, flat or nbgrader's <assignment>/ layout),
    each under its question and points, as one PDF or HTML document: for graders outside formgrader, e.g. a
    Gradescope PDF assignment (README: "Gradescope"). The notebooks are read, never run.

    \b
    Example:
      autograder answers submissions/ada --to ada_answers.pdf
    \b
    Exit status: 0 written (answers not found are marked in the document and counted on the terminal), 1 bad
    course.yml, 2 the document cannot be made (e.g. a PDF without Chromium: write .html instead)."""
    from autograder.answers import AnswersError, write_answers

    course, course_file = _load(course_file)
    spec = _assignment(course, assignment)
    try:
        missing = write_answers(folder, dest, course, spec, course_file.resolve().parent,
                                title or folder.resolve().name)
    except AnswersError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"Wrote {dest}" + (f" ({missing} answers not found in the notebooks)" if missing else ""))


@main.command(short_help="Make the course secret the hidden test inputs derive from (once), or say where it is.",
              epilog=_exit_codes("Exit status: 0 made, or found; 1 it cannot be read or made.",
                                 "Example: autograder secret --course ~/courses/vg101"))
@course_option
def secret(course_file: Path | None):
    """Make the course secret once (.autograder/course_secret beside course.yml, mode 600), or say where it is."""
    from autograder.secret import secret_command

    try:
        click.echo(secret_command(_load(course_file)[1].parent))
    except (CourseConfigError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()
