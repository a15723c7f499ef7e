"""What keeps a student's text inert in a browser: on the kit's own pages (feedback, class summary, report, written
answers) and in the notebooks the kit stages for nbgrader's formgrader, which renders them on the Jupyter server's
origin, where a script could use the TA's session (e.g. open a terminal through the server's API).

- `CSP_*` / `csp_meta`: a Content-Security-Policy for the kit's pages, as defence in depth under their escaping: no
  script runs but the page's own self-check (allowed by its hash), nothing is fetched (images are data: URLs).
- `inert_markdown`: a markdown cell's source replaced by its rendering (nbconvert's own markdown2html, the filter
  formgrader uses) put through an allowlist sanitizer, as one HTML block that markdown passes through unchanged.
  Formgrader's template renders markdown cells without nbconvert's sanitizer even with
  `HTMLExporter.sanitize_html = True`, so the staged notebook itself must hold nothing active.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re

# No script but the ones whose hashes are listed; images only as data: URLs (the kit's pictures are embedded);
# inline <style> only; no fetch, frame, form, plugin or <base>.
CSP_BASE = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
            "object-src 'none'; frame-src 'none'")

# What a rendered written answer keeps: text structure, links out, embedded pictures (a cell's attachments).
ALLOWED_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt", "em", "h1", "h2", "h3",
    "h4", "h5", "h6", "hr", "i", "img", "kbd", "li", "ol", "p", "pre", "s", "samp", "small", "span", "strong", "sub",
    "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul"})
ALLOWED_ATTRIBUTES = frozenset({"class", "id", "title", "alt", "href", "src", "colspan", "rowspan", "align"})
HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
LINK_SCHEMES = ("http:", "https:", "mailto:")
IMAGE_DATA = re.compile(r"data:image/(png|jpeg|gif|webp);base64,", re.I)


def csp_meta(*scripts: str) -> str:
    """The policy as a <meta> tag (first in <head>, before any script), allowing exactly the inline `scripts`
    given (the text between <script> and </script>) by their SHA-256."""
    policy = CSP_BASE
    if scripts:
        hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
                          for s in scripts)
        policy += f"; script-src {hashes}"
    return f'<meta http-equiv="Content-Security-Policy" content="{policy}">'


def with_csp(document: str, meta: str | None = None) -> str:
    """An HTML document (nbconvert's) with the policy's <meta> tag first in its <head>."""
    meta = meta or csp_meta()
    head = re.search(r"<head[^>]*>", document, re.I)
    if head is None:
        raise ValueError("not an HTML document with a <head>")
    return document[:head.end()] + "\n" + meta + document[head.end():]


def _uri(value: str) -> str:
    """A URL as a browser resolves its scheme: entities decoded, whitespace and control characters gone, lower case."""
    return re.sub(r"[\x00-\x20\x7f-\xa0\s]+", "", html.unescape(value)).lower()


def _allowed_attribute(tag: str, name: str, value: str) -> bool:
    if name not in ALLOWED_ATTRIBUTES:
        return False
    if name == "href":
        return tag == "a" and (_uri(value).startswith(LINK_SCHEMES) or _uri(value).startswith("#"))
    if name == "src":  # a cell's attachments, embedded; no fetch (a remote picture tells who looked, and when)
        return tag == "img" and IMAGE_DATA.match(_uri(value)) is not None
    if name == "id":  # headings' anchors only: an id elsewhere could stand in for one of formgrader's own elements
        return tag in HEADINGS
    return True


def sanitize_html(fragment: str) -> str:
    """HTML with only the allowlisted tags and attributes; everything else is shown as text (escaped), comments
    dropped. bleach (nbconvert's own sanitizer) parses it as a browser would."""
    import bleach

    return bleach.clean(fragment, tags=ALLOWED_TAGS, attributes=_allowed_attribute,
                        protocols={"http", "https", "mailto", "data"}, strip=False, strip_comments=True)


_EXPORTER = None


def render_markdown(source: str, attachments: dict | None = None) -> str:
    """A markdown cell as nbconvert's HTMLExporter renders it (math left as TeX for MathJax, attachments
    embedded), unsanitized."""
    global _EXPORTER
    if _EXPORTER is None:
        from nbconvert import HTMLExporter

        _EXPORTER = HTMLExporter()
    return _EXPORTER.markdown2html({"cell": {"attachments": attachments or {}}, "resources": {}}, source)


def inert_markdown(source: str, attachments: dict | None = None) -> str:
    """Markdown whose rendering is the sanitized rendering of `source`: one line starting with <div>, which
    markdown (CommonMark's HTML block, mistune's too) passes through as it is. Its newlines are written as
    character references, so no blank line can end the block (inside <pre> they are newlines still)."""
    rendered = sanitize_html(render_markdown(source, attachments))
    return '<div class="inert-markdown">' + rendered.replace("\r", "").replace("\n", "&#10;") + "</div>"
