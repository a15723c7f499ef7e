"""Build submission folders from a small spec, so example classes (and the test corpora) stay in step with
solutions/: each student starts from the solutions or the release and applies a few exact edits.

    students:
      cleo_no_carry:
        from: solutions            # or: release
        layout: flat               # or: nbgrader (<student>/<assignment>/..., with a timestamp.txt)
        edits:
          - file: 1_bptt.ipynb
            replace: "rnn_step_backward(dh[:, t] + carried, cache[t])"
            with: "rnn_step_backward(dh[:, t], cache[t])"
        drop: [5_long_range_pronoun.ipynb]   # leave notebooks out
        as_python: true            # write each notebook's setup and answer cells as a .py file instead
        add_cells:                 # appended code cells (times: N appends N copies; {i} is the copy's number)
          - file: 1_bptt.ipynb
            source: "print('hello')"
        files:                     # extra files written verbatim
          helpers.py: "def f(): ..."
          deep.ipynb: {repeat: [["{\"cells\": ", 1], ["[", 5000], ["]", 5000], ["}", 1]]}   # text pieces, each n times
        figures:                   # a notebook saved with its figures: PNG outputs, about this many MB in all,
          - file: 2_gradient_decay.ipynb   # spread over the notebook's code cells that are not answers
            megabytes: 30
        symlinks:                  # symbolic links (the attack corpus uses them)
          stolen.ipynb: "@REPO@/solutions/vanishing_gradients/1_bptt.ipynb"
        hardlinks:                 # hard links: names of files outside the folder (copies of these, see _hard_link)
          1_bptt.ipynb: "@REPO@/solutions/vanishing_gradients/1_bptt.ipynb"
        empty_entries:             # a flood of empty files and folders (inodes), in a folder of the submission
          under: junk
          files: 20000
          folders: 1000

An edit's `replace` text must occur exactly once in the notebook's answer cells (so a changed solution breaks the spec loudly
rather than silently producing a correct "mistake").
"""

from __future__ import annotations

import base64
import random
import shutil
from pathlib import Path

import yaml

from autograder import REPO_ROOT
from autograder.course import Course
from autograder.notebook import answer_code, is_graded_function_cell


class SpecError(Exception):
    pass


def _apply_edit(nb, edit: dict, student: str) -> None:
    """Replace text in the student's answer cells (graded function cells), where the mistakes are made."""
    answers = [cell for cell in nb.cells if is_graded_function_cell(cell)]
    count = sum(cell.source.count(edit["replace"]) for cell in answers)
    if count != 1:
        raise SpecError(f"{student}: {edit['file']}: {edit['replace']!r} occurs {count} times in the answer cells, "
                        "expected exactly once")
    cell = next(cell for cell in answers if edit["replace"] in cell.source)
    cell.source = cell.source.replace(edit["replace"], edit["with"])


def add_figures(nb, megabytes: float, seed: int = 0) -> None:
    """Attach PNG figure outputs taking about `megabytes` MB of the saved file (base64 of random bytes behind a PNG
    signature: as incompressible as real plots) to the notebook's code cells that are not graded answers, as Jupyter
    saves them (display_data with image/png and a text/plain fallback)."""
    cells = [cell for cell in nb.cells if cell.cell_type == "code" and not is_graded_function_cell(cell)]
    if not cells:
        raise SpecError("figures: the notebook has no code cell to attach figures to")
    per_figure = 3 * 2**18  # one large (high-dpi) figure: 1 MB of base64 in the file
    count = max(1, round(megabytes))
    rng = random.Random(seed)
    import nbformat  # here: it takes over a second to import, and canaries (copies) do not need it

    for i in range(count):
        png = b"\x89PNG\r\n\x1a\n" + rng.randbytes(per_figure - 8)
        cell = cells[i % len(cells)]
        cell.outputs.append(nbformat.v4.new_output(
            "display_data", data={"image/png": base64.b64encode(png).decode("ascii"),
                                  "text/plain": "<Figure size 1100x400 with 2 Axes>"}, metadata={}))
        cell.execution_count = cell.execution_count or i + 1


def _file_text(name: str, text) -> str | bytes:
    """A `files:` entry: text, {bytes_hex: ...} or {repeat: [[piece, times], ...]} (large or deeply nested files
    without a large spec)."""
    if isinstance(text, dict) and "bytes_hex" in text:
        return bytes.fromhex(text["bytes_hex"])
    if isinstance(text, dict) and "repeat" in text:
        return "".join(str(piece) * int(times) for piece, times in text["repeat"])
    if not isinstance(text, str):
        raise SpecError(f"files: {name}: expected text, bytes_hex or repeat")
    return text


def build_student(name: str, spec: dict, course: Course, assignment_id: str, dest: Path, root: Path = REPO_ROOT,
                  substitutions: dict[str, str] | None = None) -> Path:
    """Write one student's folder; `substitutions` replaces placeholders (e.g. @PORT@) in added code and files."""
    def substitute(text: str) -> str:
        for key, value in (substitutions or {}).items():
            text = text.replace(key, value)
        return text

    base = {"solutions": course.solutions_dir, "release": course.release_dir, None: None}[spec.get("from")]
    folder = dest / name / assignment_id if spec.get("layout") == "nbgrader" else dest / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    if base is not None and set(spec) == {"from"}:
        # As they are (the canaries: "the release as it is"), byte for byte, without nbformat's import time.
        for path in sorted((root / base / assignment_id).glob("*.ipynb")):
            shutil.copyfile(path, folder / path.name)
        return folder
    import nbformat

    notebooks = {}
    if base is not None:
        for path in sorted((root / base / assignment_id).glob("*.ipynb")):
            notebooks[path.name] = nbformat.read(path, as_version=4)
    for edit in spec.get("edits", []):
        _apply_edit(notebooks[edit["file"]], edit, name)
    for cell in spec.get("add_cells", []):  # to a notebook of the base, or a new one
        nb = notebooks.setdefault(cell["file"], nbformat.v4.new_notebook())
        for i in range(int(cell.get("times", 1))):  # {i} in the source is the copy's number
            nb.cells.append(nbformat.v4.new_code_cell(substitute(cell["source"]).replace("{i}", str(i))))
    for figure in spec.get("figures", []):
        add_figures(notebooks[figure["file"]], float(figure["megabytes"]))
    for file_name in spec.get("drop", []):
        notebooks.pop(file_name)
    for file_name, nb in notebooks.items():
        if spec.get("as_python"):  # the same answer code, as a student's .py file
            (folder / file_name.replace(".ipynb", ".py")).write_text("\n\n".join(answer_code(nb)) + "\n")
        else:
            nbformat.write(nb, folder / file_name)
    for file_name, text in (spec.get("files") or {}).items():
        target = folder / file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        content = _file_text(file_name, text)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(substitute(content), encoding="utf-8")
    for link_name, target in (spec.get("symlinks") or {}).items():  # for the attack corpus: links out of the folder
        (folder / link_name).parent.mkdir(parents=True, exist_ok=True)
        (folder / link_name).unlink(missing_ok=True)  # in place of the base's notebook of that name
        (folder / link_name).symlink_to(substitute(target))
    for link_name, target in (spec.get("hardlinks") or {}).items():
        _hard_link(Path(substitute(target)), folder / link_name, dest / ".outside" / name)
    if spec.get("empty_entries"):
        flood = spec["empty_entries"]
        under = folder / flood.get("under", "junk")
        under.mkdir(parents=True, exist_ok=True)
        for i in range(int(flood.get("folders", 0))):
            (under / f"d{i}").mkdir()
        for i in range(int(flood.get("files", 0))):
            (under / f"f{i}").touch()
    if spec.get("layout") == "nbgrader":
        (folder / "timestamp.txt").write_text(spec.get("timestamp", "2026-12-18 20:15:00.000000 UTC") + "\n")
    return folder


def _hard_link(target: Path, link: Path, outside: Path) -> None:
    """link as a second name of a copy of target placed outside the student's folder (`outside`, hidden in the class
    folder): to the grader the same as a hard link to target itself (a file with a name elsewhere and target's
    content), but the kit's solutions and the system's files never gain a name (a name left behind would make the
    reference a hard link), and it works across file systems and under fs.protected_hardlinks."""
    import os

    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)  # in place of the base's notebook of that name
    outside.mkdir(parents=True, exist_ok=True)
    copy = outside / f"{len(list(outside.iterdir()))}-{target.name}"
    shutil.copyfile(target, copy)
    os.link(copy, link)


def load_spec(path: Path) -> dict:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("students"), dict):
        raise SpecError(f"{path}: expected a mapping with 'students'")
    return data


def build_class(spec_path: Path, dest: Path, course: Course, assignment_id: str = "vanishing_gradients",
                substitutions: dict[str, str] | None = None, root: Path = REPO_ROOT) -> list[str]:
    spec = load_spec(spec_path)
    dest.mkdir(parents=True, exist_ok=True)
    if substitutions is None:  # the attack corpus's links name the kit's files as @REPO@ (hard links need them)
        substitutions = {"@REPO@": str(root)}
    for name, student in spec["students"].items():
        build_student(name, student or {}, course, assignment_id, dest, root=root, substitutions=substitutions)
    return list(spec["students"])


def expectations(spec_path: Path) -> dict[str, dict]:
    """What each student of a spec is expected to score: {name: {"score": ..., "lose": [...], "keep": [...]}}."""
    return {name: (s or {}).get("expect", {}) for name, s in load_spec(spec_path)["students"].items()}



