"""The `autograder` command line: one thin command per verb; the work lives in the verb's module."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from autograder.course import DEFAULT_COURSE_FILE, CourseConfigError, load_course

course_option = click.option(
    "--course", "course_file", type=click.Path(dir_okay=False, path_type=Path), default=DEFAULT_COURSE_FILE,
    show_default=True, help="The course file.")


def _load(course_file: Path):
    try:
        return load_course(course_file)
    except CourseConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vg-autograder")
def main():
    """Release, check and grade the vanishing-gradients assignment."""


@main.command()
@click.option("--assignment", default="vanishing_gradients", show_default=True, help="Assignment id in course.yml.")
@click.option("--check", is_flag=True, help="Do not write: fail if the committed release differs from a fresh build.")
@course_option
def release(assignment: str, check: bool, course_file: Path):
    """Regenerate assignments/ASSIGNMENT from solutions/ASSIGNMENT with nbgrader (solutions, rubrics, outputs removed)."""
    from autograder import release as releasing

    course = _load(course_file)
    course.assignment(assignment)  # fails early with the known ids if the name is wrong
    root = course_file.resolve().parent
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


if __name__ == "__main__":
    main()
