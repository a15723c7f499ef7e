"""The feedback page and the class summary render in a real browser (Debian's headless Chromium, installed by the
set-up): every plot decodes, no script or resource error, and nothing is fetched from a network."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from autograder.feedback import render_feedback, write_class_summary
from autograder.report import ClassTally
from autograder.plots import feedback_plots

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (scripts/setup.sh installs it)")]


def document(student: str, score: float) -> dict:
    tests = [{"name": "rnn_backward: dWh on random sequences", "score": score / 2, "max_score": 5, "status": "passed",
              "output": "", "tags": ["rnn_backward"]},
             {"name": "clip_grad_norm: p = inf <script>alert(1)</script>", "score": 0, "max_score": 5,
              "status": "failed", "output": "total_norm <b>differs</b>", "tags": ["clip_grad_norm"]}]
    return {"score": score, "max_score": 10.0, "execution_time": 1.0, "output": f"Score: {score} / 10",
            "tests": tests, "extra_data": {"student": student, "assignment": "vanishing_gradients",
                                           "files": ["1_bptt.ipynb"], "isolation": "bubblewrap"}}


def render(page, tmp_path, *options, dump: bool = True):
    """The DOM after load, and Chromium's log, for a local file."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
               "--virtual-time-budget=5000", *options, *(["--dump-dom"] if dump else []), page.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, result.stderr


def body_data(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom).group(1)
    return dict(re.findall(r'data-([a-z]+)="([^"]*)"', body))


def test_feedback_page_renders_with_its_plots(ref, tmp_path):
    page = tmp_path / "feedback.html"
    figures = feedback_plots(ref, ref, {"rnn_backward"})  # the reference as the student: every plot is drawn
    assert [f["title"] for f in figures] == ["Your rnn_backward", "How the gradient decays", "Clipping",
                                             "Truncated BPTT"]
    page.write_text(render_feedback(document("alice", 7.5), figures))
    dom, log = render(page, tmp_path)
    assert body_data(dom)["images"] == "4 images, 0 broken"
    assert "Uncaught" not in log
    assert "<script>alert(1)</script>" not in dom and "&lt;b&gt;differs" in dom  # student text is escaped
    assert dom.index("clip_grad_norm: p = inf") < dom.index("rnn_backward: dWh")  # failing tests first


def test_plots_are_as_wide_as_the_page_with_legible_legends(ref, tmp_path):
    """At 100% zoom in a 1280 px wide window: every picture fills the page's column, is drawn at that width (not
    enlarged or shrunk), and its legend's text is at least 10 px tall; a screenshot shows each picture pixel for
    pixel where the page says it is."""
    import base64
    import io

    import matplotlib.image
    import numpy as np

    from autograder.plots import DPI, LEGEND_POINTS

    figures = feedback_plots(ref, ref, {"rnn_backward"})
    page = tmp_path / "feedback.html"
    page.write_text(render_feedback(document("alice", 7.5), figures))
    window = ["--window-size=1280,5000", "--force-device-scale-factor=1", "--hide-scrollbars"]
    dom, _ = render(page, tmp_path, *window)
    sizes = [tuple(int(v) for v in size.split("/")) for size in body_data(dom)["sizes"].split()]
    assert len(sizes) == len(figures) == 4
    for shown, natural, column, _, _ in sizes:
        assert shown == column >= 900, sizes  # as wide as the page's column (60rem: 960 px here)
        legend_px = LEGEND_POINTS * DPI / 72 * shown / natural
        assert legend_px >= 10, (sizes, legend_px)
    shot = tmp_path / "page.png"
    render(page, tmp_path, *window, f"--screenshot={shot}", dump=False)
    screen = matplotlib.image.imread(shot)[..., :3]
    assert screen.shape[1] == 1280
    for figure, (shown, _, _, left, top) in zip(figures, sizes):
        picture = matplotlib.image.imread(io.BytesIO(base64.b64decode(figure["png"])))[..., :3]
        height, width = picture.shape[:2]
        assert width == shown and top + height <= screen.shape[0]
        seen = screen[top:top + height, left:left + width]
        assert np.abs(seen - picture).mean() < 0.01, figure["title"]  # the picture, unscaled, at that place


def test_class_summary_renders_with_its_histogram(tmp_path):
    documents = {name: document(name, score) for name, score in [("alice", 7.5), ("bob", 2.5), ("carol", 10.0)]}
    summary = {"assignment": "vanishing_gradients", "students": 3, "max_score": 10.0, "mean_score": 6.67,
               "full_marks": 1, "zero": 0, "isolation": "bubblewrap", "wall_seconds": 1.0, "grader_errors": []}
    page = tmp_path / "summary.html"
    tally = ClassTally(["rnn_backward"])
    for name, doc in documents.items():
        tally.add(name, doc)
    write_class_summary(page, {s: v[0] for s, v in tally.students.items()}, tally.test_counts, summary)
    dom, log = render(page, tmp_path)
    assert body_data(dom)["images"] == "1 images, 0 broken"
    assert "Uncaught" not in log
    assert dom.count('/feedback.html"') == 3
