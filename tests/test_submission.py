"""Reading a submission in the trusted process (autograder/submission.py): corrupt and deeply nested notebooks,
notebooks saved with their figures, the code limit, and graded functions defined more than once (found with `ast`,
nothing executed). Fast: no sandbox."""

from __future__ import annotations

import json
import re
import shutil

import nbformat
import pytest

from autograder import REPO_ROOT
from autograder import submission as reader
from autograder.build_class import add_figures
from autograder.sandbox import LoadUnit
from autograder.submission import Submission, duplicate_definitions, private_copy, read_submission

SOLUTIONS = REPO_ROOT / "solutions" / "vanishing_gradients"


def read(folder):
    return read_submission(Submission("s", folder))


def test_deeply_nested_json_is_a_corrupt_notebook_and_the_other_files_load(tmp_path):
    shutil.copy(SOLUTIONS / "1_bptt.ipynb", tmp_path)
    (tmp_path / "0_deep.ipynb").write_text('{"cells": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (tmp_path / "0_deep_source.ipynb").write_text(
        '{"cells": [{"cell_type": "code", "source": ' + "[" * 100_000 + "]" * 100_000 + "}]}")
    sub = read(tmp_path)
    assert [p for p in sub.problems if "nested too deeply" in p] == [
        "0_deep.ipynb: not a valid notebook (its JSON is nested too deeply to read); not loaded",
        "0_deep_source.ipynb: not a valid notebook (its JSON is nested too deeply to read); not loaded"]
    assert {u.file for u in sub.units} == {"1_bptt.ipynb"}
    assert any("def rnn_backward(" in u.source for u in sub.units)


def test_a_cell_whose_source_is_not_text_is_skipped(tmp_path):
    nb = {"cells": [{"cell_type": "code", "source": [["nested"]]}, {"cell_type": "code", "source": ["x = ", "1"]}]}
    (tmp_path / "a.ipynb").write_text(json.dumps(nb))
    sub = read(tmp_path)
    assert sub.problems == ["a.ipynb: cell 0 has no readable source; skipped"]
    assert [u.source for u in sub.units] == ["x = 1\n"]


def figures_notebook(tmp_path, megabytes):
    """A solution notebook saved with big figures, as Jupyter writes it."""
    nb = nbformat.read(SOLUTIONS / "2_gradient_decay.ipynb", as_version=4)
    add_figures(nb, megabytes)
    path = tmp_path / "2_gradient_decay.ipynb"
    nbformat.write(nb, path)
    return path


def test_a_notebook_saved_with_30_mb_of_figures_loads_exactly_its_code(tmp_path):
    plain = read(SOLUTIONS)
    path = figures_notebook(tmp_path, 30)
    size = path.stat().st_size
    assert 30 * 2**20 < size < 100 * 2**20
    outputs = [o for c in json.loads(path.read_text())["cells"] for o in c.get("outputs", [])]
    assert len(outputs) == 30 and all("image/png" in o["data"] for o in outputs)
    sub = read(tmp_path)
    assert sub.problems == []
    assert sub.units == [u for u in plain.units if u.file == "2_gradient_decay.ipynb"]


def test_limits_count_code_not_outputs(tmp_path, monkeypatch):
    figures_notebook(tmp_path, 3)
    (tmp_path / "big_code.ipynb").write_text(json.dumps(
        {"cells": [{"cell_type": "code", "source": "x = 1\n" + "#" * (2 * 2**20)}]}))
    monkeypatch.setattr(reader, "MAX_CODE_FILE_BYTES", 2**20)  # 1 MB of code, but the figures are 3 MB
    sub = read(tmp_path)
    assert sub.problems == ["big_code.ipynb: its code cells hold 2.0 MB, more than the 1 MB limit on code "
                            "(outputs not counted); not loaded"]
    assert {u.file for u in sub.units} == {"2_gradient_decay.ipynb"}
    monkeypatch.setattr(reader, "MAX_NOTEBOOK_FILE_BYTES", 2 * 2**20)  # the file itself is over the file limit
    sub = read(tmp_path)
    assert re.match(r"2_gradient_decay.ipynb: 3\.\d MB is larger than the 2 MB limit; not loaded", sub.problems[0])


def test_private_copy_leaves_the_outputs_of_big_notebooks_out(tmp_path, monkeypatch):
    folder = tmp_path / "student"
    folder.mkdir()
    figures_notebook(folder, 3)
    shutil.copy(SOLUTIONS / "1_bptt.ipynb", folder)
    monkeypatch.setattr(reader, "MAX_CODE_FILE_BYTES", 2**20)
    assert private_copy(Submission("s", folder), tmp_path / "copy") == []
    copied = json.loads((tmp_path / "copy" / "2_gradient_decay.ipynb").read_text())
    original = json.loads((folder / "2_gradient_decay.ipynb").read_text())
    assert [c["source"] for c in copied["cells"]] == [c["source"] for c in original["cells"]]
    assert all(c.get("outputs", []) == [] for c in copied["cells"])
    assert (tmp_path / "copy" / "1_bptt.ipynb").read_bytes() == (folder / "1_bptt.ipynb").read_bytes()  # small


def unit(file, source, index=None):
    return LoadUnit(file=file, index=index, source=source, kind="module" if index is None else "cell")


def test_a_graded_function_defined_twice_is_named_with_the_one_graded():
    units = [unit("2_gradient_decay.ipynb", "import numpy as np\n\ndef effective_horizon(norms, threshold=1e-3):\n"
                  "    return 3\n", index=15),
             unit("2_gradient_decay.ipynb", "print(effective_horizon([1.0]))", index=16),
             unit("scratch.py", "x = 1\ndef effective_horizon(norms, threshold=1e-3):\n    return 1\n")]
    assert duplicate_definitions(units, ["effective_horizon", "one_hot"]) == [
        "warning: effective_horizon is defined in 2 places. The one graded is the last one loaded (files in sorted "
        "name order, cells in notebook order): scratch.py line 2. Not graded: 2_gradient_decay.ipynb cell 15 "
        "(line 3). Delete or rename the definitions you do not mean to submit."]


@pytest.mark.parametrize("source", [
    "effective_horizon = lambda norms, threshold=1e-3: 1",
    "from helpers import effective_horizon",
    "import helpers as effective_horizon",
    "try:\n    import torch\nexcept ImportError:\n    def effective_horizon(norms, threshold=1e-3):\n        return 1",
    "if True:\n    effective_horizon, other = (lambda n, t=1e-3: 1), 2",
    "class effective_horizon:\n    pass",
])
def test_every_kind_of_module_level_binding_counts(source):
    units = [unit("a.py", "def effective_horizon(norms, threshold=1e-3):\n    return 2\n"), unit("b.py", source)]
    (warning,) = duplicate_definitions(units, ["effective_horizon"])
    assert "The one graded is the last one loaded (files in sorted name order, cells in notebook order): b.py" \
        in warning and "Not graded: a.py line 1." in warning


@pytest.mark.parametrize("source", [
    "def helper():\n    def effective_horizon(norms):\n        return 1\n    return effective_horizon",
    "class Tools:\n    def effective_horizon(self, norms):\n        return 1",
    "def effective_horizon(:\n    return 1",  # a syntax error: the unit does not load, so it defines nothing
    "print(effective_horizon)",
])
def test_what_does_not_define_it_at_module_level_does_not_count(source):
    units = [unit("a.py", "def effective_horizon(norms, threshold=1e-3):\n    return 2\n"), unit("b.py", source)]
    assert duplicate_definitions(units, ["effective_horizon"]) == []


def test_two_definitions_in_one_cell_are_python_as_usual_and_not_reported():
    units = [unit("a.py", "def one_hot(t, v):\n    return 1\n\ndef one_hot(t, v):\n    return 2\n")]
    assert duplicate_definitions(units, ["one_hot"]) == []


def test_the_reference_and_the_release_define_each_graded_function_once():
    assert [p for p in read(SOLUTIONS).problems] == []
    assert [p for p in read(REPO_ROOT / "assignments" / "vanishing_gradients").problems] == []


def test_read_submission_warns_with_the_course_functions(tmp_path):
    for name in ("2_gradient_decay.ipynb", "3_clipping.ipynb"):
        shutil.copy(SOLUTIONS / name, tmp_path)
    (tmp_path / "scratch.py").write_text("def effective_horizon(norms, threshold=1e-3):\n    return 1\n"
                                         "def my_helper():\n    pass\n")
    sub = read(tmp_path)
    assert len(sub.problems) == 1 and sub.problems[0].startswith("warning: effective_horizon is defined in 2 places")
    cell = next(i for i, c in enumerate(nbformat.read(SOLUTIONS / "2_gradient_decay.ipynb", as_version=4).cells)
                if c.metadata.get("nbgrader", {}).get("grade_id") == "effective_horizon")
    assert "scratch.py line 1" in sub.problems[0] and f"2_gradient_decay.ipynb cell {cell} (line 1)" in sub.problems[0]
