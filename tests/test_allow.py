"""Allow-lists: an allow entry suppresses a list's match when the upload is strictly nearer to it
than to the listed entry (guard.verdict.suppresses), checked before any reject, recorded as
"allowed"; stored as a companion list (guard.store.allow). On a real Redis server.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from asgi_driver import Recorder, Result, call, multipart
from conftest import encode, photo, run
from PIL import ImageEnhance

from guard import hash_bytes
from guard.cli import main
from guard.config import Config, ListPolicy, Route
from guard.errors import StoreUnavailable, UnknownList
from guard.hashing import TRANSFORMS, FrameHash, phash_of_coefficients
from guard.middleware import Decision, GuardMiddleware
from guard.observers import Observer
from guard.spelling import hamming
from guard.store import ListExists, Store, writes
from guard.store.allow import allow_list, owner_of
from guard.types import DecisionRecord, Entry, Match
from guard.verdict import decide, suppresses

#: The listed photo; an innocent look-alike is a crop of it (a few aHash bits away).
LISTED = "photos/thorn-image8.jpg"
POLICY = ListPolicy()


def listed_png() -> bytes:
    return encode(photo(LISTED), "PNG")


def lookalike_png() -> bytes:
    """A crop of the listed photo: within its reject radius, confirmed, but not the same."""
    image = photo(LISTED)
    width, height = image.size
    return encode(image.crop((int(width * 0.05), 0, width, int(height * 0.95))), "PNG")


def entry_of(data: bytes, source: str, *, ahash_bits: int = 0, phash_bits: int = 0) -> Entry:
    """An entry for an image's hashes, optionally with low bits flipped (a controlled distance)."""
    hashes = hash_bytes(data)
    return Entry(
        hashes.ahash ^ ((1 << ahash_bits) - 1), hashes.phash ^ ((1 << phash_bits) - 1), source
    )


class Heard(Observer):
    """A test observer: every decision record it is told of."""

    def __init__(self) -> None:
        self.records: list[DecisionRecord] = []

    def decided(self, record: DecisionRecord) -> None:
        self.records.append(record)


def make_config(**spam: Any) -> Config:
    routes = (Route(path="/upload", lists=("spam",), methods=frozenset({"POST"})),)
    return Config(lists={"spam": ListPolicy(**spam)}, routes=routes)


def guarded(
    redis_url: str, store: Store | None = None, **spam: Any
) -> tuple[GuardMiddleware, Recorder, Heard]:
    app, heard = Recorder(), Heard()
    guard = GuardMiddleware(
        app,
        config=make_config(**spam),
        store=store or Store.from_url(redis_url),
        observers=[heard],
    )
    return guard, app, heard


def upload(guard: GuardMiddleware, data: bytes) -> Result:
    return run(call(guard, multipart(("u.png", data))))


async def load(redis_url: str, listed: Sequence[Entry], allowed: Sequence[Entry] = ()) -> None:
    async with Store.from_url(redis_url) as store:
        await store.add("spam", listed)
        if allowed:
            await store.allow("spam", allowed)


# --- the rule (pure) -------------------------------------------------------------------------


def match(distance: int, phash_distance: int | None, *, list_name: str = "spam") -> Match:
    return Match(
        list=list_name,
        entry=Entry(distance, phash_distance, f"d{distance}p{phash_distance}"),
        distance=distance,
        phash_distance=phash_distance,
        confirmed=phash_distance is not None and phash_distance <= POLICY.confirm_radius,
        transform="identity",
        frame=0,
    )


@pytest.mark.parametrize(
    ("allow", "listed", "suppressed"),
    [
        ((0, 0), (3, 4), True),  # the upload is the allowed image
        ((2, 9), (3, 0), True),  # nearer by aHash decides first
        ((3, 3), (3, 4), True),  # same aHash distance: the pHash decides
        ((3, 4), (3, 4), False),  # as near: not strictly nearer
        ((3, 5), (3, 4), False),
        ((4, 0), (3, 12), False),  # the listed entry is nearer
        ((0, 0), (0, 0), False),  # the listed image itself
        ((9, 0), (10, 0), False),  # the allow entry is outside the reject radius (8)
        ((1, 13), (3, 4), False),  # the allow entry is not confirmed (pHash over 12)
        ((2, 0), (3, None), True),  # a listed entry without a pHash: aHash distance alone
        ((2, 0), (2, None), False),
        ((2, 0), (1, None), False),
    ],
)
def test_the_rule(allow: tuple[int, int], listed: tuple[int, int | None], suppressed: bool) -> None:
    assert suppresses(match(*allow), match(*listed), POLICY) is suppressed


def test_only_the_suppressed_matches_of_a_list_count_for_nothing() -> None:
    nearest, far, unconfirmable = match(3, 4), match(6, 2), match(1, None)
    allow = match(2, 0)

    def policy(name: str) -> ListPolicy:
        return POLICY

    verdict = decide([nearest, far], policy, {("spam", 0): allow})
    assert (verdict.action, [s.match for s in verdict.allowed]) == ("allow", [nearest])
    assert verdict.allowed[0].allowed_by == allow
    # An entry without a pHash nearer than the allow entry still flags.
    verdict = decide([nearest, unconfirmable], policy, {("spam", 0): allow})
    assert (verdict.action, verdict.match) == ("flag", unconfirmable)
    assert [s.match for s in verdict.allowed] == [nearest]
    # Another list's allow entry suppresses nothing here.
    assert decide([nearest], policy, {("other", 0): allow}).action == "reject"
    # Nor one near another frame of the upload (another image, another animation frame).
    assert decide([nearest], policy, {("spam", 1): allow}).action == "reject"
    # A shadow list's match is suppressed the same way.
    shadow = dataclasses.replace(POLICY, mode="shadow")
    verdict = decide([nearest], lambda name: shadow, {("spam", 0): allow})
    assert (verdict.action, len(verdict.allowed)) == ("allow", 1)
    assert decide([nearest], lambda name: shadow).action == "shadow-reject"


# --- the middleware --------------------------------------------------------------------------


def test_an_allowed_lookalike_passes_in_enforce_and_the_suppression_is_recorded(
    redis_url: str,
) -> None:
    run(load(redis_url, [entry_of(listed_png(), "banned.jpg")]))
    guard, app, heard = guarded(redis_url)
    lookalike = lookalike_png()

    assert upload(guard, lookalike).status == 403  # an innocent image, but it collides
    run(load(redis_url, [], [entry_of(lookalike, "approved.jpg")]))
    heard.records.clear()
    result = upload(guard, lookalike)
    assert result.status == 200 and app.calls == 1
    assert app.states == [Decision("allow", images=1)]
    [record] = heard.records
    assert (record.action, record.list, record.source, record.allowed_by) == (
        "allowed",
        "spam",
        "banned.jpg",
        "approved.jpg",
    )
    hashes = hash_bytes(lookalike), hash_bytes(listed_png())
    assert record.distance == hamming(hashes[0].ahash, hashes[1].ahash) > 0
    assert record.request_id == app.states[0].request_id

    # The listed image itself is nearer to its own entry: still rejected, nothing allowed.
    heard.records.clear()
    assert upload(guard, listed_png()).status == 403
    assert [r.action for r in heard.records] == ["reject"]

    # The allow entry taken back: rejected again at the very next request.
    async def take_back() -> int:
        async with Store.from_url(redis_url) as store:
            return await store.remove_allowed("spam", hashes[0].ahash)

    assert run(take_back()) == 1
    assert upload(guard, lookalike).status == 403


def test_the_allowed_record_reaches_the_log_and_the_decision_stream(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    lookalike = lookalike_png()
    run(load(redis_url, [entry_of(listed_png(), "banned.jpg")], [entry_of(lookalike, "ok.jpg")]))
    guard, app, _ = guarded(redis_url)
    with caplog.at_level(logging.INFO, logger="guard"):
        assert upload(guard, lookalike).status == 200
    run(guard.aclose())  # the stream's last records are written
    [logged] = [r for r in caplog.records if hasattr(r, "guard")]
    assert logged.levelno == logging.INFO
    assert (logged.guard["action"], logged.guard["source"], logged.guard["allowed_by"]) == (
        "allowed",
        "banned.jpg",
        "ok.jpg",
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        stream = [fields for _, fields in client.xrange(guard.config.operations.events_stream)]
    finally:
        client.close()
    assert [(f["action"], f["list"], f["source"], f["allowed_by"]) for f in stream] == [
        ("allowed", "spam", "banned.jpg", "ok.jpg")
    ]
    assert stream[0]["request_id"] == app.states[0].request_id


def test_a_second_listed_entry_that_is_not_suppressed_still_acts(redis_url: str) -> None:
    lookalike = lookalike_png()
    # The allow entry is 2 aHash bits from the upload; the listed photo 3 or more.
    run(
        load(
            redis_url,
            [entry_of(listed_png(), "banned.jpg")],
            [entry_of(lookalike, "approved.jpg", ahash_bits=2)],
        )
    )
    guard, app, heard = guarded(redis_url)
    assert upload(guard, lookalike).status == 200

    # An entry without a pHash 1 bit away (the middleware's best match is still the confirmed
    # one, which is suppressed): it flags, as guard check would say.
    async def unconfirmable() -> None:
        async with Store.from_url(redis_url) as store:
            listed = entry_of(lookalike, "imported", ahash_bits=1)
            await store.add("spam", [dataclasses.replace(listed, phash=None)])

    run(unconfirmable())
    heard.records.clear()
    result = upload(guard, lookalike)
    assert result.status == 200 and result.headers["x-guard-verdict"] == "flag"
    assert app.states[-1] == Decision("flag", images=1, list="spam", distance=1, source="imported")
    assert sorted(r.action for r in heard.records) == ["allowed", "flag"]

    # A confirmed entry nearer than the allow entry rejects.
    run(load(redis_url, [entry_of(lookalike, "near copy", ahash_bits=1, phash_bits=1)]))
    heard.records.clear()
    assert upload(guard, lookalike).status == 403
    assert [(r.action, r.source) for r in heard.records] == [("reject", "near copy")]


def test_an_allowed_image_lets_no_other_image_of_the_request_through(redis_url: str) -> None:
    lookalike = lookalike_png()
    brighter = encode(ImageEnhance.Brightness(photo(LISTED)).enhance(1.3), "PNG")
    listed, copy = hash_bytes(listed_png()), hash_bytes(brighter)
    # A copy of the listed photo, farther from its entry than the allowed image is from its
    # own allow entry (0, 0): judged together, the allow entry would be "nearer".
    assert (hamming(listed.ahash, copy.ahash), hamming(listed.phash, copy.phash)) > (0, 0)
    assert hamming(listed.ahash, copy.ahash) < hamming(listed.ahash, hash_bytes(lookalike).ahash)
    run(load(redis_url, [entry_of(listed_png(), "banned.jpg")], [entry_of(lookalike, "ok.jpg")]))
    guard, app, heard = guarded(redis_url)

    both = run(call(guard, multipart(("a.png", lookalike), ("b.png", brighter))))
    assert both.status == 403 and app.calls == 0
    assert ("reject", "banned.jpg") in [(r.action, r.source) for r in heard.records]
    heard.records.clear()
    twice = run(call(guard, multipart(("a.png", lookalike), ("b.png", lookalike))))
    assert twice.status == 200
    assert app.states == [Decision("allow", images=2)]
    assert [r.action for r in heard.records] == ["allowed"]


class AllowListDown(Store):
    """A store whose allow-list lookups fail as an unreachable Redis does."""

    async def lookup_allowed(self, *args: Any, **kwargs: Any) -> Match | None:
        raise StoreUnavailable("Redis is unavailable (test)")


@pytest.mark.parametrize("fail_open", [False, True])
def test_a_failing_allow_list_lookup_follows_the_lists_fail_open(
    redis_url: str, fail_open: bool
) -> None:
    lookalike = lookalike_png()
    run(load(redis_url, [entry_of(listed_png(), "banned.jpg")], [entry_of(lookalike, "ok")]))
    store = AllowListDown.from_url(redis_url)
    guard, app, heard = guarded(redis_url, store, fail_open=fail_open)
    result = upload(guard, lookalike)
    if fail_open:
        assert result.status == 200
        assert app.states == [Decision("unchecked", images=1, unchecked_lists=("spam",))]
    else:
        assert result.status == 503 and app.calls == 0
    assert "allowed" not in [r.action for r in heard.records]
    # An upload that matches nothing never asks the allow-list: it passes as usual.
    other = encode(photo("photos/threatexchange-labelme-q0291.jpg"), "PNG")
    assert upload(guard, other).status == 200
    assert app.states[-1] == Decision("allow", images=1)


def test_a_shadow_lists_suppressed_match_is_recorded_as_allowed(redis_url: str) -> None:
    lookalike = lookalike_png()
    run(load(redis_url, [entry_of(listed_png(), "banned.jpg")]))
    guard, app, heard = guarded(redis_url, mode="shadow")
    assert upload(guard, lookalike).status == 200
    assert [r.action for r in heard.records] == ["shadow-reject"]
    run(load(redis_url, [], [entry_of(lookalike, "approved.jpg")]))
    heard.records.clear()
    assert upload(guard, lookalike).status == 200
    assert [(r.action, r.allowed_by) for r in heard.records] == [("allowed", "approved.jpg")]
    assert app.states[-1] == Decision("allow", images=1)
    assert guard.counters.shadow_rejects == 1  # the first upload only


# --- the store -------------------------------------------------------------------------------


def test_an_allow_list_belongs_to_its_list(redis_url: str) -> None:
    listed, allowed = entry_of(listed_png(), "banned.jpg"), entry_of(lookalike_png(), "ok")

    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            with pytest.raises(UnknownList):
                await store.allow("spam", [allowed])  # no list to allow against
            await store.add("spam", [listed])
            frames = hash_bytes(lookalike_png()).frames
            assert await store.lookup_allowed("spam", frames, POLICY) is None  # none: normal
            assert (await store.allow("spam", [allowed])).added == 1
            assert [i.name for i in await store.lists()] == ["spam"]
            [(owner, info)] = (await store.allow_lists()).items()
            assert (owner, info.name, info.entries) == ("spam", "spam/allow", 1)
            found = await store.lookup_allowed("spam", frames, POLICY)
            assert found is not None and found.entry.source == "ok" and found.distance == 0
            assert [e.source async for e in store.allowed_entries("spam")] == ["ok"]
            version = await store.version("spam/allow")
            await store.allow("spam", [dataclasses.replace(allowed, phash=allowed.phash ^ 1)])
            assert await store.version("spam/allow") == version + 1

            # A rename moves it; a drop takes it along.
            await store.add("taken", [listed])
            await store.allow("taken", [allowed])
            with pytest.raises(ListExists):
                await store.rename("spam", "taken")
            await store.drop("taken")
            assert await store.rename("spam", "renamed") == 1
            assert list(await store.allow_lists()) == ["renamed"]
            assert await store.lookup_allowed("renamed", frames, POLICY) is not None
            assert await store.lookup_allowed("spam", frames, POLICY) is None
            assert await store.drop("renamed") > 0
            assert await store.allow_lists() == {} and await store.lists() == []
            assert await store.remove_allowed("renamed", allowed.ahash) == 0

    run(body())


def test_a_rename_interrupted_before_the_allow_list_moved_is_finished_by_renaming_again(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    listed, allowed = entry_of(listed_png(), "banned.jpg"), entry_of(lookalike_png(), "ok")

    async def interrupted() -> None:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", [listed])
            await store.allow("spam", [allowed])
            # What a rename leaves when it stops after the list and before its allow-list.
            await writes.rename(
                store._client, store._add, store._drop, store._catalog, "spam", "new"
            )

    run(interrupted())
    url = ("--redis-url", redis_url)
    assert cli(capsys, "lists", *url)[1].splitlines()[-1] == (
        "spam's allow-list: 1 entries, but no list spam (guard drop spam)"
    )
    assert cli(capsys, "rename", "spam", "new", *url)[0] == 0
    [info] = json.loads(cli(capsys, "lists", "--json", *url)[1])
    assert (info["list"], info["entries"], info["allow_entries"]) == ("new", 1, 1)

    async def moved() -> list[str]:
        async with Store.from_url(redis_url) as store:
            frames = hash_bytes(lookalike_png()).frames
            assert await store.lookup_allowed("new", frames, POLICY) is not None
            return list(await store.allow_lists())

    assert run(moved()) == ["new"]


def test_a_list_name_cannot_name_an_allow_list() -> None:
    assert allow_list("spam") == "spam/allow" and owner_of("spam/allow") == "spam"
    assert owner_of("spam") is None and owner_of("a/b/allow") is None
    with pytest.raises(ValueError, match="invalid list name"):
        allow_list("spam/allow")


def _frame(ahash: int, rng: np.random.Generator) -> FrameHash:
    coefficients = rng.normal(size=(8, 8))
    return FrameHash(ahash, phash_of_coefficients(coefficients), False, 0, coefficients)


def _flip(value: int, rng: random.Random, bits: int) -> int:
    for position in rng.sample(range(64), bits):
        value ^= 1 << position
    return value


@pytest.mark.parametrize("dihedral", [False, True])
def test_the_allow_lookup_equals_a_brute_force_scan(redis_url: str, dihedral: bool) -> None:
    """Random allow entries near random queries: the nearest confirmed one within the reject
    radius, as the rule ranks them, through both lookup paths (cold: Redis index; warm:
    mirror)."""
    rng, numbers = random.Random(7), np.random.default_rng(7)
    policy = ListPolicy(dihedral=dihedral, reject_radius=6, confirm_radius=10)
    queries = [_frame(rng.getrandbits(64), numbers) for _ in range(60)]
    stored: list[Entry] = []
    for query in queries:
        for _ in range(4):  # near ones, some past a radius
            stored.append(
                Entry(
                    _flip(query.ahash, rng, rng.randint(0, 9)),
                    _flip(query.phash, rng, rng.randint(0, 14)),
                    f"e{len(stored)}",
                )
            )
    stored += [Entry(rng.getrandbits(64), rng.getrandbits(64), "far") for _ in range(500)]

    def oracle(query: FrameHash) -> tuple[int, int] | None:
        variants = (
            [query.variant(t) for t in TRANSFORMS] if dihedral else [query.variant("identity")]
        )
        keys = [
            (hamming(e.ahash, a), hamming(e.phash or 0, p))
            for e in stored
            for a, p in variants
            if hamming(e.ahash, a) <= policy.reject_radius
            and hamming(e.phash or 0, p) <= policy.confirm_radius
        ]
        return min(keys) if keys else None

    async def body() -> tuple[list[tuple[int, int] | None], list[tuple[int, int] | None]]:
        async with Store.from_url(redis_url) as store:
            await store.add("spam", stored[:1])
            await store.allow("spam", stored)
            results = []
            for _ in range(2):  # cold (Redis index), then warm (the mirror)
                found = [await store.lookup_allowed("spam", [q], policy) for q in queries]
                results.append(
                    [None if m is None else (m.distance, m.phash_distance or 0) for m in found]
                )
                await store.refresh_mirror("spam/allow")
            assert "spam/allow" in store._mirrors
            return results[0], results[1]

    expected = [oracle(query) for query in queries]
    assert sum(key is not None for key in expected) > 20  # the test means something
    index_path, mirror_path = run(body())
    assert index_path == expected
    assert mirror_path == expected


# --- the CLI ---------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_commands(redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    banned, lookalike = tmp_path / "banned.png", tmp_path / "lookalike.png"
    banned.write_bytes(listed_png())
    lookalike.write_bytes(lookalike_png())
    url = ("--redis-url", redis_url)

    code, _, err = cli(capsys, "allow", str(lookalike), "--list", "spam", *url)
    assert (code, err) == (1, "guard: no list named 'spam' (guard lists shows them)\n")
    assert cli(capsys, "load", str(banned), "--list", "spam", *url)[0] == 0
    code, out, _ = cli(capsys, "check", str(lookalike), *url)
    assert code == 1 and out.startswith("REJECT ")

    code, out, _ = cli(capsys, "allow", str(banned), str(lookalike), "--list", "spam", *url)
    assert code == 1
    assert out.splitlines() == [
        "spam: allowed 1, already allowed 0, refused 1",
        f"  refused {banned}: listed in spam (banned.png, distance 0): use guard remove",
    ]
    code, out, _ = cli(capsys, "check", "--json", str(lookalike), str(banned), *url)
    allowed, rejected = json.loads(out)
    assert code == 1  # the listed image is still rejected
    assert (allowed["verdict"], rejected["verdict"]) == ("allowed", "reject")
    assert [(m["action"], m["allowed_by"]) for m in allowed["matches"]] == [
        ("allowed", str(lookalike))
    ]
    distance, phash = allowed["matches"][0]["distance"], allowed["matches"][0]["phash_distance"]
    assert cli(capsys, "check", str(lookalike), *url)[:2] == (
        0,
        f"ALLOWED {lookalike}\n        spam: banned.png  distance {distance}, pHash {phash} "
        f"(confirmed)  -> ALLOWED by {lookalike}\n",
    )

    code, out, _ = cli(capsys, "lists", *url)
    assert out.splitlines()[1].startswith("  at this size, under 0.01% of innocent uploads")
    assert out.splitlines()[2:] == ["  spam's allow-list: 1 entries"]
    [info] = json.loads(cli(capsys, "lists", "--json", *url)[1])
    assert (info["list"], info["entries"], info["allow_entries"]) == ("spam", 1, 1)

    code, out, _ = cli(capsys, "remove", "--allowed", "--list", "spam", str(lookalike), *url)
    assert (code, out) == (0, f"{lookalike}: removed 1\n")
    assert cli(capsys, "check", str(lookalike), *url)[0] == 1
    assert cli(capsys, "remove", "--allowed", "--list", "spam", str(lookalike), *url)[0] == 1

    cli(capsys, "allow", str(lookalike), "--list", "spam", *url)
    code, out, _ = cli(capsys, "rename", "spam", "spam2", *url)
    assert code == 0
    assert json.loads(cli(capsys, "lists", "--json", *url)[1])[0]["allow_entries"] == 1
    code, out, _ = cli(capsys, "drop", "spam2", "--yes", *url)
    assert (code, out.split(" keys")[0].rsplit(",", 1)[0]) == (
        0,
        "spam2: dropped (1 entries, its allow-list's 1",
    )
    assert cli(capsys, "lists", *url)[1] == "no lists\n"
