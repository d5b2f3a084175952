"""The labelling rubric: a Markdown file shown above every pair (`label serve guidelines=`).

Rendered once, when the server starts, with markdown-it-py's CommonMark renderer with raw
HTML turned off (HTML in the file is shown as text, so the page's rule that no data is
ever parsed as HTML still holds), into the page's `guidelines` section.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from rlhfkit.errors import ConfigError

PLACEHOLDER = b'<section id="guidelines" hidden></section>'
"""Where the rubric goes in static/index.html."""


def render_guidelines(path: str | Path) -> str:
    """The rubric as HTML; a clear ConfigError when the file cannot be read."""
    from markdown_it import MarkdownIt

    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"guidelines={path}: no such file (a Markdown rubric)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"guidelines={path}: cannot read it as UTF-8 text: {exc}") from None
    if not text.strip():
        raise ConfigError(f"guidelines={path} is empty; write the rubric, or leave it out")
    return MarkdownIt("commonmark", {"html": False}).render(text)


def with_guidelines(page: bytes, rendered: str, title: str) -> bytes:
    """The page with the rubric in a section that starts open (a click folds it)."""
    if PLACEHOLDER not in page:
        raise RuntimeError("the labelling page has no place for guidelines")
    section = (
        f'<details id="guidelines" open><summary>Guidelines: {escape(title)}</summary>'
        f"{rendered}</details>"
    )
    return page.replace(PLACEHOLDER, section.encode("utf-8"))
