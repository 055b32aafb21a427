"""Names with markup (a segment, a model, a caption) are shown as text in report.html and
report.md, never run as markup: rendered through the real render path."""

from __future__ import annotations

from html.parser import HTMLParser

import pandas as pd

from gymchurn.reporting.blocks import Section
from gymchurn.reporting.render import render

SEGMENT = "<script>alert(1)</script>"
MODEL = '"><img src=x onerror=alert(2)>'


class Tags(HTMLParser):
    """Every start tag and its attributes, as a browser would see them."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def hostile_report() -> tuple[str, str]:
    section = Section("portraits", f"Segment {SEGMENT}")
    section.say(f"Segment **{SEGMENT}** churns most; the model {MODEL} flags it.")
    section.table(f"Segments of {MODEL}", pd.DataFrame({
        "segment_name": [SEGMENT, MODEL], f"churn {SEGMENT}": ["40.0 %", "10.0 %"]}))
    sources = {"n_customers": 2, "data_digest": "0123456789abcdef", "classifier": MODEL,
               "segmentation": f"gym-churn-segmentation v1 {SEGMENT}"}
    return render([section], sources, figures={})


def test_html_shows_hostile_names_as_text_only():
    html, _ = hostile_report()
    parser = Tags()
    parser.feed(html)
    tags = {tag for tag, _ in parser.tags}
    assert "script" not in tags and "img" not in tags, tags
    assert not any(name.startswith("on") for _, attrs in parser.tags for name in attrs)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "<strong>&lt;script&gt;" in html  # the sentence's own bold mark is kept


def test_markdown_neutralises_html_in_names():
    _, md = hostile_report()
    body = md.split("\n", 1)[1]  # after the generated-by comment, the template's own HTML
    assert "<script" not in body and "<img" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "**&lt;script&gt;alert(1)&lt;/script&gt;** churns most" in body  # Markdown kept
    assert "| segment_name |" in body  # the table is still a Markdown table
