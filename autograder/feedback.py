"""The feedback page a student gets: a self-contained HTML file (no network needed) built only from their
results document, so it can hold nothing the results do not (no hidden inputs, expected values or grader code)."""

from __future__ import annotations

from pathlib import Path

import jinja2

TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Feedback: {{ doc.extra_data.student }}, {{ doc.extra_data.assignment }}</title>
<style>
body { font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; width: 100%; } th, td { border-bottom: 1px solid #ddd; padding: .35rem .5rem;
text-align: left; vertical-align: top; } th { background: #f4f4f4; } td.num { text-align: right; white-space: nowrap; }
tr.passed td.status { color: #1a7f37; } tr.failed td.status { color: #c62828; font-weight: 600; }
pre { background: #f7f7f7; padding: .75rem; overflow-x: auto; white-space: pre-wrap; }
.score { font-size: 1.4rem; font-weight: 600; }
</style></head><body>
<h1>{{ doc.extra_data.assignment }}: feedback for {{ doc.extra_data.student }}</h1>
<p class="score">{{ "%g"|format(doc.score) }} / {{ "%g"|format(doc.max_score) }} points</p>
<pre>{{ doc.output }}</pre>
<h2>Tests</h2>
<table>
<tr><th>test</th><th>status</th><th>points</th><th>message</th></tr>
{% for test in doc.tests %}
<tr class="{{ test.status }}"><td>{{ test.name }}</td><td class="status">{{ test.status }}</td>
<td class="num">{{ "%g"|format(test.score) }} / {{ "%g"|format(test.max_score) }}</td><td>{{ test.output }}</td></tr>
{% endfor %}
</table>
<p>Files graded: {{ doc.extra_data.files|join(", ") or "none" }}.
Written answers are graded by hand and are not included here.</p>
</body></html>
""")


def render_feedback(document: dict) -> str:
    return TEMPLATE.render(doc=document)


def write_feedback(path: Path, document: dict) -> None:
    from autograder.grade import write_atomic

    write_atomic(path, render_feedback(document))
