"""Reading a submission folder safely (in the trusted process, as data): which files, in what order, which code
to run, and a clear message for anything that cannot be used. Nothing here executes student code: graded functions
defined more than once are found statically, with `ast`.

`read_submission` is the one loader of both `autograder grade` and `autograder check`, so the two run exactly the
same files in the same order."""

from __future__ import annotations

import ast
import collections
import functools
import hashlib
import json
import os
import re
import shutil
import stat
from datetime import timezone
from dataclasses import dataclass, field
from pathlib import Path

from autograder.files import walk_bounded
from autograder.sandbox import LoadUnit

MAX_CODE_FILE_BYTES = 8 * 2**20   # a .py file, or the code cells of a notebook, larger than this is not loaded
MAX_CODE_FILES = 50             # notebooks and .py files loaded from one submission (the course has six)
MAX_UNITS = 2000                # code cells and .py files loaded in all (the course's notebooks have ~150 cells)
MAX_NOTEBOOK_FILE_BYTES = 100 * 2**20  # a notebook file, outputs included (nbgrader's default max_file_size)
MAX_COPY_BYTES = 64 * 2**20       # the private copy of a student's folder holds at most this much
MAX_COPY_ENTRIES = 2000         # files and folders in it (a flood of empty files costs inodes and time, not bytes)
MAX_COPY_DEPTH = 64             # folders nested in it
# A regular file with more than one name (st_nlink > 1, a hard link) is never read: its other names may be outside
# the student's folder (a solutions notebook, a classmate's file, /etc/shadow where fs.protected_hardlinks is off),
# and nothing short of searching the whole file system says where. Its owner does not tell either: the grader often
# owns the solutions, and a file the student owns may still be a name of someone else's content once copied in by
# root (an archive). Submissions are collected by copying (nbgrader collect, LMS downloads, Gradescope's unzip),
# which never makes hard links, so an honest submission has none; the note tells the student to submit a copy.
HARD_LINK_NOTE = "a hard link (the same file as a name elsewhere, perhaps outside your folder): submit a copy"
SYMBOLIC_LINK_NOTE = "a symbolic link (never followed): submit the file itself"
WARNING = "warning: "             # how a note that costs nothing begins in Submission.problems


@dataclass
class Submission:
    student: str
    folder: Path                   # the student's files (flat, or <student>/<assignment>/ in nbgrader's layout)
    units: list[LoadUnit] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def timestamp(self, zone=timezone.utc):
        """When it was submitted, from nbgrader's timestamp.txt (None when there is none or it is unreadable), as
        an aware datetime. Read as nbgrader reads it (nbgrader.utils.parse_utc): nbgrader writes
        `2026-12-19 00:30:00.000000 CET`, the zone being its Exchange.timezone, a name or a numeric offset;
        dateutil alone does not know "CET" and would return a naive time. A time without a zone is in `zone`
        (the course's)."""
        for folder in (self.folder, self.folder.parent):
            path = folder / "timestamp.txt"
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 200:
                try:
                    return parse_timestamp(path.read_text(encoding="utf-8").strip(), zone)
                except (ValueError, OverflowError, UnicodeDecodeError):
                    return None
        return None


def parse_timestamp(text: str, zone=timezone.utc):
    """nbgrader's timestamp format as nbgrader.utils.parse_utc reads it, without importing nbgrader (slow); a
    time with no zone, or with a zone name the system does not know, is read in `zone`. Raises ValueError."""
    from dateutil import parser, tz

    parts = text.split(" ")
    if len(parts) == 3:  # date, time, zone: the zone may be a name (CET, Europe/Berlin) or an offset (+0100)
        try:
            stamp_zone = tz.tzoffset(None, _offset_seconds(parts[2]))
        except ValueError:
            stamp_zone = tz.gettz(parts[2])
        stamp = parser.parse(" ".join(parts[:2]))
        return stamp.replace(tzinfo=stamp_zone or zone)  # a zone name unknown here: nbgrader's own (the course's)
    stamp = parser.parse(text)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=zone)


def _offset_seconds(text: str) -> int:
    """'+0100' or '-0530' -> seconds east of UTC; ValueError for anything else."""
    if len(text) != 5 or text[0] not in "+-" or not text[1:].isdigit():
        raise ValueError(text)
    seconds = int(text[1:3]) * 3600 + int(text[3:]) * 60
    return seconds if text[0] == "+" else -seconds


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


def _read_text(path: Path, problems: list[str], limit: int = MAX_CODE_FILE_BYTES) -> str | None:
    name = path.name
    try:  # never through a link put in its place since it was listed
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        problems.append(f"{name}: cannot be read ({exc.strerror}); not loaded")
        return None
    with open(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            problems.append(f"{name}: not a regular file of its own; not loaded")
            return None
        size = info.st_size
        if size > limit:
            problems.append(f"{name}: {size / 2**20:.1f} MB is larger than the {limit // 2**20} MB limit; not loaded")
            return None
        data = f.read(limit + 1)
    if b"\0" in data:
        problems.append(f"{name}: binary file, not Python or a notebook; not loaded")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start}); not loaded")
        return None


def does_nothing(source: str) -> bool:
    """Whether a cell is empty, blank or comments only: running it does nothing (a line that starts with # cannot
    be inside a string, as a string would begin on a line that does not)."""
    return all(not line.strip() or line.lstrip().startswith("#") for line in source.splitlines())


def _notebook_units(path: Path, text: str, problems: list[str]) -> list[LoadUnit]:
    """The code cells of a notebook, magics made no-ops. Outputs (figures can be tens of MB) are never read as code:
    the code limit applies to the cells' sources only. A notebook that is not valid JSON, is nested too deeply to
    parse, or has no list of cells is reported as corrupt and contributes nothing."""
    try:
        nb = json.loads(text)
        cells = nb["cells"]
        if not isinstance(cells, list):
            raise TypeError("'cells' is not a list")
    except RecursionError:
        problems.append(f"{path.name}: not a valid notebook (its JSON is nested too deeply to read); not loaded")
        return []
    except (ValueError, KeyError, TypeError) as exc:
        problems.append(f"{path.name}: not a valid notebook ({type(exc).__name__}: {str(exc)[:200]}); not loaded")
        return []
    units, code_bytes = [], 0
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list) and all(isinstance(line, str) for line in source):
            source = "".join(source)
        if not isinstance(source, str):
            problems.append(f"{path.name}: cell {index} has no readable source; skipped")
            continue
        code_bytes += len(source.encode("utf-8", "surrogatepass"))
        if does_nothing(source):  # not loaded, so not counted toward MAX_UNITS: thousands of empty cells cost nothing
            continue
        source, _ = strip_magics(source)
        units.append(LoadUnit(file=path.name, index=index, source=source, kind="cell"))
    if code_bytes > MAX_CODE_FILE_BYTES:
        problems.append(f"{path.name}: its code cells hold {code_bytes / 2**20:.1f} MB, more than the "
                        f"{MAX_CODE_FILE_BYTES // 2**20} MB limit on code (outputs not counted); not loaded")
        return []
    return units


@functools.cache
def course_functions() -> tuple[str, ...]:
    """The graded function names of every assignment in the kit's course.yml (none if it cannot be read: the
    warnings are then left out, grading goes on)."""
    from autograder.course import CourseConfigError, load_course

    try:
        course = load_course()
    except CourseConfigError:
        return ()
    return tuple(dict.fromkeys(name for assignment in course.assignments for name in assignment.points))


def _top_level_names(tree: ast.Module) -> list[tuple[str, int]]:
    """(name, line) of what module-level statements bind: def, class, assignment and import targets, also inside
    top-level if/try/with/for/while blocks (not inside functions or classes)."""
    found: list[tuple[str, int]] = []

    def targets(node, line):
        if isinstance(node, ast.Name):
            found.append((node.id, line))
        elif isinstance(node, (ast.Tuple, ast.List)):
            for element in node.elts:
                targets(element, line)
        elif isinstance(node, ast.Starred):
            targets(node.value, line)

    def visit(statements):
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found.append((node.name, node.lineno))
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    targets(target, node.lineno)
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets(node.target, node.lineno)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name != "*":
                        found.append(((alias.asname or alias.name).split(".")[0], node.lineno))
            elif isinstance(node, (ast.For, ast.AsyncFor)):
                targets(node.target, node.lineno)
            for block in ("body", "orelse", "finalbody"):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    visit(getattr(node, block, []) or [])
            for handler in getattr(node, "handlers", []) or []:
                visit(handler.body)
            for case in getattr(node, "cases", []) or []:
                visit(case.body)

    visit(tree.body)
    return found


def _where(unit: LoadUnit, line: int) -> str:
    return f"{unit.file} line {line}" if unit.index is None else f"{unit.file} cell {unit.index} (line {line})"


# What a cell's source binds, by the source's digest: most cells of a class are the release's own (teaching,
# checks, demos), the same for every student, so each is parsed once per process (parsing was ~0.1 s a student).
_BOUND_NAMES: "collections.OrderedDict[bytes, tuple]" = collections.OrderedDict()
_BOUND_NAMES_MAX = 4096


def _bound_names(source: str) -> tuple[tuple[str, int], ...]:
    """_top_level_names of a unit's source; () for a unit that does not parse (it defines nothing: it fails to
    load)."""
    key = hashlib.sha256(source.encode("utf-8", "surrogatepass")).digest()
    names = _BOUND_NAMES.get(key)
    if names is None:
        try:
            names = tuple(_top_level_names(ast.parse(source)))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            names = ()
        _BOUND_NAMES[key] = names
        if len(_BOUND_NAMES) > _BOUND_NAMES_MAX:
            _BOUND_NAMES.popitem(last=False)
    return names


def duplicate_definitions(units: list[LoadUnit], functions) -> list[str]:
    """Warnings for graded functions defined in more than one file or cell, found with `ast` (nothing runs). Units
    load in order and the last definition wins, so each warning names the one that is graded and the others. A unit
    that does not parse defines nothing (it fails to load)."""
    wanted = set(functions)
    definitions: dict[str, list[tuple[int, str]]] = {}
    for position, unit in enumerate(units):
        for name, line in _bound_names(unit.source):
            if name in wanted:
                definitions.setdefault(name, []).append((position, _where(unit, line)))
    warnings = []
    for name in functions:
        places = definitions.get(name, [])
        if len({position for position, _ in places}) < 2:
            continue
        graded = places[-1][1]
        others = "; ".join(where for _, where in places[:-1])
        warnings.append(f"{WARNING}{name} is defined in {len(places)} places. The one graded is the last one "
                        f"loaded (files in sorted name order, cells in notebook order): {graded}. Not graded: "
                        f"{others}. Delete or rename the definitions you do not mean to submit.")
    return warnings


def read_submission(submission: Submission, functions=None) -> Submission:
    """Fill in the code units to load (all .ipynb and .py files, sorted by file name) and the problems found, with a
    warning for each of `functions` (default: the graded functions of course.yml) defined in more than one file or
    cell."""
    problems = submission.problems
    code_files = []
    for path in sorted(submission.folder.iterdir(), key=lambda p: p.name):
        if path.suffix not in (".ipynb", ".py"):
            continue
        if path.is_symlink():
            problems.append(f"{path.name}: a symbolic link; submissions must be regular files, not loaded")
            continue
        if path.is_file():
            if path.lstat().st_nlink > 1:  # see HARD_LINK_NOTE
                problems.append(f"{path.name}: {HARD_LINK_NOTE}; not loaded")
                continue
            code_files.append(path)
    if len(code_files) > MAX_CODE_FILES:
        problems.append(f"{len(code_files)} notebooks and .py files: only the first {MAX_CODE_FILES} (by name) are "
                        f"loaded; not loaded: {', '.join(p.name for p in code_files[MAX_CODE_FILES:])[:300]}")
        code_files = code_files[:MAX_CODE_FILES]
    for path in code_files:
        text = _read_text(path, problems, MAX_NOTEBOOK_FILE_BYTES if path.suffix == ".ipynb" else MAX_CODE_FILE_BYTES)
        if text is None:
            continue
        submission.files.append(path.name)
        if path.suffix == ".ipynb":
            submission.units += _notebook_units(path, text, problems)
        else:
            submission.units.append(LoadUnit(file=path.name, index=None, source=text, kind="module"))
    if not submission.files:
        problems.append("no notebook (.ipynb) or Python (.py) file could be loaded from this submission")
    if len(submission.units) > MAX_UNITS:
        cut = submission.units[MAX_UNITS]
        problems.append(f"{len(submission.units)} code cells and files: only the first {MAX_UNITS} are loaded (the "
                        f"rest, from {cut.file}" + (f" cell {cut.index}" if cut.index is not None else "")
                        + ", are not)")
        del submission.units[MAX_UNITS:]
    problems += duplicate_definitions(submission.units, course_functions() if functions is None else functions)
    return submission


def _without_outputs(path: Path) -> bytes | None:
    """The notebook's JSON with every cell's outputs removed (None when it is not a readable notebook)."""
    try:
        nb = json.loads(path.read_bytes())
        for cell in nb["cells"]:
            if isinstance(cell, dict) and "outputs" in cell:
                cell["outputs"] = []
        return json.dumps(nb, ensure_ascii=False).encode("utf-8")
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def private_copy(submission: Submission, dest: Path) -> list[str]:
    """Copy the student's regular files (no links, nothing outside the folder) into `dest`, the working directory of
    their sandbox; returns notes on what was left out. A notebook larger than the code limit is copied without its
    outputs (saved figures are not code; the later parts' load_earlier_parts cells read only the cells), so figures
    never crowd code out of the copy. At most MAX_COPY_ENTRIES files and folders, MAX_COPY_DEPTH deep: a flood of
    empty files costs no more than that (inodes, time)."""
    budget = MAX_COPY_BYTES
    left_out: dict[str, list[str]] = {}  # why -> which
    dest.mkdir(parents=True, exist_ok=True)
    entries, walk_note = walk_bounded(submission.folder, MAX_COPY_ENTRIES, MAX_COPY_DEPTH,
                                      skip_folders=(".ipynb_checkpoints",))
    for relative, info in entries:
        if stat.S_ISLNK(info.st_mode):
            left_out.setdefault(SYMBOLIC_LINK_NOTE, []).append(relative)
        elif stat.S_ISDIR(info.st_mode):
            (dest / relative).mkdir(parents=True, exist_ok=True)
        elif not stat.S_ISREG(info.st_mode):
            continue  # a pipe, socket or device: nothing to copy
        elif info.st_nlink > 1:
            left_out.setdefault(HARD_LINK_NOTE, []).append(relative)
        else:
            path = submission.folder / relative
            size = info.st_size
            stripped = (_without_outputs(path) if path.suffix == ".ipynb" and MAX_CODE_FILE_BYTES < size
                        <= MAX_NOTEBOOK_FILE_BYTES else None)
            if stripped is not None:
                size = len(stripped)
            if size > budget:
                left_out.setdefault(f"the submission is larger than {MAX_COPY_BYTES // 2**20} MB", []).append(relative)
                continue
            budget -= size
            if stripped is not None:
                (dest / relative).write_bytes(stripped)
            else:
                _copy_regular_file(path, dest / relative)
    notes = [f"{', '.join(names[:5])}{f' and {len(names) - 5} more' if len(names) > 5 else ''}: {why}; not copied"
             for why, names in left_out.items()]  # a few names each: a flood of links makes one note, not thousands
    return notes + ([f"{walk_note}; not copied"] if walk_note else [])


def _copy_regular_file(source: Path, dest: Path) -> None:
    """Copies a file that was a regular file of one name when it was listed, without following a symbolic link
    put in its place since (O_NOFOLLOW), and only if it still is a file of one name."""
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            return
        with open(fd, "rb", closefd=False) as reader, open(dest, "wb") as writer:
            shutil.copyfileobj(reader, writer)
    finally:
        os.close(fd)
