"""The HTML pieces report.html is built from: sections, tables, embedded images, escaping."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from autotransfer.io.images import open_limited, to_rgb


def section(key: str, title: str, content: str) -> str:
    return f"<section id='{key}'><h2>{escape(title)}</h2>{content}</section>"


def png(path: Path) -> str:
    if not path.exists():
        return missing(path.name)
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img class='plot' alt='{escape(path.name)}' src='data:image/png;base64,{data}'>"


def thumbnail(path: Path, max_pixels: int) -> str:
    try:
        with open_limited(path, max_pixels) as image:
            image.load()
            rgb = to_rgb(image)
            rgb.thumbnail((144, 144))
            buffer = io.BytesIO()
            rgb.save(buffer, "PNG")
    except Exception:  # a file gone since evaluate: an empty tile, not a broken report
        return ""
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if str(c).startswith('<span') else escape(str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def status(ok: bool) -> str:
    return "<span class='ok'>&#10003;</span>" if ok else "<span class='bad'>&#10007;</span>"


def missing(name: str) -> str:
    return f"<p class='missing'>{escape(name)} not found: its stage has not run</p>"


def scalar(value: Any) -> bool:
    return value is None or isinstance(value, int | float | str | bool)


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def escape(text: str) -> str:
    return html.escape(text, quote=True)
