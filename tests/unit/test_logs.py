"""GROUPBUY_LOG_FORMAT, GROUPBUY_LOG_LEVEL, GROUPBUY_READY_MAX_LAG, and the configuration a
service logs at start: JSON a collector can read, and never a secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from infra.adapters import logs
from infra.settings import (
    ConfigurationError,
    KafkaSecurity,
    Settings,
    effective,
    log_format,
    log_level,
    ready_max_lag,
)

SECRET_URL = "postgresql://shop:s3cret@db.example:6432/groupbuy"


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    kafka_level = logging.getLogger("kafka").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(kafka_level)


def test_a_json_line_carries_the_service_and_where_the_record_is_from(
    restored_logging: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GROUPBUY_LOG_FORMAT", "json")
    logs.configure("ingest")
    where = logs.where(campaign="laptop-x1", topic="groupbuy.orders.a.v1", partition=3, offset=41)
    logging.getLogger("consumers.loop").warning("set aside: %s", "not json", extra=where)
    try:
        raise ValueError('broken "quote"\nand a newline')
    except ValueError:
        logging.getLogger("x").exception("failed")

    first, second = capsys.readouterr().err.splitlines()
    entry = json.loads(first)
    assert entry["service"] == "ingest"
    assert (entry["level"], entry["logger"]) == ("WARNING", "consumers.loop")
    assert entry["message"] == "set aside: not json"
    assert (entry["campaign"], entry["topic"]) == ("laptop-x1", "groupbuy.orders.a.v1")
    assert (entry["partition"], entry["offset"]) == (3, 41)
    assert entry["time"].endswith("+00:00")
    failure = json.loads(second)  # a traceback stays on its one line
    assert "broken" in failure["exception"]
    assert "ValueError" in failure["exception"]
    assert "campaign" not in failure


def test_the_level_drops_what_is_less_severe(
    restored_logging: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GROUPBUY_LOG_LEVEL", "warning")
    logs.configure("relay")
    logging.getLogger("a").info("not shown")
    logging.getLogger("a").warning("shown")
    logging.getLogger("kafka.conn").info("a connection, not shown")

    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "WARNING shown" in lines[0]  # the text format by default


@pytest.mark.parametrize(
    ("variable", "value", "read"),
    [
        ("GROUPBUY_LOG_FORMAT", "xml", log_format),
        ("GROUPBUY_LOG_LEVEL", "loud", log_level),
        ("GROUPBUY_READY_MAX_LAG", "-5", ready_max_lag),
        ("GROUPBUY_READY_MAX_LAG", "many", ready_max_lag),
    ],
)
def test_a_bad_logging_or_readiness_setting_is_named(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, read: object
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=variable):
        read()  # type: ignore[operator]


def test_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GROUPBUY_LOG_FORMAT", "GROUPBUY_LOG_LEVEL", "GROUPBUY_READY_MAX_LAG"):
        monkeypatch.delenv(name, raising=False)
    assert (log_format(), log_level(), ready_max_lag()) == ("text", "INFO", 10_000)


def test_the_configuration_logged_at_start_masks_every_secret(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("GROUPBUY_METRICS_PORT", "9100")
    security = KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "groupbuy", "k4fka-secret")
    settings = Settings(SECRET_URL, "broker:9093", "prod.", "shop", security)
    shown = effective(settings)
    assert shown["GROUPBUY_DATABASE_URL"] == "postgresql://shop:***@db.example:6432/groupbuy"
    assert shown["GROUPBUY_KAFKA_PASSWORD"] == "***"
    assert shown["GROUPBUY_METRICS_PORT"] == "9100"
    assert shown["GROUPBUY_TOPIC_PREFIX"] == "prod."

    with caplog.at_level(logging.INFO):
        logs.log_configuration("settle", settings)
    (line,) = caplog.messages
    assert line.startswith("settle starting with ")
    assert "GROUPBUY_KAFKA_USERNAME=groupbuy" in line
    assert "s3cret" not in line
    assert "k4fka-secret" not in line
