"""A first run on a new machine: a broker that has only just started, a schema not made yet."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from infra.local.kafka import LocalKafka
from infra.settings import KafkaSecurity, Settings
from tests.support.builders import campaign
from tests.support.pipeline import GROUPBUY, child_env, groupbuy

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fresh_kafka(tmp_path: Path, database_url: str) -> Iterator[str]:
    """A broker of its own, started from empty storage: no consumer offsets topic yet."""
    state = tmp_path / "state"
    kafka = LocalKafka(port=free_port(), controller_port=free_port(), home=state / "kafka")
    environment = os.environ | {
        "GROUPBUY_STATE_DIR": str(state),
        "GROUPBUY_KAFKA_PORT": str(kafka.port),
        "GROUPBUY_KAFKA_CONTROLLER_PORT": str(kafka.controller_port),
        "GROUPBUY_KAFKA_HEAP": "384m",
        "GROUPBUY_DATABASE_URL": database_url,  # so that `up` starts no database
    }
    environment.pop("GROUPBUY_KAFKA_BOOTSTRAP", None)
    try:
        up = subprocess.run(
            [sys.executable, "-m", "infra.local", "up"],
            cwd=ROOT,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert up.returncode == 0, up.stderr
        yield kafka.bootstrap
    finally:
        kafka.stop()  # its own pid file: the shared broker is left alone


def schema_exists(settings: Settings) -> bool:
    with psycopg.connect(settings.database_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (settings.database_schema,)
        ).fetchone()
    return bool(row and row[0])


def test_the_demo_runs_on_a_broker_that_has_just_started(
    settings: Settings, fresh_kafka: str
) -> None:
    # A schema beside the test's own, so the test's clean-up drops it too.
    fresh = replace(
        settings,
        kafka_bootstrap=fresh_kafka,
        kafka_security=KafkaSecurity(),  # the fresh broker speaks plain text
        database_schema=f"{settings.database_schema}_demo",
    )
    demo = subprocess.run(
        [GROUPBUY, "demo", "--speed", "10", "--orders", "60", "--no-live", "--json"],
        env=child_env(fresh),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )

    assert demo.returncode == 0, demo.stderr
    printed = json.loads(demo.stdout.splitlines()[-1])
    assert printed["purchase_order"]["type"] == "purchase_order.issued"
    assert schema_exists(fresh)


def test_an_operator_command_creates_the_configured_schema_when_it_is_missing(
    settings: Settings, unique: str
) -> None:
    missing = replace(settings, database_schema=f"{settings.database_schema}_new")
    definition = campaign(f"fresh-{unique}").to_json_dict()

    done = groupbuy(missing, "campaign", "open", "-", stdin=json.dumps(definition))

    assert done.returncode == 0, done.stderr
    assert schema_exists(missing)
    with psycopg.connect(settings.database_url) as conn:
        events = Identifier(missing.database_schema, "groupbuying_events")
        row = conn.execute(SQL("SELECT count(*) FROM {}").format(events)).fetchone()
    assert row == (1,)  # the campaign's Opened event, stored there
