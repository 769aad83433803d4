"""The exception tree.

Every failure guard reports is a :class:`GuardError`. Its ``str()`` is the public message: short,
safe to show a user or a client, and naming the limit or value involved. Pillow's own exceptions
never escape; they are kept as ``__cause__`` for logs. HTTP statuses and exit codes are mapped
elsewhere (verdicts and the CLI), not here.
"""

from __future__ import annotations

import json
import re


class GuardError(Exception):
    """Base class of every error guard raises on purpose."""


class ImageError(GuardError):
    """An input could not be turned into hashes."""


class NotAnImage(ImageError):
    """The bytes are not in any image format guard recognises."""


class FormatNotAllowed(ImageError):
    """The bytes are a recognised image format that the allowlist excludes."""

    def __init__(self, image_format: str, allowed: frozenset[str]) -> None:
        self.image_format = image_format
        self.allowed = allowed
        super().__init__(
            f"image format {image_format} is not allowed (allowed: {', '.join(sorted(allowed))})"
        )


class TooManyPixels(ImageError):
    """Width x height is over the configured cap; refused before decoding."""

    def __init__(self, pixels: int, max_pixels: int, size: tuple[int, int] | None = None) -> None:
        self.pixels = pixels
        self.max_pixels = max_pixels
        self.size = size
        dimensions = f" ({size[0]}x{size[1]})" if size else ""
        super().__init__(
            f"image has {pixels} pixels{dimensions}, over the limit max_image_pixels={max_pixels}"
        )


class TooManyFrames(ImageError):
    """An animation has more frames, or more pixels over all its frames, than guard decodes.

    Refused whole: checking only some frames would let a listed picture through on the others.
    ``limit`` names the setting (``max_frames`` or ``max_animation_pixels``), ``maximum`` its value.
    """

    def __init__(self, message: str, *, limit: str, maximum: int) -> None:
        self.limit = limit
        self.maximum = maximum
        super().__init__(f"{message}, over the limit {limit}={maximum}")


class UndecodableImage(ImageError):
    """The header looked like an image but the pixel data could not be decoded."""


class FileTooLarge(ImageError):
    """An image file is over ``max_file_bytes``; refused before it is read."""


class InvalidHash(GuardError, ValueError):
    """A hash string or integer is malformed or out of range."""


def show_value(value: object) -> str:
    """A value as a YAML author writes it (true, null, "text"), any URL password hidden: how
    setting errors quote what they got, so a config file's author recognises it."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return re.sub(r"[^/\"]*@", "***@", text) if isinstance(value, str) else text


class SettingError(GuardError, ValueError):
    """A settings dataclass refused a value: raised by ``__post_init__``, from Python or YAML.

    Structured so that nobody parses the message: ``key`` is the field's name (the config loader
    puts the dotted path in front of it), ``rule`` what the field accepts, ``value`` what it got,
    ``reason`` the message after the key. ``str()`` is ``"<key> <reason>"``.
    """

    def __init__(self, key: str, reason: str, *, rule: str, value: object) -> None:
        self.key = key
        self.reason = reason
        self.rule = rule
        self.value = value
        super().__init__(f"{key} {reason}")

    @classmethod
    def must_be(
        cls, key: str, rule: str, value: object, *, shown: str | None = None, why: str = ""
    ) -> SettingError:
        """The usual error: ``"<key> must be <rule>, got <value>"``, then ``": <why>"`` if given.
        ``shown`` replaces :func:`show_value`'s rendering of ``value``."""
        got = show_value(value) if shown is None else shown
        reason = f"must be {rule}, got {got}" + (f": {why}" if why else "")
        return cls(key, reason, rule=rule, value=value)


class ConfigError(GuardError):
    """A setting is invalid; raised at startup, naming the file and the dotted key to fix."""

    def __init__(self, reason: str, *, key: str | None = None, source: str | None = None) -> None:
        self.reason = reason
        self.key = key
        self.source = source
        super().__init__("".join(f"{part}: " for part in (source, key) if part) + reason)


class StoreError(GuardError):
    """Redis answered, but not as guard needs (a refused command, a list from another hash
    version)."""


class StoreUnavailable(StoreError):
    """Redis could not be reached in time: connection refused, timed out, or not installed."""


class UnknownList(StoreError):
    """The named list does not exist."""


class LowInformationEntry(GuardError, ValueError):
    """A flat or near-flat image's hash was offered as a list entry; it would match any flat
    image."""


class RequestError(GuardError):
    """An upload request guard will not pass on (its status is chosen in guard.verdict)."""


class BodyTooLarge(RequestError):
    """The body, or the number of parts or images in it, is over a limit (named in the message)."""


class BodyTimeout(RequestError):
    """The body did not arrive within the deadline."""


class MalformedBody(RequestError):
    """The multipart framing is broken, or uses a feature guard refuses
    (Content-Transfer-Encoding)."""


class UnsupportedEncoding(RequestError):
    """A Content-Encoding guard cannot look through (a compressed body would reach the app
    unscanned)."""


class EvictionUnsafe(StoreError):
    """Redis may evict guard's keys (maxmemory-policy allkeys-*): lists would shrink silently."""


class StoreInconsistent(StoreError):
    """A list's keys disagree (lost band members, a vanished list): matches may be missed."""
