"""The shell shared by qtt's static HTML pages (the run report and the benchmark page): one stylesheet,
escaping, PNG figures embedded as data URIs, and an atomic write.

Pages have no scripts, external stylesheets or fonts, so they open from a disk, an e-mail attachment or a CI
artifact store without a server or the internet.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Any

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
th { background: #eee; } td.text { text-align: left; }
tr.best { font-weight: bold; background: #f3f7ff; }
#leaderboard { width: 100%; } td.strategy { font-size: 0.85em; max-width: 16em; }
figure { margin: 1em 0; } figcaption { font-size: 0.85em; color: #555; max-width: 900px; }
img { max-width: 100%; border: 1px solid #ddd; }
.summary td { text-align: left; }
"""


def escape(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def head(title: str) -> str:
    """Everything up to and including the opening ``<body>``."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n<title>{escape(title)}</title>\n'
            f"<style>{CSS}</style></head><body>")


def figure(name: str, png: bytes, caption: str) -> str:
    """A ``<figure>`` with the PNG embedded; its alt text is the caption's first sentence."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (f'<figure id="{name}"><img alt="{escape(caption.split(".")[0])}" src="{uri}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def write_page(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file, so a reader never sees half a page."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path
