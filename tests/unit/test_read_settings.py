"""GROUPBUY_READ_DATABASE_URL: optional, validated, never shown, and what readers read from."""

from __future__ import annotations

import pytest

from infra.adapters.replica import ReplicaLag
from infra.cli.main import main
from infra.settings import ConfigurationError, Settings, effective

PRIMARY = "postgresql://shop:s3cret@primary.example:5432/groupbuy"
REPLICA = "postgresql://reader:r3plica@replica.example:5432/groupbuy"


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("GROUPBUY_DATABASE_URL", PRIMARY)
    monkeypatch.setenv("GROUPBUY_KAFKA_BOOTSTRAP", "kafka.example:9092")
    monkeypatch.delenv("GROUPBUY_READ_DATABASE_URL", raising=False)
    return monkeypatch


def test_without_a_read_url_readers_read_the_primary(environment: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env()

    assert settings.read_database_url is None
    assert settings.for_reading() is settings
    assert settings.database_variable == "GROUPBUY_DATABASE_URL"
    assert "GROUPBUY_READ_DATABASE_URL" not in settings.as_env()


def test_with_a_read_url_readers_read_the_replica_and_writers_the_primary(
    environment: pytest.MonkeyPatch,
) -> None:
    environment.setenv("GROUPBUY_READ_DATABASE_URL", REPLICA)
    settings = Settings.from_env()

    reading = settings.for_reading()

    assert settings.database_url == PRIMARY
    assert (reading.database_url, reading.reading) == (REPLICA, True)
    assert reading.database_variable == "GROUPBUY_READ_DATABASE_URL"
    assert "replica.example" in reading.postgres_conninfo
    assert "connect_timeout=10" in reading.postgres_conninfo  # a stopped replica is no hang
    assert settings.as_env()["GROUPBUY_READ_DATABASE_URL"] == REPLICA  # for child processes


def test_the_read_url_is_never_shown(environment: pytest.MonkeyPatch) -> None:
    environment.setenv("GROUPBUY_READ_DATABASE_URL", REPLICA)
    settings = Settings.from_env()

    shown = [repr(settings), repr(settings.for_reading()), str(effective(settings))]

    assert all("r3plica" not in text and "s3cret" not in text for text in shown)
    assert effective(settings)["GROUPBUY_READ_DATABASE_URL"].endswith(
        "reader:***@replica.example:5432/groupbuy"
    )


def test_a_malformed_read_url_is_named_without_its_password(
    environment: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    environment.setenv("GROUPBUY_READ_DATABASE_URL", "postgresql://reader:r3 plica@replica/x")

    with pytest.raises(ConfigurationError, match=r"^GROUPBUY_READ_DATABASE_URL must be"):
        Settings.from_env()
    code = main(["campaign", "list"])

    printed = capsys.readouterr().err
    assert code == 1
    assert printed.startswith("groupbuy: GROUPBUY_READ_DATABASE_URL must be")
    assert "r3" not in printed


def test_a_replica_behind_or_not_streaming_says_so_naming_its_variable() -> None:
    behind = ReplicaLag(2.34, streaming=True).note("GROUPBUY_READ_DATABASE_URL")
    lost = ReplicaLag(0.0, streaming=False).note("GROUPBUY_READ_DATABASE_URL")

    assert behind == (
        "note: reading from a replica 2.3 s behind its primary (GROUPBUY_READ_DATABASE_URL)"
    )
    assert "not streaming" in lost
    assert lost.endswith("(GROUPBUY_READ_DATABASE_URL)")
