"""No module of segment_sync imports, directly or through others, a module that imports it (lazy imports count)."""

from __future__ import annotations

import ast
import graphlib
import re
from pathlib import Path

import segment_sync

ROOT = Path(segment_sync.__file__).parent


def _modules(root: Path) -> dict[str, Path]:
    """Every module of a package by its dotted name (packages' __init__ files left out: they only re-export)."""
    found = {}
    for path in root.rglob("*.py"):
        if path.name != "__init__.py":
            found[".".join(path.relative_to(root.parent).with_suffix("").parts)] = path
    return found


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules a file imports, anywhere in it (inside functions too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return {name for name in names if name in known}


def _cycle(root: Path) -> list[str]:
    """An import cycle among a package's modules, or [] when there is none."""
    known = _modules(root)
    graph = {name: _imports(path, known) - {name} for name, path in known.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return []


def test_the_package_has_no_import_cycle() -> None:
    assert len(_modules(ROOT)) > 30
    assert _cycle(ROOT) == [], "import cycle"


def test_a_lazy_import_that_closes_a_cycle_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "body.py").write_text("from pkg.sub.asset import NAME\n")
    (package / "sub" / "asset.py").write_text("NAME = 1\n\ndef run():\n    from pkg.sub import body\n")
    assert sorted(_cycle(package)) == ["pkg.sub.asset", "pkg.sub.asset", "pkg.sub.body"]


# The package's parts from the bottom up: a module imports only from its own part or from parts below it.
LAYERS = [
    ["spec", "field_mapping", "error_text"],
    ["values"],
    ["storage"],
    ["warehouse"],
    ["snapshot"],
    ["diff"],
    ["warehouse_engine"],
    ["segment_api"],
    ["events"],
    ["delivery"],
    ["alerts"],
    ["metadata", "resources"],
    ["assets"],
    ["sensors", "factory", "workspace_runs"],
    ["component"],
    ["definitions", "cli", "defs"],
]


def _layer(module: str) -> int:
    part = module.split(".")[1]
    return next(i for i, parts in enumerate(LAYERS) if part in parts)


def _upward_imports(root: Path) -> list[str]:
    known = _modules(root)
    return [
        f"{name} imports {imported}"
        for name, path in known.items()
        for imported in sorted(_imports(path, known))
        if _layer(imported) > _layer(name)
    ]


def test_every_part_of_the_package_has_a_layer() -> None:
    parts = {name.split(".")[1] for name in _modules(ROOT)}
    assert parts <= {part for layer in LAYERS for part in layer}


def test_nothing_imports_upward() -> None:
    assert _upward_imports(ROOT) == []


def test_the_core_imports_no_dagster() -> None:
    core = {part for layer in LAYERS[: LAYERS.index(["alerts"]) + 1] for part in layer}
    dagster_users = [
        name
        for name, path in _modules(ROOT).items()
        if name.split(".")[1] in core and re.search(r"^\s*(import|from) dagster\b", path.read_text(), re.M)
    ]
    assert dagster_users == []
