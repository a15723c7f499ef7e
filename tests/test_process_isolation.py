"""Grades stay right without bubblewrap (a laptop, Gradescope's containers): the attack of a student who leaves a
daemon behind to rewrite the results after the batch. Its helper double-forks, calls setsid(), re-executes python
with an empty environment (no sandbox marker) and, for up to 60 s, rewrites every results.json and grades.csv it
can reach: 80 for its author, 0 for everyone else. Graded at the process level, cold (AUTOGRADER_WARM=0), as
root, the way Gradescope runs: the student runs as a uid of its own, the grading process is its subreaper, and its results
are written only once its processes are gone. Before those defences the classmate ended with 0 in grades.csv
and the author's Gradescope result said 80 while the log said 0 (issue 20)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograder import REPO_ROOT
from autograder.course import load_course
from autograder.secret import SECRET_ENV

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="as a normal user without bubblewrap the student has the "
                                 "grader's own rights (README: isolation levels); tests/test_sandbox.py checks "
                                 "there that no process survives")]

SPEC = load_course().assignment("vanishing_gradients")
SOLUTIONS = REPO_ROOT / "solutions" / SPEC.id
RELEASE = REPO_ROOT / "assignments" / SPEC.id

DAEMON = r'''
import json, os, sys, time
targets, grades, me = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
end = time.time() + 60
while time.time() < end:
    time.sleep(0.1)
    for path in targets:
        try:
            folder = os.path.basename(os.path.dirname(path))
            doc = json.load(open(path))
            doc["score"] = 80.0 if folder in (me, "results") else 0.0
            open(path, "w").write(json.dumps(doc))
        except Exception:
            pass
    try:
        rows = open(grades).read().splitlines()
        rows = rows[:1] + [r.split(",")[0] + ("," + ("80" if r.split(",")[0] == me else "0")) + "," +
                           ",".join(r.split(",")[2:]) for r in rows[1:]]
        open(grades, "w").write("\n".join(rows) + "\n")
    except Exception:
        pass
'''


def daemon_helper(targets: list[Path], grades: Path, word: str) -> str:
    """A student's .py file that starts the daemon when it is loaded (its command line carries `word`)."""
    return (f"import json, os, sys\nDAEMON = {DAEMON!r}\n"
            "if not os.environ.get('ZZ_STARTED'):\n"
            "    os.environ['ZZ_STARTED'] = '1'\n"
            "    if os.fork() == 0:\n"
            "        os.setsid()\n"
            "        if os.fork() == 0:\n"
            f"            os.execve(sys.executable, [sys.executable, '-c', DAEMON, {json.dumps([str(t) for t in targets])!r}, "
            f"{str(grades)!r}, 'attacker', {word!r}], {{}})\n"
            "        os._exit(0)\n"
            "    os.wait()\n")


def survivors(word: str) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                if word.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    found.append(int(name))
            except OSError:
                pass
    return found


def process_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOGRADER") or k == SECRET_ENV}
    env.update(AUTOGRADER_ISOLATION="process", AUTOGRADER_WARM="0")
    return env


@pytest.fixture
def word():
    word = "vg-daemon-" + secrets.token_hex(6)
    yield word
    for pid in survivors(word):  # never leave one behind, whatever the test found
        os.kill(pid, 9)


def test_a_daemon_cannot_rewrite_the_class_grades(tmp_path, word):
    os.chmod(tmp_path, 0o755)  # reachable by anyone: only the files' owner protects them, as in a course folder
    submissions, out = tmp_path / "submissions", tmp_path / "out"
    (submissions / "attacker").mkdir(parents=True)
    (submissions / "bystander").mkdir()
    for notebook in RELEASE.glob("*.ipynb"):  # the attacker did no work: 0 points honestly
        shutil.copy(notebook, submissions / "attacker" / notebook.name)
    for notebook in SOLUTIONS.glob("*.ipynb"):
        shutil.copy(notebook, submissions / "bystander" / notebook.name)
    targets = [out / name / "results.json" for name in ("attacker", "bystander")]
    (submissions / "attacker" / "zz_helper.py").write_text(daemon_helper(targets, out / "grades.csv", word))

    run = subprocess.run([sys.executable, "-m", "autograder", "grade", str(submissions), "--out", str(out),
                          "--jobs", "2"], env=process_env(), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert "isolation: process" in run.stdout
    time.sleep(1.5)  # the daemon rewrote every 0.1 s while it lived
    assert survivors(word) == []
    grades = {row.split(",")[0]: row.split(",")[1] for row in (out / "grades.csv").read_text().splitlines()[1:]}
    assert grades == {"attacker": "0", "bystander": f"{SPEC.max_score:g}"}
    scores = {t.parent.name: json.loads(t.read_text())["score"] for t in targets}
    assert scores == {"attacker": 0.0, "bystander": SPEC.max_score}


def test_a_daemon_cannot_rewrite_the_gradescope_result(tmp_path, word):
    """Through the Gradescope entry point, as Gradescope runs it (root, /autograder layout, no bubblewrap)."""
    os.chmod(tmp_path, 0o755)
    (tmp_path / "submission").mkdir()
    (tmp_path / "results").mkdir()
    for notebook in RELEASE.glob("*.ipynb"):
        shutil.copy(notebook, tmp_path / "submission" / notebook.name)
    result = tmp_path / "results" / "results.json"
    (tmp_path / "submission" / "zz_helper.py").write_text(daemon_helper([result], tmp_path / "none.csv", word))
    env = dict(process_env(), AUTOGRADER_ROOT=str(tmp_path))
    run = subprocess.run([sys.executable, "-m", "autograder.gradescope_run"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"score 0 / {SPEC.max_score:g}" in run.stdout, run.stdout[-3000:]
    time.sleep(1.5)
    assert survivors(word) == []
    document = json.loads(result.read_text())
    assert document["score"] == 0.0
    assert document["extra_data"]["isolation"] == "process"
    assert "a uid of its own" in document["extra_data"]["isolation_note"]
