"""The ``guard`` command: a thin front end over the library. Exit codes live here and only here."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from guard import __version__
from guard.errors import GuardError
from guard.hashing import hash_file, to_hex

EXIT_OK = 0
EXIT_SOME_FAILED = 1  # `hash`: at least one file could not be hashed
EXIT_USAGE = 2  # argparse's own code for bad arguments


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print("guard: interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guard", description="Perceptual-hash image blocklists backed by Redis."
    )
    parser.add_argument("--version", action="version", version=f"guard {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    hash_command = commands.add_parser(
        "hash", help="print the aHash and pHash of image files", description=_cmd_hash.__doc__
    )
    hash_command.add_argument("files", nargs="+", metavar="FILE")
    hash_command.add_argument("--json", action="store_true", help="print a JSON list")
    hash_command.set_defaults(run=_cmd_hash)
    return parser


def _cmd_hash(args: argparse.Namespace) -> int:
    """Print each file's aHash and pHash as 16 hex digits (imagehash's format).

    Animated images list every hashed frame. A file that cannot be hashed gets an error instead
    and the exit status is 1.
    """
    results = [_hash_one(path) for path in args.files]
    if args.json:
        print(json.dumps(results, indent=2))
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
    return EXIT_SOME_FAILED if any("error" in r for r in results) else EXIT_OK


def _hash_one(path: str) -> dict[str, Any]:
    try:
        hashes = hash_file(path)
    except (GuardError, OSError) as error:
        message = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return {"file": path, "error": message}
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
