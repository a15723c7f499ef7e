"""Reading a submission folder safely (in the trusted process, as data): which files, in what order, which code
to run, and a clear message for anything that cannot be used. Nothing here executes student code."""

from __future__ import annotations

import json
import re
import shutil
from datetime import timezone
from dataclasses import dataclass, field
from pathlib import Path

from autograder.sandbox import LoadUnit

MAX_CODE_FILE_BYTES = 8 * 2**20   # a notebook or .py larger than this is not loaded
MAX_COPY_BYTES = 64 * 2**20       # the private copy of a student's folder holds at most this much


@dataclass
class Submission:
    student: str
    folder: Path                   # the student's files (flat, or <student>/<assignment>/ in nbgrader's layout)
    units: list[LoadUnit] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def timestamp(self):
        """When it was submitted, from nbgrader's timestamp.txt (None when there is none or it is unreadable)."""
        from dateutil import parser

        for folder in (self.folder, self.folder.parent):
            path = folder / "timestamp.txt"
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 200:
                try:
                    stamp = parser.parse(path.read_text(encoding="utf-8").strip())
                except (ValueError, OverflowError, UnicodeDecodeError):
                    return None
                return stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
        return None


def find_submissions(root: Path, assignment_id: str) -> list[Submission]:
    """One submission per student folder in `root` (hidden folders and stray files are ignored)."""
    submissions = []
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.is_symlink() or not entry.is_dir():
            continue
        nbgrader_layout = entry / assignment_id
        folder = nbgrader_layout if nbgrader_layout.is_dir() and not nbgrader_layout.is_symlink() else entry
        submissions.append(Submission(entry.name, folder))
    return submissions


MAGIC_LINE = re.compile(r"^(\s*)(%|!)")
SHELL_ASSIGNMENT = re.compile(r"^(\s*)([\w.]+)\s*=\s*(%|!)")


def strip_magics(source: str) -> tuple[str, int]:
    """Turn IPython magics and `!` shell lines into no-ops (never run on the grading host); a cell magic (%%...)
    makes the whole cell non-Python, so it becomes a no-op. Returns the new source and how many lines changed."""
    lines = source.splitlines()
    if lines and lines[0].lstrip().startswith("%%"):
        return "pass  # cell magic removed by the autograder\n", len(lines)
    changed = 0
    for i, line in enumerate(lines):
        if match := SHELL_ASSIGNMENT.match(line):
            lines[i] = f"{match.group(1)}{match.group(2)} = None  # magic removed by the autograder"
        elif match := MAGIC_LINE.match(line):
            lines[i] = f"{match.group(1)}pass  # magic removed by the autograder"
        else:
            continue
        changed += 1
    return "\n".join(lines) + "\n", changed


def _read_text(path: Path, problems: list[str]) -> str | None:
    name = path.name
    size = path.stat().st_size
    if size > MAX_CODE_FILE_BYTES:
        problems.append(f"{name}: {size / 2**20:.1f} MB is larger than the {MAX_CODE_FILE_BYTES // 2**20} MB limit; "
                        "not loaded")
        return None
    data = path.read_bytes()
    if b"\0" in data:
        problems.append(f"{name}: binary file, not Python or a notebook; not loaded")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start}); not loaded")
        return None


def _notebook_units(path: Path, text: str, problems: list[str]) -> list[LoadUnit]:
    try:
        nb = json.loads(text)
        cells = nb["cells"]
        if not isinstance(cells, list):
            raise TypeError("'cells' is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        problems.append(f"{path.name}: not a valid notebook ({type(exc).__name__}: {str(exc)[:200]}); not loaded")
        return []
    units = []
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else source
        if not isinstance(source, str):
            problems.append(f"{path.name}: cell {index} has no readable source; skipped")
            continue
        source, _ = strip_magics(source)
        units.append(LoadUnit(file=path.name, index=index, source=source, kind="cell"))
    return units


def read_submission(submission: Submission) -> Submission:
    """Fill in the code units to load (all .ipynb and .py files, sorted by file name) and the problems found."""
    problems = submission.problems
    code_files = []
    for path in sorted(submission.folder.iterdir(), key=lambda p: p.name):
        if path.suffix not in (".ipynb", ".py"):
            continue
        if path.is_symlink():
            problems.append(f"{path.name}: a symbolic link; submissions must be regular files, not loaded")
            continue
        if path.is_file():
            code_files.append(path)
    for path in code_files:
        text = _read_text(path, problems)
        if text is None:
            continue
        submission.files.append(path.name)
        if path.suffix == ".ipynb":
            submission.units += _notebook_units(path, text, problems)
        else:
            submission.units.append(LoadUnit(file=path.name, index=None, source=text, kind="module"))
    if not submission.files:
        problems.append("no notebook (.ipynb) or Python (.py) file could be loaded from this submission")
    return submission


def private_copy(submission: Submission, dest: Path) -> list[str]:
    """Copy the student's regular files (no symbolic links, nothing outside the folder) into `dest`, the working
    directory of their sandbox; returns what was left out."""
    skipped, budget = [], MAX_COPY_BYTES
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(submission.folder.rglob("*")):
        relative = path.relative_to(submission.folder)
        if any(part.startswith(".ipynb_checkpoints") for part in relative.parts):
            continue
        if path.is_symlink():
            skipped.append(f"{relative}: a symbolic link; not copied")
            continue
        if path.is_dir():
            (dest / relative).mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            size = path.stat().st_size
            if size > budget:
                skipped.append(f"{relative}: not copied, the submission is larger than {MAX_COPY_BYTES // 2**20} MB")
                continue
            budget -= size
            shutil.copyfile(path, dest / relative)
    return skipped
