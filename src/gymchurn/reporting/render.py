"""Rendering the report: sections -> report.html (self-contained: figures embedded as data
URIs, every value escaped), report.md + figures/*.png; the output folder replaced by renames."""

from __future__ import annotations

import base64
import html
import io
import re
import shutil
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import jinja2
import markupsafe
import numpy as np

from gymchurn.plots import plt
from gymchurn.reporting.blocks import Figure, Section, Table, Text
from gymchurn.tables import markdown_table

T = TypeVar("T")


def markdown_safe(value) -> str:
    """A value as report.md shows it, with its HTML neutralised: GitHub and MLflow render the
    raw HTML of a Markdown file, so <, > and & are written as entities (a segment named
    "<script>" reads as that text and is never a tag). Markdown's own marks are kept."""
    return html.escape(str(value), quote=False)


def _templates(**options) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("gymchurn.reporting", "templates"),
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined, **options,
    )


# Every value is escaped, whatever the template's name (select_autoescape(["html"]) did not
# match "report.html.j2", so names with markup went into the page raw). What is already safe
# markup (pandas' escaped tables, a sentence's <strong>) is passed as markupsafe.Markup.
HTML_TEMPLATES = _templates(autoescape=True)
MARKDOWN_TEMPLATES = _templates(autoescape=False, finalize=markdown_safe)


def png_bytes(fig: plt.Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def strong_html(text: str) -> markupsafe.Markup:
    """Escape `text`, then turn its **bold** and `code` marks into <strong> and <code> (the only
    markup sentences use, as in Markdown)."""
    escaped = str(markupsafe.escape(text))
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return markupsafe.Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped))


def render(sections: list[Section], sources: Mapping, figures: Mapping[str, bytes],
           template: str = "report") -> tuple[str, str]:
    """(report.html, report.md) of the sections with templates/<template>.html.j2 and .md.j2;
    `figures` maps a figure name to its PNG."""
    html_blocks, md_blocks = [], []
    main = [s for s in sections if not s.appendix]
    for number, section in enumerate(main + [s for s in sections if s.appendix]):
        html, md = [], []
        for block in section.blocks:
            if isinstance(block, Text):
                html.append(("text", strong_html(block.text)))
                md.append(block.text)
            elif isinstance(block, Table):
                html.append(("table", block.caption, markupsafe.Markup(
                    block.frame.to_html(index=False, border=0, escape=True))))
                md.append(f"*{block.caption}*\n\n{markdown_table(block.frame)}")
            elif isinstance(block, Figure):
                data = base64.b64encode(figures[block.name]).decode("ascii")
                html.append(("figure", block.caption, f"data:image/png;base64,{data}"))
                md.append(f"![{block.caption}](figures/{block.name}.png)\n\n*{block.caption}*")
        # Page one unnumbered, then 1, 2, ... for the main part and A, B, ... for the appendix.
        if section.appendix:
            title = f"{chr(ord('A') + number - len(main))}. {section.title}"
        else:
            title = f"{number}. {section.title}" if number else section.title
        html_blocks.append((title, html, section.appendix, section.key))
        md_blocks.append((title, md, section.appendix))
    context = {"sources": sources,
               "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}
    return (HTML_TEMPLATES.get_template(f"{template}.html.j2").render(sections=html_blocks, **context),
            MARKDOWN_TEMPLATES.get_template(f"{template}.md.j2").render(sections=md_blocks, **context))


def write_report(sections: list[Section], sources: Mapping, folder: Path, template: str = "report",
                 marker: tuple[str, str] | None = None) -> None:
    """report.html, report.md, figures/*.png and the marker that lets the next run of the same
    command replace this folder (gymchurn.outputs; `marker`: (file name, text), the report's
    by default) into `folder` (which must exist)."""
    from gymchurn.outputs import REPORT_MARKER, REPORT_MARKER_TEXT

    name, text = marker or (REPORT_MARKER, REPORT_MARKER_TEXT)
    (folder / name).write_text(text, encoding="utf-8")
    figures = {}
    (folder / "figures").mkdir()
    for section in sections:
        for block in section.blocks:
            if isinstance(block, Figure):
                figures[block.name] = png_bytes(block.figure)
                (folder / "figures" / f"{block.name}.png").write_bytes(figures[block.name])
    for section in sections:
        for name, frame in section.files.items():  # e.g. call_list.csv
            frame.to_csv(folder / name, index=False)
    html, md = render(sections, sources, figures, template)
    (folder / "report.html").write_text(html, encoding="utf-8")
    (folder / "report.md").write_text(md, encoding="utf-8")


def publish(target: Path, check: Callable[[Path], Path], write: Callable[[Path], None],
            log: Callable[[Path], T]) -> T:
    """A report folder, all or nothing: `write(staging)` into a new folder beside `target`,
    `check(target)` again (it is replaced next), `log(staging)` (the run recording it, returned),
    then the staging folder put in `target`'s place by renames. A failure anywhere leaves
    `target` as it was and no staging folder behind."""
    from gymchurn.outputs import new_beside

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = new_beside(target, "new", folder=True)  # ordinary permissions (umask)
    try:
        write(staging)
        check(target)  # again, before the run says the report was written
        logged = log(staging)
        replace_folder(staging, target, check)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return logged


def replace_folder(new: Path, target: Path, check=None) -> None:
    """Put `new` where `target` is, by renames: a reader sees the old report or the new one.
    `target` is checked again first (`check`: gymchurn.outputs.check_report_folder unless
    given): only a previous output of the same command (or an empty folder) is removed."""
    from gymchurn.outputs import check_report_folder

    target = (check or check_report_folder)(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{time.time_ns()}")
        target.rename(old)
    try:
        new.rename(target)
    except OSError:
        if old is not None:
            old.rename(target)  # the previous report back where it was
        raise
    if old is not None:
        shutil.rmtree(old)  # checked above: a report's files only, no symbolic links


def headline_metrics(sections: list[Section]) -> dict[str, float]:
    """The sections' scalar numbers, for the MLflow run (nested values stay in the report)."""
    return {f"{s.key}.{k}": float(v) for s in sections for k, v in s.numbers.items()
            if isinstance(v, int | float | np.floating | np.integer) and not isinstance(v, bool)}
