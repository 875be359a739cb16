"""The installed `groupbuy` command starts and says what it is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# pip installs the console script beside the interpreter running the tests.
GROUPBUY = str(Path(sys.executable).parent / "groupbuy")


def test_groupbuy_command_is_installed_and_reports_its_version() -> None:
    done = subprocess.run([GROUPBUY, "--version"], capture_output=True, text=True, timeout=30)

    assert done.returncode == 0
    assert done.stdout.strip() == "groupbuy 0.1.0"


def test_groupbuy_without_a_command_prints_usage_and_fails() -> None:
    done = subprocess.run([GROUPBUY], capture_output=True, text=True, timeout=30)

    assert done.returncode == 2
    assert "usage: groupbuy" in done.stderr


def test_a_service_starts_without_loading_the_operator_analyst_and_demo_commands() -> None:
    script = (
        "import sys; from infra.cli.main import parser; parser(services_only=True); "
        "print(sorted(m for m in sys.modules if m.startswith(('infra.', 'analysis'))))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)

    loaded = done.stdout
    assert done.returncode == 0, done.stderr
    assert "infra.services.ingest" in loaded
    for module in ("infra.cli.analyst", "infra.cli.demo.command", "infra.cli.replay", "analysis"):
        assert f"'{module}" not in loaded


def test_every_command_is_listed_in_the_help() -> None:
    done = subprocess.run([GROUPBUY, "--help"], capture_output=True, text=True, timeout=30)

    for command in ("ingest", "run", "campaign", "replay", "history", "demo"):
        assert f"    {command} " in done.stdout


def test_ingest_takes_a_number_of_workers_above_zero() -> None:
    done = subprocess.run(
        [GROUPBUY, "ingest", "--workers", "0"], capture_output=True, text=True, timeout=30
    )

    assert done.returncode == 2
    assert "--workers: must be above 0, got 0" in done.stderr
