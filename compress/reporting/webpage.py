"""`compress report --html`: the same report as one self-contained HTML file, its plots embedded.

For people who share results outside GitHub (mail, a wiki upload): one file, no folder of PNGs
to keep beside it. Rendered from the markdown by markdown-it-py, so the two never disagree.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from markdown_it import MarkdownIt

CSS = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 3px 7px; white-space: nowrap; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
td:not(:first-child) { text-align: right; }
code { background: #f3f3f3; padding: 0 3px; font-size: 12px; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
details { margin: 1em 0; } summary { cursor: pointer; }
"""


def markdown_parser() -> MarkdownIt:
    """CommonMark plus GitHub's tables, raw HTML off: whatever a stored string holds is shown as text, never
    run as markup (a data root, a file name or an edited shard row can carry a <script>)."""
    return MarkdownIt("commonmark", {"html": False}).enable("table")


# The one HTML element the report uses, the collapsed Provenance block, is put back by code: raw HTML is off,
# so these are the exact paragraphs markdown-it makes of the report's own <details> lines, nothing a user wrote.
_DETAILS = re.compile(r"<p>&lt;details&gt;\n&lt;summary&gt;([^&<>]*)&lt;/summary&gt;</p>")
_END_DETAILS = "<p>&lt;/details&gt;</p>"


def _details(body: str) -> str:
    return _DETAILS.sub(r"<details>\n<summary>\1</summary>", body).replace(_END_DETAILS, "</details>")


def to_html(markdown_text: str, folder: Path, title: str) -> str:
    """The page: the markdown rendered, every local PNG it links inlined as a data URI."""
    body = _details(markdown_parser().render(markdown_text))

    def embed(match: re.Match[str]) -> str:
        src = html.unescape(match.group(1))
        path = Path(folder) / src
        if "/" in src or not path.is_file():  # only the report's own plots, beside it
            return match.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}"'

    body = re.sub(r'src="([^"]+\.png)"', embed, body)
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head>\n<body>\n{body}</body></html>\n")
