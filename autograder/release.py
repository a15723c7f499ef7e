"""`autograder release`: regenerate the student release from solutions/ with nbgrader's own generate_assignment.

nbgrader runs in a scratch course directory (a copy of the solution notebooks and a throw-away gradebook), so the
repository never gets a gradebook.db or log files, and `--check` can compare a fresh build with the committed
release byte for byte.
"""

from __future__ import annotations

import filecmp
import shutil
import tempfile
from pathlib import Path

from autograder import REPO_ROOT
from autograder.course import Course


class ReleaseError(Exception):
    pass


def build_release(course: Course, assignment_id: str, dest: Path, root: Path = REPO_ROOT) -> None:
    """Write the student version of `assignment_id` into `dest` (created or replaced)."""
    from nbgrader.apps import NbGraderAPI  # slow import (~4 s): only when releasing
    from traitlets.config import Config

    from autograder.gradebook import alembic_on_path

    alembic_on_path()

    source = root / course.solutions_dir / assignment_id
    if not source.is_dir():
        raise ReleaseError(f"no solutions folder {source}")
    with tempfile.TemporaryDirectory(prefix="vg-release-") as scratch:
        scratch = Path(scratch)
        shutil.copytree(source, scratch / "source" / assignment_id,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        config = Config()
        config.CourseDirectory.root = str(scratch)
        config.CourseDirectory.source_directory = "source"
        config.CourseDirectory.release_directory = "release"
        config.CourseDirectory.course_id = course.course_id
        config.CourseDirectory.db_url = f"sqlite:///{scratch / 'gradebook.db'}"
        result = NbGraderAPI(config=config).generate_assignment(assignment_id, force=True, create=True)
        if not result["success"]:
            raise ReleaseError(f"nbgrader generate_assignment failed:\n{result.get('log', '')}\n{result.get('error', '')}")
        built = scratch / "release" / assignment_id
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(built, dest)


def release(course: Course, assignment_id: str, root: Path = REPO_ROOT) -> Path:
    dest = root / course.release_dir / assignment_id
    with tempfile.TemporaryDirectory(prefix="vg-release-out-") as tmp:
        staged = Path(tmp) / assignment_id
        build_release(course, assignment_id, staged, root)
        # Swap in only a complete build: a failed nbgrader run leaves the committed release untouched.
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staged, dest)
    return dest


def stale_files(course: Course, assignment_id: str, root: Path = REPO_ROOT) -> list[str]:
    """Files in which the committed release differs from a fresh build (missing, extra or changed)."""
    committed = root / course.release_dir / assignment_id
    with tempfile.TemporaryDirectory(prefix="vg-release-check-") as tmp:
        fresh = Path(tmp) / assignment_id
        build_release(course, assignment_id, fresh, root)
        if not committed.is_dir():
            return [f"{committed} is missing"]
        return _differences(fresh, committed)


def _differences(fresh: Path, committed: Path) -> list[str]:
    def files(folder: Path) -> set[str]:
        return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}

    fresh_files, committed_files = files(fresh), files(committed)
    problems = [f"{name}: missing from the committed release" for name in sorted(fresh_files - committed_files)]
    problems += [f"{name}: not produced from solutions/" for name in sorted(committed_files - fresh_files)]
    problems += [f"{name}: differs from a fresh build" for name in sorted(fresh_files & committed_files)
                 if not filecmp.cmp(fresh / name, committed / name, shallow=False)]
    return problems
