"""Sections of RESULTS.md that one scenario writes between its marker comments."""

from __future__ import annotations

Markers = tuple[str, str]  # ("<!-- name -->", "<!-- /name -->")


def replace_section(text: str, new: str, markers: Markers) -> str:
    """`text` with the marked section replaced by `new`, or `new` appended if none is there."""
    begin, end = markers
    start, stop = text.find(begin), text.find(end)
    if start >= 0 and stop > start:
        return text[:start] + new.rstrip("\n") + text[stop + len(end) :]
    return text.rstrip("\n") + "\n\n" + new


def keep_section(rendered: str, old: str, markers: Markers) -> str:
    """A freshly rendered file with the marked section of `old` (the file on disk) kept."""
    begin, end = markers
    start, stop = old.find(begin), old.find(end)
    if start < 0 or stop < start:
        return rendered
    return replace_section(rendered, old[start : stop + len(end)] + "\n", markers)
