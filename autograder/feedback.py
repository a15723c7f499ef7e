"""The feedback page a student gets: a self-contained HTML file (no network needed) built only from their
results document, so it can hold nothing the results do not (no hidden inputs, expected values or grader code)."""

from __future__ import annotations

from pathlib import Path

import jinja2

from autograder.html_safety import csp_meta

# Records decoding errors and broken images on the page's body, for the headless-browser test (tests/test_pages.py).
PAGE_CHECK_JS = """
/* Self-check of the page (no network, nothing sent anywhere): records decoding errors and broken images on the
   body, so a headless browser test can read them from the DOM. */
window.addEventListener("error", function (e) { document.body.dataset.error = String(e.message || "a resource failed"); }, true);
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (img) { return !img.complete || img.naturalWidth === 0; }).length;
  document.body.dataset.images = images.length + " images, " + broken + " broken";
  /* each image: its width on the page / its own width in pixels / the width of the column it sits in / where
     it is (left/top, for a screenshot to be compared with) */
  document.body.dataset.sizes = images.map(function (img) {
    var box = img.getBoundingClientRect();
    return [box.width, img.naturalWidth, img.parentElement.getBoundingClientRect().width, box.left,
            box.top + window.scrollY].map(Math.round).join("/"); }).join(" ");
});
"""
PAGE_CHECK_SCRIPT = f"<script>{PAGE_CHECK_JS}</script>\n"
# Defence in depth under the templates' escaping: the self-check is the only script that may run.
PAGE_CSP = csp_meta(PAGE_CHECK_JS)

TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
""" + PAGE_CSP + """
<title>Feedback: {{ doc.extra_data.student }}, {{ doc.extra_data.assignment }}</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; width: 100%; } th, td { border-bottom: 1px solid #ddd; padding: .35rem .5rem;
text-align: left; vertical-align: top; } th { background: #f4f4f4; } td.num { text-align: right; white-space: nowrap; }
tr.passed td.status { color: #1a7f37; } tr.failed td.status { color: #c62828; font-weight: 600; }
pre { background: #f7f7f7; padding: .75rem; overflow-x: auto; white-space: pre-wrap; }
.score { font-size: 1.4rem; font-weight: 600; }
figure { margin: 1.5rem 0; } figure img { display: block; width: 100%; height: auto; }
figcaption { margin-bottom: .4rem; }
</style>
""" + PAGE_CHECK_SCRIPT + """</head><body>
<h1>{{ doc.extra_data.assignment }}: feedback for {{ doc.extra_data.student }}</h1>
<p class="score">{{ "%g"|format(doc.score) }} / {{ "%g"|format(doc.max_score) }} points</p>
<pre>{{ doc.output }}</pre>
<h2>Tests</h2>
<table>
<tr><th>test</th><th>status</th><th>points</th><th>message</th></tr>
{% for test in tests %}
<tr class="{{ test.status }}"><td>{{ test.name }}</td><td class="status">{{ test.status }}</td>
<td class="num">{{ "%g"|format(test.score) }} / {{ "%g"|format(test.max_score) }}</td><td>{{ test.output }}</td></tr>
{% endfor %}
</table>
{% if figures %}<h2>Your functions on public inputs</h2>
{% for figure in figures %}<figure><figcaption><strong>{{ figure.title }}.</strong> {{ figure.caption }}</figcaption>
<img alt="{{ figure.title }}" src="data:image/png;base64,{{ figure.png }}"></figure>
{% endfor %}{% endif %}
<p>Files graded: {{ doc.extra_data.files|join(", ") or "none" }}.
Written answers are graded by hand and are not included here.</p>
</body></html>
""")


def render_feedback(document: dict, figures: list[dict] | None = None) -> str:
    tests = sorted(document["tests"], key=lambda test: test["status"] == "passed")  # failing first
    return TEMPLATE.render(doc=document, tests=tests, figures=figures or [])


def write_feedback(path: Path, document: dict, figures: list[dict] | None = None) -> None:
    from autograder.files import write_atomic

    write_atomic(path, render_feedback(document, figures))


SUMMARY_TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
""" + PAGE_CSP + """
<title>Class summary: {{ summary.assignment }}</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; max-width: 64rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; width: 100%; } th, td { border-bottom: 1px solid #ddd; padding: .3rem .5rem;
text-align: left; } th { background: #f4f4f4; } .num { text-align: right; } img { max-width: 100%; }
</style>
""" + PAGE_CHECK_SCRIPT + """</head><body>
<h1>{{ summary.assignment }}: class summary</h1>
<p>{{ summary.students }} submissions; mean {{ summary.mean_score }} / {{ "%g"|format(summary.max_score) }};
{{ summary.full_marks }} with full marks, {{ summary.zero }} with zero. Isolation: {{ summary.isolation }}.
{% if summary.grader_errors %}<strong>Grader errors for {{ summary.grader_errors|join(", ") }}</strong>
(see their grader_errors.txt).{% endif %}</p>
{% if summary.by_hand_rule_broken is defined and summary.by_hand_rule_broken %}<p><strong>By-hand rule broken</strong>
(torch autograd called inside a function that must compute its gradients by hand; those outputs scored 0):
{% for student, functions in summary.by_hand_rule_broken|dictsort %}{{ student }} ({{ functions|join(", ") }}){{ ", "
if not loop.last }}{% endfor %}.</p>{% endif %}
{% if summary.not_graded is defined and summary.not_graded %}<p><strong>Interrupted: {{ summary.not_graded }}
submission(s) not graded yet</strong>; run the same command with --resume to grade them.</p>{% endif %}
{% if histogram %}<img alt="score histogram" src="data:image/png;base64,{{ histogram }}">{% endif %}
{% if summary.written is defined %}<h2>Written answers</h2>
<p>{% if not summary.written.known %}{% if summary.written.answers is defined %}{{ summary.written.answers }} written
answers ({{ "%g"|format(summary.written.points) }} points) are graded by hand (formgrader) and are not in the scores
above; their status is not known here: grade with --gradebook to see it.{% else %}Not known here.{% endif %}
{% else %}{{ summary.written.answers }} written answers ({{ "%g"|format(summary.written.points) }} points), graded by
hand in formgrader: all graded for {{ summary.written.graded }} of {{ summary.students }} students{% if
summary.written.mean is not none %} (mean {{ "%g"|format(summary.written.mean) }} / {{ "%g"|format(summary.written.points)
}}){% endif %}; {{ summary.written.waiting }} waiting.{% endif %}</p>{% endif %}
{% if summary.lateness is defined %}<h2>Lateness</h2>
<p>{{ summary.lateness.on_time }} on time, {{ summary.lateness.late }} late, {{ summary.lateness.no_timestamp }}
without a timestamp (counted as on time); {{ "%g"|format(summary.lateness.points_taken_off) }} points taken off by
the late policy in all.{% if summary.lateness.days_late %} Late: {% for student, days in
summary.lateness.days_late|dictsort %}{{ student }} ({{ days }} day{{ "s" if days > 1 }}){{ ", " if not loop.last
}}{% endfor %}.{% endif %}</p>{% endif %}
{% if summary.functions is defined %}<h2>Graded functions</h2>
<table><tr><th>function</th><th class="num">points</th><th class="num">class mean</th>
<th class="num">students with all its points</th></tr>
{% for row in summary.functions %}<tr><td>{{ row.function }}</td><td class="num">{{ "%g"|format(row.points) }}</td>
<td class="num">{{ "%.2f"|format(row.mean) if row.mean is not none else "" }}</td>
<td class="num">{{ "%.0f"|format(100 * row.pass_rate) if row.pass_rate is not none else "" }}%</td></tr>
{% endfor %}</table>{% endif %}
<h2>Most common failing tests</h2>
<table><tr><th>test</th><th>failed by</th><th>pass rate</th></tr>
{% for row in rows[:10] if row.failed %}<tr><td>{{ row.name }}</td><td class="num">{{ row.failed }}</td>
<td class="num">{{ "%.0f"|format(100 * row.rate) }}%</td></tr>{% endfor %}</table>
<h2>Pass rate of every test</h2>
<table><tr><th>test</th><th>pass rate</th></tr>
{% for row in rows|sort(attribute="name") %}<tr><td>{{ row.name }}</td>
<td class="num">{{ "%.0f"|format(100 * row.rate) }}%</td></tr>{% endfor %}</table>
<h2>Students</h2>
<table><tr><th>student</th><th>score</th><th>feedback</th></tr>
{% for student, score in scores|dictsort %}<tr><td>{{ student }}</td>
<td class="num">{{ "%g"|format(score) }}</td><td><a href="{{ folders[student]|urlencode }}/feedback.html">page</a></td></tr>
{% endfor %}</table>
</body></html>
""")


def histogram_figure(scores: list[float], max_score: float):
    """The class's score histogram as a matplotlib figure (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(9.6, 3.6))
    ax.hist(scores, bins=min(20, max(5, len(scores))), range=(0, max_score), color="tab:blue", edgecolor="white")
    ax.set_xlabel("score")
    ax.set_ylabel("students")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # a count of students: no 0.5 ticks
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _histogram(scores: list[float], max_score: float) -> str:
    import base64
    import io

    import matplotlib.pyplot as plt

    fig = histogram_figure(scores, max_score)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def write_class_summary(path: Path, scores: dict[str, float], test_counts: dict[str, list[int]],
                        summary: dict, folders: dict[str, str] | None = None) -> None:
    """The instructor's page: score histogram, pass rate of every test (test_counts: name -> [passed, failed]),
    the most common failing tests, and every student's score with a link to their page."""
    from autograder.files import write_atomic

    rows = sorted(({"name": name, "failed": failed, "rate": passed / max(1, passed + failed)}
                   for name, (passed, failed) in test_counts.items()), key=lambda row: (-row["failed"], row["name"]))
    histogram = _histogram(list(scores.values()), summary["max_score"]) if scores else ""
    folders = folders or {student: student for student in scores}  # student -> its folder in OUT
    write_atomic(path, SUMMARY_TEMPLATE.render(summary=summary, rows=rows, scores=scores, histogram=histogram,
                                               folders=folders))
