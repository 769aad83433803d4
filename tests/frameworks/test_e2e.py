"""Each framework's example under a real uvicorn, attacked over a raw socket (docs/frameworks.md).

One server per framework for the module (plus Starlette again under ``--root-path /prefix``),
on the test Redis server with the `spam` list. Every trick hides a blocked image; none may get a
2xx answer. A clean photo must get 200 with the exact bytes, so the suite is not vacuous.
``pytest -s`` prints the table framework x trick class.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from frameworks import tricks
from frameworks.conftest import FLAGGED
from frameworks.servers import APPS, Response, Server, exchange, start, stop, wait_listening
from frameworks.tricks import B, Trick, field_part, file_part, form, multipart_type

#: Slow (servers in child processes): not in the fast path, -m 'not slow'.
pytestmark = pytest.mark.slow

FRAMEWORKS = list(APPS)


@pytest.fixture(scope="module")
def servers(
    e2e_config: Path, redis_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    logs = tmp_path_factory.mktemp("e2e-logs")
    env: dict[str, str | None] = {"GUARD_CONFIG": str(e2e_config), "GUARD_REDIS_URL": redis_server}
    started = {name: start(name, target, env, logs) for name, target in APPS.items()}
    started["starlette-root"] = start(
        "starlette-root", APPS["starlette"], env, logs, "--root-path", "/prefix"
    )
    try:
        for server in started.values():
            wait_listening(server)
        yield started
    finally:
        for server in started.values():
            stop(server)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def clean_requests(framework: str) -> list[tuple[Trick, list[bytes]]]:
    """Canonical uploads of an unrelated photo, and the items the app must report."""
    photo = tricks.clean()
    multipart = multipart_type(b"boundary=" + B)
    uploads = [
        Trick(
            "ok", "file + field", "/upload", form(B, file_part(photo), field_part(b"hi")), multipart
        )
    ]
    if framework == "fastapi":
        uploads.append(
            Trick("ok", "bytes = File()", "/upload-bytes", form(B, file_part(photo)), multipart)
        )
    expected = [[photo, b"hi"]] if framework != "fastapi" else [[photo, b"hi"], [photo]]
    cases = list(zip(uploads, expected, strict=True))
    cases.append((Trick("ok", "raw", "/raw", photo, b"image/jpeg"), [photo]))
    cases.append(
        (Trick("ok", "JSON", "/json", tricks.json_body(photo), b"application/json"), [photo])
    )
    if framework == "starlette":
        cases.append(
            (Trick("ok", "Mount", "/api/upload", form(B, file_part(photo)), multipart), [photo])
        )
    return cases


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_clean_photo_reaches_the_app_byte_for_byte(
    servers: dict[str, Server], framework: str
) -> None:
    for trick, items in clean_requests(framework):
        response = exchange(servers[framework].port, trick.request(servers[framework].port))
        assert response.status == 200, (trick.name, response)
        answer = response.json()
        assert sorted(i["sha256"] for i in answer["items"]) == sorted(sha(i) for i in items), (
            trick.name
        )
        assert answer["guard"] == "allow", trick.name


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_near_miss_is_flagged_and_the_app_sees_the_decision(
    servers: dict[str, Server], framework: str
) -> None:
    photo = FLAGGED.read_bytes()
    upload = Trick(
        "ok", "flagged", "/upload", form(B, file_part(photo)), multipart_type(b"boundary=" + B)
    )
    response = exchange(servers[framework].port, upload.request(servers[framework].port))
    assert response.status == 200, response
    assert response.headers.get("x-guard-verdict") == "flag"
    answer = response.json()
    assert answer["guard"] == "flag"
    assert [item["sha256"] for item in answer["items"]] == [sha(photo)]


def run_tricks(servers: dict[str, Server], framework: str) -> list[tuple[Trick, Response]]:
    results = []
    for trick in tricks.for_framework(framework):
        port = servers[trick.server or framework].port
        try:
            response = exchange(port, trick.request(port))
        except OSError as error:  # a timeout: no answer is not a 2xx
            response = Response(None, {}, f"{type(error).__name__}: {error}".encode())
        results.append((trick, response))
    return results


def received(trick: Trick, response: Response) -> bool:
    """Did the app say it received one of the trick's images?"""
    try:
        items = response.json()["items"]
    except (ValueError, KeyError, TypeError):
        return False
    wanted = {sha(payload) for payload in trick.payloads}
    return any(item.get("sha256") in wanted for item in items)


def table(results: dict[str, list[tuple[Trick, Response]]]) -> str:
    classes = list(tricks.CLASSES)
    lines = ["2xx answers / requests, per framework and trick class (must all be 0):", ""]
    lines.append(f"{'':10}" + "".join(f"{c:>10}" for c in classes) + f"{'total':>10}")
    for framework, rows in results.items():
        cells = []
        for cls in [*classes, None]:
            picked = [r for t, r in rows if cls is None or t.cls == cls]
            ok = sum(1 for r in picked if r.status is not None and 200 <= r.status < 300)
            cells.append(f"{ok}/{len(picked)}" if picked else "-")
        lines.append(f"{framework:10}" + "".join(f"{cell:>10}" for cell in cells))
    lines.append("")
    for cls, meaning in tricks.CLASSES.items():
        lines.append(f"  {cls:6} {meaning}")
    return "\n".join(lines)


def details(results: dict[str, list[tuple[Trick, Response]]]) -> list[str]:
    out = []
    for framework, rows in results.items():
        for trick, response in rows:
            if response.status is not None and 200 <= response.status < 300:
                got = "app got the image" if received(trick, response) else "app did not get it"
                out.append(
                    f"{framework:10} {trick.cls:5} {trick.name} -> {response.status} ({got})"
                )
    return out


def test_no_trick_gets_a_2xx(servers: dict[str, Server]) -> None:
    with ThreadPoolExecutor(len(FRAMEWORKS)) as pool:
        futures = {name: pool.submit(run_tricks, servers, name) for name in FRAMEWORKS}
        results = {name: future.result() for name, future in futures.items()}
    passed = details(results)
    if os.environ.get("GUARD_E2E_VERBOSE"):
        for framework, rows in results.items():
            for trick, response in rows:
                seen = f"{response.status} {trick.name} {response.body[:90]!r}"
                print(f"{framework:10} {trick.cls:5} {seen}")
    print("\n" + table(results))
    if passed:
        print("\n2xx answers:\n" + "\n".join(passed))
    statuses: dict[str, dict[int | None, int]] = {}
    for framework, rows in results.items():
        for _, response in rows:
            counts = statuses.setdefault(framework, {})
            counts[response.status] = counts.get(response.status, 0) + 1
    print(
        "\nstatuses: "
        + "; ".join(f"{f} {dict(sorted(c.items(), key=str))}" for f, c in statuses.items())
    )
    assert not passed, f"{len(passed)} tricks got a 2xx:\n" + "\n".join(passed)


def test_every_server_stops_on_sigterm(servers: dict[str, Server]) -> None:
    for server in servers.values():
        # uvicorn re-raises the SIGTERM it handled once it has shut down: -15 is a clean stop.
        assert stop(server) in (0, -signal.SIGTERM), server.output()
        shutdown = server.output().split("Shutting down")[-1]
        assert "Finished server process" in shutdown, server.output()
        assert "Traceback" not in shutdown, server.output()
