"""Configuration: the defaults, every kind of bad document, the shipped file, URL precedence."""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import guard
from guard import (
    Config,
    ConfigError,
    GuardError,
    HttpSettings,
    ImageLimits,
    ListPolicy,
    Route,
    StatusCodes,
    load_config,
)
from guard.config import (
    DEFAULT_CONFIG,
    DEFAULT_HTTP,
    DEFAULT_POLICY,
    ENV_REDIS_URL,
    OperationsSettings,
    RedisSettings,
    Rule,
    _check,
    _ints,
    default_hash_workers,
    resolve_redis_url,
    setting,
)
from guard.errors import SettingError

SHIPPED = Path(__file__).resolve().parents[1] / "config" / "guard.yaml"
TOP_KEYS = "defaults, http, limits, lists, operations, redis, routes"
POLICY_KEYS = (
    "bands, confirm_radius, dihedral, enforce_ratio, fail_open, flag_radius, mode, "
    "reject_radius, required"
)
REDIS_KEYS = (
    "allow_eviction, breaker_cooldown, breaker_failures, breaker_max_cooldown, "
    "connect_timeout, embedded_path, mirror_max_entries, mirror_shared, socket_timeout, url"
)
LIMIT_KEYS = "allowed_formats, max_animation_pixels, max_file_bytes, max_frames, max_image_pixels"
URLS = "a URL starting redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://"
FORMATS = "a non-empty subset of ['BMP', 'GIF', 'JPEG', 'PNG', 'TIFF', 'WEBP']"
HTTP_KEYS = (
    "body_timeout, decision_timeout, flag_header, hash_workers, max_body_bytes, max_images, "
    "max_json_bytes, max_json_depth, max_parts, retry_after, spool_memory_bytes, statuses"
)
STATUS_KEYS = "malformed, reject, timeout, too_large, unavailable, undecodable, unsupported"
ROUTE_KEYS = "json_fields, lists, methods, path"
PATHS = 'a path starting with "/", without "?", "#", whitespace or control characters'
TOKENS = "use 1 or more characters from A-Z a-z 0-9 ! # $ % & ' * + - . ^ _ ` | ~"
LIST_NAMES = "use 1 to 64 characters from A-Z a-z 0-9 _ . -"
HEADERS = f"null or a header name ({TOKENS})"
# A route for documents that test something else about routes.
SPAM = "lists: [spam]"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "guard.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _error(tmp_path: Path, text: str) -> ConfigError:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


# --- defaults ----------------------------------------------------------------------------------


def test_no_file_gives_the_documented_defaults() -> None:
    config = load_config(None)
    assert config == DEFAULT_CONFIG == Config()
    assert config.redis == RedisSettings(
        url=None, embedded_path=None, socket_timeout=0.5, connect_timeout=0.5
    )
    assert config.defaults == ListPolicy(
        reject_radius=8, flag_radius=12, confirm_radius=12, dihedral=True, bands=4, fail_open=False
    )
    assert dict(config.lists) == {}
    assert config.routes == ()
    assert config.route_for("POST", "/upload") is None  # no routes: guard checks nothing
    assert config.http == HttpSettings(
        max_body_bytes=20_000_000,
        max_images=16,
        max_parts=64,
        spool_memory_bytes=1_048_576,
        body_timeout=30.0,
        decision_timeout=5.0,
        hash_workers=None,
        flag_header="X-Guard-Verdict",
        retry_after=5,
        statuses=StatusCodes(
            reject=403,
            too_large=413,
            unsupported=415,
            undecodable=422,
            malformed=400,
            timeout=408,
            unavailable=503,
        ),
    )
    assert config.limits == ImageLimits(
        max_image_pixels=50_000_000,
        max_frames=300,
        max_animation_pixels=100_000_000,
        allowed_formats=frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP"}),
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "# only a comment\n",
        "---\n",
        "redis:\ndefaults:\nlists:\nlimits:\nroutes:\nhttp:\n",
        "http: {statuses: }\nroutes: []\n",
    ],
    ids=["empty", "blank-lines", "comment", "empty-document", "null-sections", "empty-http"],
)
def test_empty_documents_give_the_defaults(tmp_path: Path, text: str) -> None:
    assert load_config(_write(tmp_path, text)) == DEFAULT_CONFIG


# --- the shipped file --------------------------------------------------------------------------


def test_shipped_file_is_the_defaults_plus_spam_and_upload() -> None:
    config = load_config(SHIPPED)
    upload = Route("/upload", ("spam",), frozenset({"POST"}))
    assert config == dataclasses.replace(
        DEFAULT_CONFIG, lists={"spam": DEFAULT_POLICY}, routes=(upload,)
    )
    assert config.policy("spam") == config.defaults
    assert config.route_for("POST", "/upload") == upload
    assert config.route_for("PUT", "/upload") is None


def test_shipped_file_documents_every_key() -> None:
    document = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    assert list(document) == [
        "redis",
        "defaults",
        "lists",
        "routes",
        "limits",
        "http",
        "operations",
    ]
    for values, kind in (
        (document["redis"], RedisSettings),
        (document["defaults"], ListPolicy),
        (document["limits"], ImageLimits),
        (document["http"], HttpSettings),
        (document["http"]["statuses"], StatusCodes),
        (document["operations"], OperationsSettings),
    ):
        assert sorted(values) == sorted(f.name for f in dataclasses.fields(kind))
    assert document["lists"] == {"spam": {}}
    assert document["routes"] == [{"path": "/upload", "methods": ["POST"], "lists": ["spam"]}]


# --- good documents ----------------------------------------------------------------------------

GOOD = [
    ("redis: {url: 'redis://cache:6379/2'}", lambda c: c.redis.url, "redis://cache:6379/2"),
    ("redis: {url: 'unix:///run/redis.sock'}", lambda c: c.redis.url, "unix:///run/redis.sock"),
    ("redis: {url: null}", lambda c: c.redis.url, None),
    ("redis: {embedded_path: null}", lambda c: c.redis.embedded_path, None),
    (
        "redis: {embedded_path: /var/lib/guard.db}",
        lambda c: c.redis.embedded_path,
        "/var/lib/guard.db",
    ),
    # An integer is a number: converted, so the field really holds a float.
    (
        "redis: {socket_timeout: 2}",
        lambda c: (c.redis.socket_timeout, type(c.redis.socket_timeout)),
        (2.0, float),
    ),
    ("redis: {connect_timeout: 60}", lambda c: c.redis.connect_timeout, 60.0),
    ("redis: {mirror_max_entries: 0}", lambda c: c.redis.mirror_max_entries, 0),
    ("redis: {connect_timeout: 0.001}", lambda c: c.redis.connect_timeout, 0.001),
    (
        "defaults: {reject_radius: 0, flag_radius: 0}",
        lambda c: c.defaults,
        ListPolicy(reject_radius=0, flag_radius=0),
    ),
    (
        "defaults: {reject_radius: 12, flag_radius: 12, confirm_radius: 64}",
        lambda c: c.defaults,
        ListPolicy(reject_radius=12, flag_radius=12, confirm_radius=64),
    ),
    (
        "defaults: {dihedral: false, bands: 8}",
        lambda c: c.defaults,
        ListPolicy(dihedral=False, bands=8),
    ),
    ("defaults: {bands: 1, reject_radius: 2, flag_radius: 2}", lambda c: c.defaults.bands, 1),
    # A list overrides the file's defaults, not only the built-in ones.
    (
        "defaults: {confirm_radius: 14}\n"
        "lists: {spam: {reject_radius: 6, flag_radius: 6, bands: 2}}",
        lambda c: c.policy("spam"),
        ListPolicy(reject_radius=6, flag_radius=6, confirm_radius=14, bands=2),
    ),
    (
        "defaults: {confirm_radius: 14}\nlists: {spam: {reject_radius: 6}}",
        lambda c: c.policy("not-named"),
        ListPolicy(confirm_radius=14),
    ),
    ("lists:\n  spam:\n  csam.v2_x-1:\n", lambda c: sorted(c.lists), ["csam.v2_x-1", "spam"]),
    ("lists:\n  spam:\n", lambda c: c.policy("spam"), DEFAULT_POLICY),
    (f"lists: {{{'a' * 64}: {{}}}}", lambda c: list(c.lists), ["a" * 64]),
    ("limits: {max_frames: 2}", lambda c: c.limits, ImageLimits(max_frames=2)),
    (
        "limits: {allowed_formats: [jpeg, Png, TIFF]}",
        lambda c: c.limits.allowed_formats,
        frozenset({"JPEG", "PNG", "TIFF"}),
    ),
    (
        "limits: {max_image_pixels: 64, max_animation_pixels: 64}",
        lambda c: (c.limits.max_image_pixels, c.limits.max_animation_pixels),
        (64, 64),
    ),
    # fail_open is per list: a list inherits the file's defaults and may override them.
    (
        "lists: {spam: {fail_open: true}, csam: {}}",
        lambda c: [c.policy(n).fail_open for n in ("spam", "csam", "not-named")],
        [True, False, False],
    ),
    (
        "defaults: {fail_open: true}\nlists: {spam: {fail_open: false}, csam: {}}",
        lambda c: [c.policy(n).fail_open for n in ("spam", "csam", "not-named")],
        [False, True, True],
    ),
    # http: each key alone leaves the others at their defaults.
    (
        "http: {max_body_bytes: 1, max_images: 1, max_parts: 1, hash_workers: 1}",
        lambda c: c.http,
        HttpSettings(max_body_bytes=1, max_images=1, max_parts=1, hash_workers=1),
    ),
    (
        "http: {max_body_bytes: 1099511627776, max_images: 1000, max_parts: 100000}",
        lambda c: (c.http.max_body_bytes, c.http.max_images, c.http.max_parts),
        (2**40, 1000, 100_000),
    ),
    ("http: {spool_memory_bytes: 0}", lambda c: c.http.spool_memory_bytes, 0),
    ("http: {spool_memory_bytes: 1073741824}", lambda c: c.http.spool_memory_bytes, 2**30),
    (
        "http: {body_timeout: 3600}",
        lambda c: (c.http.body_timeout, type(c.http.body_timeout)),
        (3600.0, float),
    ),
    ("http: {body_timeout: 0.25}", lambda c: c.http, HttpSettings(body_timeout=0.25)),
    (
        "http: {decision_timeout: 60}",
        lambda c: (c.http.decision_timeout, type(c.http.decision_timeout)),
        (60.0, float),
    ),
    ("http: {hash_workers: 64}", lambda c: c.http.hash_workers, 64),
    ("http: {hash_workers: null}", lambda c: c.http.hash_threads, default_hash_workers()),
    ("http: {flag_header: null}", lambda c: c.http, HttpSettings(flag_header=None)),
    ("http: {flag_header: ~}", lambda c: c.http.flag_header, None),
    (
        'http: {flag_header: "X-Blocklist_Verdict.v1!#$%&\'*+^`|~"}',
        lambda c: c.http.flag_header,
        "X-Blocklist_Verdict.v1!#$%&'*+^`|~",
    ),
    ("http: {retry_after: 0}", lambda c: c.http, HttpSettings(retry_after=0)),
    ("http: {retry_after: 86400}", lambda c: c.http.retry_after, 86400),
    (
        "http: {statuses: {reject: 422}}",
        lambda c: c.http,
        HttpSettings(statuses=StatusCodes(reject=422)),
    ),
    (
        "http: {retry_after: 30, statuses: {unavailable: 599, malformed: 400, timeout: 400}}",
        lambda c: c.http,
        HttpSettings(
            retry_after=30, statuses=StatusCodes(unavailable=599, malformed=400, timeout=400)
        ),
    ),
    (
        "http:\n  statuses:\n    too_large: 400\n    unsupported: 599\n    undecodable: 400\n",
        lambda c: c.http.statuses,
        StatusCodes(too_large=400, unsupported=599, undecodable=400),
    ),
    # routes, in file order; methods in any case, upper-cased; default methods
    (
        "routes: [{path: /upload, lists: [spam]}]",
        lambda c: c.routes,
        (Route("/upload", ("spam",), frozenset({"POST", "PUT", "PATCH"})),),
    ),
    (
        "routes: [{path: /upload, methods: [post, Put], lists: [spam, csam.v2]}]",
        lambda c: c.routes,
        (Route("/upload", ("spam", "csam.v2"), frozenset({"POST", "PUT"})),),
    ),
    (
        "routes: [{path: /b, lists: [x]}, {path: /a, lists: [y]}, {path: /b, lists: [z]}]",
        lambda c: [(r.path, r.lists) for r in c.routes],
        [("/b", ("x",)), ("/a", ("y",)), ("/b", ("z",))],
    ),
    (
        "routes: [{path: '/images/**', methods: [POST, POST, post], lists: [spam]}]",
        lambda c: c.routes[0].methods,
        frozenset({"POST"}),
    ),
    (
        "routes: [{path: '/api/*/upload', methods: [M-SEARCH], lists: [spam]}]",
        lambda c: (
            c.route_for("M-SEARCH", "/api/v1/upload"),
            c.route_for("POST", "/api/v1/upload"),
        ),
        (Route("/api/*/upload", ("spam",), frozenset({"M-SEARCH"})), None),
    ),
    # A list a route names need not be under `lists`: it uses `defaults`.
    (
        "defaults: {fail_open: true}\nroutes: [{path: /upload, lists: [other]}]",
        lambda c: c.policy(c.routes[0].lists[0]).fail_open,
        True,
    ),
]


@pytest.mark.parametrize(("text", "read", "expected"), GOOD, ids=[row[0] for row in GOOD])
def test_good_documents(
    tmp_path: Path, text: str, read: Callable[[Config], object], expected: object
) -> None:
    config = load_config(str(_write(tmp_path, text)))  # a str path as well as a Path
    assert read(config) == expected


# --- bad documents -----------------------------------------------------------------------------

# (document, the whole message after "<file>: "). Exact, so a changed or vaguer message fails.
BAD = [
    # unknown keys, at each level
    ("colour: red", f"colour: unknown key (allowed: {TOP_KEYS})"),
    ("redis: {timeout: 1}", f"redis.timeout: unknown key (allowed: {REDIS_KEYS})"),
    ("defaults: {radius: 8}", f"defaults.radius: unknown key (allowed: {POLICY_KEYS})"),
    ("lists: {spam: {reject: 8}}", f"lists.spam.reject: unknown key (allowed: {POLICY_KEYS})"),
    (
        "limits: {max_pixels: 5}",
        f"limits.max_pixels: unknown key (allowed: {LIMIT_KEYS})",
    ),
    ("1: x", f"1: unknown key (allowed: {TOP_KEYS})"),
    # wrong types: the message still gives the allowed range
    (
        "defaults: {reject_radius: true}",
        "defaults.reject_radius: must be an integer from 0 to 12, got true",
    ),
    (
        "lists: {spam: {flag_radius: '9'}}",
        'lists.spam.flag_radius: must be an integer from 0 to 12, got "9"',
    ),
    (
        "defaults: {confirm_radius: 16.0}",
        "defaults.confirm_radius: must be an integer from 0 to 64, got 16.0",
    ),
    ("defaults: {bands: '4'}", 'defaults.bands: must be one of 1, 2, 4, 8, got "4"'),
    ("defaults: {dihedral: 1}", "defaults.dihedral: must be true or false, got 1"),
    ("defaults: {dihedral: maybe}", 'defaults.dihedral: must be true or false, got "maybe"'),
    (
        "redis: {socket_timeout: '0.5'}",
        'redis.socket_timeout: must be a number of seconds > 0 and <= 60, got "0.5"',
    ),
    (
        "redis: {connect_timeout: true}",
        "redis.connect_timeout: must be a number of seconds > 0 and <= 60, got true",
    ),
    (
        "redis: {url: 6379}",
        "redis.url: must be null or a URL starting redis://, rediss://, unix://, "
        "redis+cluster:// or rediss+cluster://, got 6379",
    ),
    ("redis: {embedded_path: 5}", "redis.embedded_path: must be null or a non-empty path, got 5"),
    ("limits: {max_frames: yes}", "limits.max_frames: must be an integer, got true"),
    (
        "limits: {max_image_pixels: 5.0e7}",
        'limits.max_image_pixels: must be an integer, got "5.0e7"',
    ),
    (
        "limits: {allowed_formats: JPEG}",
        'limits.allowed_formats: must be a list of format names, got "JPEG"',
    ),
    (
        "limits: {allowed_formats: [JPEG, 1]}",
        'limits.allowed_formats: must be a list of format names, got ["JPEG", 1]',
    ),
    # out of range
    (
        "lists: {spam: {reject_radius: 20}}",
        "lists.spam.reject_radius: must be an integer from 0 to 12, got 20",
    ),
    (
        "defaults: {reject_radius: -1}",
        "defaults.reject_radius: must be an integer from 0 to 12, got -1",
    ),
    (
        "defaults: {reject_radius: 13, flag_radius: 13}",
        "defaults.reject_radius: must be an integer from 0 to 12, got 13",
    ),
    (
        "defaults: {confirm_radius: 65}",
        "defaults.confirm_radius: must be an integer from 0 to 64, got 65",
    ),
    ("defaults: {bands: 3}", "defaults.bands: must be one of 1, 2, 4, 8, got 3"),
    ("defaults: {bands: 16}", "defaults.bands: must be one of 1, 2, 4, 8, got 16"),
    (
        "redis: {socket_timeout: 0}",
        "redis.socket_timeout: must be a number of seconds > 0 and <= 60, got 0.0",
    ),
    (
        "redis: {mirror_max_entries: -1}",
        "redis.mirror_max_entries: must be an integer from 0 to 1000000000, got -1",
    ),
    (
        "redis: {connect_timeout: 60.5}",
        "redis.connect_timeout: must be a number of seconds > 0 and <= 60, got 60.5",
    ),
    (
        "redis: {socket_timeout: .nan}",
        "redis.socket_timeout: must be a number of seconds > 0 and <= 60, got NaN",
    ),
    (
        "redis: {url: 'localhost:6379'}",
        f'redis.url: must be null or {URLS}, got "localhost:6379"',
    ),
    ("redis: {embedded_path: ''}", 'redis.embedded_path: must be null or a non-empty path, got ""'),
    # flag below reject, given or inherited from defaults
    (
        "defaults: {reject_radius: 8, flag_radius: 6}",
        "defaults.flag_radius: must be at least reject_radius (8), got 6",
    ),
    (
        "{defaults: {flag_radius: 10}, lists: {spam: {reject_radius: 11}}}",
        "lists.spam.flag_radius: must be at least reject_radius (11), got 10",
    ),
    (
        "defaults: {flag_radius: 7}",
        "defaults.flag_radius: must be at least reject_radius (8), got 7",
    ),
    # list names
    (
        "lists: {'sp am': {}}",
        "lists.sp am: invalid list name: use 1 to 64 characters from A-Z a-z 0-9 _ . -",
    ),
    (
        "lists: {'x{y}': {}}",
        "lists.x{y}: invalid list name: use 1 to 64 characters from A-Z a-z 0-9 _ . -",
    ),
    (
        "lists: {'a:b': {}}",
        "lists.a:b: invalid list name: use 1 to 64 characters from A-Z a-z 0-9 _ . -",
    ),
    (
        f"lists: {{{'a' * 65}: {{}}}}",
        f"lists.{'a' * 65}: invalid list name: use 1 to 64 characters from A-Z a-z 0-9 _ . -",
    ),
    ("lists: {'': {}}", "lists.: invalid list name: use 1 to 64 characters from A-Z a-z 0-9 _ . -"),
    (
        "lists: {123: {}}",
        "lists.123: invalid list name: use 1 to 64 characters from A-Z a-z 0-9 _ . -",
    ),
    # formats and the other limits (ImageLimits' own checks, re-raised under limits.<key>)
    (
        "limits: {allowed_formats: [JPEG, EPS]}",
        f"limits.allowed_formats: must be {FORMATS}, got ['EPS', 'JPEG']",
    ),
    (
        "limits: {allowed_formats: []}",
        f"limits.allowed_formats: must be {FORMATS}, got []",
    ),
    ("limits: {max_frames: 0}", "limits.max_frames: must be at least 1, got 0"),
    ("limits: {max_image_pixels: 10}", "limits.max_image_pixels: must be at least 64, got 10"),
    (
        "limits: {max_animation_pixels: 1000}",
        "limits.max_animation_pixels: must be at least max_image_pixels (50000000), got 1000",
    ),
    # fail_open
    ("defaults: {fail_open: 'no'}", 'defaults.fail_open: must be true or false, got "no"'),
    ("lists: {spam: {fail_open: 0}}", "lists.spam.fail_open: must be true or false, got 0"),
    # http: unknown keys, types and ranges, each named under http.
    ("http: {max_body_size: 5}", f"http.max_body_size: unknown key (allowed: {HTTP_KEYS})"),
    (
        "http: {statuses: {forbidden: 403}}",
        f"http.statuses.forbidden: unknown key (allowed: {STATUS_KEYS})",
    ),
    ("http: [1]", f"http: must be a mapping with keys {HTTP_KEYS}, got [1]"),
    ("http: {statuses: 403}", f"http.statuses: must be a mapping with keys {STATUS_KEYS}, got 403"),
    (
        "http: {max_body_bytes: 0}",
        "http.max_body_bytes: must be an integer from 1 to 1099511627776, got 0",
    ),
    (
        "http: {max_body_bytes: 1099511627777}",
        "http.max_body_bytes: must be an integer from 1 to 1099511627776, got 1099511627777",
    ),
    (
        "http: {max_body_bytes: 20MB}",
        'http.max_body_bytes: must be an integer from 1 to 1099511627776, got "20MB"',
    ),
    (
        "http: {max_body_bytes: 2.0e7}",
        'http.max_body_bytes: must be an integer from 1 to 1099511627776, got "2.0e7"',
    ),
    ("http: {max_images: 0}", "http.max_images: must be an integer from 1 to 1000, got 0"),
    ("http: {max_images: 1001}", "http.max_images: must be an integer from 1 to 1000, got 1001"),
    ("http: {max_images: true}", "http.max_images: must be an integer from 1 to 1000, got true"),
    ("http: {max_parts: 0}", "http.max_parts: must be an integer from 1 to 100000, got 0"),
    (
        "http: {max_parts: 100001}",
        "http.max_parts: must be an integer from 1 to 100000, got 100001",
    ),
    (
        "http: {spool_memory_bytes: -1}",
        "http.spool_memory_bytes: must be an integer from 0 to 1073741824, got -1",
    ),
    (
        "http: {spool_memory_bytes: 1073741825}",
        "http.spool_memory_bytes: must be an integer from 0 to 1073741824, got 1073741825",
    ),
    (
        "http: {body_timeout: 0}",
        "http.body_timeout: must be a number of seconds > 0 and <= 3600, got 0.0",
    ),
    (
        "http: {body_timeout: 3600.5}",
        "http.body_timeout: must be a number of seconds > 0 and <= 3600, got 3600.5",
    ),
    (
        "http: {body_timeout: .nan}",
        "http.body_timeout: must be a number of seconds > 0 and <= 3600, got NaN",
    ),
    (
        "http: {body_timeout: '30'}",
        'http.body_timeout: must be a number of seconds > 0 and <= 3600, got "30"',
    ),
    (
        "http: {decision_timeout: -1}",
        "http.decision_timeout: must be a number of seconds > 0 and <= 60, got -1.0",
    ),
    (
        "http: {decision_timeout: 61}",
        "http.decision_timeout: must be a number of seconds > 0 and <= 60, got 61.0",
    ),
    (
        "http: {decision_timeout: null}",
        "http.decision_timeout: must be a number of seconds > 0 and <= 60, got null",
    ),
    (
        "http: {hash_workers: 0}",
        "http.hash_workers: must be null or an integer from 1 to 64, got 0",
    ),
    (
        "http: {hash_workers: 65}",
        "http.hash_workers: must be null or an integer from 1 to 64, got 65",
    ),
    (
        "http: {hash_workers: 4.0}",
        "http.hash_workers: must be null or an integer from 1 to 64, got 4.0",
    ),
    (
        "http: {hash_workers: true}",
        "http.hash_workers: must be null or an integer from 1 to 64, got true",
    ),
    ("http: {retry_after: -1}", "http.retry_after: must be an integer from 0 to 86400, got -1"),
    (
        "http: {retry_after: 86401}",
        "http.retry_after: must be an integer from 0 to 86400, got 86401",
    ),
    ("http: {retry_after: 1.5}", "http.retry_after: must be an integer from 0 to 86400, got 1.5"),
    # flag_header: null or an RFC 9110 token
    (
        "http: {flag_header: ''}",
        f'http.flag_header: must be {HEADERS}, got ""',
    ),
    (
        "http: {flag_header: X Guard}",
        f'http.flag_header: must be {HEADERS}, got "X Guard"',
    ),
    (
        "http: {flag_header: 'X-Guard:'}",
        f'http.flag_header: must be {HEADERS}, got "X-Guard:"',
    ),
    (
        "http: {flag_header: X-Gärd}",
        f'http.flag_header: must be {HEADERS}, got "X-Gärd"',
    ),
    (
        'http: {flag_header: "X-Guard\\r\\nSet-Cookie"}',
        f'http.flag_header: must be {HEADERS}, got "X-Guard\\r\\nSet-Cookie"',
    ),
    (
        "http: {flag_header: 5}",
        f"http.flag_header: must be {HEADERS}, got 5",
    ),
    (
        "http: {flag_header: false}",
        f"http.flag_header: must be {HEADERS}, got false",
    ),
    # statuses: the exact message of the brief, then each key at both ends
    (
        "http: {statuses: {reject: 200}}",
        "http.statuses.reject: must be an integer from 400 to 599, got 200",
    ),
    *[
        (
            f"http: {{statuses: {{{key}: {value}}}}}",
            f"http.statuses.{key}: must be an integer from 400 to 599, got {value}",
        )
        for key in STATUS_KEYS.split(", ")
        for value in (399, 600)
    ],
    (
        "http: {statuses: {reject: '403'}}",
        'http.statuses.reject: must be an integer from 400 to 599, got "403"',
    ),
    (
        "http: {statuses: {unavailable: 503.0}}",
        "http.statuses.unavailable: must be an integer from 400 to 599, got 503.0",
    ),
    (
        "http: {statuses: {timeout: true}}",
        "http.statuses.timeout: must be an integer from 400 to 599, got true",
    ),
    # routes: the list, each route, each key, named routes[i].key
    (
        "routes: {path: /upload}",
        f'routes: must be a list of mappings with keys {ROUTE_KEYS}, got {{"path": "/upload"}}',
    ),
    (
        "routes: /upload",
        f'routes: must be a list of mappings with keys {ROUTE_KEYS}, got "/upload"',
    ),
    ("routes: [/upload]", f'routes[0]: must be a mapping with keys {ROUTE_KEYS}, got "/upload"'),
    (
        "routes: [{path: /upload, lists: [spam], method: [POST]}]",
        f"routes[0].method: unknown key (allowed: {ROUTE_KEYS})",
    ),
    ("routes: [{lists: [spam]}]", f"routes[0].path: missing: must be {PATHS}"),
    (
        "routes: [{path: /upload}]",
        "routes[0].lists: missing: must be a non-empty list of list names",
    ),
    ("routes: [~]", f"routes[0].path: missing: must be {PATHS}"),
    (
        f"routes: [{{path: /a, {SPAM}}}, {{path: b, {SPAM}}}]",
        f'routes[1].path: must be {PATHS}, got "b"',
    ),
    (f"routes: [{{path: 5, {SPAM}}}]", f"routes[0].path: must be {PATHS}, got 5"),
    (f"routes: [{{path: '', {SPAM}}}]", f'routes[0].path: must be {PATHS}, got ""'),
    (f"routes: [{{path: 'upload', {SPAM}}}]", f'routes[0].path: must be {PATHS}, got "upload"'),
    (f"routes: [{{path: '*/upload', {SPAM}}}]", f'routes[0].path: must be {PATHS}, got "*/upload"'),
    (
        f"routes: [{{path: '/upload?x=1', {SPAM}}}]",
        f'routes[0].path: must be {PATHS}, got "/upload?x=1"',
    ),
    (
        f"routes: [{{path: '/upload#top', {SPAM}}}]",
        f'routes[0].path: must be {PATHS}, got "/upload#top"',
    ),
    (
        f"routes: [{{path: '/up load', {SPAM}}}]",
        f'routes[0].path: must be {PATHS}, got "/up load"',
    ),
    (
        f'routes: [{{path: "/upload\\n", {SPAM}}}]',
        f'routes[0].path: must be {PATHS}, got "/upload\\n"',
    ),
    (
        "routes: [{path: /upload, lists: spam}]",
        'routes[0].lists: must be a non-empty list of list names, got "spam"',
    ),
    (
        "routes: [{path: /upload, lists: []}]",
        "routes[0].lists: must be a non-empty list of list names, got []",
    ),
    (
        "routes: [{path: /upload, lists: null}]",
        "routes[0].lists: must be a non-empty list of list names, got null",
    ),
    (
        "routes: [{path: /upload, lists: ['sp am']}]",
        f'routes[0].lists: has an invalid list name "sp am": {LIST_NAMES}',
    ),
    (
        "routes: [{path: /upload, lists: [spam, 1]}]",
        f"routes[0].lists: has an invalid list name 1: {LIST_NAMES}",
    ),
    (
        "routes: [{path: /upload, lists: [spam, 'a:b']}]",
        f'routes[0].lists: has an invalid list name "a:b": {LIST_NAMES}',
    ),
    (
        "routes: [{path: /upload, lists: [spam, csam, spam]}]",
        'routes[0].lists: names "spam" twice: name each list once',
    ),
    (
        f"routes: [{{path: /upload, methods: POST, {SPAM}}}]",
        'routes[0].methods: must be a non-empty list of HTTP methods, got "POST"',
    ),
    (
        f"routes: [{{path: /upload, methods: [], {SPAM}}}]",
        "routes[0].methods: must be a non-empty list of HTTP methods, got []",
    ),
    (
        f"routes: [{{path: /upload, methods: null, {SPAM}}}]",
        "routes[0].methods: must be a non-empty list of HTTP methods, got null",
    ),
    (
        f"routes: [{{path: /upload, methods: [POST, 1], {SPAM}}}]",
        'routes[0].methods: must be a non-empty list of HTTP methods, got ["POST", 1]',
    ),
    (
        f"routes: [{{path: /upload, methods: [{{a: 1}}], {SPAM}}}]",
        'routes[0].methods: must be a non-empty list of HTTP methods, got [{"a": 1}]',
    ),
    (
        f"routes: [{{path: /upload, methods: ['GE T'], {SPAM}}}]",
        f'routes[0].methods: has an invalid method "GE T": {TOKENS}',
    ),
    (
        f"routes: [{{path: /upload, methods: [POST, ''], {SPAM}}}]",
        f'routes[0].methods: has an invalid method "": {TOKENS}',
    ),
    # Checked before upper-casing, which would turn the long s into "POST".
    (
        f"routes: [{{path: /upload, methods: [poſt], {SPAM}}}]",
        f'routes[0].methods: has an invalid method "poſt": {TOKENS}',
    ),
    # sections that are not mappings
    (
        "- redis\n- limits",
        f'must be a mapping with keys {TOP_KEYS}, got ["redis", "limits"]',
    ),
    ("just text", f'must be a mapping with keys {TOP_KEYS}, got "just text"'),
    (
        "redis: redis://cache",
        f'redis: must be a mapping with keys {REDIS_KEYS}, got "redis://cache"',
    ),
    ("lists: [spam]", 'lists: must be a mapping of list names, got ["spam"]'),
    ("lists: {spam: 8}", f"lists.spam: must be a mapping with keys {POLICY_KEYS}, got 8"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[row[1].split(":")[0] for row in BAD])
def test_bad_documents(tmp_path: Path, text: str, message: str) -> None:
    error = _error(tmp_path, text)
    assert str(error) == f"{tmp_path / 'guard.yaml'}: {message}"
    assert isinstance(error, GuardError)
    assert error.source == str(tmp_path / "guard.yaml")


def test_error_keeps_the_key_and_reason_apart(tmp_path: Path) -> None:
    error = _error(tmp_path, "lists: {spam: {reject_radius: 20}}")
    assert error.key == "lists.spam.reject_radius"
    assert error.reason == "must be an integer from 0 to 12, got 20"


def test_route_errors_keep_the_key_and_reason_apart(tmp_path: Path) -> None:
    error = _error(tmp_path, "routes: [{path: /a, lists: [a]}, {path: /b, lists: [b, b]}]")
    assert error.key == "routes[1].lists"
    assert error.reason == 'names "b" twice: name each list once'


def test_url_passwords_stay_out_of_errors(tmp_path: Path) -> None:
    error = _error(tmp_path, "redis: {url: 'http://guard:s3cret@cache:6379'}")
    assert "s3cret" not in str(error)
    assert str(error).endswith('got "http://***@cache:6379"')


# (document, a substring of the message): PyYAML words the problem itself.
BAD_YAML = [
    ("redis: {url: [}\n", "invalid YAML at line 1, column 15: expected the node content"),
    ("redis:\n\turl: null\n", "invalid YAML at line 2, column 1: found character '\\t'"),
    ("defaults: {reject_radius: 8\n", "invalid YAML at line 2, column 1: expected ',' or '}'"),
    # safe_load: no Python objects, ever.
    (
        "!!python/object/apply:os.system ['true']\n",
        "invalid YAML at line 1, column 1: could not determine a constructor for the tag",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_YAML, ids=[row[0] for row in BAD_YAML])
def test_invalid_yaml(tmp_path: Path, text: str, message: str) -> None:
    error = _error(tmp_path, text)
    assert str(error).startswith(f"{tmp_path / 'guard.yaml'}: ")
    assert message in str(error)
    assert "\n" not in str(error)
    # Nothing of yaml's traceback is attached: the message says it all.
    assert error.__cause__ is None and error.__suppress_context__


def test_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "guard.yaml"
    path.write_bytes(b"redis: {url: '\xff'}\n")
    with pytest.raises(ConfigError, match=r"guard\.yaml: invalid YAML: .*invalid start byte"):
        load_config(path)


@pytest.mark.parametrize("name", ["missing.yaml", "."], ids=["missing", "directory"])
def test_unreadable_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    reason = "No such file or directory" if name == "missing.yaml" else "Is a directory"
    assert str(caught.value) == f"{path}: cannot read the config file: {reason}"
    assert caught.value.__cause__ is None


# --- the dataclasses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: ListPolicy(reject_radius=13),
            "reject_radius must be an integer from 0 to 12, got 13",
        ),
        (
            lambda: ListPolicy(flag_radius=7),
            "flag_radius must be at least reject_radius (8), got 7",
        ),
        (lambda: ListPolicy(bands=5), "bands must be one of 1, 2, 4, 8, got 5"),
        (lambda: RedisSettings(socket_timeout=-1), "socket_timeout must be a number of seconds"),
        (lambda: RedisSettings(url="tcp://x"), "url must be null or a URL starting redis://"),
        (lambda: Config(lists={"no spaces": DEFAULT_POLICY}), "lists has an invalid list name"),
        (
            lambda: StatusCodes(reject=200),
            "reject must be an integer from 400 to 599, got 200",
        ),
        # From Python as from YAML, a bool is not an integer (True == 1 would pass the range).
        (
            lambda: HttpSettings(max_images=True),
            "max_images must be an integer from 1 to 1000, got true",
        ),
        (
            lambda: HttpSettings(max_images=0),
            "max_images must be an integer from 1 to 1000, got 0",
        ),
        (
            lambda: HttpSettings(body_timeout=0),
            "body_timeout must be a number of seconds > 0 and <= 3600, got 0",
        ),
        (
            lambda: HttpSettings(flag_header="X Guard"),
            "flag_header must be null or a header name (use 1 or more characters",
        ),
        (lambda: Route("upload", ("spam",)), 'path must be a path starting with "/"'),
        # A str is a sequence too: "spam" must not become the lists s, p, a, m.
        (
            lambda: Route("/upload", "spam"),  # type: ignore[arg-type]
            'lists must be a non-empty list of list names, got "spam"',
        ),
        (lambda: Route("/upload", ()), "lists must be a non-empty list of list names, got []"),
        (lambda: Route("/upload", ("spam", "spam")), 'lists names "spam" twice'),
        (lambda: Route("/upload", ("a b",)), 'lists has an invalid list name "a b"'),
        (
            lambda: Route("/upload", ("spam",), frozenset()),
            "methods must be a non-empty list of HTTP methods, got []",
        ),
        (
            lambda: Route("/upload", ("spam",), "POST"),  # type: ignore[arg-type]
            'methods must be a non-empty list of HTTP methods, got "POST"',
        ),
        (
            lambda: Route("/upload", ("spam",), frozenset({"POST", "GET /"})),
            'methods has an invalid method "GET /"',
        ),
    ],
    ids=[
        "reject",
        "flag",
        "bands",
        "timeout",
        "url",
        "list-name",
        "status",
        "max-images-bool",
        "max-images",
        "body-timeout",
        "flag-header",
        "route-path",
        "route-lists-str",
        "route-lists-empty",
        "route-lists-twice",
        "route-list-name",
        "route-methods-empty",
        "route-methods-str",
        "route-method",
    ],
)
def test_dataclasses_check_their_values(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        make()
    assert str(caught.value).startswith(message)


# --- per-field rules, from Python as from YAML --------------------------------------------------

#: Every settings dataclass, with the YAML document that sets one of its keys.
SETTINGS: dict[type, str] = {
    RedisSettings: "redis: {{{key}: {value}}}",
    ListPolicy: "defaults: {{{key}: {value}}}",
    StatusCodes: "http: {{statuses: {{{key}: {value}}}}}",
    HttpSettings: "http: {{{key}: {value}}}",
    ImageLimits: "limits: {{{key}: {value}}}",
}
#: Fields that are neither int, float nor bool, each checked by its own rule or class.
OTHER_FIELDS = {
    "url",
    "embedded_path",
    "flag_header",
    "statuses",
    "allowed_formats",
    "mode",
    "hash_workers",
}


def _fields(annotation: object) -> list[tuple[type, str]]:
    """(class, field name) for every field of every settings dataclass annotated ``annotation``."""
    return [
        (kind, item.name)
        for kind in SETTINGS
        for item in dataclasses.fields(kind)
        if typing.get_type_hints(kind)[item.name] is annotation
    ]


INT_FIELDS = _fields(int)
FLOAT_FIELDS = _fields(float)
BOOL_FIELDS = _fields(bool)


def test_the_field_tables_cover_every_setting() -> None:
    """The introspection finds what it should: a field of a new type fails here, not silently."""
    names = {name for table in (INT_FIELDS, FLOAT_FIELDS, BOOL_FIELDS) for _, name in table}
    every = {item.name for kind in SETTINGS for item in dataclasses.fields(kind)}
    assert every - names == OTHER_FIELDS
    assert len(INT_FIELDS) == 24 and len(FLOAT_FIELDS) == 7 and len(BOOL_FIELDS) == 5
    assert {
        (ListPolicy, "reject_radius"),
        (ListPolicy, "bands"),
        (ImageLimits, "max_frames"),
    } <= set(INT_FIELDS)


def test_every_config_field_declares_its_own_rule() -> None:
    for kind in (RedisSettings, ListPolicy, StatusCodes, HttpSettings):
        for item in dataclasses.fields(kind):
            if item.name != "statuses":  # a nested section: its own fields carry the rules
                assert isinstance(item.metadata.get("rule"), Rule), (kind, item.name)


def _refused(kind: type, key: str, value: object) -> SettingError:
    with pytest.raises(SettingError) as caught:
        kind(**{key: value})
    return caught.value


def _same_from_yaml(
    tmp_path: Path, kind: type, key: str, value: object, error: SettingError
) -> None:
    """The document setting ``key`` to ``value`` is refused in the same words, under its path."""
    text = SETTINGS[kind].format(key=key, value=yaml.safe_dump(value).split("\n")[0])
    refused = _error(tmp_path, text)
    assert refused.reason == error.reason
    assert refused.key is not None and refused.key.endswith(f".{key}")


# True and False are ints to Python (False == 0 passes "from 0 to ..."); 8.0 == 8 passes a range.
@pytest.mark.parametrize("bad", [True, False, "float"], ids=["true", "false", "float"])
@pytest.mark.parametrize(
    ("kind", "key"), INT_FIELDS, ids=[f"{kind.__name__}.{key}" for kind, key in INT_FIELDS]
)
def test_int_settings_refuse_bools_and_floats(
    tmp_path: Path, kind: type, key: str, bad: object
) -> None:
    value = float(getattr(kind(), key)) if bad == "float" else bad
    error = _refused(kind, key, value)
    assert (error.key, error.value, type(error.value)) == (key, value, type(value))
    shown = {True: "true", False: "false"}.get(value, repr(value))  # type: ignore[call-overload]
    assert str(error) == f"{key} must be {error.rule}, got {shown}"
    assert error.rule.startswith(("an integer", "one of "))
    _same_from_yaml(tmp_path, kind, key, value, error)


@pytest.mark.parametrize("bad", [True, "1", None], ids=["true", "string", "null"])
@pytest.mark.parametrize(
    ("kind", "key"), FLOAT_FIELDS, ids=[f"{kind.__name__}.{key}" for kind, key in FLOAT_FIELDS]
)
def test_seconds_refuse_bools_and_strings(
    tmp_path: Path, kind: type, key: str, bad: object
) -> None:
    error = _refused(kind, key, bad)
    assert (error.key, error.value) == (key, bad)
    assert error.rule.startswith(("a number of seconds > 0 and <= ", "a number from 0 to 1"))
    _same_from_yaml(tmp_path, kind, key, bad, error)


@pytest.mark.parametrize("bad", [1, 0, None], ids=["one", "zero", "null"])
@pytest.mark.parametrize(
    ("kind", "key"), BOOL_FIELDS, ids=[f"{kind.__name__}.{key}" for kind, key in BOOL_FIELDS]
)
def test_flags_refuse_anything_but_true_and_false(
    tmp_path: Path, kind: type, key: str, bad: object
) -> None:
    error = _refused(kind, key, bad)
    assert str(error) == f"{key} must be true or false, got {yaml.safe_dump(bad).split()[0]}"
    _same_from_yaml(tmp_path, kind, key, bad, error)


@pytest.mark.parametrize(
    ("kind", "key"), INT_FIELDS, ids=[f"{kind.__name__}.{key}" for kind, key in INT_FIELDS]
)
def test_int_settings_take_their_defaults_as_ints(kind: type, key: str) -> None:
    value = getattr(kind(), key)
    assert type(value) is int and getattr(kind(**{key: value}), key) == value


def test_a_rule_belongs_to_its_class_not_to_its_field_name() -> None:
    """A new field named like another class's (StatusCodes.reject: 400 to 599) has its own rule."""

    @dataclasses.dataclass(frozen=True)
    class Votes:
        reject: int = setting(5, _ints(0, 10))

        def __post_init__(self) -> None:
            _check(self)

    assert Votes(reject=7).reject == 7
    with pytest.raises(SettingError, match=r"^reject must be an integer from 0 to 10, got 11$"):
        Votes(reject=11)
    with pytest.raises(SettingError, match=r"^reject must be an integer from 400 to 599, got 7$"):
        StatusCodes(reject=7)


# --- structured errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "key", "rule", "value"),
    [
        (lambda: ListPolicy(reject_radius=13), "reject_radius", "an integer from 0 to 12", 13),
        (lambda: ListPolicy(flag_radius=7), "flag_radius", "at least reject_radius (8)", 7),
        (lambda: ListPolicy(bands=1), "flag_radius", "at most 2 with bands=1", 12),
        (
            lambda: RedisSettings(breaker_cooldown=10, breaker_max_cooldown=5),
            "breaker_max_cooldown",
            "at least breaker_cooldown (10)",
            5,
        ),
        (lambda: ImageLimits(max_frames=0), "max_frames", "at least 1", 0),
        (lambda: ImageLimits(max_frames=True), "max_frames", "an integer", True),
        (
            lambda: ImageLimits(max_image_pixels=100, max_animation_pixels=99),
            "max_animation_pixels",
            "at least max_image_pixels (100)",
            99,
        ),
        (
            lambda: ImageLimits(allowed_formats=frozenset({"EPS"})),
            "allowed_formats",
            FORMATS,
            frozenset({"EPS"}),
        ),
        (lambda: Route("/upload", ("a b",)), "lists", LIST_NAMES, "a b"),
        (lambda: Route("upload", ("spam",)), "path", PATHS, "upload"),
        (lambda: Route("/a/**/b/**", ("spam",)), "path", "** at most once", "/a/**/b/**"),
        (lambda: Route("/upload", ("spam",), frozenset({"GE T"})), "methods", TOKENS, "GE T"),
        (lambda: Config(lists={"a b": DEFAULT_POLICY}), "lists", LIST_NAMES, "a b"),
    ],
    ids=[
        "range",
        "flag-below-reject",
        "probes",
        "breaker",
        "limits",
        "limits-bool",
        "animation",
        "formats",
        "route-list",
        "route-path",
        "route-double-star",
        "route-method",
        "config-list",
    ],
)
def test_setting_errors_carry_key_rule_and_value(
    make: Callable[[], object], key: str, rule: str, value: object
) -> None:
    with pytest.raises(SettingError) as caught:
        make()
    error = caught.value
    assert (error.key, error.rule, error.value) == (key, rule, value)
    assert str(error) == f"{key} {error.reason}"
    assert isinstance(error, ValueError) and isinstance(error, GuardError)


def test_the_loader_names_the_key_from_the_error_not_its_text(tmp_path: Path) -> None:
    """ImageLimits' and Route's errors reach the file's author under their dotted path."""
    limits = _error(tmp_path, "limits: {max_frames: 0}")
    assert (limits.key, limits.reason) == ("limits.max_frames", "must be at least 1, got 0")
    route = _error(tmp_path, "routes: [{path: /a, lists: [a]}, {path: '/a/**/**', lists: [b]}]")
    assert (route.key, route.reason) == (
        "routes[1].path",
        'may use ** at most once, got "/a/**/**"',
    )


def test_config_is_frozen_and_owns_its_lists() -> None:
    spam = ListPolicy(reject_radius=4)
    given = {"spam": spam}
    config = Config(lists=given)
    given["other"] = DEFAULT_POLICY
    assert list(config.lists) == ["spam"]
    with pytest.raises(TypeError):
        config.lists["other"] = DEFAULT_POLICY  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.defaults = spam  # type: ignore[misc]
    assert hash(config) == hash(Config(lists={"spam": spam}))
    assert config == Config(lists={"spam": spam}) != Config()


def test_policy_falls_back_to_defaults() -> None:
    spam = ListPolicy(reject_radius=4)
    config = Config(defaults=ListPolicy(bands=8), lists={"spam": spam})
    assert config.policy("spam") is spam
    assert config.policy("other") == ListPolicy(bands=8)


def test_fail_open_is_per_list() -> None:
    config = Config(
        defaults=ListPolicy(fail_open=True), lists={"spam": ListPolicy(), "csam": ListPolicy()}
    )
    assert [config.policy(n).fail_open for n in ("spam", "csam", "x")] == [False, False, True]
    config = Config(lists={"spam": ListPolicy(fail_open=True)})
    assert [config.policy(n).fail_open for n in ("spam", "csam", "x")] == [True, False, False]


def test_http_settings_are_frozen_and_hashable() -> None:
    http = HttpSettings(flag_header=None, statuses=StatusCodes(reject=422))
    assert http.flag_header is None
    assert http == HttpSettings(flag_header=None, statuses=StatusCodes(reject=422)) != DEFAULT_HTTP
    assert hash(http) == hash(HttpSettings(flag_header=None, statuses=StatusCodes(reject=422)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        http.statuses.reject = 200  # type: ignore[misc]
    # Every status is its own setting: changing one leaves the others alone.
    statuses = StatusCodes(undecodable=400, unavailable=599)
    assert dataclasses.astuple(statuses) == (403, 413, 415, 400, 400, 408, 599)


def test_route_owns_normalized_copies() -> None:
    lists = ["spam", "csam"]
    methods = {"post", "Put"}
    route = Route("/upload", lists, methods)  # type: ignore[arg-type]
    lists.append("other")
    methods.add("GET")
    assert route.lists == ("spam", "csam")
    assert route.methods == frozenset({"POST", "PUT"})
    assert route == Route("/upload", ("spam", "csam"), frozenset({"POST", "PUT"}))
    assert hash(route) == hash(Route("/upload", ("spam", "csam"), frozenset({"PUT", "POST"})))
    assert Route("/upload", ("spam",)).methods == frozenset({"POST", "PUT", "PATCH"})
    routes = [route]
    config = Config(routes=routes)  # type: ignore[arg-type]
    routes.clear()
    assert config.routes == (route,)
    assert hash(config) == hash(Config(routes=(route,)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        route.path = "/other"  # type: ignore[misc]


# (route path, the route's methods, request method, request path, matches?)
POST = frozenset({"POST"})
MATCHING = [
    # exact: the whole path, case included; a trailing slash is ignored on either side
    ("/upload", POST, "POST", "/upload", True),
    ("/upload", POST, "POST", "/upload/", True),
    ("/upload/", POST, "POST", "/upload", True),
    ("/upload/", POST, "POST", "/upload/", True),
    ("/upload", POST, "POST", "/Upload", False),
    ("/upload", POST, "POST", "/uploads", False),
    ("/upload", POST, "POST", "/upload/x", False),
    ("/upload", POST, "POST", "/v1/upload", False),
    ("/upload", POST, "POST", "", False),
    ("/", POST, "POST", "/", True),
    ("/", POST, "POST", "/upload", False),
    # Regex characters are literal, "?"-free paths aside.
    ("/a.b", POST, "POST", "/a.b", True),
    ("/a.b", POST, "POST", "/aXb", False),
    ("/a+(b)[c]$", POST, "POST", "/a+(b)[c]$", True),
    ("/a+(b)[c]$", POST, "POST", "/aa(b)c", False),
    # "*": any run (even empty) without "/"
    ("/images/*", POST, "POST", "/images/cat.png", True),
    ("/images/*", POST, "POST", "/images/", True),
    ("/images/*", POST, "POST", "/images", True),  # as /images/, "*" empty
    ("/images/*", POST, "POST", "/images/a/b", False),
    ("/images/*", POST, "POST", "/images/a/", True),
    ("/images/*", POST, "POST", "/images/a\nb", True),
    ("/images/*/raw", POST, "POST", "/images/a/raw", True),
    ("/images/*/raw", POST, "POST", "/images/a/b/raw", False),
    ("/images/*/raw", POST, "POST", "/images/a/raw/", True),
    ("/u/*.png", POST, "POST", "/u/cat.png", True),
    ("/u/*.png", POST, "POST", "/u/cat.jpg", False),
    ("/u/*.png", POST, "POST", "/u/a/cat.png", False),
    ("/*", POST, "POST", "/upload", True),
    ("/*", POST, "POST", "/v1/upload", False),
    # "**": any run (even empty) including "/"
    ("/images/**", POST, "POST", "/images/a/b/c.png", True),
    ("/images/**", POST, "POST", "/images/", True),
    ("/images/**", POST, "POST", "/images/a/", True),
    ("/images/**", POST, "POST", "/images", True),  # as /images/
    ("/images/**", POST, "POST", "/imagesX/a", False),
    # A decoded path can hold a newline (%0A): "**" must not stop at it.
    ("/images/**", POST, "POST", "/images/a\n/b", True),
    ("/**", POST, "POST", "/", True),
    ("/**", POST, "POST", "/any/thing/at/all", True),
    ("/api/**/upload", POST, "POST", "/api/v1/x/upload", True),
    ("/api/**/upload", POST, "POST", "/api//upload", True),
    ("/api/**/upload", POST, "POST", "/api/upload", False),
    ("/api/**/upload", POST, "POST", "/api/v1/upload/x", False),
    ("/**.png", POST, "POST", "/a/b/c.png", True),
    ("/**.png", POST, "POST", "/a/b/c.png/x", False),
    # methods: compared upper-cased (uvicorn passes "post" through; Django and Quart route it)
    ("/upload", POST, "GET", "/upload", False),
    ("/upload", POST, "post", "/upload", True),
    ("/upload", frozenset({"post"}), "POST", "/upload", True),
    ("/upload", frozenset({"POST", "PUT"}), "PUT", "/upload", True),
    ("/upload", frozenset({"POST", "PUT"}), "PATCH", "/upload", False),
    ("/images/**", POST, "GET", "/images/a", False),
]


@pytest.mark.parametrize(
    ("pattern", "methods", "method", "path", "expected"),
    MATCHING,
    ids=[f"{row[0]}-{row[2]}-{row[3]!r}" for row in MATCHING],
)
def test_route_matching(
    pattern: str, methods: frozenset[str], method: str, path: str, expected: bool
) -> None:
    route = Route(pattern, ("spam",), methods)
    assert route.matches(method, path) is expected
    assert Config(routes=(route,)).route_for(method, path) == (route if expected else None)


@pytest.mark.parametrize(
    ("method", "expected"),
    [("POST", True), ("PUT", True), ("PATCH", True), ("GET", False), ("DELETE", False)],
)
def test_route_default_methods(method: str, expected: bool) -> None:
    assert Route("/upload", ("spam",)).matches(method, "/upload") is expected


def test_first_matching_route_wins_in_file_order(tmp_path: Path) -> None:
    config = load_config(
        _write(
            tmp_path,
            "routes:\n"
            "  - {path: /images/special, lists: [a]}\n"
            "  - {path: '/images/*', lists: [b]}\n"
            "  - {path: '/images/*', methods: [GET], lists: [c]}\n"
            "  - {path: '/**', lists: [d]}\n",
        )
    )
    found = {
        (method, path): route.lists[0] if route is not None else None
        for method, path in [
            ("POST", "/images/special"),
            ("POST", "/images/other"),
            ("GET", "/images/special"),
            ("GET", "/elsewhere"),
            ("POST", "/elsewhere"),
            ("POST", "/images/special/x"),
        ]
        for route in [config.route_for(method, path)]
    }
    assert found == {
        ("POST", "/images/special"): "a",
        ("POST", "/images/other"): "b",
        ("GET", "/images/special"): "c",
        ("GET", "/elsewhere"): None,
        ("POST", "/elsewhere"): "d",
        ("POST", "/images/special/x"): "d",
    }
    # The same routes the other way round: the catch-all now shadows the rest.
    reversed_config = Config(routes=config.routes[::-1])
    assert reversed_config.route_for("POST", "/images/special") == config.routes[3]
    assert reversed_config.route_for("GET", "/images/special") == config.routes[2]


def test_new_settings_are_exported() -> None:
    assert {"HttpSettings", "Route", "StatusCodes"} <= set(guard.__all__)
    assert (guard.HttpSettings, guard.Route, guard.StatusCodes) == (
        HttpSettings,
        Route,
        StatusCodes,
    )
    assert guard.__all__ == sorted(
        guard.__all__, key=lambda name: (not name.isupper(), name[0].islower(), name)
    )


# --- the Redis URL: CLI, then environment, then file -------------------------------------------

FILE_URL = "redis://file:6379/0"
ENV_URL = "redis://env:6379/0"
CLI_URL = "rediss://cli:6380/0"


@pytest.mark.parametrize(
    ("cli", "env", "file", "expected"),
    [
        (CLI_URL, ENV_URL, FILE_URL, CLI_URL),
        (None, ENV_URL, FILE_URL, ENV_URL),
        (None, None, FILE_URL, FILE_URL),
        (None, None, None, None),  # the embedded Redis
        (CLI_URL, None, None, CLI_URL),
        (None, ENV_URL, None, ENV_URL),
        (None, "", FILE_URL, FILE_URL),  # an empty variable counts as unset
        ("", ENV_URL, FILE_URL, ENV_URL),
    ],
)
def test_redis_url_precedence(
    monkeypatch: pytest.MonkeyPatch,
    cli: str | None,
    env: str | None,
    file: str | None,
    expected: str | None,
) -> None:
    if env is None:
        monkeypatch.delenv(ENV_REDIS_URL, raising=False)
    else:
        monkeypatch.setenv(ENV_REDIS_URL, env)
    config = Config(redis=RedisSettings(url=file))
    assert resolve_redis_url(config, cli) == expected


@pytest.mark.parametrize(
    ("cli", "env", "key"),
    [
        (None, "localhost:6379", "GUARD_REDIS_URL"),
        ("localhost:6379", ENV_URL, "command-line Redis URL"),
    ],
)
def test_redis_url_overrides_are_checked(
    monkeypatch: pytest.MonkeyPatch, cli: str | None, env: str, key: str
) -> None:
    monkeypatch.setenv(ENV_REDIS_URL, env)
    with pytest.raises(ConfigError) as caught:
        resolve_redis_url(DEFAULT_CONFIG, cli)
    assert str(caught.value) == (
        f"{key}: must be a URL starting redis://, rediss://, unix://, redis+cluster:// or "
        'rediss+cluster://, got "localhost:6379"'
    )


def test_a_route_may_use_double_star_once() -> None:
    """Two ** would make matching quadratic in the (client-controlled) request path."""
    assert Route(path="/api/**/upload", lists=("spam",)).matches("POST", "/api/v1/x/upload")
    with pytest.raises(ValueError, match=r"path may use \*\* at most once"):
        Route(path="/**/a/**/b", lists=("spam",))


# --- shadow mode and gradual rollout --------------------------------------------------------


def test_mode_and_enforce_ratio_default_to_enforcing_everything() -> None:
    assert (DEFAULT_POLICY.mode, DEFAULT_POLICY.enforce_ratio) == ("enforce", 1.0)


@pytest.mark.parametrize(
    ("mode", "ratio"), [("enforce", 0.3), ("shadow", 1.0), ("shadow", 0), ("enforce", 1)]
)
def test_mode_and_ratio_from_python_and_yaml(tmp_path: Path, mode: str, ratio: float) -> None:
    policy = ListPolicy(mode=mode, enforce_ratio=ratio)  # type: ignore[arg-type]
    assert (policy.mode, policy.enforce_ratio) == (mode, ratio)
    path = tmp_path / "guard.yaml"
    path.write_text(f"lists: {{spam: {{mode: {mode}, enforce_ratio: {ratio}}}}}\n")
    loaded = load_config(path).policy("spam")
    assert loaded == policy
    assert type(loaded.enforce_ratio) is float  # YAML's 1 is read as 1.0


def test_a_list_inherits_mode_and_ratio_from_the_files_defaults(tmp_path: Path) -> None:
    path = tmp_path / "guard.yaml"
    path.write_text(
        "defaults: {mode: shadow, enforce_ratio: 0.25}\nlists: {spam: {}, ham: {mode: enforce}}\n"
    )
    config = load_config(path)
    assert (config.policy("spam").mode, config.policy("spam").enforce_ratio) == ("shadow", 0.25)
    assert (config.policy("ham").mode, config.policy("ham").enforce_ratio) == ("enforce", 0.25)


MODES_RULE = '"enforce" or "shadow"'


@pytest.mark.parametrize(
    ("yaml_value", "python_value", "shown"),
    [
        ("dry-run", "dry-run", '"dry-run"'),
        ("Shadow", "Shadow", '"Shadow"'),  # no case folding: one spelling in every file
        ("true", True, "true"),
        ("1", 1, "1"),
        ("null", None, "null"),
        ("[shadow]", ["shadow"], '["shadow"]'),
    ],
)
def test_mode_must_be_enforce_or_shadow(
    tmp_path: Path, yaml_value: str, python_value: object, shown: str
) -> None:
    error = _refused(ListPolicy, "mode", python_value)
    assert (error.key, error.rule) == ("mode", MODES_RULE)
    assert str(error) == f"mode must be {MODES_RULE}, got {shown}"
    refused = _error(tmp_path, f"lists: {{spam: {{mode: {yaml_value}}}}}")
    assert refused.key == "lists.spam.mode"
    assert refused.reason == f"must be {MODES_RULE}, got {shown}"


@pytest.mark.parametrize(
    ("yaml_value", "python_value", "shown"),
    [
        ("true", True, "true"),  # a bool is no share, though True == 1 to Python
        ("false", False, "false"),
        ("1.5", 1.5, "1.5"),
        ("-0.1", -0.1, "-0.1"),
        ('"0.5"', "0.5", '"0.5"'),
        (".nan", float("nan"), "nan"),
        ("null", None, "null"),
    ],
)
def test_enforce_ratio_must_be_a_number_from_0_to_1(
    tmp_path: Path, yaml_value: str, python_value: object, shown: str
) -> None:
    error = _refused(ListPolicy, "enforce_ratio", python_value)
    assert (error.key, error.rule) == ("enforce_ratio", "a number from 0 to 1")
    refused = _error(tmp_path, f"defaults: {{enforce_ratio: {yaml_value}}}")
    assert refused.key == "defaults.enforce_ratio"
    assert refused.reason.startswith("must be a number from 0 to 1, got ")
    if shown != "nan":
        assert refused.reason == f"must be a number from 0 to 1, got {shown}"


@pytest.mark.parametrize(("cpus", "expected"), [(1, 1), (2, 2), (3, 3), (4, 4), (64, 4)])
def test_hash_workers_default_to_the_usable_cpus_at_most_four(
    monkeypatch: pytest.MonkeyPatch, cpus: int, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert default_hash_workers() == expected


@pytest.mark.parametrize(("cpus", "expected"), [(None, 1), (1, 1), (16, 4)])
def test_hash_workers_default_without_an_affinity_mask(
    monkeypatch: pytest.MonkeyPatch, cpus: int | None, expected: int
) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert default_hash_workers() == expected
