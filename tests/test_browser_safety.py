"""Nothing a student wrote runs in a TA's or instructor's browser (issue 20, item 4).

A hostile submission puts scripts in its saved outputs, its written (markdown) answers, a raw cell, a cell's nbgrader
name and the notebook's metadata; every payload, if it ran, marks the page's root element (`data-pwned-<where>`),
which real headless Chromium's DOM dump after load shows. Checked: the notebook the kit stages for formgrader,
rendered exactly as formgrader renders it (nbgrader's FormgradeExtension building nbconvert's HTMLExporter from the
course's nbgrader_config.py, the `formgrade` template), and every page the kit writes (feedback, class summary,
report, written answers). Controls: the same harness on the raw notebook, and on the payloads unescaped, shows the
marks, so the tests can fail.
"""

from __future__ import annotations

import base64
import html
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from autograder import REPO_ROOT
from autograder.course import load_course
from autograder.notebook import nbgrader_meta, read_notebook

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (scripts/setup.sh installs it)")]

COURSE = load_course()
ASSIGNMENT = COURSE.assignment("vanishing_gradients")
RELEASE = REPO_ROOT / COURSE.release_dir / ASSIGNMENT.id
NOTEBOOK = "1_bptt.ipynb"
WRITTEN = "answer_chain_rule"  # the written answer in NOTEBOOK
# No alert() anywhere: a dialog stops headless Chromium's --dump-dom for good.
DATA_SCRIPT = "<script>window.name='pwned'</script>"
DATA_SCRIPT_B64 = base64.b64encode(DATA_SCRIPT.encode()).decode()
MARK = re.compile(r'data-pwned-([\w-]+)="1"')  # set only by a payload that ran (its source splits the name)


def mark(where: str, frame: str = "") -> str:
    """JavaScript that marks the page (from an iframe: its parent's) as `where`."""
    return f"{frame}document.documentElement.setAttribute('data-pwned-'+'{where}','1')"


def html_payloads(where: str) -> str:
    """Every way of running script from HTML that a browser would honour, each marking `where-<way>`."""
    return "\n".join([
        f"<script>{mark(where + '-script')}</script>",
        f'<img src="x" onerror="{mark(where + "-img")}">',
        f'<svg><image href="x" onerror="{mark(where + "-svgimg")}"></image></svg>',
        f'<svg onload="{mark(where + "-svg")}"></svg>',
        f'<iframe srcdoc="<script>{mark(where + "-srcdoc", "parent.")}</script>"></iframe>',
        f'<details open ontoggle="{mark(where + "-details")}"><summary>s</summary></details>',
        f'<a href="javascript:{mark(where + "-link")}">link</a>',
        # a data: document has an origin of its own (it cannot mark this page): these are found in the DOM instead
        f'<iframe src="data:text/html,{DATA_SCRIPT}"></iframe>',
        f'<object data="data:text/html;base64,{DATA_SCRIPT_B64}"></object>',
    ])


def markdown_payloads(where: str) -> str:
    """The HTML ones in a written answer, and markdown's own: script links, autolinks, data: URLs."""
    return "\n\n".join([
        "The gradient is a product of Jacobians; $|\\partial h_t/\\partial h_k| \\le \\gamma^{t-k}$.",
        html_payloads(where),
        f"[click](javascript:{mark(where + '-mdlink')}) and <javascript:void(0)> and "
        f"[data](data:text/html;base64,{DATA_SCRIPT_B64}) ![picture](data:text/html,{DATA_SCRIPT})",
        # text that renders as a script link's markdown: live if the rendering were read as markdown again
        f"\\[again\\](javascript:{mark(where + '-again')})",
    ])


class ActiveContent(HTMLParser):
    """What could run in a page without a script of its own: event-handler attributes, frames and plugins, and
    script or HTML-document URLs."""
    URL_ATTRIBUTES = {"href", "src", "action", "formaction", "data", "xlink:href", "poster", "background"}
    ACTIVE = ("javascript:", "vbscript:", "data:text/html", "data:image/svg")

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        self.tag = ""

    def handle_starttag(self, tag, attrs):
        self.tag = tag
        if tag in ("iframe", "frame", "object", "embed", "base"):
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            url = re.sub(r"[\x00-\x20\s]+", "", html.unescape(value or "")).lower()
            active_url = name in self.URL_ATTRIBUTES and url.startswith(self.ACTIVE)
            if name.startswith("on") or name == "srcdoc" or active_url:
                self.found.append(f"<{tag} {name}={(value or '')[:40]!r}>")

    def handle_data(self, data):
        if self.tag == "script" and "data-pwned-" in data:  # one that did not run (e.g. its jQuery is missing)
            self.found.append(f"<script>{data.strip()[:60]}")


def active_content(dom: str) -> list[str]:
    parser = ActiveContent()
    parser.feed(dom)
    return parser.found


def dump_dom(page: Path, tmp_path: Path) -> str:
    """The DOM after load (scripts run, images failed) in headless Chromium, offline."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp_path / 'profile'}",
               "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "<html" in result.stdout, result.stderr[-2000:]
    return result.stdout


def marks(dom: str) -> set[str]:
    root = re.search(r"<html[^>]*>", dom).group(0)  # payloads mark the root element only
    return set(MARK.findall(root))


# --------------------------------------------------------------------------------------------------------------
# The notebook staged for formgrader

def hostile_submission(folder: Path) -> Path:
    """The release's first notebook with payloads in a written answer, saved outputs of every kind, a raw HTML
    cell, an nbgrader cell name, and a widget state."""
    folder.mkdir(parents=True)
    nb = read_notebook(RELEASE / NOTEBOOK)
    answer = next(c for c in nb.cells if nbgrader_meta(c).get("grade_id") == WRITTEN)
    answer.source = markdown_payloads("md")
    code = next(c for c in nb.cells if c.cell_type == "code" and nbgrader_meta(c).get("solution"))
    code.execution_count = 3
    code.outputs = [
        nbformat.v4.new_output("display_data", data={"text/html": html_payloads("out")}),
        nbformat.v4.new_output("execute_result", execution_count=3,
                               data={"application/javascript": mark("out-js"), "text/plain": "x"}),
        nbformat.v4.new_output("display_data", data={
            "image/svg+xml": f'<svg xmlns="http://www.w3.org/2000/svg" onload="{mark("out-svgxml")}"></svg>'}),
        nbformat.v4.new_output("display_data", data={"text/markdown": html_payloads("outmd")}),
    ]
    raw = nbformat.v4.new_raw_cell(html_payloads("raw"), metadata={"raw_mimetype": "text/html"})
    named = nbformat.v4.new_markdown_cell("Extra.", metadata={"nbgrader": {
        "solution": True, "grade": False, "locked": False, "schema_version": 3,
        "grade_id": f'x"></textarea><img src="x" onerror="{mark("gradeid")}"><textarea id="'}})
    nb.cells += [raw, named]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2,
                                                                             "version_minor": 0}}
    nbformat.write(nb, str(folder / NOTEBOOK))
    return folder


def formgrader_page(course: Path, notebook: Path, config: str, out: Path, monkeypatch) -> Path:
    """`notebook` rendered as formgrader's submission page renders it: nbgrader's FormgradeExtension reads the
    course's nbgrader_config.py (here `config`) and builds nbconvert's HTMLExporter from it with its `formgrade`
    template; the resources are the ones its SubmissionHandler passes."""
    from nbconvert.exporters import HTMLExporter
    from nbgrader.server_extensions.formgrader.formgrader import FormgradeExtension

    (course / "nbgrader_config.py").write_text(f"c = get_config()\nc.CourseDirectory.root = {str(course)!r}\n"
                                               + config + "\n")
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(course / ".jupyter"))  # only the course's file applies
    monkeypatch.chdir(course)
    monkeypatch.setattr(sys, "path", list(sys.path))  # nbgrader puts the working directory on it
    formgrader = FormgradeExtension()
    formgrader.initialize([])
    exporter = HTMLExporter(config=formgrader.config)
    assert exporter.template_name == "formgrade"
    resources = {"assignment_id": ASSIGNMENT.id, "notebook_id": notebook.stem, "submission_id": "1", "index": 0,
                 "total": 1, "base_url": "", "student": "mallory", "last_name": None, "first_name": None,
                 "notebook_path": notebook.name}
    page, _ = exporter.from_filename(str(notebook), resources=resources)
    out.write_text(page, encoding="utf-8")
    return out


def test_staged_notebook_runs_nothing_in_formgrader(tmp_path, monkeypatch):
    from autograder.gradebook import FORMGRADER_CONFIG_LINE, formgrader_config_warning, stage_for_formgrader
    from autograder.html_safety import render_markdown

    course = tmp_path / "course"
    course.mkdir()
    submitted = hostile_submission(tmp_path / "submitted" / "mallory" / ASSIGNMENT.id)
    assert stage_for_formgrader(course, ASSIGNMENT.id, {"mallory": submitted.parent}) == []
    staged = course / "autograded" / "mallory" / ASSIGNMENT.id / NOTEBOOK

    original, copy = read_notebook(submitted / NOTEBOOK), read_notebook(staged)
    assert [c.id for c in copy.cells] == [c.id for c in original.cells]  # formgrader's cells, as submitted
    assert all(c.outputs == [] and c.execution_count is None for c in copy.cells if c.cell_type == "code")
    kept = [(c.id, nbgrader_meta(c)) for c in original.cells if nbgrader_meta(c).get("grade_id") in
            {nbgrader_meta(r).get("grade_id") for r in read_notebook(RELEASE / NOTEBOOK).cells}]
    by_id = {c.id: c for c in copy.cells}
    assert len(kept) >= 9 and all(nbgrader_meta(by_id[i]) == meta for i, meta in kept)  # formgrader's grade cells
    assert "nbgrader" not in copy.cells[-1].metadata and "widgets" not in copy.metadata
    answer = next(c for c in copy.cells if nbgrader_meta(c).get("grade_id") == WRITTEN)
    assert render_markdown(answer.source).strip() == answer.source  # formgrader's rendering passes it through

    # The kit's configuration: formgrader's exporter sanitizes; the page holds the answer's text, inert.
    safe = formgrader_page(course, staged, FORMGRADER_CONFIG_LINE, tmp_path / "staged.html", monkeypatch)
    assert formgrader_config_warning(course) is None
    (course / "release").mkdir()
    shutil.copy(RELEASE / NOTEBOOK, course / "release" / NOTEBOOK)
    template = formgrader_page(course, course / "release" / NOTEBOOK, FORMGRADER_CONFIG_LINE,
                               tmp_path / "release.html", monkeypatch)
    own = active_content(template.read_text(encoding="utf-8"))  # formgrader's own buttons (onclick)
    assert own
    dom = dump_dom(safe, tmp_path)
    assert marks(dom) == set() and active_content(dom) == own
    assert "The gradient is a product of Jacobians" in dom and 'class="score tabbable" id="answer_chain_rule"' in dom

    # Controls. Nbgrader's defaults on the raw notebook: every kind of payload runs.
    (course / "raw").mkdir()
    shutil.copy(submitted / NOTEBOOK, course / "raw" / NOTEBOOK)
    raw = formgrader_page(course, course / "raw" / NOTEBOOK, "", tmp_path / "raw.html", monkeypatch)
    assert formgrader_config_warning(course) is not None
    dom = dump_dom(raw, tmp_path)
    ran = marks(dom)
    assert {"md-img", "md-svg", "md-srcdoc", "md-details", "out-script", "out-img", "gradeid"} <= ran, ran
    found = active_content(dom)
    assert any("javascript:" in f for f in found) and any(f.startswith("<script>") for f in found), found
    # The kit's configuration alone on the raw notebook: outputs sanitized, but formgrader's template renders
    # markdown unsanitized (hence the staged copy's inert markdown).
    raw = formgrader_page(course, course / "raw" / NOTEBOOK, FORMGRADER_CONFIG_LINE, tmp_path / "raw2.html",
                          monkeypatch)
    ran = marks(dump_dom(raw, tmp_path))
    assert not any(where.startswith("out") for where in ran) and {"md-img", "md-svg", "gradeid"} <= ran, ran


# --------------------------------------------------------------------------------------------------------------
# The kit's own pages

HOSTILE_ID = 'eve<img src=x onerror="' + mark("id") + '">'


def hostile_document(where: str) -> dict:
    tests = [{"name": f"rnn_backward: {html_payloads(where + '-name')}", "score": 0.0, "max_score": 5.0,
              "status": "failed", "output": html_payloads(where + "-output"), "tags": ["rnn_backward"]},
             {"name": "clip_grad_norm: norms", "score": 5.0, "max_score": 5.0, "status": "passed", "output": "",
              "tags": ["clip_grad_norm"]}]
    return {"score": 5.0, "max_score": 10.0, "execution_time": 1.0, "output": html_payloads(where + "-doc"),
            "tests": tests, "extra_data": {"student": HOSTILE_ID, "assignment": ASSIGNMENT.id,
                                           "files": [html_payloads(where + "-file")], "isolation": "bubblewrap"}}


def kit_pages(tmp_path: Path) -> dict[str, Path]:
    """Feedback, class summary, report and written-answers pages built from hostile text."""
    from autograder.answers import write_answers
    from autograder.feedback import write_class_summary, write_feedback
    from autograder.final_grades import FinalGrade, WrittenAnswer, render_report
    from autograder.report import ClassTally

    pages = {name: tmp_path / f"{name}.html" for name in ("feedback", "summary", "report", "answers")}
    write_feedback(pages["feedback"], hostile_document("fb"))
    tally = ClassTally(["rnn_backward", "clip_grad_norm"])
    tally.add(HOSTILE_ID, hostile_document("sum"))
    summary = {"assignment": ASSIGNMENT.id, "students": 1, "max_score": 10.0, "mean_score": 5.0, "full_marks": 0,
               "zero": 0, "isolation": "bubblewrap", "wall_seconds": 1.0, "grader_errors": [HOSTILE_ID]}
    write_class_summary(pages["summary"], {HOSTILE_ID: 5.0}, tally.test_counts, summary)
    grade = FinalGrade(student=HOSTILE_ID, document=hostile_document("rep"), auto=5.0, auto_max=10.0,
                       late_penalty=0.0, in_gradebook=True, written_max=2.0,
                       written=[WrittenAnswer(NOTEBOOK, WRITTEN, 1.0, 2.0, html_payloads("rep-comment"))])
    pages["report"].write_text(render_report(grade, ASSIGNMENT), encoding="utf-8")
    folder = hostile_submission(tmp_path / "answers" / ASSIGNMENT.id)
    write_answers(folder, pages["answers"], COURSE, ASSIGNMENT, REPO_ROOT, html_payloads("title"))
    return pages


def test_kit_pages_run_nothing_a_student_wrote(tmp_path):
    for name, page in kit_pages(tmp_path).items():
        text = page.read_text(encoding="utf-8")
        assert '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'' in text, name
        dom = dump_dom(page, tmp_path)
        assert marks(dom) == set(), name
        assert active_content(dom) == [], (name, active_content(dom))
        if name in ("feedback", "summary"):  # the page's own self-check still runs under the policy
            assert re.search(r'<body[^>]*data-images="\d+ images, 0 broken"', dom), name
    assert "The gradient is a product of Jacobians" in pages_text(tmp_path / "answers.html")


def pages_text(page: Path) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))


def test_the_policy_stops_a_payload_that_escaping_missed(tmp_path):
    """Defence in depth: payloads pasted unescaped into the kit's feedback page do not run (the policy), while
    the same payloads in a page without the policy do (the control)."""
    from autograder.feedback import render_feedback

    page = render_feedback(hostile_document("fb"))
    injected = page.replace("</h1>", "</h1>" + html_payloads("slip"), 1)
    with_policy, without = tmp_path / "with.html", tmp_path / "without.html"
    with_policy.write_text(injected, encoding="utf-8")
    without.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", injected), encoding="utf-8")
    dom = dump_dom(with_policy, tmp_path)
    assert marks(dom) == set()
    assert re.search(r'<body[^>]*data-images="1 images, 1 broken"', dom)  # the self-check ran (the payload's img)
    ran = marks(dump_dom(without, tmp_path))
    assert {"slip-script", "slip-img", "slip-svg", "slip-srcdoc", "slip-details"} <= ran, ran


def test_ids_formgrader_would_print_raw_are_not_recorded():
    """Formgrader's templates print the student id unescaped: such an id (a flat download's file name can carry
    the student's text) is left out of the gradebook, with a warning, instead."""
    from autograder.gradebook import formgrader_safe_id

    assert all(map(formgrader_safe_id, ["alice", "smithjane_12345_67890", "José Núñez", "a.b@example.org"]))
    assert not any(map(formgrader_safe_id, [HOSTILE_ID, 'x"y', "x'y", "a&b", "a`b", "tab\there"]))


def test_a_notebook_the_kit_cannot_read_is_not_staged(tmp_path):
    """Not copied as it is (its bytes could be anything formgrader renders): left out, with a warning."""
    from autograder.gradebook import stage_for_formgrader

    folder = tmp_path / "bob"
    folder.mkdir()
    (folder / "1_bptt.ipynb").write_text("<script>not a notebook</script>")
    (folder / "2_gradient_decay.ipynb").write_text('{"nbformat": 3, "nbformat_minor": 0, "metadata": {}, '
                                                   '"worksheets": [{"cells": []}]}')
    warned = stage_for_formgrader(tmp_path / "course", ASSIGNMENT.id, {"bob": folder})
    assert len(warned) == 2 and all("not staged for formgrader" in w for w in warned)
    assert list((tmp_path / "course" / "autograded" / "bob" / ASSIGNMENT.id).iterdir()) == []
