"""Configuration: the defaults, every kind of bad document, the shipped file, URL precedence."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from guard import Config, ConfigError, GuardError, ImageLimits, ListPolicy, load_config
from guard.config import (
    DEFAULT_CONFIG,
    DEFAULT_POLICY,
    ENV_REDIS_URL,
    RedisSettings,
    resolve_redis_url,
)

SHIPPED = Path(__file__).resolve().parents[1] / "config" / "guard.yaml"
POLICY_KEYS = "bands, confirm_radius, dihedral, flag_radius, reject_radius"
REDIS_KEYS = "connect_timeout, embedded_path, socket_timeout, url"
LIMIT_KEYS = "allowed_formats, max_animation_pixels, max_frames, max_image_pixels"
URLS = "a URL starting redis://, rediss:// or unix://"
FORMATS = "a non-empty subset of ['BMP', 'GIF', 'JPEG', 'PNG', 'TIFF', 'WEBP']"


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
        url=None, embedded_path=".guard/redis.db", socket_timeout=0.5, connect_timeout=0.5
    )
    assert config.defaults == ListPolicy(
        reject_radius=8, flag_radius=10, confirm_radius=12, dihedral=True, bands=4
    )
    assert dict(config.lists) == {}
    assert config.limits == ImageLimits(
        max_image_pixels=50_000_000,
        max_frames=8,
        max_animation_pixels=200_000_000,
        allowed_formats=frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP"}),
    )


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "# only a comment\n", "---\n", "redis:\ndefaults:\nlists:\nlimits:\n"],
    ids=["empty", "blank-lines", "comment", "empty-document", "null-sections"],
)
def test_empty_documents_give_the_defaults(tmp_path: Path, text: str) -> None:
    assert load_config(_write(tmp_path, text)) == DEFAULT_CONFIG


# --- the shipped file --------------------------------------------------------------------------


def test_shipped_file_is_the_defaults_plus_spam() -> None:
    config = load_config(SHIPPED)
    assert config == dataclasses.replace(DEFAULT_CONFIG, lists={"spam": DEFAULT_POLICY})
    assert config.policy("spam") == config.defaults


def test_shipped_file_documents_every_key() -> None:
    document = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    assert list(document) == ["redis", "defaults", "lists", "limits"]
    for section, kind in (
        ("redis", RedisSettings),
        ("defaults", ListPolicy),
        ("limits", ImageLimits),
    ):
        assert sorted(document[section]) == sorted(f.name for f in dataclasses.fields(kind))
    assert document["lists"] == {"spam": {}}


# --- good documents ----------------------------------------------------------------------------

GOOD = [
    ("redis: {url: 'redis://cache:6379/2'}", lambda c: c.redis.url, "redis://cache:6379/2"),
    ("redis: {url: 'unix:///run/redis.sock'}", lambda c: c.redis.url, "unix:///run/redis.sock"),
    ("redis: {url: null}", lambda c: c.redis.url, None),
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
    ("defaults: {bands: 1}", lambda c: c.defaults.bands, 1),
    # A list overrides the file's defaults, not only the built-in ones.
    (
        "defaults: {confirm_radius: 14}\nlists: {spam: {reject_radius: 6, bands: 2}}",
        lambda c: c.policy("spam"),
        ListPolicy(reject_radius=6, confirm_radius=14, bands=2),
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
    ("colour: red", "colour: unknown key (allowed: defaults, limits, lists, redis)"),
    (
        "redis: {timeout: 1}",
        "redis.timeout: unknown key (allowed: connect_timeout, embedded_path, socket_timeout, url)",
    ),
    ("defaults: {radius: 8}", f"defaults.radius: unknown key (allowed: {POLICY_KEYS})"),
    ("lists: {spam: {reject: 8}}", f"lists.spam.reject: unknown key (allowed: {POLICY_KEYS})"),
    (
        "limits: {max_pixels: 5}",
        f"limits.max_pixels: unknown key (allowed: {LIMIT_KEYS})",
    ),
    ("1: x", "1: unknown key (allowed: defaults, limits, lists, redis)"),
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
        "redis.url: must be null or a URL starting redis://, rediss:// or unix://, got 6379",
    ),
    ("redis: {embedded_path: null}", "redis.embedded_path: must be a non-empty path, got null"),
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
    ("redis: {embedded_path: ''}", 'redis.embedded_path: must be a non-empty path, got ""'),
    # flag below reject, given or inherited from defaults
    (
        "defaults: {reject_radius: 8, flag_radius: 6}",
        "defaults.flag_radius: must be at least reject_radius (8), got 6",
    ),
    (
        "lists: {spam: {reject_radius: 11}}",
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
    # sections that are not mappings
    (
        "- redis\n- limits",
        'must be a mapping with keys defaults, limits, lists, redis, got ["redis", "limits"]',
    ),
    ("just text", 'must be a mapping with keys defaults, limits, lists, redis, got "just text"'),
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
    ],
    ids=["reject", "flag", "bands", "timeout", "url", "list-name"],
)
def test_dataclasses_check_their_values(make: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError) as caught:
        make()
    assert str(caught.value).startswith(message)


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
        f'{key}: must be a URL starting redis://, rediss:// or unix://, got "localhost:6379"'
    )
