"""guard: perceptual-hash image blocklists for ASGI apps, backed by Redis."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from guard.config import Config, HttpSettings, ListPolicy, Route, StatusCodes, load_config
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
    TooManyFrames,
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
from guard.images import sniff_format
from guard.store import Store
from guard.types import AddResult, Decision, Entry, ImageLimits, ListInfo, Match
from guard.verdict import Verdict, decide

# The one version string: pyproject.toml reads it ([tool.setuptools.dynamic]) for the package
# metadata, and `guard --version` prints it. Change it here only (and in CHANGELOG.md).
__version__ = "0.1.0"

if TYPE_CHECKING:
    from guard.metrics import metrics_app
    from guard.middleware import GuardMiddleware
    from guard.review import review_app


def __getattr__(name: str) -> Any:
    # The middleware (anyio, python-multipart) loads only when asked for, so the CLI stays light.
    if name == "GuardMiddleware":
        from guard import middleware

        return getattr(middleware, name)
    if name == "metrics_app":
        from guard import metrics

        return metrics.metrics_app
    if name == "review_app":
        # The review page (the `review` extra: Jinja2) loads only when asked for.
        from guard.review import app

        return app.review_app
    raise AttributeError(f"module 'guard' has no attribute {name!r}")


__all__ = [
    "HASH_VERSION",
    "AddResult",
    "Config",
    "ConfigError",
    "Decision",
    "Entry",
    "FormatNotAllowed",
    "FrameHash",
    "GuardError",
    "GuardMiddleware",
    "HttpSettings",
    "ImageError",
    "ImageHashes",
    "ImageLimits",
    "InvalidHash",
    "ListInfo",
    "ListPolicy",
    "LowInformationEntry",
    "Match",
    "NotAnImage",
    "Route",
    "StatusCodes",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "TooManyFrames",
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
    "metrics_app",
    "permute",
    "review_app",
    "sniff_format",
    "to_hex",
    "to_signed",
]
