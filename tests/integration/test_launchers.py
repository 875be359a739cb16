"""The local launchers fail fast with one clear line when they cannot do their job."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def launch(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m infra.local up` for Kafka alone, in its own state folder."""
    environment = {
        **os.environ,
        "GROUPBUY_STATE_DIR": str(tmp_path / "state"),
        "GROUPBUY_DATABASE_URL": "postgresql://unused@127.0.0.1:1/unused",  # start no database
        **env,
    }
    environment.pop("GROUPBUY_KAFKA_BOOTSTRAP", None)
    return subprocess.run(
        [sys.executable, "-m", "infra.local", "up"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )


def assert_one_clear_line(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 1
    assert done.stdout == ""  # nothing for `eval` to export
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0]


def test_kafka_launcher_refuses_a_port_in_use(tmp_path: Path, busy_port: int) -> None:
    done = launch(tmp_path, GROUPBUY_KAFKA_PORT=str(busy_port))

    assert_one_clear_line(done, f"port {busy_port}", "already in use", "GROUPBUY_KAFKA_PORT")


def test_kafka_launcher_says_when_java_is_missing(tmp_path: Path) -> None:
    done = launch(tmp_path, JAVA_HOME=str(tmp_path / "no-jdk-here"))

    assert_one_clear_line(done, "Java is not installed")


def test_kafka_launcher_says_when_maven_cannot_reach_its_repository(tmp_path: Path) -> None:
    # An empty cache and a Maven mirror on a closed local port: nothing can be downloaded.
    settings = tmp_path / "home" / ".m2" / "settings.xml"
    settings.parent.mkdir(parents=True)
    settings.write_text(
        "<settings><mirrors><mirror><id>closed</id><mirrorOf>*</mirrorOf>"
        "<url>http://127.0.0.1:9/maven2</url></mirror></mirrors></settings>"
    )
    done = launch(
        tmp_path,
        GROUPBUY_CACHE_DIR=str(tmp_path / "cache"),
        MAVEN_OPTS=f"-Duser.home={tmp_path / 'home'}",
    )

    assert_one_clear_line(done, "Maven fetching Apache Kafka's jars failed", "maven.log")


def test_kafka_launcher_says_when_maven_is_missing(tmp_path: Path) -> None:
    java_only = tmp_path / "bin"
    java_only.mkdir()
    (java_only / "java").symlink_to(Path(os.path.realpath(_which("java"))))
    done = launch(tmp_path, GROUPBUY_CACHE_DIR=str(tmp_path / "cache"), PATH=str(java_only))

    assert_one_clear_line(done, "Maven (mvn) is not installed")


def _which(name: str) -> str:
    for folder in os.environ["PATH"].split(os.pathsep):
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    pytest.skip(f"{name} is not on PATH")
