"""Replace a generated section of a Markdown file (docs/BENCHMARKS.md) between two markers."""
from __future__ import annotations

from pathlib import Path


def update_section(doc: Path, section: str, begin: str, end: str, heading: str = "") -> None:
    """Put ``section`` (which starts with ``begin`` and ends with ``end``) in place of the text
    between those markers in ``doc``; append it, after ``heading`` if given, when they are absent."""
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + (heading + "\n\n" if heading else "") + section + "\n"
    doc.write_text(text)
