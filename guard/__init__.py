"""guard: perceptual-hash image blocklists for ASGI apps, backed by Redis."""

from __future__ import annotations

from guard.config import Config, ListPolicy, load_config
from guard.errors import (
    ConfigError,
    FormatNotAllowed,
    GuardError,
    ImageError,
    InvalidHash,
    LowInformationEntry,
    NotAnImage,
    StoreError,
    StoreUnavailable,
    TooManyPixels,
    UndecodableImage,
    UnknownList,
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
from guard.store import AddResult, Entry, ListInfo, Match, Store
from guard.verdict import Verdict, decide

__version__ = "0.1.0"

__all__ = [
    "HASH_VERSION",
    "AddResult",
    "Config",
    "ConfigError",
    "Entry",
    "FormatNotAllowed",
    "FrameHash",
    "GuardError",
    "ImageError",
    "ImageHashes",
    "ImageLimits",
    "InvalidHash",
    "ListInfo",
    "ListPolicy",
    "LowInformationEntry",
    "Match",
    "NotAnImage",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TooManyPixels",
    "UndecodableImage",
    "UnknownList",
    "Verdict",
    "decide",
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
