"""guard.listfile: the list file format (one entry a line), parsed and written.

Pure: no Redis, no images. The round trip runs over many random entries and labels, including
every kind of whitespace a label may hold (a label is always written on one line).
"""

from __future__ import annotations

import random

import pytest

from guard.errors import InvalidHash
from guard.listfile import ListLine, format_line, parse_line

A = 0x0123456789ABCDEF
P = 0xFEDCBA9876543210


@pytest.mark.parametrize("text", ["", "\n", "   \t  \r\n", "# a comment", "   # indented", "#"])
def test_blank_and_comment_lines_are_none(text: str) -> None:
    assert parse_line(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0123456789abcdef", ListLine(A, None, None)),  # a plain imagehash line
        ("0123456789ABCDEF\n", ListLine(A, None, None)),  # any case, line ending dropped
        ("  0123456789abcdef  ", ListLine(A, None, None)),
        ("0123456789abcdef -", ListLine(A, None, None)),
        ("0123456789abcdef - cat.jpg", ListLine(A, None, "cat.jpg")),
        ("0123456789abcdef fedcba9876543210", ListLine(A, P, None)),
        ("0123456789abcdef fedcba9876543210 cat.jpg", ListLine(A, P, "cat.jpg")),
        # The label is the rest of the line, its inner spaces kept, its ends stripped.
        ("0123456789abcdef\tfedcba9876543210  a  b\tc  \r\n", ListLine(A, P, "a  b\tc")),
        ("0123456789abcdef - # not a comment", ListLine(A, None, "# not a comment")),
        ("0000000000000000 ffffffffffffffff", ListLine(0, 2**64 - 1, None)),
    ],
)
def test_parse_line(text: str, expected: ListLine) -> None:
    assert parse_line(text) == expected


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("0123456789abcde", "0123456789abcde"),  # 15 digits
        ("0123456789abcdef0", "0123456789abcdef0"),  # 17 digits
        ("0x23456789abcdef", "0x23456789abcdef"),  # a prefix is no digit
        ("0123456789abcdeg", "0123456789abcdeg"),
        ("0123_56789abcdef", "0123_56789abcdef"),  # int(..., 16) would take the underscore
        ("\uff10123456789abcdef", "\uff10123456789abcdef"),  # nor a full-width digit
        ("-123456789abcdef", "-123456789abcdef"),
        ("0123456789abcdef,fedcba9876543210", "0123456789abcdef,fedcba9876543210"),
        ("0123456789abcdef fedcba987654321", "fedcba987654321"),  # the pHash is checked too
        ("0123456789abcdef none label", "none"),
        ("0123456789abcdef -- label", "--"),
    ],
)
def test_malformed_lines_raise_invalid_hash_naming_the_field(text: str, bad: str) -> None:
    with pytest.raises(InvalidHash) as raised:
        parse_line(text)
    assert str(raised.value) == f"a hash is 16 hex digits, got {bad!r}"


def test_format_line() -> None:
    assert format_line(A, P, "cat.jpg") == "0123456789abcdef fedcba9876543210 cat.jpg"
    assert format_line(A, None, None) == "0123456789abcdef -"
    assert format_line(1, 2, "") == "0000000000000001 0000000000000002"  # no label
    # Labels are written on one line, any run of whitespace one space.
    assert format_line(A, None, " a\nb\r\nc\t\td \u2028e\x85f ") == "0123456789abcdef - a b c d e f"


@pytest.mark.parametrize("value", [-1, 2**64, True, 1.0])
def test_format_line_refuses_what_is_no_hash(value: object) -> None:
    with pytest.raises(InvalidHash, match="a hash is an int in"):
        format_line(value, None, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidHash, match="a hash is an int in"):
        format_line(A, value, None)  # type: ignore[arg-type]


# Characters a label may hold: words, "#" and "-" (which mean something as whole fields), and
# every whitespace str.split() and str.splitlines() know of.
_LABEL_CHARS = list("ab#-.é猫") + [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
_LABEL_CHARS += ["\x1f", "\x85", "\xa0", "\u2028", "\u2029", "\u3000"]


def test_format_then_parse_round_trips_many_random_entries() -> None:
    rng = random.Random(17)
    labelled = without_phash = 0
    for _ in range(5000):
        ahash = rng.getrandbits(64) if rng.random() < 0.9 else rng.choice([0, 2**64 - 1])
        phash = None if rng.random() < 0.3 else rng.getrandbits(64)
        label = (
            None
            if rng.random() < 0.2
            else "".join(rng.choice(_LABEL_CHARS) for _ in range(rng.randint(0, 12)))
        )
        line = format_line(ahash, phash, label)
        assert len(line.splitlines()) == 1, repr(line)  # one entry, one line, whatever the label
        # What comes back: the label with its whitespace runs made one space, none if empty.
        kept = " ".join(label.split()) if label else ""
        assert parse_line(line) == ListLine(ahash, phash, kept or None), repr(line)
        assert parse_line(line + "\n") == parse_line(line)
        labelled += bool(kept)
        without_phash += phash is None
    assert labelled > 2500 and without_phash > 1000  # both kinds came up often
