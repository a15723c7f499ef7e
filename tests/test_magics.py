"""One rule for IPython magics: the `load_earlier_parts` cell of Parts 2-7 (which re-runs earlier parts' cells in
Jupyter) turns magics into no-ops exactly as the grader does (autograder/submission.py), so a submission behaves
the same in the student's Jupyter and under the grader."""

from __future__ import annotations

import ast

import nbformat
import pytest

from autograder import REPO_ROOT
from autograder.submission import strip_magics

NOTEBOOKS = sorted((REPO_ROOT / "solutions" / "vanishing_gradients").glob("[2-7]_*.ipynb"))
SOURCES = [
    "x = 1\n%time y = 2\n!ls -l\n",
    "listing = !ls\nfiles = %sx ls\nprint(listing)\n",
    "def f():\n    !echo hi\n    return 1\n",
    "%%time\nz = 3\n",
    "a.b = !pwd\n",
    "x = 5 % 2\ny = 'no ! magic here'\n",
]


def notebook_rule(path):
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "load_earlier_parts")
    definitions = cell.source[:cell.source.index("\nload_part(")]  # everything but the loading itself
    namespace: dict = {}
    exec(definitions, namespace)
    return namespace["without_magics"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
@pytest.mark.parametrize("source", SOURCES)
def test_notebook_loader_skips_magics_as_the_grader_does(path, source):
    ours, _ = strip_magics(source)
    assert ast.dump(ast.parse(notebook_rule(path)(source))) == ast.dump(ast.parse(ours))
