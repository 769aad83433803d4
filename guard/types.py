"""guard's plain data types, in one place that imports nothing of I/O.

The pure layers (config, verdict, mirror, uploads) and the I/O layers (store, middleware, CLI)
share these; importing them costs neither Pillow, nor redis, nor an event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Literal

from guard.errors import SettingError

# --- ASGI ---------------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# Loose on purpose: Litestar, Quart and Django type their ASGI callables each their own way.
ASGIApp = Callable[..., Awaitable[None]]


# --- hashes -------------------------------------------------------------------------------------

Transform = Literal[
    "identity",
    "flip_left_right",
    "flip_top_bottom",
    "rotate_180",
    "transpose",
    "rotate_90",
    "rotate_270",
    "transverse",
]


# --- what guard agrees to decode ----------------------------------------------------------------

#: Formats guard hashes unless told otherwise. EPS and friends run interpreters: never allowed.
DEFAULT_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP"})
#: Formats guard can open at all (what an allowlist may name).
SUPPORTED_FORMATS: frozenset[str] = DEFAULT_FORMATS | {"TIFF"}


@dataclass(frozen=True)
class ImageLimits:
    """What guard agrees to decode. Every value appears in the error that enforces it."""

    max_image_pixels: int = 50_000_000
    #: Frames of one animated image. Every frame is hashed (about 2.5 ms a 480x270 GIF frame);
    #: an animation with more is refused whole (TooManyFrames, 413), never sampled. 300 holds a
    #: 12 s clip at 25 fps; each distinct frame is also a lookup (8 with dihedral matching).
    max_frames: int = 300
    #: Pixels decoded for one animated file (frames x width x height, every frame); more is
    #: refused whole (TooManyFrames, 413) before any frame is decoded. 100 million holds 300
    #: frames of 640x360 or a 48-frame 1080p loop, and bounds one file to a few CPU seconds.
    max_animation_pixels: int = 100_000_000
    allowed_formats: frozenset[str] = field(default=DEFAULT_FORMATS)
    #: Bytes of one image file read by ``guard load``/``hash``/``check`` (uploads are capped by
    #: http.max_body_bytes): a 3 GB file in a blocklist folder is refused before it is read.
    max_file_bytes: int = 100_000_000

    def __post_init__(self) -> None:
        # The key is an attribute of the error: the config loader names limits.<key> from it.
        for name in ("max_image_pixels", "max_frames", "max_animation_pixels", "max_file_bytes"):
            if type(getattr(self, name)) is not int:  # a bool is an int to Python, not here
                raise SettingError.must_be(name, "an integer", getattr(self, name))
        if self.max_file_bytes < 1:
            raise SettingError.must_be("max_file_bytes", "at least 1", self.max_file_bytes)
        if self.max_image_pixels < 64:
            raise SettingError.must_be("max_image_pixels", "at least 64", self.max_image_pixels)
        if self.max_frames < 1:
            raise SettingError.must_be("max_frames", "at least 1", self.max_frames)
        if self.max_animation_pixels < self.max_image_pixels:
            raise SettingError.must_be(
                "max_animation_pixels",
                f"at least max_image_pixels ({self.max_image_pixels})",
                self.max_animation_pixels,
            )
        unknown = set(self.allowed_formats) - SUPPORTED_FORMATS
        if unknown or not self.allowed_formats:
            raise SettingError.must_be(
                "allowed_formats",
                f"a non-empty subset of {sorted(SUPPORTED_FORMATS)}",
                self.allowed_formats,
                shown=str(sorted(self.allowed_formats)),
            )


DEFAULT_LIMITS = ImageLimits()


# --- list entries and lookups -------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One listed image: its hashes and where it came from."""

    ahash: int
    phash: int | None  # None: imported without a confirmation hash (matched on aHash alone)
    source: str = ""
    label: str | None = None
    added_at: float | None = None  # seconds since the epoch; set by the store when None


@dataclass(frozen=True)
class Match:
    """A stored entry whose aHash is within the lookup radius of (a variant of) the query."""

    list: str
    entry: Entry
    distance: int  # aHash bits between the entry and the matching query variant
    phash_distance: int | None  # None when the entry has no pHash
    confirmed: bool  # phash_distance <= the confirmation radius (False without a pHash)
    transform: Transform  # which dihedral variant of the query matched ("identity": as uploaded)
    frame: int  # which frame of the query matched


@dataclass(frozen=True)
class AddResult:
    added: int
    present: int


@dataclass(frozen=True)
class ListInfo:
    name: str
    entries: int
    bands: int
    hash_version: str
    created: float
    version: int
    #: Entries kept but not enforced (``guard disable``); ``entries`` counts the enforced ones.
    disabled: int = 0
    #: Written by an older guard: readable, not writable until ``guard upgrade`` (docs/cli.md).
    needs_upgrade: bool = False


# --- what the app sees ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What guard concluded about a request it let through: ``scope["state"]["guard"]``.

    ``action`` is "allow", "flag" (a confirmed match within a flag radius: the app decides),
    "unchecked" (a fail-open list's store was unavailable), or "shadow-reject" / "shadow-flag"
    (a list in shadow mode, or outside its ``enforce_ratio``, would have rejected or flagged the
    upload: guard only logs and counts it, the app may ignore it).
    """

    action: Literal["allow", "flag", "unchecked", "shadow-reject", "shadow-flag"]
    images: int = 0
    list: str | None = None
    distance: int | None = None
    source: str | None = None
    unchecked_lists: tuple[str, ...] = ()
    #: The request's id: its ``X-Request-ID`` if it sent a usable one, else one guard made. The
    #: decision stream and the logs carry it too. Left out of comparisons (it differs per request).
    request_id: str = field(default="", compare=False)


#: What a recorded decision did: a match's effect, an allow-list entry that suppressed a match
#: ("allowed"), or fail-open lists passed unchecked.
RecordedAction = Literal["reject", "flag", "shadow-reject", "shadow-flag", "allowed", "unchecked"]
#: What a moderator did on the review page (guard.review), recorded in the same stream.
ReviewAction = Literal["review-add", "review-allow", "review-remove", "review-mode"]


@dataclass(frozen=True)
class DecisionRecord:
    """One decision worth keeping: what the logs, the metrics and the decision stream carry.

    Recorded for every reject, flag, shadow-reject and shadow-flag, every match an allow-list
    entry suppressed, and every request passed with fail-open lists unchecked. It holds no image
    bytes and no hash of the upload: a record may be read by more people, and kept longer, than
    the uploads themselves, and an upload's hash is a fingerprint of a user's picture that anyone
    could match against other images. The matched entry is named by its ``source`` and ``label``.
    """

    action: RecordedAction
    request_id: str
    #: The route's configured path (not the request's: no user text in the key of a metric).
    route: str
    method: str
    #: Seconds since the epoch.
    time: float
    images: int = 0
    #: "host:port" of the client as the server saw it, or None.
    client: str | None = None
    list: str | None = None
    distance: int | None = None
    phash_distance: int | None = None
    transform: str | None = None
    #: The matched list entry's source and label.
    source: str | None = None
    label: str | None = None
    #: Fail-open lists that could not be checked.
    unchecked_lists: tuple[str, ...] = ()
    #: For "allowed": the source of the allow-list entry that suppressed the match.
    allowed_by: str | None = None
