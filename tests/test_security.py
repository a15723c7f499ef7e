"""Hostile submissions (tests/submissions/attacks.yml) graded in one batch beside an honest bystander: each gets no
point it did not earn, leaves no process behind, reaches nothing on the network, and changes nobody else's
results. Every payload is bounded, and the whole batch runs under a wall-clock limit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from autograder import REPO_ROOT
from autograder.course import load_course
from autograder.examples import build_class, build_student, expectations, load_spec
from autograder.sandbox import isolation_level

SPEC = REPO_ROOT / "tests" / "submissions" / "attacks.yml"
COURSE = load_course()
ASSIGNMENT = COURSE.assignment("vanishing_gradients")
MARKERS = ("987601", "987602")

pytestmark = pytest.mark.slow


def fast_course(tmp_path: Path) -> Path:
    """The course with a 3 s limit per call, so the hanging attacks cost seconds, not minutes."""
    data = yaml.safe_load((REPO_ROOT / "course.yml").read_text())
    data["assignments"][0]["limits"]["call_timeout_seconds"] = 3
    path = tmp_path / "course.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def leftover_processes() -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if any(marker in cmdline for marker in MARKERS):
            found.append(f"{pid}: {cmdline}")
    return found


class Listener:
    """A loopback server that records whatever reaches it."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.5)
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        self.running = True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while self.running:
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.received.append(conn.recv(1024))
                except OSError:
                    self.received.append(b"(connected)")

    def close(self):
        self.running = False
        self.thread.join(timeout=5)
        self.server.close()


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    root = tmp_path_factory.mktemp("attacks")
    listener = Listener()
    course_file = fast_course(root)
    try:
        build_class(SPEC, root / "subs", COURSE, substitutions={"@PORT@": str(listener.port)})
        command = [sys.executable, "-m", "autograder", "grade", str(root / "subs"), "--out", str(root / "out"),
                   "--jobs", "2", "--course", str(course_file)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        # The bystander alone, for comparison: same student id, same hidden inputs.
        build_student("bystander", load_spec(SPEC)["students"]["bystander"], COURSE, ASSIGNMENT.id, root / "alone")
        alone = subprocess.run([*command[:4], str(root / "alone"), "--out", str(root / "alone_out"),
                                "--course", str(course_file)], capture_output=True, text=True, timeout=300)
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr
    assert alone.returncode == 0, alone.stderr
    return root, listener.received


def scores(document: dict) -> dict[str, float]:
    per_function: dict[str, float] = {}
    for test in document["tests"]:
        per_function[test["tags"][0]] = per_function.get(test["tags"][0], 0.0) + test["score"]
    return per_function


@pytest.mark.parametrize("student", list(expectations(SPEC)))
def test_attack_earns_nothing(attacked, student):
    root, _ = attacked
    expect = expectations(SPEC)[student]
    if expect.get("requires") == "bubblewrap" and isolation_level() != "bubblewrap":
        pytest.skip("this attack is stopped by bubblewrap, which is not available here")
    document = json.loads((root / "out" / student / "results.json").read_text())
    assert not (root / "out" / student / "grader_errors.txt").exists()
    got = scores(document)
    if expect.get("score") == "full":
        assert document["score"] == pytest.approx(ASSIGNMENT.max_score), document["output"]
    elif "score" in expect:
        assert document["score"] == pytest.approx(expect["score"]), \
            [t["name"] for t in document["tests"] if t["status"] == "passed"]
    for function in expect.get("lose", []):
        assert got[function] == 0, f"{function} kept points"
    if "lose" in expect:
        for function in set(ASSIGNMENT.points) - set(expect["lose"]):
            assert got[function] == pytest.approx(ASSIGNMENT.points[function]), function


def test_no_process_survives(attacked):
    assert leftover_processes() == []


def test_nothing_reached_the_network(attacked):
    _, received = attacked
    if isolation_level() == "bubblewrap":
        assert received == []


def test_bystander_unchanged_by_the_batch(attacked):
    root, _ = attacked
    in_batch = json.loads((root / "out" / "bystander" / "results.json").read_text())
    alone = json.loads((root / "alone_out" / "bystander" / "results.json").read_text())
    assert in_batch["tests"] == alone["tests"]
    assert in_batch["score"] == alone["score"] == ASSIGNMENT.max_score


def test_output_is_capped(attacked):
    root, _ = attacked
    assert (root / "out" / "network_and_output" / "output.txt").stat().st_size <= ASSIGNMENT.limits.output_kb * 1024 + 4096
