"""Reports as Markdown and self-contained HTML from one list of sections: the renderer that
the comparison report (:mod:`brainmri.reports.comparison`), the leakage study and the
dataset audit share.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from brainmri.files import atomic_write_text


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers rounded, missing values as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def data_uri(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1,h2,h3{line-height:1.2}
table{border-collapse:collapse;margin:1em 0;font-size:0.92em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}
thead th{background:#f0f3f7}
img{max-width:100%;border:1px solid #eee;margin:0.4em 0}
.notice{background:#fff4e5;border-left:4px solid #f0a030;padding:0.6em 1em}
code{background:#f4f4f4;padding:0 3px}
"""


def render_report(
    out_dir: str | Path, sections: Sequence[dict[str, Any]], title: str = "brainmri report", name: str = "report"
) -> tuple[Path, Path]:
    """Write ``<name>.md`` and a self-contained ``<name>.html`` (default ``report``) from a list
    of sections.

    A section is ``{"heading": str, "text": [paragraphs], "table": (header, rows),
    "figures": [(caption, path)], "notice": bool}``; every key but ``heading`` is optional.
    Markdown links figures by relative path; HTML embeds them as base64 data URIs so the
    file can be mailed or opened offline.
    """
    out = Path(out_dir)
    md = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>"]
    for sec in sections:
        level = sec.get("level", 2)
        md += ["#" * level + " " + sec["heading"], ""]
        body.append(f"<h{level}>{html.escape(sec['heading'])}</h{level}>")
        for para in sec.get("text", []):
            md += [("> " if sec.get("notice") else "") + para, ""]
            cls = ' class="notice"' if sec.get("notice") else ""
            body.append(f"<p{cls}>{html.escape(para)}</p>")
        for bullet in sec.get("bullets", []):
            md.append(f"- {bullet}")
        if sec.get("bullets"):
            md.append("")
            body.append("<ul>" + "".join(f"<li>{html.escape(b)}</li>" for b in sec["bullets"]) + "</ul>")
        if sec.get("table"):
            header, rows = sec["table"]
            md += [markdown_table(header, rows), ""]
            body.append(html_table(header, rows))
        for caption, path in sec.get("figures", []):
            path = Path(path)
            try:
                rel = path.resolve().relative_to(out.resolve()).as_posix()
            except ValueError:
                rel = path.resolve().as_posix()
            md += [f"![{caption}]({rel})", ""]
            body.append(
                f'<figure><img alt="{html.escape(caption)}" src="{data_uri(path)}">'
                f"<figcaption>{html.escape(caption)}</figcaption></figure>"
            )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    md_path, html_path = out / f"{name}.md", out / f"{name}.html"
    atomic_write_text(md_path, "\n".join(md).rstrip() + "\n")
    atomic_write_text(html_path, page)
    return md_path, html_path
