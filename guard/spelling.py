"""How a 64-bit hash is spelled: 16 hex digits (imagehash's spelling, list files and exports) or a
signed int64 (how Redis keeps it as a small intset member), and the Hamming distance between two.

Pure: plain ``int`` arithmetic, so list files can be read and written without an image library.
"""

from __future__ import annotations

from guard.errors import InvalidHash

HASH_BITS = 64
_MASK = (1 << HASH_BITS) - 1
_SIGN = 1 << (HASH_BITS - 1)


def hamming(a: int, b: int) -> int:
    """Number of differing bits."""
    return (a ^ b).bit_count()


def to_hex(value: int) -> str:
    """16 lowercase hex digits, imagehash's spelling."""
    _check_range(value)
    return f"{value:016x}"


def from_hex(text: str) -> int:
    """Parse 16 hex digits (any case, surrounding spaces ignored) into a hash."""
    digits = text.strip()
    if len(digits) != 16 or any(ch not in "0123456789abcdefABCDEF" for ch in digits):
        raise InvalidHash(f"a hash is 16 hex digits, got {text!r}")
    return int(digits, 16)


def to_signed(value: int) -> int:
    """The hash as a signed int64 (how Redis stores it: small intset members)."""
    _check_range(value)
    return value - (1 << HASH_BITS) if value & _SIGN else value


def from_signed(value: int) -> int:
    """The inverse of :func:`to_signed`."""
    if not -_SIGN <= value < _SIGN:
        raise InvalidHash(f"a signed hash is in [-2**63, 2**63), got {value}")
    return value & _MASK


def _check_range(value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MASK:
        raise InvalidHash(f"a hash is an int in [0, 2**64), got {value!r}")
