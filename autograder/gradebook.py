"""Write the autograder's scores into an nbgrader gradebook, so that formgrader (for the written answers) and
`nbgrader export` (for the totals) work on top of our grading.

The assignment's structure in the gradebook is nbgrader's own: `generate_assignment` runs on a scratch copy of
`solutions/<assignment>` with its database pointed at the gradebook, so nbgrader itself records the notebooks and
their grade, solution and source cells. Each graded function is a solution cell that is also a grade cell worth its
points (`solution: true, grade: true, points: N`, N equal to course.yml's), so nbgrader records it as a code grade
cell named after the function, and the TA's own `nbgrader generate_assignment` on the same notebooks records the
same cells: nbgrader refuses to add or remove cells of a notebook that has submissions, so a gradebook holding
cells its source notebooks do not have would stop the TA's next `generate_assignment --force`.

`generate_assignment` runs only when the gradebook's cells differ from what it would record now (first use, an
edited notebook, changed points): the expected cells are computed in-process with nbgrader's own preprocessors
(LockCells, ClearSolutions, ComputeChecksums), the ones that run before its SaveCells. The assignment's own settings
(its due date) are left as the TA set them.

Then each student's submission gets what `nbgrader autograde` would leave: per graded function, `auto_score` = the
sum of that function's test scores in their results document and `needs_manual_grade = False`; the timestamp; the
late penalty; the notebooks in `autograded/` (outputs cleared and markdown made inert: `formgrader_copy`). Written
answers are left to formgrader: a new submission's written grades need manual grading; on a regrade, manual scores
and comments are kept.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

from autograder import REPO_ROOT
from autograder.course import Assignment, Course
from autograder.notebook import is_graded_function_cell, nbgrader_meta, read_notebook

SCORE_SLACK = 1e-6  # a function's summed test scores may exceed its points by rounding only


class GradebookError(Exception):
    """The gradebook could not be written; the message says why. Bad documents, notebooks or points are found
    before the gradebook is touched; a refused `generate_assignment` before any score is written."""


def record_grades(gradebook_url: str, course: Course, assignment_id: str, documents: dict[str, dict],
                  root: Path = REPO_ROOT, folders: dict[str, Path] | None = None,
                  course_dir: Path | None = None) -> list[str]:
    """Record `documents` (student id -> results.json document) for `assignment_id` in the nbgrader gradebook at
    `gradebook_url` (e.g. ``sqlite:////path/gradebook.db``; created if missing). Calling it again updates the same
    rows (a regrade), it never duplicates a student, a submission or a grade. Returns warnings for the instructor.

    As `nbgrader autograde` leaves a submission: its timestamp (nbgrader's reading of timestamp.txt, which
    formgrader compares with the one in `submitted/`), its late penalty (per notebook, what the kit took off:
    `nbgrader export` subtracts it) and, with `folders` (student -> submission folder) and `course_dir` (the nbgrader
    course directory), its notebooks in `course_dir/autograded/<student>/<assignment>/`, where formgrader reads
    them. The assignment's settings (its due date) are the TA's: set only when the gradebook has none."""
    assignment = course.assignment(assignment_id)
    source = Path(root) / course.solutions_dir / assignment_id
    notebooks = gradebook_notebooks(source, assignment)
    function_notebook = {function: name for name, nb in notebooks.items()
                         for function in _marked_functions(nb)}
    scores = {str(student): function_scores(str(student), document, assignment)
              for student, document in documents.items()}
    warned: list[str] = [f"student id {student!r} has characters that formgrader writes into its pages unescaped "
                         "(< > \" ' & ` or a control character); not recorded in the gradebook: rename the folder"
                         for student in sorted(scores) if not formgrader_safe_id(student)]
    scores = {student: found for student, found in scores.items() if formgrader_safe_id(student)}
    folders = {str(student): Path(folder) for student, folder in (folders or {}).items()}
    timestamps = {student: submission_timestamp(documents[student], folders.get(student)) for student in scores}

    alembic_on_path()
    from nbgrader.api import Gradebook, MissingEntry  # slow import (~4 s): only when writing a gradebook

    with Gradebook(gradebook_url, course_id=course.course_id) as gb:
        stale = gradebook_differences(gb, assignment_id, notebooks)
    if stale:
        _generate_assignment(gradebook_url, course, assignment_id, source, notebooks)
        with Gradebook(gradebook_url, course_id=course.course_id) as gb:
            still = gradebook_differences(gb, assignment_id, notebooks)
        if still:  # nbgrader recorded something else than we expect: fail loudly rather than grade into it
            raise GradebookError("after nbgrader generate_assignment the gradebook still differs from "
                                 f"{source}:\n  " + "\n  ".join(still))

    due = assignment.due.astimezone(timezone.utc).replace(tzinfo=None)  # nbgrader keeps naive UTC times
    with Gradebook(gradebook_url, course_id=course.course_id) as gb:
        try:
            recorded = gb.find_assignment(assignment_id)
            if recorded.duedate is None:
                recorded.duedate = due
            elif recorded.duedate != due:
                warned.append(f"the gradebook's due date of {assignment_id} ({recorded.duedate:%Y-%m-%d %H:%M} UTC, "
                              f"set in nbgrader) is not course.yml's ({due:%Y-%m-%d %H:%M} UTC); left as it is. "
                              "Late penalties are course.yml's (results.json, grades.csv and the export agree); "
                              "formgrader shows lateness against the gradebook's date.")
            for student in sorted(scores):
                gb.update_or_create_student(student)
                with warnings.catch_warnings():
                    # nbgrader's add_submission builds its rows before adding them to the session; SQLAlchemy 2
                    # warns about that, harmlessly (the rows are added and committed with the submission).
                    warnings.filterwarnings("ignore", message=".*not in session.*")
                    submission = gb.update_or_create_submission(assignment_id, student,
                                                                timestamp=timestamps[student])
                for function, score in scores[student].items():
                    try:
                        grade = gb.find_grade(function, function_notebook[function], assignment_id, student)
                    except MissingEntry:
                        raise GradebookError(f"{student}: no grade for {function} in the gradebook's submission "
                                             "(was the submission created before the cell existed?)") from None
                    grade.auto_score = score
                    grade.needs_manual_grade = False
                # The late penalty, per notebook as nbgrader's AssignLatePenalties records it: the share the kit
                # took off (course.yml's late_policy) of the notebook's autograded points.
                kept = late_kept(documents[student])
                for notebook in submission.notebooks:
                    auto = sum(scores[student].get(function, 0.0) for function, name in function_notebook.items()
                               if name == notebook.name)
                    penalty = round(auto * (1.0 - kept), 6)
                    notebook.late_submission_penalty = penalty if penalty > 0 else None
            gb.db.commit()
        except Exception:
            gb.db.rollback()
            raise
    if course_dir is not None and folders:
        warned += stage_for_formgrader(course_dir, assignment_id, {s: folders[s] for s in scores if s in folders})
        unsafe = formgrader_config_warning(course_dir)
        if unsafe:
            warned.append(unsafe)
    return warned


UNSAFE_IN_HTML = re.compile(r"[<>\"'&`\x00-\x1f\x7f]")


def formgrader_safe_id(student: str) -> bool:
    """Whether formgrader can show the student id: its templates write it into the page unescaped (a folder name
    from a flat download can carry text the student chose)."""
    return UNSAFE_IN_HTML.search(student) is None


def late_kept(document: dict) -> float:
    """The fraction of the score the kit kept after its late penalty (results.json's extra_data)."""
    extra = document.get("extra_data") or {}
    kept = extra.get("late_kept")
    if kept is None:  # a document written before late_kept was recorded: its score against its raw score
        raw = extra.get("raw_score")
        kept = document["score"] / raw if raw else 1.0
    if isinstance(kept, bool) or not isinstance(kept, (int, float)) or not 0 <= kept <= 1:
        raise GradebookError(f"{extra.get('student')}: invalid late_kept {kept!r} in the results document")
    return float(kept)


def submission_timestamp(document: dict, folder: Path | None):
    """The submission's time as nbgrader records it (naive UTC): nbgrader's own reading (parse_utc) of the
    submission's timestamp.txt, which is what formgrader compares with `submitted/<student>/<assignment>/`, else
    the time in the results document, else None (no timestamp, as nbgrader leaves it)."""
    from nbgrader.utils import parse_utc

    for path in ([folder / "timestamp.txt", folder.parent / "timestamp.txt"] if folder else []):
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 200:
            try:
                return parse_utc(path.read_text(encoding="utf-8").strip())
            except (ValueError, OverflowError, UnicodeDecodeError):
                break
    submitted = (document.get("extra_data") or {}).get("submitted")
    if submitted:
        return datetime.fromisoformat(submitted).astimezone(timezone.utc).replace(tzinfo=None)
    return None


def stage_for_formgrader(course_root: Path, assignment_id: str, folders: dict[str, Path]) -> list[str]:
    """Write each student's notebooks (student id -> their submission folder, flat or nbgrader's collect layout)
    to `<course_root>/autograded/<student>/<assignment>/`, where formgrader looks for them: it lists a submission
    and renders its grading page only when that notebook exists on disk. Each is `formgrader_copy` of the
    student's notebook (nothing in it runs in the TA's browser). The timestamp.txt goes with them, as
    `nbgrader autograde` copies it. Returns a warning per notebook that could not be read (not staged)."""
    import nbformat

    warned = []
    for student, folder in folders.items():
        folder = Path(folder)
        if (folder / assignment_id).is_dir():
            folder = folder / assignment_id
        dest = Path(course_root) / "autograded" / student / assignment_id
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for path in sorted(folder.glob("*.ipynb")):
            if path.is_file() and not path.is_symlink():
                try:
                    staged = formgrader_copy(read_notebook(path))
                except Exception as exc:  # corrupt, or not nbformat 4: formgrader shows the notebook as missing
                    warned.append(f"{student}: {path.name} is not a readable notebook, not staged for formgrader "
                                  f"({type(exc).__name__})")
                    continue
                nbformat.write(staged, str(dest / path.name))
        for stamp in (folder / "timestamp.txt", folder.parent / "timestamp.txt"):
            if stamp.is_file() and not stamp.is_symlink():
                shutil.copyfile(stamp, dest / "timestamp.txt")
                break
    return warned


GRADE_ID = re.compile(r"[A-Za-z0-9_-]+")  # nbgrader's own rule for cell names
NOTEBOOK_METADATA_KEPT = ("kernelspec", "language_info")


def formgrader_copy(nb):
    """The notebook as formgrader should render it, on the Jupyter server's origin where a student's script would
    act as the TA: outputs cleared and execution counts None (as `nbgrader autograde` leaves them); markdown cells
    replaced by their sanitized rendering (`html_safety.inert_markdown`: formgrader's template renders markdown
    unsanitized); nbgrader metadata whose cell name is not a plain name dropped (formgrader writes the name into
    the page unescaped); notebook metadata other than the kernel's dropped (a widget state would load and render
    HTML). Cell ids and every cell's nbgrader metadata otherwise stay, as formgrader matches grades by them."""
    import copy

    from nbconvert.preprocessors import ClearOutputPreprocessor

    from autograder.html_safety import inert_markdown

    nb = copy.deepcopy(nb)
    nb, _ = ClearOutputPreprocessor().preprocess(nb, {})
    nb.metadata = {key: nb.metadata[key] for key in NOTEBOOK_METADATA_KEPT if key in nb.metadata}
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta is not None and not (isinstance(meta, dict) and isinstance(meta.get("grade_id"), str)
                                     and GRADE_ID.fullmatch(meta["grade_id"])):
            del cell.metadata["nbgrader"]
        if cell.cell_type == "markdown":
            cell.source = inert_markdown(cell.source, cell.get("attachments"))
            cell.pop("attachments", None)  # embedded in the rendering
    return nb


# The line of the course's nbgrader_config.py that sanitizes the HTML formgrader renders (cell outputs and raw
# cells; the kit's staged notebooks have no outputs, and their markdown is made inert by the kit itself).
FORMGRADER_CONFIG_LINE = "c.HTMLExporter.sanitize_html = True"


def formgrader_config_warning(course_root: Path) -> str | None:
    """A warning when the course's nbgrader_config.py (what formgrader loads) does not set
    HTMLExporter.sanitize_html = True; None when it does."""
    from traitlets.config.loader import ConfigFileNotFound, PyFileConfigLoader

    path = Path(course_root) / "nbgrader_config.py"
    advice = f"add `{FORMGRADER_CONFIG_LINE}` to {path}, so formgrader sanitizes the HTML it renders"
    try:
        config = PyFileConfigLoader(path.name, path=str(path.parent)).load_config()
    except ConfigFileNotFound:
        return f"no {path}: {advice}"
    except Exception as exc:  # the TA's file; nbgrader will report it too
        return f"{path} could not be read ({type(exc).__name__}: {exc}); {advice}"
    if config.get("HTMLExporter", {}).get("sanitize_html") is not True:
        return advice
    return None


def function_scores(student: str, document: dict, assignment: Assignment) -> dict[str, float]:
    """Graded function -> the sum of its test scores in one results document (0 for a function without tests)."""
    if not isinstance(document, dict) or not isinstance(document.get("tests"), list):
        raise GradebookError(f"{student}: not a results document (no 'tests' list)")
    extra = document.get("extra_data") or {}
    if extra.get("student") not in (None, student):
        raise GradebookError(f"{student}: the document is for student {extra['student']!r}")
    if extra.get("assignment") not in (None, assignment.id):
        raise GradebookError(f"{student}: the document is for assignment {extra['assignment']!r}, "
                             f"not {assignment.id!r}")
    totals = {function: 0.0 for function in assignment.points}
    for test in document["tests"]:
        if not isinstance(test, dict):
            raise GradebookError(f"{student}: a test entry is not an object")
        tags = test.get("tags") or [str(test.get("name", "")).split(":")[0]]
        function = tags[0]
        if function not in totals:
            continue
        score = test.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score) or score < 0:
            raise GradebookError(f"{student}: test {test.get('name')!r} has an invalid score {score!r}")
        totals[function] += float(score)
    for function, total in totals.items():
        points = float(assignment.points[function])
        if total > points + SCORE_SLACK:
            raise GradebookError(f"{student}: {function} scores {total:g} points, more than its {points:g}")
        totals[function] = round(min(total, points), 6)
    return totals


def gradebook_notebooks(source: Path, assignment: Assignment) -> dict:
    """Notebook name (file stem) -> the solution notebook as nbgrader should see it: each graded function's
    solution cell marked as a grade cell worth its points in course.yml."""
    import nbformat

    if not source.is_dir():
        raise GradebookError(f"no solutions folder {source}")
    notebooks, found = {}, {}
    for path in sorted(source.glob("*.ipynb")):  # what generate_assignment reads
        try:
            nb = read_notebook(path)
        except (OSError, ValueError, nbformat.ValidationError) as exc:
            raise GradebookError(f"{path}: cannot read the notebook: {exc}") from None
        for cell in nb.cells:
            if not is_graded_function_cell(cell):
                continue
            function = nbgrader_meta(cell).get("grade_id")
            if function not in assignment.points:
                continue  # a solution cell we do not grade stays a plain solution cell
            if function in found:
                raise GradebookError(f"graded function {function} has solution cells in both {found[function]} "
                                     f"and {path.name}")
            found[function] = path.name
            meta = cell.metadata.nbgrader
            if meta.get("grade") and float(meta.get("points", 0)) != float(assignment.points[function]):
                # nbgrader's own generate_assignment records the notebook's points: they must be course.yml's
                raise GradebookError(f"{path.name}: {function} is worth {meta.get('points')} points in the notebook "
                                     f"but {assignment.points[function]:g} in course.yml; make them equal")
            cell.metadata.nbgrader["grade"] = True
            cell.metadata.nbgrader["points"] = assignment.points[function]
        notebooks[path.stem] = nb
    missing = sorted(set(assignment.points) - set(found))
    if missing:
        raise GradebookError(f"course.yml gives points to {', '.join(missing)} but no solution cell in {source} "
                             "has that grade_id")
    return notebooks


def _marked_functions(nb) -> list[str]:
    return [nbgrader_meta(c)["grade_id"] for c in nb.cells
            if c.cell_type == "code" and nbgrader_meta(c).get("solution") and nbgrader_meta(c).get("grade")]


def expected_cells(nb) -> dict:
    """What nbgrader's SaveCells would record for one notebook, computed with the preprocessors that run before it
    in generate_assignment (those that change what it records)."""
    import copy

    from nbgrader import utils
    from nbgrader.preprocessors import ClearSolutions, ComputeChecksums, LockCells

    nb = copy.deepcopy(nb)
    resources: dict = {}
    for preprocessor in (LockCells(), ClearSolutions(), ComputeChecksums()):
        nb, resources = preprocessor.preprocess(nb, resources)
    cells = {"grade": {}, "solution": set(), "task": {}, "source": {}}
    for cell in nb.cells:
        if "nbgrader" not in cell.metadata:
            continue
        name = cell.metadata.nbgrader.get("grade_id")
        if utils.is_grade(cell):
            cells["grade"][name] = (float(cell.metadata.nbgrader["points"]), cell.cell_type)
        if utils.is_solution(cell):
            cells["solution"].add(name)
        if utils.is_task(cell):
            cells["task"][name] = (float(cell.metadata.nbgrader["points"]), cell.cell_type)
        if utils.is_grade(cell) or utils.is_solution(cell) or utils.is_locked(cell) or utils.is_task(cell):
            cells["source"][name] = (cell.cell_type, utils.is_locked(cell), cell.source,
                                     cell.metadata.nbgrader.get("checksum"))
    return cells


def recorded_cells(notebook) -> dict:
    """The same description of a notebook as the gradebook holds it."""
    return {
        "grade": {c.name: (float(c.max_score), c.cell_type) for c in notebook.grade_cells},
        "solution": {c.name for c in notebook.solution_cells},
        "task": {c.name: (float(c.max_score), c.cell_type) for c in notebook.task_cells},
        "source": {c.name: (c.cell_type, bool(c.locked), c.source, c.checksum) for c in notebook.source_cells},
    }


def gradebook_differences(gb, assignment_id: str, notebooks: dict) -> list[str]:
    """How the gradebook's record of the assignment differs from the notebooks (empty: up to date)."""
    from nbgrader.api import MissingEntry

    try:
        recorded = {nb.name: nb for nb in gb.find_assignment(assignment_id).notebooks}
    except MissingEntry:
        return [f"assignment {assignment_id} is not in the gradebook"]
    problems = [f"notebook {name}: not in the gradebook" for name in sorted(set(notebooks) - set(recorded))]
    problems += [f"notebook {name}: in the gradebook only" for name in sorted(set(recorded) - set(notebooks))]
    for name in sorted(set(notebooks) & set(recorded)):
        expected, actual = expected_cells(notebooks[name]), recorded_cells(recorded[name])
        problems += [f"notebook {name}: {kind} cells differ" for kind in expected if expected[kind] != actual[kind]]
    return problems


def _generate_assignment(gradebook_url: str, course: Course, assignment_id: str, source: Path,
                         notebooks: dict) -> None:
    """Run nbgrader's generate_assignment on a scratch copy of the (marked) solution notebooks, recording the
    assignment in the gradebook; the release it writes is thrown away."""
    import nbformat
    from nbgrader.apps import NbGraderAPI
    from traitlets.config import Config

    with tempfile.TemporaryDirectory(prefix="vg-gradebook-") as scratch:
        scratch = Path(scratch)
        copy = scratch / "source" / assignment_id
        shutil.copytree(source, copy, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        for name, nb in notebooks.items():
            nbformat.write(nb, str(copy / f"{name}.ipynb"))
        config = Config()
        config.CourseDirectory.root = str(scratch)
        config.CourseDirectory.source_directory = "source"
        config.CourseDirectory.release_directory = "release"
        config.CourseDirectory.course_id = course.course_id
        config.CourseDirectory.db_url = gradebook_url
        result = NbGraderAPI(config=config).generate_assignment(assignment_id, force=True, create=True)
        if not result["success"]:
            raise GradebookError(
                f"nbgrader generate_assignment could not record {assignment_id} in the gradebook (nbgrader does not "
                "change the cells of a notebook that already has submissions):\n"
                f"{result.get('log', '')}\n{result.get('error', '')}")


def alembic_on_path() -> None:
    """nbgrader's gradebook runs the `alembic` command, which sits beside this interpreter in its virtualenv."""
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
