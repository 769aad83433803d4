"""The list file format shared by ``guard export``, ``guard import`` and ``guard load FILE``.

One entry a line::

    <aHash: 16 hex digits> <pHash: 16 hex digits, or -> [label, to the end of the line]
    <aHash: 16 hex digits>                             (a plain imagehash line)

Blank lines and lines starting with ``#`` are ignored. Entries without a pHash cannot be
confirmed, so guard matches them on the aHash alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from guard.spelling import from_hex, to_hex


@dataclass(frozen=True)
class ListLine:
    ahash: int
    phash: int | None
    label: str | None


def parse_line(text: str) -> ListLine | None:
    """One line of a list file, or None for a blank or comment line. Raises InvalidHash."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    fields = stripped.split(maxsplit=2)
    ahash = from_hex(fields[0])
    phash = None if len(fields) < 2 or fields[1] == "-" else from_hex(fields[1])
    label = fields[2] if len(fields) > 2 else None
    return ListLine(ahash, phash, label)


def format_line(ahash: int, phash: int | None, label: str | None) -> str:
    """The inverse of :func:`parse_line` (labels are kept on one line)."""
    parts = [to_hex(ahash), "-" if phash is None else to_hex(phash)]
    if label:
        parts.append(" ".join(label.split()))
    return " ".join(parts)
