"""No password in what groupbuy prints: the services and commands failing to log in, the
launchers of the secured services and their logs."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from infra.local.common import state_dir
from infra.local.secure_kafka import LocalCA, LocalSecureKafka
from infra.local.secure_postgres import LocalSecurePostgres
from infra.settings import Settings
from tests.support.pipeline import GROUPBUY

WRONG = "wrong-" + uuid.uuid4().hex  # a password that must never be printed


@pytest.fixture(scope="module")
def secured() -> tuple[LocalSecureKafka, LocalSecurePostgres]:
    kafka, postgres = LocalSecureKafka.from_env(), LocalSecurePostgres.from_env()
    kafka.start()
    postgres.start()
    return kafka, postgres


def run(env: dict[str, str], *arguments: str, timeout: float = 60) -> str:
    """What a command printed, stdout and stderr, and its exit code."""
    try:
        done = subprocess.run(
            [GROUPBUY, *arguments],
            # Kafka's security variables are this command's alone, not the suite's.
            env={k: v for k, v in os.environ.items() if not k.startswith("GROUPBUY_KAFKA_")} | env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as expired:  # a service retrying: what it printed so far
        parts = (expired.stdout, expired.stderr)
        return "".join(p.decode() if isinstance(p, bytes) else (p or "") for p in parts)
    return f"{done.stdout}{done.stderr}exit {done.returncode}"


def test_a_service_with_a_wrong_kafka_password_says_so_without_it(
    settings: Settings, secured: tuple[LocalSecureKafka, LocalSecurePostgres]
) -> None:
    kafka, _ = secured
    env = settings.as_env() | kafka.exports()
    env.pop("GROUPBUY_KAFKA_PASSWORD_FILE")
    env["GROUPBUY_KAFKA_PASSWORD"] = WRONG

    printed = run(env, "relay", timeout=20)

    # It names the broker it cannot log in to (kafka-python says why only sometimes: an
    # authentication failure, or the broker hanging up on a client that failed before).
    assert kafka.bootstrap in printed
    assert WRONG not in printed


def test_a_command_with_a_wrong_database_password_says_so_without_it(
    settings: Settings, secured: tuple[LocalSecureKafka, LocalSecurePostgres]
) -> None:
    _, postgres = secured
    url = postgres.url.replace("groupbuy:groupbuy@", f"groupbuy:{WRONG}@")
    env = settings.as_env() | {"GROUPBUY_DATABASE_URL": url}

    printed = run(env, "history", "nothing", "--at", "2100-01-01T00:00:00Z")

    assert "password authentication failed" in printed
    assert WRONG not in printed


def test_the_secured_launchers_and_their_logs_hold_no_password(
    secured: tuple[LocalSecureKafka, LocalSecurePostgres],
) -> None:
    kafka, postgres = secured
    up = subprocess.run(
        [sys.executable, "-m", "infra.local", "up"],
        env=os.environ
        | {"GROUPBUY_SECURE": "1", "GROUPBUY_KAFKA_BOOTSTRAP": "", "GROUPBUY_DATABASE_URL": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    ca = LocalCA.from_env()
    secrets = {
        "the services' Kafka password": kafka.password_file.read_text(),
        "the broker's keystore password": (kafka.home / "keystore.password").read_text(),
        "the CA's password": ca.password_file.read_text(),
    }
    logs = [
        kafka.log_file,
        postgres.log_file,
        postgres.home / "launcher.log",
        state_dir() / "postgres" / "launcher.log",
    ]
    printed = up.stdout + up.stderr + "".join(p.read_text() for p in logs if p.exists())

    assert up.returncode == 0, up.stderr
    assert "GROUPBUY_KAFKA_PASSWORD_FILE" in up.stdout  # where it is, not what it is
    for name, secret in secrets.items():
        assert secret not in printed, name
