"""`autograder answers`: a student's written answers, with their questions, as one document (HTML, or PDF printed
by headless Chromium), for graders who do not use formgrader: on Gradescope the written answers are graded as a
PDF in a separate "Homework/PDF" assignment, as otter-grader does with the PDF it renders from the notebooks.

The student's notebooks are read as data (JSON; nothing in them is run). Which cells are answers comes from the
instructor's solution notebooks (markdown solution cells with points) and the question shown is the release's
text, so a student cannot change what is asked. The markdown is rendered by nbconvert and sanitized by the kit (an
allowlist), under a Content-Security-Policy, so a student's markup cannot add scripts or active content to the page
Chromium prints (Chromium's printing needs JavaScript on: with it off, no PDF is written).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from autograder.course import Assignment, Course
from autograder.files import write_atomic
from autograder.notebook import nbgrader_meta, read_notebook, written_answers

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


class AnswersError(Exception):
    """The document cannot be made; the message says why."""


def answers_notebook(folder: Path, course: Course, assignment: Assignment, root: Path, title: str):
    """(a notebook of headings, questions and the student's answers, how many answers were missing)."""
    import nbformat

    folder = Path(folder)
    if (folder / assignment.id).is_dir():  # nbgrader's <student>/<assignment>/ layout
        folder = folder / assignment.id
    solutions = Path(root) / course.solutions_dir / assignment.id
    release = Path(root) / course.release_dir / assignment.id
    cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\n{assignment.title}: written answers")]
    missing = 0
    for name in assignment.notebooks:
        answers = written_answers(read_notebook(solutions / name))
        if not answers:
            continue
        questions = _questions(read_notebook(release / name), answers)
        student = _student_answers(folder / name)
        for grade_id, points in answers.items():
            answer = student.get(grade_id)
            missing += answer is None
            cells.append(nbformat.v4.new_markdown_cell(f"## {name}: {grade_id} ({points:g} points)"))
            cells.append(nbformat.v4.new_markdown_cell(questions.get(grade_id, "")))
            cells.append(nbformat.v4.new_markdown_cell(
                "**Answer:**\n\n" + (answer if answer is not None and answer.strip() else
                                     f"*(no answer found in {name})*")))
    return nbformat.v4.new_notebook(cells=cells), missing


def _questions(release_nb, answers: dict) -> dict[str, str]:
    """grade_id -> the markdown cell just before the answer cell in the release (the question)."""
    found = {}
    for i, cell in enumerate(release_nb.cells):
        grade_id = nbgrader_meta(cell).get("grade_id")
        if grade_id in answers and i > 0 and release_nb.cells[i - 1].cell_type == "markdown":
            found[grade_id] = release_nb.cells[i - 1].source
    return found


def _student_answers(path: Path) -> dict[str, str]:
    """grade_id -> the student's answer (a markdown cell with that grade_id), from their notebook if readable."""
    if not path.is_file() or path.is_symlink():
        return {}
    try:
        nb = read_notebook(path)
    except Exception:  # a corrupt notebook: its answers are reported missing
        return {}
    return {nbgrader_meta(c)["grade_id"]: c.source for c in nb.cells
            if c.get("cell_type") == "markdown" and nbgrader_meta(c).get("grade_id")}


def render_html(nb) -> str:
    """The page: each markdown cell rendered and sanitized by the kit (`html_safety.inert_markdown`: an allowlist,
    so headings, lists and tables stay, scripts, handlers, frames and script URLs do not; nbconvert's own
    `sanitize_html` would show the markdown's <p> and <h1> tags as text), under a Content-Security-Policy that
    lets no script run and nothing be fetched (nbconvert's page loads MathJax and require.js from a CDN)."""
    import copy

    from nbconvert import HTMLExporter

    from autograder.html_safety import inert_markdown, with_csp

    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = inert_markdown(cell.source, cell.get("attachments"))
            cell.pop("attachments", None)
    exporter = HTMLExporter(exclude_input_prompt=True, exclude_output_prompt=True)
    html, _ = exporter.from_notebook_node(nb)
    return with_csp(html)


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def print_pdf(html: str, dest: Path, chromium: str, timeout: float = 120) -> None:
    """Print the page to a PDF with headless Chromium (no network needed: MathJax, which nbconvert's page loads from
    a CDN, is then missing and formulas stay as TeX source)."""
    with tempfile.TemporaryDirectory(prefix="vg-answers-") as scratch:
        page = Path(scratch) / "answers.html"
        page.write_text(html, encoding="utf-8")
        pdf = Path(scratch) / "answers.pdf"
        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   f"--user-data-dir={Path(scratch) / 'profile'}",
                   "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri()]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AnswersError(f"Chromium could not print the PDF: {exc}") from None
        if not pdf.is_file() or not pdf.read_bytes().startswith(b"%PDF"):
            raise AnswersError(f"Chromium did not print the PDF (exit {result.returncode}):\n"
                               f"{result.stderr[-1500:]}")
        write_atomic(dest, pdf.read_bytes())


def write_answers(folder: Path, dest: Path, course: Course, assignment: Assignment, root: Path,
                  title: str) -> int:
    """Write the document (.html, or .pdf with Chromium); returns how many answers were missing."""
    dest = Path(dest)
    if dest.suffix not in (".html", ".pdf"):
        raise AnswersError(f"{dest}: write a .html or a .pdf file")
    chromium = find_chromium() if dest.suffix == ".pdf" else None
    if dest.suffix == ".pdf" and chromium is None:
        raise AnswersError("a PDF needs Chromium (headless), which is not installed here; write a .html file and "
                           "print it to PDF from a browser, or install chromium")
    nb, missing = answers_notebook(folder, course, assignment, root, title)
    html = render_html(nb)
    if dest.suffix == ".pdf":
        print_pdf(html, dest, chromium)
    else:
        write_atomic(dest, html)
    return missing
