"""The reference implementation, taken from the solution notebooks: one truth, no copy.

`load_reference()` executes the setup and graded function cells of every solution notebook of an assignment, in
file order, in one fresh module namespace, exactly as a student's files are loaded for grading. The graders and
the kit's tests call the functions of that module. Only trusted code (the instructor's notebooks) runs here.
"""

from __future__ import annotations

import functools
import types
from pathlib import Path

from autograder import REPO_ROOT
from autograder.notebook import answer_code, read_trusted_notebook


def solution_notebooks(assignment_id: str = "vanishing_gradients", solutions_dir: Path | None = None) -> list[Path]:
    folder = (solutions_dir or REPO_ROOT / "solutions") / assignment_id
    notebooks = sorted(folder.glob("*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no solution notebooks in {folder}")
    return notebooks


def load_reference(assignment_id: str = "vanishing_gradients", solutions_dir: Path | None = None) -> types.ModuleType:
    """The reference module, loaded once per process for each (assignment, solutions folder), however the folder
    is named (the kit's default, a relative or an absolute path)."""
    return _load_reference(assignment_id, Path(solutions_dir or REPO_ROOT / "solutions").resolve())


@functools.cache
def _load_reference(assignment_id: str, solutions_dir: Path) -> types.ModuleType:
    module = types.ModuleType(f"reference_{assignment_id}", f"reference implementation of {assignment_id}")
    module.__dict__["__builtins__"] = __builtins__
    for path in solution_notebooks(assignment_id, solutions_dir):
        for index, source in enumerate(answer_code(read_trusted_notebook(path))):
            code = compile(source, f"{path.name}[answer cell {index}]", "exec")
            exec(code, module.__dict__)
    return module
