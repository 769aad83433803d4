"""examples/app.py as shipped, with config/guard.yaml, against the test Redis server."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from conftest import run

from guard import hash_file
from guard.store import Store
from guard.types import Entry

ROOT = Path(__file__).resolve().parents[1]


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("guard_example_app", ROOT / "examples" / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_app_blocks_listed_images_and_passes_the_rest(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUARD_REDIS_URL", redis_url)  # instead of the embedded default
    monkeypatch.delenv("GUARD_CONFIG", raising=False)
    spam = sorted((ROOT / "blocklists" / "spam").glob("*.jpg"))
    app = load_example().app
    edited = (ROOT / "examples" / "images" / "spam-edited.jpg").read_bytes()
    unrelated = (ROOT / "examples" / "images" / "unrelated.jpg").read_bytes()

    async def body() -> None:
        async with Store.from_url(redis_url) as store:
            entries = [Entry(h.ahash, h.phash, p.name) for p in spam for h in [hash_file(p)]]
            await store.add("spam", entries)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/")).status_code == 200
            for data in (spam[0].read_bytes(), edited):
                blocked = await client.post(
                    "/upload", files={"file": ("x.jpg", data, "image/jpeg")}
                )
                assert (blocked.status_code, blocked.json()) == (
                    403,
                    {
                        "error": "upload rejected",
                        "list": "spam",
                        "request_id": blocked.headers["x-request-id"],
                    },
                )
            ok = await client.post(
                "/upload", files={"file": ("u.jpg", unrelated, "image/jpeg")}, data={"c": "hi"}
            )
            assert ok.status_code == 200
            assert ok.json() == {
                "file": {
                    "filename": "u.jpg",
                    "bytes": len(unrelated),
                    "sha256": hashlib.sha256(unrelated).hexdigest(),
                },
                "fields": ["c"],
                "guard": "allow",
            }

    run(body())
