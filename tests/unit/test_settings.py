"""GROUPBUY_DATABASE_URL: both forms, groupbuy's connection defaults, and never a password shown."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from infra.cli.main import main
from infra.settings import (
    ConfigurationError,
    database_address,
    eventsourcing_env,
    metrics_port,
    postgres_conninfo,
)

URL = "postgresql://shop:s3cret@db.example:6432/groupbuy?sslmode=verify-full"


def test_every_connection_gets_keepalives_timeouts_and_a_lock_timeout() -> None:
    parameters = conninfo_to_dict(postgres_conninfo(URL))

    assert parameters["keepalives"] == "1"
    assert (parameters["keepalives_idle"], parameters["keepalives_interval"]) == ("30", "10")
    assert parameters["keepalives_count"] == "3"
    assert (parameters["tcp_user_timeout"], parameters["connect_timeout"]) == ("60000", "10")
    assert "-c lock_timeout=30s" in str(parameters["options"])
    assert "-c tcp_keepalives_idle=30" in str(parameters["options"])
    assert "statement_timeout" not in str(parameters["options"])


def test_what_the_url_says_wins_over_the_defaults_and_nothing_of_it_is_lost() -> None:
    url = f"{URL}&keepalives_idle=5&connect_timeout=2&options=-c%20lock_timeout%3D1s"

    parameters = conninfo_to_dict(postgres_conninfo(url))

    assert (parameters["keepalives_idle"], parameters["connect_timeout"]) == ("5", "2")
    assert parameters["sslmode"] == "verify-full"
    assert (parameters["host"], parameters["port"], parameters["password"]) == (
        "db.example",
        "6432",
        "s3cret",
    )
    options = str(parameters["options"])
    assert options.count("lock_timeout") == 1
    assert options.endswith("-c lock_timeout=1s")
    assert "-c tcp_keepalives_idle=30" in options


def test_libpq_variables_count_as_said(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "3")
    monkeypatch.setenv("PGOPTIONS", "-c lock_timeout=2s")

    parameters = conninfo_to_dict(postgres_conninfo(URL))

    assert "connect_timeout" not in parameters  # so libpq takes PGCONNECT_TIMEOUT's
    assert str(parameters["options"]).endswith("-c lock_timeout=2s")
    assert str(parameters["options"]).count("lock_timeout") == 1


def test_defaults_added_twice_are_added_once() -> None:
    once = postgres_conninfo(URL)

    assert conninfo_to_dict(postgres_conninfo(once)) == conninfo_to_dict(once)


def test_a_key_value_conninfo_is_as_good_as_a_url() -> None:
    conninfo = "host=db.example port=6432 dbname=groupbuy user=shop password='s 3cret'"

    env = eventsourcing_env(conninfo, "tenant")

    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"]) == ("db.example", "6432")
    assert (env["POSTGRES_DBNAME"], env["POSTGRES_USER"]) == ("groupbuy", "shop")
    assert (env["POSTGRES_PASSWORD"], env["POSTGRES_SCHEMA"]) == ("s 3cret", "tenant")
    assert conninfo_to_dict(postgres_conninfo(conninfo))["keepalives"] == "1"
    assert database_address(conninfo) == "db.example:6432/groupbuy"


@pytest.mark.parametrize(
    "url",
    [
        "mysql://shop:s3cret@db.example/groupbuy",
        "postgresql://shop:s3 cret@db.example/groupbuy",
        "postgresql://shop:s3cret@db.example:port/groupbuy",
        "postgresql://shop@db.example:port/groupbuy?password=s3cret",
        "host=db.example password=s3cret port=abc",
        "host=db.example password='s3 cret' dbname",
    ],
)
def test_a_malformed_database_url_is_named_without_its_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        eventsourcing_env(url)

    assert "GROUPBUY_DATABASE_URL" in str(raised.value)
    assert "s3" not in str(raised.value)
    assert "***" in str(raised.value)


def test_the_command_prints_a_bad_database_url_on_one_line_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GROUPBUY_DATABASE_URL", "postgresql://shop:s3 cret@db.example/groupbuy")

    code = main(["campaign", "list"])

    printed = capsys.readouterr().err
    assert code == 1
    assert printed.startswith("groupbuy: GROUPBUY_DATABASE_URL must be")
    assert len(printed.strip().splitlines()) == 1
    assert "s3" not in printed


@pytest.mark.parametrize(("value", "port"), [("", None), ("9100", 9100), (" 0 ", 0)])
def test_the_metrics_port_is_off_unless_set(
    monkeypatch: pytest.MonkeyPatch, value: str, port: int | None
) -> None:
    monkeypatch.setenv("GROUPBUY_METRICS_PORT", value)
    assert metrics_port() == port


@pytest.mark.parametrize("value", ["http", "-1", "65536", "91.5"])
def test_a_metrics_port_that_is_no_port_is_named(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("GROUPBUY_METRICS_PORT", value)
    with pytest.raises(ConfigurationError, match=f"GROUPBUY_METRICS_PORT .*{value!r}"):
        metrics_port()
