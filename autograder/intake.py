"""Which student folders `autograder grade` grades: a class folder (one folder per student), some of its students
(`--student ID`), one student's own folder (`--student ID` on a folder of notebooks), or a flat download from a
learning management system (`--flat`: files named `<student>_<notebook>`).

The last two are staged: copied (symbolic and hard links kept as links, so the reader still refuses them) into a scratch
class folder of the usual layout, which is then graded like any other. Nothing here reads or runs student code."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

CODE_SUFFIXES = (".ipynb", ".py")


class IntakeError(Exception):
    """SUBMISSIONS does not hold what the options say (a usage error: exit 2); the message says what was found."""


def code_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in CODE_SUFFIXES and (p.is_file() or p.is_symlink()))


def _copy(source: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_symlink():
        os.symlink(os.readlink(source), dest)
    else:
        _copy_file(source, dest)


def _copy_file(source, dest) -> None:
    """shutil.copy2, except for a hard link (a file with other names, perhaps outside the student's folder, which
    the reader refuses: see submission.HARD_LINK_NOTE): a copy would make it a plain file of one name, so the
    staged file is another hard link to it, or where that cannot be (another file system), a symbolic link to it;
    either way the reader refuses it, and says so."""
    if os.lstat(source).st_nlink > 1:
        try:
            os.link(source, dest)
        except OSError:
            os.symlink(os.path.abspath(source), dest)
        return
    shutil.copy2(source, dest)


def flat_student(name: str, notebooks: list[str]) -> tuple[str, str] | None:
    """(student, notebook) for a file of a flat download named `<student>_<notebook>`, where <notebook> is one of
    course.yml's notebooks, optionally with the `-N` a platform appends to a resubmission (`alice_1_bptt-1.ipynb`).
    The student id is everything before: Canvas's `smithjane_12345_67890_1_bptt.ipynb` gives `smithjane_12345_67890`."""
    for notebook in sorted(notebooks, key=len, reverse=True):  # the longest name that fits
        stem, suffix = os.path.splitext(notebook)
        match = re.fullmatch(rf"(.+?)_{re.escape(stem)}(?:-\d+)?{re.escape(suffix)}", name)
        if match:
            return match.group(1), notebook
    return None


def stage_flat(folder: Path, notebooks: list[str], dest: Path) -> list[str]:
    """Copies a flat download into dest/<student>/<notebook>; returns the students. Raises IntakeError listing the
    files that fit no `<student>_<notebook>` name (nothing is guessed), or two files for one student's notebook."""
    staged: dict[tuple[str, str], str] = {}
    unmatched = []
    for name in code_files(folder):
        found = flat_student(name, notebooks)
        if found is None:
            unmatched.append(name)
        elif found in staged:
            raise IntakeError(f"--flat: {staged[found]} and {name} are both {found[1]} of student {found[0]}; "
                              "keep one")
        else:
            staged[found] = name
    if unmatched or not staged:
        raise IntakeError(
            f"--flat: {len(unmatched)} file(s) of {folder} are not named <student>_<notebook> with one of "
            f"course.yml's notebooks ({', '.join(notebooks)}): {', '.join(unmatched[:5]) or 'no files at all'}"
            f"{', ...' if len(unmatched) > 5 else ''}. Rename them, or give each student a folder of their own.")
    for (student, notebook), name in staged.items():
        _copy(folder / name, dest / student / notebook)
    return sorted({student for student, _ in staged})


def stage_one(folder: Path, student: str, dest: Path) -> None:
    """One student's own folder (their notebooks directly, or nbgrader's <assignment>/ inside) as dest/<student>/."""
    shutil.copytree(folder, dest / student, symlinks=True, copy_function=_copy_file)


def select(names: list[str], wanted: tuple[str, ...]) -> list[str]:
    """The wanted students among names; IntakeError naming the ones that are not there (and close matches)."""
    import difflib

    missing = [w for w in wanted if w not in names]
    if missing:
        hints = [f"{w} (did you mean {', '.join(difflib.get_close_matches(w, names, 3))}?)"
                 if difflib.get_close_matches(w, names, 3) else w for w in missing]
        raise IntakeError(f"--student: no folder for {', '.join(hints)} in SUBMISSIONS "
                          f"({len(names)} student folders there)")
    return [n for n in names if n in wanted]
