"""The import graph of guard/, read from the source with ast (nothing is imported).

Two layering rules:

- the pure modules (data, parsing, ranking) import no Redis client, no Pillow, no Starlette and
  no anyio, and no guard module that does, however indirectly: they can be tested, fuzzed and
  reused without a server, an image library or an event loop;
- nothing on the request path (the package itself, the middleware, the store) imports
  guard.evaluation, the offline accuracy harness.

Modules may be files or packages (guard/store.py or guard/store/): a package is its
``__init__.py`` plus whatever its modules import. Imports inside functions count (they run when
called); imports under ``if TYPE_CHECKING:`` do not (they never run). Importing ``guard.a.b``
runs ``guard.a``'s ``__init__`` too, except for the top-level ``guard`` package, whose
``__init__`` re-exports the public API and would otherwise make every module depend on all.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

GUARD = Path(__file__).resolve().parents[1] / "guard"

PURE = [
    "guard.types",
    "guard.bands",
    "guard.config",
    "guard.verdict",
    "guard.mirror",
    "guard.listfile",
    "guard.spelling",
    "guard.multipart",
    "guard.msgpack",
    "guard.errors",
    "guard.list_scale",
    "guard.reference_rates",
]
# Not here: guard.uploads, the ASGI body's I/O seam (anyio spools it) that asks Pillow what is
# an image, and guard.hashing and guard.images, Pillow's side.
FORBIDDEN = {"redis", "PIL", "starlette", "anyio"}
RUNTIME = ["guard", "guard.middleware", "guard.store"]
OFFLINE = "guard.evaluation"

#: Pure modules that break the rule today, with the chain: xfail strict, so fixing one fails
#: here until its entry is removed.
KNOWN_IMPURE: dict[str, str] = {}


def module_files(root: Path) -> dict[str, Path]:
    """Every module under ``root`` (the guard package folder) by dotted name."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: anywhere but under ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _with_parents(name: str, root: str) -> list[str]:
    """``guard.a.b`` runs ``guard.a`` first (not ``guard``: see the module docstring)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2 if parts[0] == root else 1, len(parts) + 1)]


def direct_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The guard modules and the top-level outside packages ``name`` imports directly."""
    root = name.split(".")[0]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # "from guard import msgpack" imports the module guard.msgpack.
            submodules = [f"{module}.{alias.name}" for alias in node.names]
            targets = [module] + [s for s in submodules if s in modules]
        for target in targets:
            if target.split(".")[0] != root:
                found.add(target.split(".")[0])
                continue
            found.update(m for m in _with_parents(target, root) if m in modules)
    found.discard(name)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: direct_imports(name, path, modules) for name, path in modules.items()}


def reach(edges: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Everything ``start`` imports, however indirectly, each with one chain that leads there."""
    chains = {start: [start]}
    queue = [start]
    while queue:
        current = queue.pop(0)
        for target in sorted(edges.get(current, ())):
            if target not in chains:
                chains[target] = chains[current] + [target]
                queue.append(target)
    return chains


def _package_of(modules: Iterable[str], name: str) -> list[str]:
    return [m for m in modules if m == name or m.startswith(name + ".")]


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return graph(GUARD)


# --- the rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(strict=True, reason=f"known: {KNOWN_IMPURE[name]}"),
        )
        if name in KNOWN_IMPURE
        else name
        for name in PURE
    ],
)
def test_pure_modules_reach_no_redis_pillow_starlette_or_anyio(
    module: str, edges: dict[str, set[str]]
) -> None:
    assert module in edges, f"{module} is neither guard/{module[6:]}.py nor a package"
    bad = {
        target: " -> ".join(chain) for target, chain in reach(edges, module).items()
        if target in FORBIDDEN
    }  # fmt: skip
    assert not bad, bad


@pytest.mark.parametrize("module", RUNTIME)
def test_the_request_path_never_imports_the_evaluation_harness(
    module: str, edges: dict[str, set[str]]
) -> None:
    assert module in edges
    assert _package_of(edges, OFFLINE), "guard.evaluation is gone: update this test"
    chains = reach(edges, module)
    bad = {target: " -> ".join(chains[target]) for target in _package_of(chains, OFFLINE)}
    assert not bad, bad


# --- the reader finds what it must (so the rules above can fail) ----------------------------------


def test_the_graph_sees_the_real_dependencies(edges: dict[str, set[str]]) -> None:
    assert "redis" in reach(edges, "guard.store")  # a package, through its own modules
    assert "PIL" in reach(edges, "guard.images")
    assert "guard.errors" in edges["guard.types"]
    assert "guard.bands" in reach(edges, "guard.mirror")


def _write(root: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return graph(root / "pkg")


def test_the_reader_follows_every_import_form(tmp_path: Path) -> None:
    edges = _write(
        tmp_path,
        {
            "pkg/__init__.py": "from pkg.heavy import thing\n",
            "pkg/pure.py": "from . import helper\nimport json\n",
            "pkg/helper.py": "def f():\n    from pkg.sub.deep import x  # lazy\n",
            "pkg/sub/__init__.py": "import anyio\n",
            "pkg/sub/deep.py": "from ..leaf import y\n",
            "pkg/leaf.py": "import PIL.Image\n",
            "pkg/heavy.py": "import redis.asyncio\n",
            "pkg/typed.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import redis\n"
                "else:\n    import starlette\nimport pkg\n"
            ),
        },
    )
    assert edges["pkg.pure"] == {"pkg.helper", "json"}  # not pkg's __init__
    assert edges["pkg.helper"] == {"pkg.sub", "pkg.sub.deep"}  # a lazy import, its package too
    assert edges["pkg.sub.deep"] == {"pkg.leaf"}  # relative, two levels up
    assert edges["pkg.typed"] == {"typing", "starlette"}  # TYPE_CHECKING only: never runs
    chains = reach(edges, "pkg.pure")
    assert chains["PIL"] == ["pkg.pure", "pkg.helper", "pkg.sub.deep", "pkg.leaf", "PIL"]
    assert "anyio" in chains and "redis" not in chains
