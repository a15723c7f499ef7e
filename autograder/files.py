"""File helpers: reports written atomically, and trees a student may have shaped removed without fail."""

from __future__ import annotations

import os
import secrets
import stat
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: str | bytes) -> None:
    """Writes a report so that a reader never sees half of it (a temporary file beside it, then a rename); the
    file is readable by the course staff (0644). Text is written as UTF-8."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_tree(root: str | Path) -> list[str]:
    """`rm -rf root` for trees a student wrote: never recursive (a chain of thousands of nested folders is fine),
    every path at most two levels below `root` (no path-length limit is met), symbolic links removed, never
    followed, and unreadable folders made readable first. It flattens the tree into `root` one level per pass,
    then removes what is left. Returns the problems it could not get past (normally none); never raises."""
    root = os.fspath(root)
    problems: list[str] = []
    try:
        if not stat.S_ISDIR(os.lstat(root).st_mode):
            os.unlink(root)
            return problems
    except FileNotFoundError:
        return problems
    except OSError as exc:
        return [f"{root}: {exc}"]
    for _ in range(1_000_000):  # each pass empties one level of every folder: this bounds depth, not size
        try:
            os.chmod(root, 0o700)
            names = os.listdir(root)
        except OSError as exc:
            problems.append(f"{root}: {exc}")
            break
        if not names:
            break
        for name in names:
            path = os.path.join(root, name)
            try:
                if not stat.S_ISDIR(os.lstat(path).st_mode):
                    os.unlink(path)
                    continue
                os.chmod(path, 0o700)
                children = os.listdir(path)
                if not children:
                    os.rmdir(path)
                for child in children:  # one level up, under a fresh name
                    os.rename(os.path.join(path, child), os.path.join(root, f".rm-{secrets.token_hex(8)}"))
            except FileNotFoundError:
                continue
            except OSError as exc:
                problems.append(f"{path}: {exc}")
        if len(problems) > 100:
            break
    try:
        os.rmdir(root)
    except OSError as exc:
        problems.append(f"{root}: {exc}")
    return problems


def walk_bounded(root: str | Path, max_entries: int, max_depth: int,
                 skip_folders: tuple[str, ...] = ()) -> tuple[list[tuple[str, os.stat_result]], str]:
    """The files and folders under `root` a student shaped, as (path relative to root, lstat): a folder's entries
    in name order, then its subfolders' (depth first); symbolic links are listed, never followed. Bounded work whatever the tree: at
    most `max_entries` entries, nothing deeper than `max_depth` folders, folders named in `skip_folders` left out.
    Returns (entries, a note saying what was left out, or "")."""
    entries: list[tuple[str, os.stat_result]] = []
    too_deep = 0
    stack = [("", 0)]  # folders to list: relative path, depth
    while stack:
        folder, depth = stack.pop()
        try:
            names = sorted(os.listdir(os.path.join(root, folder) if folder else root))
        except OSError:
            continue
        below = []
        for name in names:
            relative = os.path.join(folder, name) if folder else name
            try:
                info = os.lstat(os.path.join(root, relative))
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode) and name in skip_folders:
                continue
            if len(entries) >= max_entries:
                return entries, (f"more than {max_entries} files and folders: only the first {max_entries} (in name "
                                 "order) were taken, the rest left out")
            entries.append((relative, info))
            if stat.S_ISDIR(info.st_mode):
                if depth + 1 < max_depth:
                    below.append((relative, depth + 1))
                else:
                    too_deep += 1
        stack += reversed(below)  # the first folder's contents next: depth first, in name order
    note = (f"{too_deep} folder(s) nested more than {max_depth} deep: what they hold was left out" if too_deep
            else "")
    return entries, note
