"""The differential parser table: guard against Django, Werkzeug, Quart, Litestar and Starlette.

Runs the crafted corpus of tests/differential/corpus.py and N hypothesis-mutated bodies (fixed
seed: the same bodies every run) through guard and through every framework's own parser, and
prints, per parser: bodies, bodies guard refused, bodies guard accepted (and of those, how many
the framework's form parser refused), and violations of the invariant (a value the app gets that
Pillow opens and guard did not hash), with the ids of the violating bodies.

Run from the repository root::

    PYTHONPATH=. python tools/differential.py --mutants 300

``--guard PATH`` imports guard from another checkout (e.g. an older commit unpacked with
``git archive``), to compare before and after a change.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--mutants", type=int, default=300, help="hypothesis bodies (300)")
    arguments.add_argument("--guard", type=Path, help="import guard from this directory")
    arguments.add_argument("--details", action="store_true", help="what each parser saw")
    options = arguments.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import tests.differential  # noqa: F401 - the suite's package, from this checkout

    if options.guard is not None:
        # Only guard comes from there: the tests package above is already imported.
        sys.path.insert(0, str(options.guard.resolve()))

    # python-multipart logs every framing error it meets at WARNING: thousands of lines here.
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    from hypothesis import HealthCheck, Phase, given, settings

    import guard
    from tests.differential.corpus import Case, corpus, mutants
    from tests.differential.parsers import ADAPTERS, Tally, check, close, describe, guard_view

    started = time.perf_counter()
    tally = Tally()
    details: list[str] = []

    def run(case: Case) -> None:
        view = guard_view(case.body, case.content_type)
        seen: dict[str, list[str]] = {}
        for adapter in ADAPTERS:
            outcome = check(adapter, case.body, case.content_type, view)
            tally.add(case.id, outcome)
            if outcome.violated:
                labels = [
                    describe(value) + ("" if value in case.body else " decoded")
                    for value in outcome.unhashed
                ]
                form = (
                    f" (form refused: {outcome.parsed.refused})" if outcome.parsed.refused else ""
                )
                seen.setdefault(", ".join(labels) + form, []).append(adapter.name)
        if seen and options.details:
            hashed = ", ".join(describe(image) for image in view.images) or "nothing"
            details.append(f"  {case.id}: guard accepted it and hashed {hashed}")
            details.extend(
                f"    {', '.join(names)} hand the app {what}" for what, names in seen.items()
            )

    cases = corpus()
    for case in cases:
        run(case)

    seen_mutants: list[Case] = []
    seen_ids: set[str] = set()

    @settings(
        derandomize=True,
        max_examples=max(1, options.mutants),
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(mutants())
    def collect(case: Case) -> None:
        if case.id in seen_ids:
            return  # hypothesis can draw one body twice: count it once
        seen_ids.add(case.id)
        seen_mutants.append(case)
        run(case)

    if options.mutants:
        collect()
    close()
    elapsed = time.perf_counter() - started
    print(f"guard from {Path(guard.__file__).parent}")
    print(
        f"{len(cases)} crafted bodies + {len(seen_mutants)} distinct mutated bodies "
        f"x {len(ADAPTERS)} parsers in {elapsed:.1f} s"
    )
    print(tally.table())
    if details:
        print('details ("decoded": the value is not in the body as such; the framework or the')
        print("app decoded it: a text field's charset, url-encoding, JSON base64):")
        print("\n".join(details))
    return 1 if tally.total_violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
