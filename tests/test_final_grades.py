"""`autograder export --format canvas|moodle` and `autograder report` without a gradebook (fast); with a real
gradebook and formgrader they are checked in tests/test_gradebook.py (test_ta_workflow_grade_formgrader_export)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from autograder.cli import main
from autograder.course import load_course
from autograder.final_grades import CANVAS_IDENTITY, MOODLE_IDENTITY, collect, render_report

ASSIGNMENT = load_course().assignment("vanishing_gradients")
POINTS = dict(ASSIGNMENT.points)
FULL = f"{ASSIGNMENT.max_score:g}"  # ada: every test passed
CLEO = (ASSIGNMENT.max_score * 0.5, ASSIGNMENT.max_score * 0.5 * 0.2, ASSIGNMENT.max_score * 0.5 * 0.8)  # half, 2 days

# The identity columns as the LMSs document them: Canvas's gradebook import ("Student, ID, SIS User ID, SIS Login
# ID, Section", then one column per assignment); Moodle's grade export/import ("ID number", "Email address", mapped
# to useridnumber / useremail on import).
CANVAS_HEADER = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
MOODLE_HEADER = ["ID number", "Email address"]


def results(student: str, fraction: float, kept: float = 1.0) -> dict:
    tests = [{"name": f"{f}: case 1", "score": p * fraction, "max_score": p, "output": "dWh differs" if fraction < 1
              else "", "status": "passed" if fraction == 1 else "failed", "visibility": "visible", "tags": [f]}
             for f, p in POINTS.items()]
    raw = round(sum(t["score"] for t in tests), 6)
    return {"score": round(raw * kept, 6), "max_score": ASSIGNMENT.max_score, "tests": tests,
            "output": "Score: ...\nSubmitted 2026-12-20, 2 days late.\nIsolation: process.",
            "extra_data": {"student": student, "assignment": ASSIGNMENT.id, "raw_score": raw, "late_kept": kept}}


@pytest.fixture
def out(tmp_path):
    out = tmp_path / "out"
    for student, fraction, kept in (("ada", 1.0, 1.0), ("=cmd", 0.0, 1.0), ("cleo", 0.5, 0.8)):
        (out / student).mkdir(parents=True)
        (out / student / "results.json").write_text(json.dumps(results(student, fraction, kept)))
    return out


def run(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(map(str, args)))
    return result.exit_code, result.stdout, result.stderr


def read(path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_canvas_csv_has_canvas_documented_columns(out, tmp_path):
    assert CANVAS_IDENTITY == CANVAS_HEADER
    dest = tmp_path / "canvas.csv"
    code, stdout, stderr = run("export", out, "--format", "canvas", "--to", dest)
    assert code == 0, stdout + stderr
    rows = read(dest)
    assert rows[0] == CANVAS_HEADER + [ASSIGNMENT.title]
    by_login = {row[3]: row for row in rows[1:]}
    assert by_login["ada"] == ["ada", "", "", "ada", "", FULL]
    assert by_login["cleo"][-1] == f"{CLEO[2]:g}"  # half the autograded points, 20% off for two late days
    assert by_login["'=cmd"][-1] == "0"  # never a formula in a spreadsheet
    assert "autograded scores only" in stdout


def test_canvas_csv_takes_identities_from_a_canvas_export(out, tmp_path):
    roster = tmp_path / "canvas_export.csv"
    roster.write_text("\ufeffStudent,ID,SIS User ID,SIS Login ID,Section,Vanishing gradients (77)\n"
                      "\"Lovelace, Ada\",101,S-1,ada,Lab A,\n\"Cleo, C\",103,S-3,cleo,Lab B,\n"
                      "\"Eq, Mallory\",102,S-2,=cmd,Lab A,\n", encoding="utf-8")
    dest = tmp_path / "canvas.csv"
    code, stdout, stderr = run("export", out, "--format", "canvas", "--to", dest, "--roster", roster,
                               "--column", "Vanishing gradients (77)")
    assert code == 0, stdout + stderr
    rows = read(dest)
    assert rows[0] == CANVAS_HEADER + ["Vanishing gradients (77)"]
    assert ["Lovelace, Ada", "101", "S-1", "ada", "Lab A", FULL] in rows
    assert ["Cleo, C", "103", "S-3", "cleo", "Lab B", f"{CLEO[2]:g}"] in rows

    roster.write_text("Student,ID,SIS User ID,SIS Login ID,Section\nAda,101,S-1,ada,Lab A\n")
    dest.unlink()
    code, stdout, stderr = run("export", out, "--format", "canvas", "--to", dest, "--roster", roster)
    assert code == 2 and "not in the roster" in stderr and "cleo" in stderr and not dest.exists()
    code, _, stderr = run("export", out, "--format", "canvas", "--to", dest, "--roster", roster,
                          "--roster-key", "Login")
    assert code == 2 and "no column 'Login'" in stderr


def test_moodle_csv_maps_by_id_number_or_email(out, tmp_path):
    assert MOODLE_IDENTITY == MOODLE_HEADER
    dest = tmp_path / "moodle.csv"
    code, stdout, stderr = run("export", out, "--format", "moodle", "--to", dest, "--column", "VG")
    assert code == 0, stdout + stderr
    rows = read(dest)
    assert rows[0] == MOODLE_HEADER + ["VG"]
    assert ["ada", "", FULL] in rows and ["cleo", "", f"{CLEO[2]:g}"] in rows

    roster = tmp_path / "moodle_export.csv"  # Moodle's own export: First name, Last name, ID number, ... Email
    roster.write_text("First name,Last name,ID number,Institution,Department,Email address\n"
                      "Ada,Lovelace,ada,,,ada@example.org\nC,Cleo,cleo,,,cleo@example.org\n"
                      "M,Eq,=cmd,,,m@example.org\n")
    code, stdout, stderr = run("export", out, "--format", "moodle", "--to", dest, "--roster", roster)
    assert code == 0, stdout + stderr
    assert ["cleo", "cleo@example.org", f"{CLEO[2]:g}"] in read(dest)


def test_export_without_results_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, stderr = run("export", tmp_path / "empty", "--format", "moodle", "--to", tmp_path / "x.csv")
    assert code == 2 and "no results of vanishing_gradients" in stderr


def test_report_page_without_gradebook_says_written_answers_are_not_graded(out):
    [cleo] = [g for g in collect(out, ASSIGNMENT) if g.student == "cleo"]
    assert (cleo.auto, cleo.late_penalty, cleo.total) == pytest.approx(CLEO)
    page = render_report(cleo, ASSIGNMENT)
    assert f"Total: {CLEO[2]:g} / {FULL} points" in page and f"&minus;{CLEO[1]:g}" in page
    assert "not graded yet" in page and "Isolation" not in page and "dWh differs" in page


def test_export_keeps_the_students_of_grades_csv(out, tmp_path):
    """A folder left in OUT by an earlier run is not exported: grades.csv lists the last run's students."""
    (out / "grades.csv").write_text("student,score,max_score\nada,60,60\n'=cmd,0,60\n")
    dest = tmp_path / "moodle.csv"
    code, stdout, stderr = run("export", out, "--format", "moodle", "--to", dest)
    assert code == 0, stdout + stderr
    assert [row[0] for row in read(dest)[1:]] == ["'=cmd", "ada"]
    assert "not in OUT/grades.csv, left out: cleo" in stderr


def test_a_short_roster_row_is_a_clear_error_naming_its_line(out, tmp_path):
    """A roster row with fewer cells than its header (a hand-edited export) once crashed with a TypeError while
    the LMS file was written: now exit 2, naming the line and the student, and no file is written."""
    roster = tmp_path / "canvas_export.csv"
    roster.write_text("Student,ID,SIS User ID,SIS Login ID,Section\n\"Lovelace, Ada\",101,S-1,ada,Lab A\n"
                      "\"Cleo, C\",103,S-3,cleo\nMallory,102,S-2,=cmd,Lab A\n", encoding="utf-8")
    dest = tmp_path / "canvas.csv"
    code, stdout, stderr = run("export", out, "--format", "canvas", "--to", dest, "--roster", roster)
    assert code == 2, stdout + stderr
    assert "line 3" in stderr and "4 cells" in stderr and "5 columns" in stderr and "cleo" in stderr, stderr
    assert "Traceback" not in stdout + stderr and not dest.exists()
