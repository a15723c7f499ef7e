"""Final grades: the autograded score (results.json in OUT) and, from the nbgrader gradebook, the written answers
graded in formgrader, put together per student. Two outputs are built from them:

- `autograder report`: one page per student, OUT/<student>/report.html, with both parts, their comments and the
  total, so a student gets one document out of the whole assignment's points;
- `autograder export --format canvas|moodle`: the totals as a CSV that Canvas's or Moodle's gradebook imports.

With a gradebook the numbers are nbgrader's own (what `nbgrader export` gives: code and written scores, the late
penalty, score = max(0, raw - penalty)), so a score a TA changed in formgrader counts; without one, only the
autograded score from results.json.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from autograder.course import Assignment
from autograder.files import write_atomic
from autograder.html_safety import csp_meta
from autograder.results import RESULTS_FILE, student_dir


class FinalGradesError(Exception):
    """OUT, the gradebook or the roster cannot be used; the message says why."""


@dataclass
class WrittenAnswer:
    notebook: str
    name: str            # the cell's grade_id
    score: float | None  # None: not graded yet
    max_score: float
    comment: str


@dataclass
class FinalGrade:
    student: str
    document: dict                       # the student's results.json
    auto: float                          # autograded points, before the late penalty
    auto_max: float
    late_penalty: float                  # points taken off
    written: list[WrittenAnswer] = field(default_factory=list)
    written_max: float = 0.0
    in_gradebook: bool = False

    @property
    def written_score(self) -> float:
        return sum(a.score or 0.0 for a in self.written)

    @property
    def pending(self) -> list[WrittenAnswer]:
        return [a for a in self.written if a.score is None]

    @property
    def total(self) -> float:
        return round(max(0.0, self.auto + self.written_score - self.late_penalty), 6)

    @property
    def max_total(self) -> float:
        return self.auto_max + self.written_max


def collect(out: Path, assignment: Assignment, gradebook: Path | None = None,
            course_id: str | None = None) -> list[FinalGrade]:
    """Every student with a results.json in OUT, with their written answers from `gradebook` if given."""
    out = Path(out)
    if not out.is_dir():
        raise FinalGradesError(f"no results folder {out}")
    grades = []
    for path in sorted(out.glob(f"*/{RESULTS_FILE}")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            student = (document.get("extra_data") or {}).get("student") or path.parent.name
            raw = float(document["extra_data"].get("raw_score", document["score"]))
            score = float(document["score"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise FinalGradesError(f"{path}: not a results document ({exc})") from None
        if (document.get("extra_data") or {}).get("assignment") not in (None, assignment.id):
            continue
        grades.append(FinalGrade(student, document, raw, assignment.max_score, round(raw - score, 6)))
    if not grades:
        raise FinalGradesError(f"no results of {assignment.id} in {out} (expected OUT/<student>/{RESULTS_FILE}, "
                               "as `autograder grade` writes them)")
    if gradebook is not None:
        _add_gradebook(grades, Path(gradebook), assignment.id, course_id)
    return grades


def _add_gradebook(grades: list[FinalGrade], gradebook: Path, assignment_id: str, course_id: str | None) -> None:
    if not gradebook.is_file():
        raise FinalGradesError(f"no gradebook {gradebook}")
    from autograder.gradebook import alembic_on_path

    alembic_on_path()
    from nbgrader.api import Gradebook, MissingEntry  # slow import: only with a gradebook

    kwargs = {"course_id": course_id} if course_id else {}
    with Gradebook(f"sqlite:///{gradebook.resolve()}", **kwargs) as gb:
        try:
            recorded = gb.find_assignment(assignment_id)
        except MissingEntry:
            raise FinalGradesError(f"the gradebook {gradebook} has no assignment {assignment_id} (record the grades "
                                   "with `autograder grade ... --gradebook`)") from None
        written_max = sum(c.max_score for nb in recorded.notebooks for c in nb.grade_cells
                          if c.cell_type == "markdown")
        for grade in grades:
            grade.written_max = written_max
            try:
                submission = gb.find_submission(assignment_id, grade.student)
            except MissingEntry:
                continue  # graded but never recorded: the autograded part only, said on the page
            grade.in_gradebook = True
            grade.auto = float(submission.code_score)  # a function's score a TA changed in formgrader counts
            grade.late_penalty = float(submission.late_submission_penalty or 0.0)
            for notebook in sorted(submission.notebooks, key=lambda n: n.name):
                comments = {c.name: c.comment or "" for c in notebook.comments}
                for cell in notebook.grades:
                    if cell.cell_type != "markdown":
                        continue
                    graded = cell.manual_score is not None or cell.auto_score is not None
                    grade.written.append(WrittenAnswer(notebook.name, cell.name,
                                                       float(cell.score) if graded else None,
                                                       float(cell.max_score), comments.get(cell.name, "")))


# --------------------------------------------------------------------------------------------------------------
# One page per student

def write_reports(grades: list[FinalGrade], out: Path, assignment: Assignment) -> list[Path]:
    paths = []
    for grade in grades:
        path = student_dir(Path(out), grade.student) / "report.html"
        write_atomic(path, render_report(grade, assignment))
        paths.append(path)
    return paths


def render_report(grade: FinalGrade, assignment: Assignment) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    # The lines of results.json's output meant for students (the instructor's Isolation/Memory lines stay there).
    notes = [line for line in str(grade.document.get("output", "")).splitlines()
             if not line.startswith(("Isolation:", "Memory limit:", "Score:"))]
    functions: dict[str, list[dict]] = {}
    for test in grade.document.get("tests", []):
        functions.setdefault((test.get("tags") or [test["name"].split(":")[0]])[0], []).append(test)
    return env.from_string(REPORT).render(g=grade, a=assignment, notes=notes, functions=functions, fmt=_fmt)


def _fmt(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


REPORT = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
""" + csp_meta() + """
<title>{{ a.id }}: {{ g.student }}</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; width: 100%; margin-bottom: 1.5rem; } th, td { border-bottom: 1px solid #ddd;
padding: .35rem .5rem; text-align: left; vertical-align: top; } th { background: #f4f4f4; }
td.num, th.num { text-align: right; white-space: nowrap; } .failed { color: #c62828; } .pending { color: #8a6d00; }
.total { font-size: 1.4rem; font-weight: 600; } pre { white-space: pre-wrap; margin: 0; }
</style></head><body>
<h1>{{ a.title }}: {{ g.student }}</h1>
<p class="total" id="total">Total: {{ fmt(g.total) }} / {{ fmt(g.max_total) }} points</p>
<table id="summary">
<tr><th>part</th><th class="num">points</th></tr>
<tr><td>Autograded functions</td><td class="num">{{ fmt(g.auto) }} / {{ fmt(g.auto_max) }}</td></tr>
{% if g.late_penalty > 0 %}<tr><td>Late penalty (on the autograded points)</td>
<td class="num">&minus;{{ fmt(g.late_penalty) }}</td></tr>{% endif %}
{% if g.in_gradebook %}<tr><td>Written answers{% if g.pending %} <span class="pending">({{ g.pending|length }}
not graded yet)</span>{% endif %}</td><td class="num">{{ fmt(g.written_score) }} / {{ fmt(g.written_max) }}</td></tr>
{% else %}<tr><td class="pending" colspan="2">Written answers{% if g.written_max %} ({{ fmt(g.written_max) }}
points){% endif %}: not graded yet</td></tr>{% endif %}
</table>
{% for line in notes %}<p>{{ line }}</p>{% endfor %}
<h2>Written answers</h2>
{% if g.written %}<table id="written">
<tr><th>notebook</th><th>answer</th><th class="num">points</th><th>comment</th></tr>
{% for w in g.written %}<tr><td>{{ w.notebook }}</td><td>{{ w.name }}</td>
<td class="num">{% if w.score is none %}<span class="pending">not graded yet</span> / {{ fmt(w.max_score) }}{% else %}{{ fmt(w.score) }} / {{ fmt(w.max_score) }}{% endif %}</td>
<td><pre>{{ w.comment }}</pre></td></tr>{% endfor %}
</table>{% else %}<p class="pending">Not graded yet.</p>{% endif %}
<h2>Autograded functions</h2>
<table id="functions">
<tr><th>function</th><th>test</th><th class="num">points</th><th>message</th></tr>
{% for function, tests in functions.items() %}{% for t in tests %}<tr>
<td>{% if loop.first %}{{ function }}{% endif %}</td><td>{{ t.name.split(": ", 1)[-1] }}</td>
<td class="num{% if t.status != 'passed' %} failed{% endif %}">{{ fmt(t.score) }} / {{ fmt(t.max_score) }}</td>
<td><pre>{{ t.output }}</pre></td></tr>{% endfor %}{% endfor %}
</table>
<p>The pictures of your functions against the reference are on your autograder feedback page (feedback.html).</p>
</body></html>
"""


# --------------------------------------------------------------------------------------------------------------
# Gradebook CSVs for an LMS

# Canvas's gradebook import (Canvas Instructor Guide, "How do I import grades in the Gradebook?"): the first columns
# identify the student, in this order; then one column per assignment, its header the assignment's name (with
# " (<Canvas assignment id>)" for an existing assignment; a new name creates a new assignment). Canvas matches a row
# by ID, SIS User ID or SIS Login ID; the Student and Section columns are for people.
CANVAS_IDENTITY = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
# Moodle's CSV grade import (Grade import, docs.moodle.org): any columns; on upload, "Map from" picks the column that
# identifies the user and "Map to" the user field it holds (ID number -> useridnumber, Email address -> useremail),
# and each other column is mapped to a grade item. These are the headers of Moodle's own grade export.
MOODLE_IDENTITY = ["ID number", "Email address"]


def read_roster(path: Path, key: str) -> dict[str, dict[str, str]]:
    """A CSV (e.g. the LMS's own gradebook export) -> student id (its `key` column) -> row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows, lines = [], []
            columns = len(reader.fieldnames or ())
            for row in reader:
                rows.append(row)
                lines.append(reader.line_num)  # the file's line where this row ends (quoted cells may span lines)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise FinalGradesError(f"cannot read the roster {path}: {exc}") from None
    if not rows or key not in rows[0]:
        raise FinalGradesError(f"the roster {path} has no column {key!r} (its columns: "
                               f"{', '.join(rows[0]) if rows else 'none'})")
    students = {}
    for line, row in zip(lines, rows):
        student = (row.get(key) or "").strip()
        if not student:
            continue
        missing = [name for name, value in row.items() if name is not None and value is None]
        if missing:  # DictReader fills a short row's missing cells with None: its identity cells are unknown
            raise FinalGradesError(f"the roster {path}, line {line} (student {student}), has "
                                   f"{columns - len(missing)} cells, but its header has {columns} columns (no "
                                   f"{', '.join(missing)}): "
                                   "complete or delete that row")
        students[student] = row
    return students


def lms_csv(grades: list[FinalGrade], lms: str, column: str,
            roster: dict[str, dict[str, str]] | None = None) -> tuple[str, list[str]]:
    """(the CSV text, students left out because the roster does not have them)."""
    identity = {"canvas": CANVAS_IDENTITY, "moodle": MOODLE_IDENTITY}[lms]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(identity + [column])
    missing = []
    for grade in sorted(grades, key=lambda g: g.student):
        if roster is not None:
            row = roster.get(grade.student)
            if row is None:
                missing.append(grade.student)
                continue
            ids = [_safe(row.get(name, "")) for name in identity]
        elif lms == "canvas":  # the student id, as the login Canvas matches on
            ids = [_safe(grade.student), "", "", _safe(grade.student), ""]
        else:
            ids = [_safe(grade.student), ""]
        writer.writerow(ids + [_fmt(grade.total)])
    return buffer.getvalue(), missing


def _safe(text: str) -> str:
    """A cell a spreadsheet would run as a formula gets a leading quote (OWASP), as in grades.csv."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text

