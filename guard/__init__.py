"""guard: perceptual-hash image blocklists for ASGI apps, backed by Redis."""

from __future__ import annotations

from guard.config import Config, ListPolicy, load_config
from guard.errors import (
    ConfigError,
    FormatNotAllowed,
    GuardError,
    ImageError,
    InvalidHash,
    NotAnImage,
    TooManyPixels,
    UndecodableImage,
)
from guard.hashing import (
    HASH_VERSION,
    FrameHash,
    ImageHashes,
    from_hex,
    from_signed,
    hamming,
    hash_bytes,
    hash_file,
    is_low_information,
    permute,
    to_hex,
    to_signed,
)
from guard.images import ImageLimits, sniff_format

__version__ = "0.1.0"

__all__ = [
    "HASH_VERSION",
    "Config",
    "ConfigError",
    "FormatNotAllowed",
    "FrameHash",
    "GuardError",
    "ImageError",
    "ImageHashes",
    "ImageLimits",
    "InvalidHash",
    "ListPolicy",
    "NotAnImage",
    "TooManyPixels",
    "UndecodableImage",
    "from_hex",
    "from_signed",
    "hamming",
    "hash_bytes",
    "hash_file",
    "is_low_information",
    "load_config",
    "permute",
    "sniff_format",
    "to_hex",
    "to_signed",
]
