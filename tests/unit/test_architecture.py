"""The layering of STYLE.md, held by reading imports: the domain depends on nothing outside."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("domain", "projections", "analysis", "consumers")

# The domain may use the library's aggregates and applications, and name a few of its
# persistence types (a Kafka position, a version clash) without touching any database.
DOMAIN_LIBRARY_MODULES = {"eventsourcing.domain", "eventsourcing.application"}
DOMAIN_PERSISTENCE_NAMES = {"Tracking", "IntegrityError", "ProcessRecorder", "Recording"}

# Who may not import whom: arrows point one way (STYLE.md, "Layout").
FORBIDDEN = {
    "domain": {"projections", "analysis", "consumers", "infra"},
    "projections": {"analysis", "consumers", "infra"},
    # Analyst reports are pure: the CLI in infra reads the store and prints them.
    "analysis": {"consumers", "infra"},
    "consumers": {"analysis", "infra"},
}


def python_files(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


def imports(path: Path) -> Iterator[tuple[str, set[str]]]:
    """Each imported module with the names taken from it, wherever the import stands."""
    package = path.relative_to(ROOT).parent.parts
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, set()
        elif isinstance(node, ast.ImportFrom):
            # A relative import climbs level - 1 packages up from this file's package.
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join((*base, *([node.module] if node.module else [])))
            yield module, {alias.name for alias in node.names}


def top(module: str) -> str:
    return module.split(".")[0]


def domain_may_import(module: str, names: set[str]) -> bool:
    if top(module) in sys.stdlib_module_names or top(module) == "domain":
        return True
    if module in DOMAIN_LIBRARY_MODULES:
        return True
    return module == "eventsourcing.persistence" and names <= DOMAIN_PERSISTENCE_NAMES


def test_there_is_a_domain_to_check() -> None:
    assert len(python_files("domain")) > 5


@pytest.mark.parametrize("path", python_files("domain"), ids=lambda p: p.name)
def test_the_domain_imports_only_the_standard_library_and_eventsourcing_core(
    path: Path,
) -> None:
    strays = [m for m, names in imports(path) if not domain_may_import(m, names)]
    assert strays == [], f"{path.name} imports {strays}: the domain must stay pure Python"


@pytest.mark.parametrize(
    ("layer", "path"),
    [(layer, path) for layer in LAYERS for path in python_files(layer)],
    ids=lambda value: value if isinstance(value, str) else value.name,
)
def test_imports_point_one_way_between_layers(layer: str, path: Path) -> None:
    wrong = sorted({m for m, _ in imports(path) if top(m) in FORBIDDEN[layer]})
    assert wrong == [], f"{layer}/{path.name} must not import {wrong}"
