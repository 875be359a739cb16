"""groupbuy on the local PostgreSQL with TLS (`GROUPBUY_SECURE=1 make up`): with
`sslmode=verify-full`, every way it connects checks the server's certificate against the CA
it is given, and the server takes nothing but TLS."""

from __future__ import annotations

import dataclasses
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from infra.adapters.app import ensure_schema, open_app
from infra.local.secure_postgres import LocalSecurePostgres
from infra.settings import Settings, postgres_conninfo
from tests.support.builders import campaign
from tests.support.pipeline import groupbuy


@pytest.fixture(scope="module")
def server() -> LocalSecurePostgres:
    postgres = LocalSecurePostgres.from_env()
    postgres.start()  # or finds it running
    return postgres


@pytest.fixture
def on_tls(settings: Settings, server: LocalSecurePostgres, unique: str) -> Settings:
    return dataclasses.replace(settings, database_url=server.url, database_schema=f"tls_{unique}")


@pytest.fixture
def another_ca(tmp_path: Path) -> Path:
    """A CA that signed nothing of the server's."""
    pem = tmp_path / "other-ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=another CA", "-keyout", str(tmp_path / "other.key"), "-out", str(pem)],
        check=True, capture_output=True,
    )  # fmt: skip
    return pem


def test_the_event_store_and_plain_connections_verify_the_server(on_tls: Settings) -> None:
    ensure_schema(on_tls)
    app = open_app(on_tls)
    app.open_campaign(campaign("over-tls", max_per_buyer=None), datetime.now(UTC))
    version = app.get_campaign("over-tls").version
    app.close()
    with psycopg.connect(postgres_conninfo(on_tls.database_url)) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    listed = groupbuy(on_tls, "history", "over-tls", "--at", "2100-01-01T00:00:00Z")

    assert version == 1
    assert row == (True,)
    assert listed.returncode == 0, listed.stderr


def test_a_server_whose_certificate_the_ca_did_not_sign_is_refused_everywhere(
    on_tls: Settings, another_ca: Path
) -> None:
    url = on_tls.database_url.split("&sslrootcert=")[0] + f"&sslrootcert={another_ca}"
    wrong = dataclasses.replace(on_tls, database_url=url)

    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(postgres_conninfo(url)).close()
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        ensure_schema(wrong)  # what every service does first, before the event store's pool
    listed = groupbuy(wrong, "history", "over-tls", "--at", "2100-01-01T00:00:00Z")
    assert listed.returncode == 3  # a service it needs does not answer
    assert "certificate verify failed" in listed.stderr


def test_a_connection_without_tls_is_turned_away(on_tls: Settings) -> None:
    url = on_tls.database_url.split("?")[0] + "?sslmode=disable"
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(postgres_conninfo(url)).close()
