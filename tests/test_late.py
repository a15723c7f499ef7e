"""The late policy: nbgrader's timestamp.txt against course.yml's due date."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from autograder.course import load_course
from autograder.results import late_penalty
from autograder.submission import Submission

ASSIGNMENT = load_course().assignment("vanishing_gradients")
DUE = ASSIGNMENT.due


@pytest.mark.parametrize("delay,kept", [
    (timedelta(hours=-5), 1.0),                 # early
    (timedelta(minutes=10), 1.0),               # within the 15 minutes of grace
    (timedelta(minutes=16), 0.9),               # one started day
    (timedelta(days=1, minutes=20), 0.8),       # two started days
    (timedelta(days=30), 0.0),                  # never below zero
])
def test_penalty_per_started_day(delay, kept):
    fraction, note = late_penalty(DUE + delay, ASSIGNMENT)
    assert fraction == pytest.approx(kept)
    assert ("late" in note) == (kept < 1)


def test_no_timestamp_is_on_time():
    assert late_penalty(None, ASSIGNMENT) == (1.0, "")


def test_timestamp_read_from_nbgrader_layout(tmp_path):
    folder = tmp_path / "alice" / "vanishing_gradients"
    folder.mkdir(parents=True)
    (folder / "timestamp.txt").write_text("2026-12-20 09:30:00.000000 UTC\n")
    assert Submission("alice", folder).timestamp() == datetime(2026, 12, 20, 9, 30, tzinfo=timezone.utc)
    (folder / "timestamp.txt").write_text("not a date")
    assert Submission("alice", folder).timestamp() is None
    (folder / "timestamp.txt").unlink()
    assert Submission("alice", folder).timestamp() is None
