"""HTML building blocks of the experiment report: escaping, tables, embedded images, the page shell.

Why hand-written HTML instead of a template engine: the page must reference nothing outside itself (it
is opened offline, on a hospital PC, years later), so every asset is inlined here and every string that
came from a user (class names, paths, parameter values) goes through :func:`esc` — one place to audit.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Sequence
from typing import Any

#: The PNG file signature: a truncated or foreign file is reported in the page, not embedded.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

CSS = """
:root { --ink: #1d2530; --muted: #5b6675; --line: #d6dbe1; --band: #f3f5f8; --accent: #1f5f99;
        --warn-bg: #fff4d6; --warn-line: #e0b23a; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: var(--ink); background: #fff; }
header { background: var(--accent); color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 4px; font-size: 24px; }
header p { margin: 0; opacity: .9; }
nav { padding: 8px 32px; border-bottom: 1px solid var(--line); background: var(--band); }
nav a { margin-right: 16px; color: var(--accent); text-decoration: none; font-weight: 600; }
main { padding: 8px 32px 48px; max-width: 1280px; }
h2 { border-bottom: 2px solid var(--accent); padding-bottom: 4px; margin-top: 32px; }
h3 { margin: 24px 0 8px; } h4 { margin: 16px 0 6px; color: var(--muted); } h5 { margin: 12px 0 4px; }
.scroll { max-width: 100%; overflow-x: auto; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13.5px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: var(--band); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafbfc; }
.grid { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 8px 0 16px; border: 1px solid var(--line); padding: 8px; background: #fff; max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
.warn { background: var(--warn-bg); border-left: 4px solid var(--warn-line); padding: 6px 10px; margin: 8px 0; }
.bad { color: var(--bad); font-weight: 600; }
.ok { color: #1b7a3a; font-weight: 600; }
.muted { color: var(--muted); }
.ci { color: var(--muted); font-size: 12px; }
details { margin: 8px 0; } summary { cursor: pointer; font-weight: 600; color: var(--accent); }
pre { background: var(--band); padding: 8px; overflow-x: auto; font-size: 12.5px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 4px 16px 12px; background: #fcfdfe; }
"""


def esc(value: Any) -> str:
    """Any value as HTML text (quotes too, so the result is also safe inside an attribute)."""
    return html.escape(str(value), quote=True)


def anchor(text: str) -> str:
    """An id from any text (a test-set name): only [A-Za-z0-9_-], so it needs no escaping."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "section"


def png_data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def is_png(data: bytes) -> bool:
    return data.startswith(PNG_SIGNATURE)


def figure(data: bytes, caption: str, alt: str) -> str:
    """An embedded PNG with its caption; a file that is not a PNG becomes a visible warning."""
    if not is_png(data):
        return warning(f"{caption}: the file is empty or not a PNG image; re-run the analyze stage")
    return (
        f'<figure><img src="{png_data_uri(data)}" alt="{esc(alt)}" loading="lazy">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def warning(text: str) -> str:
    return f'<div class="warn">{esc(text)}</div>'


def cell(value: Any) -> str:
    """A table cell: numbers right-aligned, ``None`` as 'n/a' (never 'nan' or 'None')."""
    if value is None:
        return '<td class="muted">n/a</td>'
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, (int, float)):
        return f'<td class="num">{esc(number(value))}</td>'
    return f"<td>{esc(value)}</td>"


def raw_cell(markup: str, numeric: bool = False) -> str:
    """A cell whose content is already HTML (built from escaped parts by the caller)."""
    return f'<td class="num">{markup}</td>' if numeric else f"<td>{markup}</td>"


def number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if value != value:  # NaN from a hand-edited file: shown as undefined
        return "n/a"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], raw: bool = False) -> str:
    """A table of plain values (escaped here); with ``raw`` the cells are finished ``<td>`` markup."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(r if raw else cell(r) for r in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def key_values(rows: Iterable[tuple[str, Any]]) -> str:
    """A two-column table (name, value) without a header row."""
    body = "".join(f"<tr><th>{esc(k)}</th>{cell(v)}</tr>" for k, v in rows)
    return f"<table><tbody>{body}</tbody></table>"


def page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: str) -> str:
    """The whole document: inline CSS, no script, no external reference."""
    links = "".join(f'<a href="#{anchor(target)}">{esc(text)}</a>' for target, text in nav)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header>"
        f"<nav>{links}</nav><main>{body}</main></body></html>\n"
    )
