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
