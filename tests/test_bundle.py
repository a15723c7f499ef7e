"""The Gradescope bundle: what the zip holds, that it is reproducible, and that it grades like `autograder grade`
when run the way Gradescope runs it (setup.sh is not run: no network here; the current virtualenv stands in for
/autograder/venv)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from autograder import REPO_ROOT
from autograder.bundle import BundleError, build_gradescope_bundle
from autograder.course import load_course
from autograder.secret import SECRET_ENV, load_secret

pytestmark = pytest.mark.slow

ASSIGNMENT = "vanishing_gradients"
COURSE = load_course()
SPEC = COURSE.assignment(ASSIGNMENT)
SOLUTIONS = REPO_ROOT / COURSE.solutions_dir / ASSIGNMENT
RELEASE = REPO_ROOT / COURSE.release_dir / ASSIGNMENT


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return build_gradescope_bundle(COURSE, ASSIGNMENT, tmp_path_factory.mktemp("bundle") / "autograder.zip")


def unzip_like_gradescope(bundle: Path, root: Path) -> Path:
    """Gradescope extracts the zip into <root>/source/ (keeping the Unix permissions, as unzip does) and copies
    run_autograder to <root>/run_autograder; returns that script."""
    with zipfile.ZipFile(bundle) as z:
        for info in z.infolist():
            target = z.extract(info, root / "source")
            os.chmod(target, (info.external_attr >> 16) & 0o777)
    shutil.copy2(root / "source" / "run_autograder", root / "run_autograder")
    return root / "run_autograder"


def run_autograder(script: Path, root: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AUTOGRADER"))}
    env.update(AUTOGRADER_ROOT=str(root), AUTOGRADER_PYTHON=sys.executable)  # this venv plays /autograder/venv
    return subprocess.run([str(script)], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def package_used(run: subprocess.CompletedProcess) -> Path:
    line = next(l for l in run.stdout.splitlines() if l.startswith("gradescope_run: autograder package "))
    return Path(line.split("autograder package ", 1)[1].split(";")[0])


def check_schema(document: dict) -> None:
    assert {"score", "max_score", "execution_time", "output", "visibility", "stdout_visibility", "tests"} <= set(document)
    assert document["max_score"] == pytest.approx(SPEC.max_score)
    assert document["tests"]
    for test in document["tests"]:
        assert {"name", "score", "max_score", "status", "output"} <= set(test)
        assert test["status"] in ("passed", "failed")
        assert 0 <= test["score"] <= test["max_score"]
    assert sum(t["max_score"] for t in document["tests"]) == pytest.approx(SPEC.max_score)
    assert document["score"] == pytest.approx(sum(t["score"] for t in document["tests"]))


def test_bundle_contents(bundle, tmp_path):
    with zipfile.ZipFile(bundle) as z:
        infos = {i.filename: i for i in z.infolist()}
        run_script = z.read("run_autograder").decode()
    names = set(infos)
    assert {"setup.sh", "run_autograder", "source/course.yml", "source/pyproject.toml", "source/README.md",
            "source/autograder/__init__.py", "source/autograder/grade.py", "source/autograder/sandbox/student/worker.py",
            "source/autograder/gradescope_run.py", "source/autograder/graders/conftest.py",
            "source/autograder/graders/pytest.ini"} <= names
    assert any(n.startswith("source/autograder/graders/test_") for n in names)
    assert {f"source/solutions/{ASSIGNMENT}/{nb}" for nb in SPEC.notebooks} <= names
    top = {n.split("/")[0] for n in names}
    assert top == {"setup.sh", "run_autograder", "source"}
    kit = {n.split("/")[1] for n in names if n.startswith("source/")}
    assert kit == {"autograder", "solutions", "assignments", "course.yml", "pyproject.toml", "README.md",
                   ".autograder"}
    # The course secret, where gradescope_run reads it (the kit is the course root there), readable by its owner only.
    secret = "source/.autograder/course_secret"
    assert zipfile.ZipFile(bundle).read(secret).decode().strip() == os.environ[SECRET_ENV]
    assert stat.S_IMODE(infos.pop(secret).external_attr >> 16) == 0o600
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    names.remove(secret)
    assert {n.split("/")[2] for n in names if n.startswith("source/solutions/")} == {ASSIGNMENT}
    assert {f"source/assignments/{ASSIGNMENT}/{nb}" for nb in SPEC.notebooks} <= names  # the canary grades it
    for name in names:
        parts = name.split("/")
        assert not any(p in ("tests", ".venv", "__pycache__", ".git", ".ipynb_checkpoints") or p.startswith(".")
                       or p.endswith(".egg-info") for p in parts), name
        assert not name.endswith((".pyc", ".pyo")), name
    for name, info in infos.items():
        mode = info.external_attr >> 16
        assert info.create_system == 3 and stat.S_ISREG(mode), name
        assert info.date_time == (1980, 1, 1, 0, 0, 0), name
        expected = 0o755 if name in ("run_autograder", "setup.sh") else 0o644
        assert stat.S_IMODE(mode) == expected, (name, oct(mode))
    assert "autograder.gradescope_run" in run_script and f"--assignment {ASSIGNMENT}" in run_script
    setup_script = zipfile.ZipFile(bundle).read("setup.sh").decode()
    pin = next(line for line in (REPO_ROOT / "pyproject.toml").read_text().splitlines() if '"torch==' in line)
    version = pin.split("==")[1].split('"')[0]
    assert f'"torch=={version}+cpu"' in setup_script and "--index-url https://download.pytorch.org/whl/cpu" in \
        setup_script  # the image gets torch's CPU-only build, at the kit's pin
    assert list(infos) == sorted(infos)

    again = build_gradescope_bundle(COURSE, ASSIGNMENT, tmp_path / "again.zip")
    assert again.read_bytes() == bundle.read_bytes()


def test_bundle_needs_the_course_secret(tmp_path, monkeypatch):
    """Without it Gradescope could not grade with the course's hidden inputs: no zip, and a message saying why."""
    monkeypatch.delenv(SECRET_ENV)
    monkeypatch.setattr("autograder.secret.secret_path", lambda root: tmp_path / "none")
    with pytest.raises(BundleError, match="(?s)no course secret .* carries the course secret"):
        build_gradescope_bundle(COURSE, ASSIGNMENT, tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_bundle_refuses_unknown_assignment(tmp_path):
    with pytest.raises(BundleError, match="no assignment"):
        build_gradescope_bundle(COURSE, "nope", tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_gradescope_run_gives_the_solutions_full_marks(bundle, tmp_path):
    script = unzip_like_gradescope(bundle, tmp_path)
    (tmp_path / "submission").mkdir()
    for notebook in SOLUTIONS.glob("*.ipynb"):
        shutil.copy(notebook, tmp_path / "submission" / notebook.name)
    (tmp_path / "submission_metadata.json").write_text(json.dumps(
        {"id": 123, "users": [{"email": "ada.lovelace@example.edu", "id": 42, "name": "Ada"}]}))
    run = run_autograder(script, tmp_path)
    assert run.returncode == 0, run.stderr
    assert "gradescope_run exited with status 0" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
    # The bundled package graded, not the checkout's (which this venv has installed editable).
    assert package_used(run).is_relative_to(tmp_path / "source"), run.stdout[:2000]
    assert "student ada.lovelace@example.edu (users[0].email)" in run.stdout
    assert f"gradescope_run: canary passed: canary-reference {SPEC.max_score:g}, canary-release 0" in run.stdout
    document = json.loads((tmp_path / "results" / "results.json").read_text())
    check_schema(document)
    failed = [f"{t['name']}: {t['output']}" for t in document["tests"] if t["status"] != "passed"]
    assert document["score"] == pytest.approx(SPEC.max_score), failed
    isolation = document["extra_data"]["isolation"]
    assert f"isolation: {isolation}" in run.stdout and "Isolation" not in document["output"]  # instructors only
    assert document["extra_data"]["student"] == "ada.lovelace@example.edu"
    # Graded with the bundled course secret (run_autograder's environment has none), which no output shows.
    assert document["extra_data"]["course_secret_fingerprint"] == load_secret(REPO_ROOT).fingerprint
    results_text = (tmp_path / "results" / "results.json").read_text()
    assert os.environ[SECRET_ENV] not in run.stdout + run.stderr + results_text
    assert not list((tmp_path / "results").glob(".*")), "a temporary file was left in results/"


def test_gradescope_run_gives_the_release_zero(bundle, tmp_path):
    """The untouched release, in nbgrader's <assignment>/ subfolder, without submission metadata."""
    script = unzip_like_gradescope(bundle, tmp_path)
    shutil.copytree(RELEASE, tmp_path / "submission" / ASSIGNMENT)
    run = run_autograder(script, tmp_path)
    assert "gradescope_run exited with status 0" in run.stdout, run.stdout[-3000:] + run.stderr[-3000:]
    assert package_used(run).is_relative_to(tmp_path / "source")
    assert f"files from {tmp_path / 'submission' / ASSIGNMENT}" in run.stdout
    document = json.loads((tmp_path / "results" / "results.json").read_text())
    check_schema(document)
    assert document["score"] == 0
    assert all(t["status"] == "failed" for t in document["tests"])
    assert document["extra_data"]["student"] == "student"
    assert sorted(document["extra_data"]["files"]) == sorted(SPEC.notebooks)


def test_gradescope_run_writes_a_zero_when_the_kit_is_broken(bundle, tmp_path):
    script = unzip_like_gradescope(bundle, tmp_path)
    shutil.rmtree(tmp_path / "source" / "source" / "solutions")
    (tmp_path / "submission").mkdir()
    shutil.copy(SOLUTIONS / SPEC.notebooks[0], tmp_path / "submission")
    run = run_autograder(script, tmp_path)
    assert "gradescope_run exited with status 1" in run.stdout
    document = json.loads((tmp_path / "results" / "results.json").read_text())
    assert document["score"] == 0 and "could not grade this submission" in document["output"]
    assert "no solution notebooks" in document["output"]
    assert sum(t["max_score"] for t in document["tests"]) == pytest.approx(SPEC.max_score)


def test_gradescope_run_refuses_to_grade_where_the_canary_fails(bundle, tmp_path):
    """An image where the reference cannot get full marks (here: torch is not preloaded and
    64 MB are too few to import it) grades nobody: the student gets a 0 that says it is not a verdict, and the run fails loudly."""
    script = unzip_like_gradescope(bundle, tmp_path)
    course_file = tmp_path / "source" / "source" / "course.yml"
    course_file.write_text(course_file.read_text().replace("memory_mb: 2048", "memory_mb: 64")
                           .replace("preload: [numpy, matplotlib.pyplot, torch]", "preload: [numpy]"))
    (tmp_path / "submission").mkdir()
    for notebook in SOLUTIONS.glob("*.ipynb"):
        shutil.copy(notebook, tmp_path / "submission" / notebook.name)
    run = run_autograder(script, tmp_path)
    assert "gradescope_run exited with status 1" in run.stdout, run.stdout[-3000:]
    document = json.loads((tmp_path / "results" / "results.json").read_text())
    assert document["score"] == 0 and "not a verdict on your code" in document["output"]
    assert "The canary failed on this Gradescope image" in document["output"]
    assert "reference solution scored" in document["output"]


def test_run_autograder_writes_a_zero_when_python_cannot_start(bundle, tmp_path):
    script = unzip_like_gradescope(bundle, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "AUTOGRADER"))}
    env.update(AUTOGRADER_ROOT=str(tmp_path), AUTOGRADER_PYTHON=str(tmp_path / "no-such-python"))
    run = subprocess.run([str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    document = json.loads((tmp_path / "results" / "results.json").read_text())
    assert document["score"] == 0 and "could not run" in document["output"]


def test_cpu_torch_stays_when_the_kit_is_installed():
    """Both setup scripts install torch's CPU-only wheel first (`torch==X+cpu`), then the kit, whose pin is
    `torch==X`: a pin without a local label is satisfied by X+cpu (PEP 440), so installing the kit keeps the CPU
    build rather than pulling the package index's CUDA build. Checked with pip's own resolver (a dry run, no
    network) in this virtualenv, which scripts/setup.sh built."""
    import torch

    pin = next(line for line in (REPO_ROOT / "pyproject.toml").read_text().splitlines() if '"torch==' in line)
    version = pin.split("==")[1].split('"')[0]
    assert torch.__version__ == f"{version}+cpu" and torch.version.cuda is None  # scripts/setup.sh's default
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet",
                             "--disable-pip-version-check", "--no-build-isolation", "--report", "-", "-e",
                             str(REPO_ROOT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    installs = [item["metadata"]["name"] for item in json.loads(result.stdout)["install"]]
    assert installs == ["vg-autograder"]  # torch (and everything else) already satisfied
