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


# Time zones: nbgrader writes timestamp.txt in its Exchange.timezone, e.g. "2026-12-19 00:30:00.000000 CET".

def _course_in(tmp_path, zone: str, due: str):
    import yaml

    from autograder import REPO_ROOT

    data = yaml.safe_load((REPO_ROOT / "course.yml").read_text())
    data["timezone"] = zone
    data["assignments"][0]["due"] = due
    (tmp_path / "course.yml").write_text(yaml.safe_dump(data))
    return load_course(tmp_path / "course.yml").assignment("vanishing_gradients")


def _stamp(tmp_path, text: str):
    folder = tmp_path / "alice" / "vanishing_gradients"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "timestamp.txt").write_text(text + "\n")
    return Submission("alice", folder)


@pytest.mark.parametrize("stamp, kept", [
    ("2026-12-18 23:50:00.000000 CET", 1.0),    # 9 minutes early, Berlin time
    ("2026-12-19 00:10:00.000000 CET", 1.0),    # 11 minutes late: within the 15 minutes of grace
    ("2026-12-19 00:30:00.000000 CET", 0.9),    # 31 minutes late: one started day
    ("2026-12-18 23:30:00.000000 UTC", 0.9),    # = 00:30 in Berlin
    ("2026-12-18 23:50:00.000000", 1.0),        # no zone: the course's
    ("2026-12-19 00:30:00.000000 +0100", 0.9),  # a numeric offset
])
def test_deadline_in_a_non_utc_course_zone(tmp_path, stamp, kept):
    """course.yml `timezone: Europe/Berlin` and a due date without an offset: 23:59 in Berlin (22:59 UTC)."""
    assignment = _course_in(tmp_path, "Europe/Berlin", "2026-12-18T23:59:00")
    assert assignment.due == datetime(2026, 12, 18, 22, 59, tzinfo=timezone.utc)
    submitted = _stamp(tmp_path, stamp).timestamp(assignment.zone)
    fraction, note = late_penalty(submitted, assignment)
    assert fraction == pytest.approx(kept), note
    assert "CET" in note  # shown in the course's zone


def test_cet_timestamp_against_a_utc_due_date(tmp_path):
    """The case of the issue: due 23:59 UTC, submitted 00:30 CET (23:30 UTC) is on time, not a day late."""
    submitted = _stamp(tmp_path, "2026-12-19 00:30:00.000000 CET").timestamp()
    assert submitted == datetime(2026, 12, 18, 23, 30, tzinfo=timezone.utc)
    assert late_penalty(submitted, ASSIGNMENT)[0] == 1.0


@pytest.mark.parametrize("stamp", ["2026-12-19 00:30:00.000000 CET", "2026-07-01 09:00:00.000000 Europe/Berlin",
                                   "2026-12-18 23:30:00.000000 UTC", "2026-12-18 23:30:00.123456 America/New_York"])
def test_read_as_nbgrader_reads_it(tmp_path, stamp):
    from nbgrader.utils import parse_utc

    ours = _stamp(tmp_path, stamp).timestamp()
    assert ours.astimezone(timezone.utc).replace(tzinfo=None) == parse_utc(stamp)
