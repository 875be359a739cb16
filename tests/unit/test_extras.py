"""The services install without the analysts' and the web's extras; the commands that need
one name it. Run with those packages hidden from the import system, as after a plain
`pip install .` (docs/operations.md; the install itself was checked by hand, see there)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = {"analyst": ["pyarrow", "matplotlib"], "http": ["fastapi", "uvicorn", "starlette"]}
HIDDEN = [module for modules in EXTRAS.values() for module in modules]

# Makes every import of a hidden package fail as if it were not installed, then runs `code`.
WITHOUT_EXTRAS = f"""
import importlib.abc, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {HIDDEN!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, Hide())
"""


def run_without_extras(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS + code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )


def test_the_extras_are_not_among_the_services_dependencies() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {spec.split("[")[0].split("=")[0].lower() for spec in project["dependencies"]}
    for extra, modules in EXTRAS.items():
        named = {spec.split("=")[0].lower() for spec in project["optional-dependencies"][extra]}
        assert set(modules[:2]) <= named, extra
        assert not required & set(modules), f"{extra}'s packages are required by the services"


def test_every_service_loads_and_parses_its_command_without_the_extras() -> None:
    done = run_without_extras(
        "import infra.services, infra.services.ingest_workers\n"
        "from infra.cli.main import parser\n"
        "parser().parse_args(['run'])\n"
        "parser().parse_args(['export', '--format', 'csv', '--out', 'x.csv'])\n"
        f"assert not set(sys.modules) & set({HIDDEN!r}), sorted(sys.modules)\n"
        "print('loaded')"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded"


@pytest.mark.parametrize(
    ("command", "extra", "missing"),
    [
        (["export", "--format", "parquet", "--out", "events.parquet"], "analyst", "pyarrow"),
        (["demand", "some-campaign", "--png", "curve.png"], "analyst", "matplotlib"),
        (["serve"], "http", "uvicorn"),
    ],
)
def test_a_command_that_needs_an_extra_names_it(
    command: list[str], extra: str, missing: str, tmp_path: Path
) -> None:
    done = run_without_extras(
        f"import os; os.chdir({str(tmp_path)!r})\n"
        f"from infra.cli.main import main\nsys.exit(main({command!r}))"
    )
    assert done.returncode == 1, done.stderr
    assert f"pip install 'groupbuy[{extra}]'" in done.stderr
    assert missing in done.stderr
    assert not list(tmp_path.iterdir())  # refused before any file was made
