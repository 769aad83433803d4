"""Settings: frozen dataclasses, and :func:`load_config` to read them from a YAML file.

Validation is split so that each check lives once. The dataclasses check their own values in
``__post_init__``, each field against the :class:`Rule` it declares with :func:`setting`, so a
:class:`Config` built in Python is as safe as one read from a file (a bool or a float is no
integer there either). They raise :class:`~guard.errors.SettingError`, which names the field. The
loader checks the document (unknown keys, YAML types) and turns every failure, its own or a
dataclass's, into a :class:`~guard.errors.ConfigError` naming the file and the dotted key.
The documented defaults, with the reasons for them, are in ``config/guard.yaml``.
"""

from __future__ import annotations

import functools
import os
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import Field, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, unquote_to_bytes

import yaml  # type: ignore[import-untyped,unused-ignore]

from guard.bands import BAND_COUNTS, LIST_NAME_RULE, default_layout, is_list_name
from guard.errors import ConfigError, SettingError
from guard.errors import show_value as _show
from guard.types import DEFAULT_LIMITS, ImageLimits

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: Environment variable that overrides ``redis.url`` (see :func:`resolve_redis_url`).
ENV_REDIS_URL = "GUARD_REDIS_URL"
#: Environment variable naming the embedded Redis's data directory
#: (see :func:`resolve_embedded_path`).
ENV_HOME = "GUARD_HOME"
#: The RDB file's name in a data directory given by ``--data-dir`` or ``GUARD_HOME``.
EMBEDDED_FILE = "redis.db"
#: Above this, real-photo aHashes are too correlated to mean "same image" (docs/hash.md).
MAX_RADIUS = 12
#: Redis keys one lookup may probe per query variant. The default policy (4 bands, radius 12)
#: probes 1,108; one band at radius 12 would probe ~4e12 and never answer (hostile case H40 in
#: tests/hostile).
MAX_PROBES = 10_000
#: A config file is read whole before parsing: a larger one is refused unread (hostile case H40).
MAX_CONFIG_BYTES = 1_048_576
_URL_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
_URLS = "a URL starting redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://"
#: An RFC 9110 token: what a header name or an HTTP method may be made of.
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_TOKEN_RULE = "use 1 or more characters from A-Z a-z 0-9 ! # $ % & ' * + - . ^ _ ` | ~"
#: "?" and "#" are never in an ASGI path; a "?" is likelier a glob meant than a literal.
#: Control characters are refused too: the shadowing check (Config.route_problems) uses two.
_ROUTE_PATH = re.compile(r"/[^?#\s\x00-\x1f\x7f]*")
_PATH_RULE = 'a path starting with "/", without "?", "#", whitespace or control characters'
_LIST_NAMES = "a non-empty list of list names"
#: A JSON field path: dotted keys, "[]" after a key for every item of the array it holds.
_JSON_FIELD = re.compile(r"[A-Za-z0-9_$-]+(\[\])?(\.[A-Za-z0-9_$-]+(\[\])?)*")
_JSON_FIELD_RULE = (
    'dotted keys (A-Z a-z 0-9 _ $ -), "[]" after a key for each item of its array, '
    'e.g. "avatar", "user.photo", "gallery[].image"'
)
_JSON_FIELDS = f"a list of JSON field paths: {_JSON_FIELD_RULE}"
_METHODS = "a non-empty list of HTTP methods"


@dataclass(frozen=True)
class Rule:
    """What one setting accepts: ``text``, quoted in errors ("must be <text>"), and ``test``."""

    text: str
    test: Callable[[Any], bool]


_T = TypeVar("_T")


def setting(default: _T, rule: Rule) -> _T:
    """A dataclass field whose values ``rule`` bounds: each class declares its own ranges next to
    its fields, so a field of the same name in another class cannot borrow the wrong one.
    Typed as the default for mypy; it is a :func:`dataclasses.field` carrying ``rule``."""
    made: _T = field(default=default, metadata={"rule": rule})
    return made


def default_hash_workers() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one), from 1 to 4.

    Measured on 2 cores (docs/performance.md): 4 threads per worker gave no more uploads/s than
    2, and with 2 workers and 16 uploads in flight a loop lag p99 of 20 ms against 9.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, usable or 1))


def _ints(low: int, high: int) -> Rule:
    """An integer range; a bool is not an integer here, from Python as from YAML."""
    return Rule(f"an integer from {low} to {high}", lambda v: type(v) is int and low <= v <= high)


def _optional_ints(low: int, high: int) -> Rule:
    """An integer range, or None (null in YAML) for the setting's automatic value."""
    ints = _ints(low, high)
    return Rule(f"null or {ints.text}", lambda v: v is None or ints.test(v))


def _seconds(most: int) -> Rule:
    """A duration; an int is a number too, a bool (or a numeric string) is not."""
    return Rule(
        f"a number of seconds > 0 and <= {most}",
        lambda v: type(v) in (int, float) and 0 < v <= most,
    )


def _optional_text(text: str, test: Callable[[str], bool]) -> Rule:
    """None, or a string passing ``test``."""
    return Rule(f"null or {text}", lambda v: v is None or (type(v) is str and test(v)))


#: true or false: from Python, 1 and 0 are refused as YAML's 1 and 0 are.
_BOOL = Rule("true or false", lambda v: type(v) is bool)
_RADIUS = _ints(0, MAX_RADIUS)
_STATUS = _ints(400, 599)
_BANDS = Rule(
    f"one of {', '.join(map(str, BAND_COUNTS))}", lambda v: type(v) is int and v in BAND_COUNTS
)
#: What a list's matches do: "enforce" (reject and flag) or "shadow" (only log and count them).
Mode = typing.Literal["enforce", "shadow"]
MODES: tuple[Mode, ...] = typing.get_args(Mode)
_MODE = Rule(" or ".join(f'"{mode}"' for mode in MODES), lambda v: v in MODES and type(v) is str)
#: A share from 0 to 1; a bool is no number here (``True`` is not 100%), NaN is in no range.
_RATIO = Rule("a number from 0 to 1", lambda v: type(v) in (int, float) and 0 <= v <= 1)


# YAML values each annotated field type accepts (text for errors, test, conversion). Tests use
# ``type(v) is`` on purpose: YAML's true/false are bools, and a bool is not a number here.
_KINDS: dict[object, tuple[str, Callable[[Any], bool], Callable[[Any], Any]]] = {
    int: ("an integer", lambda v: type(v) is int, int),
    float: ("a number", lambda v: type(v) in (int, float), float),
    bool: ("true or false", lambda v: type(v) is bool, bool),
    str: ("a string", lambda v: type(v) is str, str),
    Mode: ("a string", lambda v: type(v) is str, str),
    str | None: ("null or a string", lambda v: v is None or type(v) is str, lambda v: v),
    int | None: ("null or an integer", lambda v: v is None or type(v) is int, lambda v: v),
    frozenset[str]: (
        "a list of format names",
        lambda v: type(v) is list and all(type(x) is str for x in v),
        lambda v: frozenset(x.upper() for x in v),  # Pillow's names are upper case
    ),
}


def _rule(item: Field[Any]) -> Rule | None:
    """The rule a field declares with :func:`setting`; None for a field without one."""
    rule = item.metadata.get("rule")
    return rule if isinstance(rule, Rule) else None


def _check(settings: DataclassInstance) -> None:
    """Raise :class:`SettingError` for the first field its own rule refuses."""
    for item in fields(settings):
        value, rule = getattr(settings, item.name), _rule(item)
        if rule is not None and not rule.test(value):
            raise SettingError.must_be(item.name, rule.text, value)


@dataclass(frozen=True)
class RedisSettings:
    """Where the lists live. Timeouts are explicit: redis-py's defaults wait ~60 s on a dead
    server."""

    #: None: the embedded Redis, persisted at ``embedded_path`` (see :func:`resolve_embedded_path`).
    url: str | None = setting(None, _optional_text(_URLS, lambda v: v.startswith(_URL_SCHEMES)))
    #: The embedded Redis's RDB file; its folder is the data directory, which holds the one
    #: server every process shares. None: ``redis.db`` in the per-user data directory. Relative:
    #: to the config file's folder (:func:`load_config` makes it absolute), else the working one.
    embedded_path: str | None = setting(None, _optional_text("a non-empty path", bool))
    socket_timeout: float = setting(0.5, _seconds(60))
    connect_timeout: float = setting(0.5, _seconds(60))
    #: Consecutive store failures (refused, timed out) that open the circuit breaker: while it is
    #: open, lookups fail at once (each list's fail_open applies) without touching Redis.
    breaker_failures: int = setting(5, _ints(1, 1000))
    #: Seconds the breaker stays open before one probe may reach Redis; doubled after every failed
    #: probe, up to breaker_max_cooldown.
    breaker_cooldown: float = setting(1.0, _seconds(600))
    breaker_max_cooldown: float = setting(30.0, _seconds(3600))
    #: False: refuse to use a Redis whose maxmemory-policy may evict guard's keys (allkeys-*);
    #: True: only warn. Eviction silently empties band sets: uploads would pass unchecked.
    allow_eviction: bool = setting(False, _BOOL)
    #: Lists with up to this many entries are copied into memory (about 66 bytes an entry, one
    #: copy per machine with mirror_shared) and looked up there, with one round trip to check the
    #: copy is current; bigger lists, and every list when 0, are looked up in Redis's band index
    #: (seconds per lookup at millions of entries).
    mirror_max_entries: int = setting(20_000_000, _ints(0, 10**9))
    #: True: the processes of one machine share each list's copy (one copy per machine, through
    #: files in a private shared-memory directory: guard.store.shared_mirrors).
    mirror_shared: bool = setting(True, _BOOL)

    def __post_init__(self) -> None:
        _check(self)
        if self.breaker_max_cooldown < self.breaker_cooldown:
            raise SettingError.must_be(
                "breaker_max_cooldown",
                f"at least breaker_cooldown ({self.breaker_cooldown:g})",
                self.breaker_max_cooldown,
                shown=f"{self.breaker_max_cooldown:g}",
            )


@dataclass(frozen=True)
class ListPolicy:
    """How one list's matches turn into verdicts (radii are Hamming distances in bits)."""

    #: A confirmed aHash match within this distance rejects the upload.
    reject_radius: int = setting(8, _RADIUS)
    #: Within this distance (and outside reject_radius) the upload is flagged, not rejected.
    flag_radius: int = setting(12, _RADIUS)
    #: A candidate's pHash must also be within this distance, or the aHash match is ignored.
    confirm_radius: int = setting(12, _ints(0, 64))
    #: Also look up the 8 flipped/rotated variants of the query.
    dihedral: bool = setting(True, _BOOL)
    #: Bands of the Redis index, used when a list is created: a list keeps the bands it has.
    bands: int = setting(4, _BANDS)
    #: When the store cannot answer: False, the request gets the ``unavailable`` status; True, the
    #: app is called and the verdict is "unchecked".
    fail_open: bool = setting(False, _BOOL)
    #: True: a route's list that is missing from the store or empty stops start-up with an error,
    #: and a lookup that finds it missing later follows ``fail_open`` as if the store were down.
    #: False: start-up only warns, and a missing list matches nothing (warned once).
    required: bool = setting(True, _BOOL)
    #: "enforce": a match rejects or flags as the radii say. "shadow": the list is looked up and
    #: decided as usual, but its would-be rejects and flags only reach the app as "shadow-reject"
    #: and "shadow-flag" decisions, logged and counted: a new list is tried on real traffic
    #: before it refuses anything.
    mode: Mode = setting("enforce", _MODE)
    #: In enforce mode, the share of this list's would-be rejects and flags that are enforced;
    #: the others are handled as in shadow mode. Chosen per upload from a hash of the match, never
    #: at random: the same upload gets the same treatment in every worker and on every retry, and
    #: raising the ratio only adds enforced uploads. Ignored in shadow mode (nothing enforced).
    enforce_ratio: float = setting(1.0, _RATIO)

    def __post_init__(self) -> None:
        _check(self)
        if self.flag_radius < self.reject_radius:
            raise SettingError.must_be(
                "flag_radius", f"at least reject_radius ({self.reject_radius})", self.flag_radius
            )
        probes = probe_count(self.bands, self.flag_radius)
        if probes > MAX_PROBES:
            most = max(r for r in range(MAX_RADIUS + 1) if probe_count(self.bands, r) <= MAX_PROBES)
            raise SettingError.must_be(
                "flag_radius",
                f"at most {most} with bands={self.bands}",
                self.flag_radius,
                why=f"a lookup would probe {probes} Redis keys per query, over {MAX_PROBES} "
                "(use more bands or a smaller radius)",
            )


@functools.cache
def probe_count(bands: int, radius: int) -> int:
    """Band keys one lookup probes for one query variant at ``radius`` (docs/architecture.md)."""
    return default_layout(bands).probe_count(radius)


@dataclass(frozen=True)
class StatusCodes:
    """Every HTTP status guard answers with (docs/configuration.md); each from 400 to 599."""

    #: A confirmed match within a list's reject radius.
    reject: int = setting(403, _STATUS)
    #: Body, parts, images, frames or pixels over a limit.
    too_large: int = setting(413, _STATUS)
    #: Image format not allowed, or a request Content-Encoding guard does not decode.
    unsupported: int = setting(415, _STATUS)
    #: An image that cannot be decoded.
    undecodable: int = setting(422, _STATUS)
    #: Malformed multipart.
    malformed: int = setting(400, _STATUS)
    #: The body did not arrive within ``body_timeout``.
    timeout: int = setting(408, _STATUS)
    #: The store cannot answer and a list of the route fails closed.
    unavailable: int = setting(503, _STATUS)

    def __post_init__(self) -> None:
        _check(self)


DEFAULT_STATUSES = StatusCodes()


@dataclass(frozen=True)
class HttpSettings:
    """How the middleware reads requests and answers them."""

    max_body_bytes: int = setting(20_000_000, _ints(1, 2**40))
    #: Images checked per request; more is ``too_large``, never "check the first N".
    max_images: int = setting(16, _ints(1, 1000))
    #: Multipart parts per request.
    max_parts: int = setting(64, _ints(1, 100_000))
    #: The body is kept in memory up to this many bytes, then in a temporary file.
    spool_memory_bytes: int = setting(1_048_576, _ints(0, 2**30))
    #: Bytes of a JSON body scanned for images (routes with ``json_fields``); more is too large.
    max_json_bytes: int = setting(10_000_000, _ints(1, 2**40))
    #: Nesting of arrays and objects in a scanned JSON body; deeper is malformed.
    max_json_depth: int = setting(32, _ints(1, 256))
    #: Seconds for the whole body to arrive (one deadline, not one per chunk).
    body_timeout: float = setting(30.0, _seconds(3600))
    #: Seconds for the whole decision on one request: finding, decoding and hashing its images and
    #: looking them up in every list of its route.
    decision_timeout: float = setting(5.0, _seconds(60))
    #: Threads decoding and hashing at the same time, per process; None: the CPUs this process
    #: may use, at most 4 (:attr:`hash_threads`). More threads than cores only queue for them:
    #: docs/performance.md sizes it with several server workers.
    hash_workers: int | None = setting(None, _optional_ints(1, 64))
    #: Response header carrying the verdict of flagged and unchecked requests; None: no header.
    flag_header: str | None = setting(
        "X-Guard-Verdict",
        _optional_text(f"a header name ({_TOKEN_RULE})", lambda v: _TOKEN.fullmatch(v) is not None),
    )
    #: Seconds in the Retry-After header of the ``unavailable`` status.
    retry_after: int = setting(5, _ints(0, 86400))
    statuses: StatusCodes = DEFAULT_STATUSES

    def __post_init__(self) -> None:
        _check(self)

    @property
    def hash_threads(self) -> int:
        """``hash_workers``, or when unset the CPUs this process may use, at most 4."""
        return self.hash_workers if self.hash_workers is not None else default_hash_workers()


DEFAULT_HTTP = HttpSettings()

#: A Redis key for the decision stream: printable, no spaces (it may carry a {hash tag}).
_STREAM_KEY = re.compile(r"[!-~]{1,200}")


def _endpoint_path(text: str) -> Rule:
    return _optional_text(text, lambda v: _ROUTE_PATH.fullmatch(v) is not None and "*" not in v)


@dataclass(frozen=True)
class OperationsSettings:
    """What guard tells the people running it: metrics, health, the decision stream, and how
    it picks up a changed config file."""

    #: Serve Prometheus metrics at this path (needs the ``metrics`` extra); None: not served by
    #: the middleware (mount ``guard.metrics_app()`` yourself, or leave metrics off).
    metrics_path: str | None = setting(None, _endpoint_path(f"{_PATH_RULE}, without *"))
    #: Serve the health answer at this path (200, or 503 when a fail-closed list cannot be
    #: checked); None: not served.
    health_path: str | None = setting(None, _endpoint_path(f"{_PATH_RULE}, without *"))
    #: Append every reject, flag, shadow outcome, allow-list suppression and unchecked pass to a
    #: Redis Stream (``guard events`` reads it).
    events: bool = setting(True, _BOOL)
    #: The stream's key: one per deployment sharing a Redis.
    events_stream: str = setting(
        "guard:events",
        Rule(
            "1 to 200 printable characters without spaces",
            lambda v: type(v) is str and _STREAM_KEY.fullmatch(v) is not None,
        ),
    )
    #: Records kept, about (XADD MAXLEN ~): older ones are trimmed.
    events_max_length: int = setting(100_000, _ints(100, 100_000_000))
    #: Re-read the config file on SIGHUP and when it changes (checked at most once a second); a
    #: bad new file is logged and the old config stays. Only for a config read from a file.
    reload: bool = setting(True, _BOOL)
    #: An HTML file for refusals asked for with ``Accept: text/html``: a ``string.Template``
    #: with $status, $error, $list and $request_id (each HTML-escaped). None: guard's own page.
    #: A relative path is relative to the config file's folder.
    refusal_page: str | None = setting(None, _optional_text("a file path", lambda v: bool(v)))

    def __post_init__(self) -> None:
        _check(self)


DEFAULT_OPERATIONS = OperationsSettings()


# --- route matching ------------------------------------------------------------------------------
#
# A route names the path the app routes, and guard must check every request the app would route
# there. Frameworks disagree (measured with uvicorn 0.55 in front of each): Litestar collapses
# "//", ignores a trailing slash and decodes "%2F" again; Quart (Werkzeug) merges "//", routes an
# absolute-form target "http://host/upload" and reads "%2F" from raw_path; Starlette redirects
# "/upload/" and "/upload%2F" to "/upload"; Django upper-cases the method and Quart takes "post"
# as it comes. None of them folds case or reads "\" as "/". So a request is matched under every
# plausible reading of its path (request_paths) and its method is compared upper-cased: checking
# a request the app would not route to the view costs a lookup; missing one it would is a hole.

#: Methods whose requests carry no body in practice: a route of only these checks no upload.
BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})
#: An absolute-form target ("http://host/upload") or a network-path one ("//host/upload").
_AUTHORITY = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*:)?//[^/]*")


def _segments(path: str, *, pattern: bool = False) -> list[str]:
    """The path's segments with empty and "." ones dropped and ".." applied (RFC 3986 5.2.4,
    after collapsing "//"); never above the root. In a pattern, ".." may not undo a glob."""
    kept: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment != "..":
            kept.append(segment)
        elif kept:
            if pattern and "*" in kept[-1]:
                raise SettingError(
                    "path",
                    f'may not use ".." after a segment with * or **, got {path}',
                    rule='no ".." after a segment with * or **',
                    value=path,
                )
            kept.pop()
    return kept


def normalize_path(path: str) -> str:
    """``path`` with repeated slashes collapsed, dot segments resolved and no trailing slash
    ("/" stays "/"): "//a/./b/../c/" is "/a/c". Linear in the length of the path."""
    return "/" + "/".join(_segments(path))


def request_paths(path: str, raw_path: bytes | None = None, root_path: str = "") -> tuple[str, ...]:
    """Every path an app may route this request by (a route matches if it matches any).

    From the ASGI ``path`` (decoded once by the server) and ``raw_path`` (as sent): each of
    ``path``, ``path`` decoded again, ``raw_path`` undecoded, decoded once and twice (UTF-8;
    "%2F" becomes "/"); each as given and, for an absolute-form target, its path alone; each
    as is and normalised (:func:`normalize_path`), the normalised one also with a trailing "/".
    How the mount point is applied: when ``root_path`` starts one of these at a segment
    boundary, the rest is a reading too (routes are relative to the app guard wraps), and the
    full path stays one. Measured: uvicorn 0.55 ``--root-path /api`` gives a request for
    /upload path and raw_path "/api/upload" and root_path "/api"; Starlette's ``Mount("/api")``
    keeps path and raw_path whole ("/api/upload") and sets root_path "/api". At most a few
    dozen readings, each linear in the length of the path.
    """
    sources = [path, unquote(path)]
    if raw_path is not None:
        once = unquote_to_bytes(raw_path.split(b"?", 1)[0]).decode("utf-8", "replace")
        sources += [raw_path.decode("latin-1"), once, unquote(once)]
    readings: dict[str, None] = {}
    for source in dict.fromkeys(sources):
        authority = _AUTHORITY.match(source)
        forms = [source] if authority is None else [source, source[authority.end() :] or "/"]
        for form in forms:
            normal = normalize_path(form)
            readings.update(
                dict.fromkeys((form, normal, normal + "/" if normal != "/" else normal))
            )
    roots = {root_path.rstrip("/"), normalize_path(root_path)} - {"", "/"} if root_path else set()
    for root in roots:
        for reading in list(readings):
            if reading.startswith(root) and reading[len(root) : len(root) + 1] in ("", "/"):
                readings[reading[len(root) :] or "/"] = None
    return tuple(readings)


@dataclass(frozen=True)
class _Glob:
    """A route path split for matching: "*" any run without "/", "**" any run (both may be
    empty). Matched segment by segment with leftmost searches, so the time is linear in the
    request path whatever the pattern (a regex backtracks on "/*a*a*a*" against "/aaaa...")."""

    #: Without "**": every segment. With it: the segments before the one holding "**", that
    #: segment's text before "**" (``left``) and after it (``right``), and the segments after.
    head: tuple[str, ...]
    double: bool = False
    left: str = ""
    right: str = ""
    tail: tuple[str, ...] = ()

    def match(self, path: str) -> bool:
        segments = path.split("/")
        if not self.double:
            return len(segments) == len(self.head) and all(
                _segment_match(glob, text) for glob, text in zip(self.head, segments, strict=False)
            )
        first, last = len(self.head), len(segments) - len(self.tail) - 1
        if last < first:
            return False
        if not all(
            _segment_match(glob, text) for glob, text in zip(self.head, segments, strict=False)
        ):
            return False
        if not all(
            _segment_match(g, t) for g, t in zip(self.tail, segments[last + 1 :], strict=False)
        ):
            return False
        end = _prefix_end(self.left, segments[first])
        from_end = _prefix_end(self.right[::-1], segments[last][::-1])
        if end is None or from_end is None:
            return False
        return last > first or end <= len(segments[last]) - from_end


@functools.cache
def _compile(pattern: str) -> _Glob:
    if "**" not in pattern:
        return _Glob(tuple(pattern.split("/")))
    before, after = pattern.split("**", 1)
    *head, left = before.split("/")
    right, *tail = after.split("/")
    return _Glob(tuple(head), True, left, right, tuple(tail))


def _segment_match(glob: str, text: str) -> bool:
    """``glob`` ("*" any run) matches all of ``text``; neither holds a "/"."""
    if "*" not in glob:
        return glob == text
    first, *middle, last = glob.split("*")
    if len(text) < len(first) + len(last) or not text.startswith(first):
        return False
    if not text.endswith(last):
        return False
    at, end = len(first), len(text) - len(last)
    for chunk in middle:
        found = text.find(chunk, at, end)
        if found < 0:
            return False
        at = found + len(chunk)
    return True


def _prefix_end(glob: str, text: str) -> int | None:
    """Where the shortest start of ``text`` that ``glob`` matches ends (None: none does)."""
    first, *rest = glob.split("*")
    if not text.startswith(first):
        return None
    at = len(first)
    for chunk in rest:
        found = text.find(chunk, at)
        if found < 0:
            return None
        at = found + len(chunk)
    return at


def _covers(earlier: str, later: str) -> bool:
    """True if every path the glob ``later`` matches, ``earlier`` matches too (a sufficient
    test: it may miss an odd case, never claims a false one). ``later``'s wildcards become
    marker characters no route path holds; ``earlier``'s "*" may absorb a "*" marker, only its
    "**" a "**" one."""
    parts = re.split(r"(\*\*|\*)", earlier)
    regex = "".join(".*" if p == "**" else "[^/\x01]*" if p == "*" else re.escape(p) for p in parts)
    marked = "".join(
        "\x01" if p == "**" else "\x00" if p == "*" else p for p in re.split(r"(\*\*|\*)", later)
    )
    return re.fullmatch(regex, marked, re.DOTALL) is not None


def _bad_item(key: str, kind: str, value: object, rule: str) -> SettingError:
    """One item of a sequence setting refused: "<key> has an invalid <kind> <value>: <rule>"."""
    reason = f"has an invalid {kind} {_show(value)}: {rule}"
    return SettingError(key, reason, rule=rule, value=value)


@dataclass(frozen=True)
class Route:
    """Requests to check: a method and a path, and the lists their images are looked up in.

    ``path`` is relative to where the app is mounted, and is normalised as requests are
    (:func:`normalize_path`: "/upload/" and "//upload" mean "/upload"). It is exact, or a glob
    where "*" matches any run of characters except "/" and "**" (at most one) any run including
    "/". Case counts. A request matches if its method, upper-cased, is one of ``methods`` (given
    in any case, kept upper-case) and any of its :func:`request_paths` matches ``path``.
    """

    path: str
    lists: tuple[str, ...]
    methods: frozenset[str] = frozenset({"POST", "PUT", "PATCH"})
    #: Fields of a JSON body holding base64 images (data: URLs allowed); () scans no JSON.
    json_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (isinstance(self.path, str) and _ROUTE_PATH.fullmatch(self.path)):
            raise SettingError.must_be("path", _PATH_RULE, self.path)
        if self.path.count("**") > 1:
            # Two "**" make matching quadratic in the request path, which the client controls.
            reason = f"may use ** at most once, got {_show(self.path)}"
            raise SettingError("path", reason, rule="** at most once", value=self.path)
        # A str is iterable too: "spam" would pass as the lists s, p, a, m.
        if isinstance(self.lists, str) or not self.lists:
            raise SettingError.must_be("lists", _LIST_NAMES, self.lists)
        lists = tuple(self.lists)
        for index, name in enumerate(lists):
            if not is_list_name(name):
                raise _bad_item("lists", "list name", name, LIST_NAME_RULE)
            if name in lists[:index]:
                reason = f"names {_show(name)} twice: name each list once"
                raise SettingError("lists", reason, rule="each list once", value=name)
        if isinstance(self.methods, str) or not self.methods:
            shown = self.methods if isinstance(self.methods, str) else list(self.methods)
            raise SettingError.must_be("methods", _METHODS, shown)
        for method in sorted(self.methods, key=str):
            # Checked before upper-casing: "poſt".upper() is "POST".
            if not (isinstance(method, str) and _TOKEN.fullmatch(method)):
                raise _bad_item("methods", "method", method, _TOKEN_RULE)
        # A str is iterable too: "avatar" would pass as the paths a, v, a, t, a, r.
        text = self.json_fields if isinstance(self.json_fields, str) else None
        if text is not None:
            raise SettingError.must_be("json_fields", _JSON_FIELDS, text)
        for json_field in self.json_fields:
            if not (isinstance(json_field, str) and _JSON_FIELD.fullmatch(json_field)):
                raise _bad_item("json_fields", "path", json_field, _JSON_FIELD_RULE)
        # Private copies, upper-cased: hashable and comparable whatever the caller passed.
        object.__setattr__(self, "json_fields", tuple(self.json_fields))
        object.__setattr__(self, "lists", lists)
        object.__setattr__(self, "methods", frozenset(m.upper() for m in self.methods))
        object.__setattr__(self, "path", "/" + "/".join(_segments(self.path, pattern=True)))

    def matches(
        self, method: str, path: str, *, raw_path: bytes | None = None, root_path: str = ""
    ) -> bool:
        """True if a request with this method and ASGI ``path`` (``raw_path``, ``root_path``:
        the scope's) is checked here."""
        return method.upper() in self.methods and self.matches_path(
            request_paths(path, raw_path, root_path)
        )

    def matches_path(self, readings: Iterable[str]) -> bool:
        """True if ``path`` matches any of ``readings`` (from :func:`request_paths`)."""
        glob = _compile(self.path)
        return any(glob.match(reading) for reading in readings)


@functools.lru_cache(maxsize=256)
def _merged(routes: tuple[Route, ...]) -> Route:
    """One route checking what each of ``routes`` checks (named after the first)."""
    return Route(
        routes[0].path,
        tuple(dict.fromkeys(name for route in routes for name in route.lists)),
        frozenset().union(*(route.methods for route in routes)),
        tuple(dict.fromkeys(field for route in routes for field in route.json_fields)),
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
    #: Requests to check, first match wins; a request no route matches passes untouched.
    routes: tuple[Route, ...] = ()
    http: HttpSettings = DEFAULT_HTTP
    operations: OperationsSettings = DEFAULT_OPERATIONS

    def __post_init__(self) -> None:
        for name in self.lists:
            if not is_list_name(name):
                raise _bad_item("lists", "list name", name, LIST_NAME_RULE)
        # Private copies: the caller's dict or list may change later, this config must not.
        object.__setattr__(self, "lists", MappingProxyType(dict(self.lists)))
        object.__setattr__(self, "routes", tuple(self.routes))

    def policy(self, list_name: str) -> ListPolicy:
        """The policy of ``list_name``: its own if the config names it, else ``defaults``."""
        return self.lists.get(list_name, self.defaults)

    def route_for(
        self, method: str, path: str, *, raw_path: bytes | None = None, root_path: str = ""
    ) -> Route | None:
        """The route that checks this request; None if none does.

        ``path``, ``raw_path`` and ``root_path`` are the ASGI scope's (see :class:`Route`). Each
        reading of the path (:func:`request_paths`) is taken by the first route, in file order,
        that matches it. When readings are taken by different routes, the app may route the
        request by either, so it is checked against all of them: one route with their lists and
        JSON fields, in file order (else "/public/../upload" could pick a route with weaker
        lists than "/upload"'s). The method is checked first: a request no route's methods
        name costs no path work.
        """
        method = method.upper()
        candidates = [route for route in self.routes if method in route.methods]
        if not candidates:
            return None
        taken: set[int] = set()
        for reading in request_paths(path, raw_path, root_path):
            index = next(
                (i for i, route in enumerate(candidates) if route.matches_path((reading,))), None
            )
            if index is not None:
                taken.add(index)
        if len(taken) <= 1:
            return candidates[taken.pop()] if taken else None
        return _merged(tuple(candidates[i] for i in sorted(taken)))

    def route_problems(self) -> tuple[str, ...]:
        """Routes that check nothing, as warnings to log at start-up: a route whose methods
        carry no body, and a route every request of which an earlier route takes (first match
        wins; the test is sufficient, not complete: an odd shadowing may go unreported)."""
        problems = []
        for index, route in enumerate(self.routes):
            name = f"routes[{index}] ({route.path})"
            if route.methods <= BODYLESS_METHODS:
                problems.append(
                    f"{name} has only methods that carry no body "
                    f"({', '.join(sorted(route.methods))}): it checks no upload"
                )
            shadows = [
                (earlier, other)
                for earlier, other in enumerate(self.routes[:index])
                if other.methods & route.methods and _covers(other.path, route.path)
            ]
            covered = frozenset().union(*(other.methods for _, other in shadows))
            if shadows and route.methods <= covered:
                earlier = ", ".join(f"routes[{i}] ({other.path})" for i, other in shadows)
                problems.append(
                    f"{name} is never used: {earlier} "
                    f"{'comes' if len(shadows) == 1 else 'come'} first and "
                    f"{'takes' if len(shadows) == 1 else 'take'} every request it matches "
                    "(the first matching route wins)"
                )
        return tuple(problems)


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
        document = yaml.safe_load(_read_capped(source))
    except OSError as error:
        reason = f"cannot read the config file: {error.strerror or error}"
        raise ConfigError(reason, source=source) from None
    except yaml.YAMLError as error:
        # The message carries line, column and problem; yaml's traceback would add only noise.
        raise ConfigError(_yaml_problem(error), source=source) from None
    try:
        config = _from_document(document)
    except ConfigError as error:
        raise ConfigError(error.reason, key=error.key, source=source) from None
    stored = config.redis.embedded_path
    if stored is not None and not os.path.isabs(os.path.expanduser(stored)):
        # Relative to the file that names it: the app and the CLI, started from anywhere with
        # the same config, share one store.
        absolute = os.path.join(os.path.dirname(os.path.abspath(source)), stored)
        config = replace(config, redis=replace(config.redis, embedded_path=absolute))
    page = config.operations.refusal_page
    if page is not None and not os.path.isabs(os.path.expanduser(page)):
        absolute = os.path.join(os.path.dirname(os.path.abspath(source)), page)
        config = replace(config, operations=replace(config.operations, refusal_page=absolute))
    return config


def _read_capped(source: str) -> bytes:
    """The file's bytes, refusing one over MAX_CONFIG_BYTES before reading it."""
    with open(source, "rb") as stream:
        size = os.fstat(stream.fileno()).st_size
        data = stream.read(MAX_CONFIG_BYTES + 1) if size <= MAX_CONFIG_BYTES else b""
    if size > MAX_CONFIG_BYTES or len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"the config file is {max(size, len(data))} bytes, over the limit of "
            f"{MAX_CONFIG_BYTES} bytes",
            source=source,
        )
    return data


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


def default_data_dir() -> Path:
    """The per-user data directory: ``$GUARD_HOME``, else ``$XDG_DATA_HOME/guard``, else
    ``~/.local/share/guard``; absolute."""
    home = os.environ.get(ENV_HOME)
    if home:
        return Path(home).expanduser().absolute()
    data = os.environ.get("XDG_DATA_HOME")
    base = Path(data).expanduser() if data and os.path.isabs(data) else Path.home() / ".local/share"
    return (base / "guard").absolute()


def resolve_embedded_path(
    config: Config, cli_data_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The embedded Redis's RDB file (absolute); its folder is the data directory.

    Precedence, highest first: ``cli_data_dir`` (``--data-dir``) and the ``GUARD_HOME``
    environment variable, each giving ``<dir>/redis.db``; ``redis.embedded_path`` (relative to
    the config file's folder, see :func:`load_config`); ``redis.db`` in :func:`default_data_dir`.
    Never the working directory: every process of a deployment finds the same store.
    """
    if cli_data_dir:
        return Path(cli_data_dir).expanduser().absolute() / EMBEDDED_FILE
    if os.environ.get(ENV_HOME) or config.redis.embedded_path is None:
        return default_data_dir() / EMBEDDED_FILE
    return Path(config.redis.embedded_path).expanduser().absolute()


def _yaml_problem(error: Exception) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"invalid YAML{where}: {problem}"


def _from_document(document: object) -> Config:
    top = _mapping(
        document, "", ("defaults", "http", "limits", "lists", "operations", "redis", "routes")
    )
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
        routes=_routes(top.get("routes")),
        http=_section(HttpSettings, top.get("http"), "http", DEFAULT_HTTP),
        operations=_section(
            OperationsSettings, top.get("operations"), "operations", DEFAULT_OPERATIONS
        ),
    )


_ROUTE_KEYS = ("json_fields", "lists", "methods", "path")
# Route checks the values; the loader only that each key is there (methods is optional) and of a
# YAML type Route can take. A method must be a string: a mapping could not even go in a set.
_ROUTE_VALUES: tuple[tuple[str, str, Callable[[Any], bool]], ...] = (
    ("path", _PATH_RULE, lambda v: type(v) is str),
    ("lists", _LIST_NAMES, lambda v: type(v) is list),
    ("methods", _METHODS, lambda v: type(v) is list and all(type(m) is str for m in v)),
    ("json_fields", _JSON_FIELDS, lambda v: type(v) is list and all(type(f) is str for f in v)),
)


def _routes(raw: object) -> tuple[Route, ...]:
    if raw is None:
        return ()
    if type(raw) is not list:
        reason = f"must be a list of mappings with keys {', '.join(_ROUTE_KEYS)}, got {_show(raw)}"
        raise ConfigError(reason, key="routes")
    return tuple(_route(item, f"routes[{index}]") for index, item in enumerate(raw))


def _route(raw: object, path: str) -> Route:
    given = _mapping(raw, path, _ROUTE_KEYS)
    for key, allowed, fits in _ROUTE_VALUES:
        if key not in given and key in ("path", "lists"):
            raise ConfigError(f"missing: must be {allowed}", key=f"{path}.{key}")
        if key in given and not fits(given[key]):
            raise ConfigError(f"must be {allowed}, got {_show(given[key])}", key=f"{path}.{key}")
    optional: dict[str, Any] = {}
    if "methods" in given:
        optional["methods"] = frozenset(given["methods"])
    if "json_fields" in given:
        optional["json_fields"] = tuple(given["json_fields"])
    try:
        return Route(given["path"], tuple(given["lists"]), **optional)
    except SettingError as error:
        raise ConfigError(error.reason, key=f"{path}.{error.key}") from None


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


_Settings = TypeVar(
    "_Settings",
    RedisSettings,
    ListPolicy,
    ImageLimits,
    HttpSettings,
    StatusCodes,
    OperationsSettings,
)


def _section(kind: type[_Settings], raw: object, path: str, base: _Settings) -> _Settings:
    """``base`` with the keys given in ``raw`` replaced, each checked against its field's type."""
    hints = typing.get_type_hints(kind)
    rules = {item.name: _rule(item) for item in fields(kind)}
    values = {}
    for key, value in _mapping(raw, path, tuple(sorted(hints))).items():
        if isinstance(hints[key], type) and is_dataclass(hints[key]):
            # A nested section (http.statuses): its keys are named under this one.
            values[key] = _section(hints[key], value, f"{path}.{key}", getattr(base, key))
            continue
        text, accepts, convert = _KINDS[hints[key]]
        if not accepts(value):
            # The field's own rule says more than its type ("an integer from 0 to 12").
            rule = rules[key]
            allowed = text if rule is None else rule.text
            raise ConfigError(f"must be {allowed}, got {_show(value)}", key=f"{path}.{key}")
        values[key] = convert(value)
    try:
        return replace(base, **values)
    except SettingError as error:
        # The key comes from the error, never from its text: this class's field error.key.
        raise ConfigError(error.reason, key=f"{path}.{error.key}") from None
