"""grades.csv: student ids that a spreadsheet would run as formulas are escaped (OWASP: a leading single quote)."""

from __future__ import annotations

import csv

from autograder.report import ClassTally, write_grades_csv

IDS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2-2", "@SUM(A1)", "\tTAB", "\rCR", "alice", "bob=1", "o'neil",
       "a,b \"quoted\""]


def test_formula_ids_get_a_leading_quote_and_others_are_untouched(tmp_path):
    tally = ClassTally(["f"])
    for i, student in enumerate(IDS):
        tally.students[student] = (float(i), 60.0, (float(i),))
    write_grades_csv(tmp_path, tally)
    with open(tmp_path / "grades.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    got = {row["student"]: row for row in rows}
    for student in IDS:
        escaped = "'" + student if student[0] in "=+-@\t\r" else student
        assert escaped in got, (student, list(got))
        assert got[escaped]["score"] == f"{IDS.index(student):g}"
    assert not any(cell[:1] in ("=", "+", "-", "@", "\t", "\r") for row in rows for cell in row.values())
