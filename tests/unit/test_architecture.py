"""The layering of STYLE.md, held by reading imports: arrows point one way, in no circle."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The domain may use the library's aggregates and applications, and name a few of its
# persistence types (a Kafka position, a version clash) without touching any database.
DOMAIN_LIBRARY_MODULES = {"eventsourcing.domain", "eventsourcing.application"}
DOMAIN_PERSISTENCE_NAMES = {"Tracking", "IntegrityError", "ProcessRecorder", "Recording"}

# Who may not import whom: arrows point one way (STYLE.md, "Layout"). Inside infra/, the
# adapters are the bottom, the services and the replay stand on them, the CLI on top.
FORBIDDEN = {
    "domain": {"projections", "analysis", "consumers", "infra"},
    "projections": {"analysis", "consumers", "infra"},
    # Analyst reports are pure: the CLI in infra reads the store and prints them.
    "analysis": {"consumers", "infra"},
    "consumers": {"analysis", "infra"},
    "infra/adapters": {"infra.services", "infra.replay", "infra.cli"},
    "infra/services": {"infra.replay", "infra.cli"},
    "infra/replay": {"infra.services", "infra.cli"},
    # The launchers run before anything is installed: they stand alone.
    "infra/local": {
        "domain",
        "projections",
        "analysis",
        "consumers",
        "infra.settings",
        "infra.adapters",
        "infra.services",
        "infra.replay",
        "infra.cli",
    },
}
LAYERS = tuple(FORBIDDEN)


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


def within(module: str, packages: set[str]) -> set[str]:
    """The packages of `packages` that `module` is, or lies inside."""
    return {p for p in packages if module == p or module.startswith(p + ".")}


@pytest.mark.parametrize(
    ("layer", "path"),
    [(layer, path) for layer in LAYERS for path in python_files(layer)],
    ids=lambda value: value if isinstance(value, str) else value.name,
)
def test_imports_point_one_way_between_layers(layer: str, path: Path) -> None:
    wrong = sorted({m for m, _ in imports(path) if within(m, FORBIDDEN[layer])})
    assert wrong == [], f"{layer}/{path.name} must not import {wrong}"


def test_infra_keeps_its_modules_in_folders_by_role() -> None:
    loose = sorted(p.name for p in (ROOT / "infra").glob("*.py"))
    assert loose == ["__init__.py", "settings.py"]


@pytest.mark.parametrize(
    "package", sorted((ROOT / "infra").rglob("__init__.py")), ids=lambda p: p.parent.name
)
def test_each_infra_folder_says_in_one_line_what_lives_there(package: Path) -> None:
    docstring = ast.get_docstring(ast.parse(package.read_text())) or ""
    assert docstring, package.relative_to(ROOT)
    assert "\n" not in docstring, package.relative_to(ROOT)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_the_first_party_modules_import_one_another_without_a_cycle() -> None:
    """Imports under TYPE_CHECKING count too: a cycle hidden there is still a cycle."""
    paths = [p for layer in ("domain", *LAYERS) for p in python_files(layer)]
    modules = {module_name(path): path for path in paths}
    graph = {
        name: sorted(
            {m for m, _ in imports(path) if m in modules and m != name}
            | {f"{m}.{n}" for m, names in imports(path) for n in names if f"{m}.{n}" in modules}
        )
        for name, path in modules.items()
    }
    cycle = find_cycle(graph)
    assert cycle == [], " imports ".join(cycle)


def find_cycle(graph: dict[str, list[str]]) -> list[str]:
    """One cycle of `graph` as the modules along it, or [] if there is none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str]:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return []
        path.append(node)
        for successor in graph[node]:
            if cycle := visit(successor):
                return cycle
        path.pop()
        done.add(node)
        return []

    for node in graph:
        if cycle := visit(node):
            return cycle
    return []


KAFKA_CLIENTS = {"KafkaProducer", "KafkaConsumer", "KafkaAdminClient"}
KAFKA_FACTORY = ROOT / "infra" / "adapters" / "kafka_clients.py"


def kafka_calls(path: Path) -> list[str]:
    """The Kafka clients a module builds, and the admin calls that create topics, by name."""
    tree = ast.parse(path.read_text())
    calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
    built = [f.id for f in calls if isinstance(f, ast.Name) and f.id in KAFKA_CLIENTS]
    creations = [
        f.attr
        for f in calls
        if isinstance(f, ast.Attribute)
        and f.attr == "create_topics"
        and not (isinstance(f.value, ast.Name) and f.value.id == "kafka_clients")
    ]
    return built + creations


@pytest.mark.parametrize(
    "path",
    [p for layer in ("domain", *LAYERS) for p in python_files(layer) if p != KAFKA_FACTORY],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_kafka_client_and_topic_comes_from_the_one_factory(path: Path) -> None:
    assert kafka_calls(path) == [], f"{path.name}: build it in infra/adapters/kafka_clients.py"
