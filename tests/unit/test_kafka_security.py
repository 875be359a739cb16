"""groupbuy's Kafka security settings (docs/contract.md, "Configuration"): checked before
any use, handed to every client by the one factory, and never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.adapters import kafka_clients
from infra.settings import ConfigurationError, KafkaSecurity, Settings

SECURED = {
    "GROUPBUY_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
    "GROUPBUY_KAFKA_SASL_MECHANISM": "scram-sha-512",
    "GROUPBUY_KAFKA_USERNAME": "groupbuy",
}
PASSWORD = "s3cret-Never-Shown"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*SECURED, "GROUPBUY_KAFKA_PASSWORD", "GROUPBUY_KAFKA_PASSWORD_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GROUPBUY_KAFKA_CA_FILE", raising=False)
    return monkeypatch


def secured(env: pytest.MonkeyPatch, **more: str) -> None:
    for name, value in (SECURED | more).items():
        env.setenv(name, value)


def test_plaintext_is_the_default_and_adds_nothing(env: pytest.MonkeyPatch) -> None:
    security = KafkaSecurity.from_env()
    assert security.client_options() == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_reaches_every_client_with_the_password_from_its_file(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    password_file, ca_file = tmp_path / "password", tmp_path / "ca.pem"
    password_file.write_text(PASSWORD + "\n")
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    secured(
        env, GROUPBUY_KAFKA_PASSWORD_FILE=str(password_file), GROUPBUY_KAFKA_CA_FILE=str(ca_file)
    )
    settings = Settings(
        "postgresql://u:pw@h/db", "127.0.0.1:1", kafka_security=KafkaSecurity.from_env()
    )

    options = kafka_clients.connection(settings)

    assert options == {
        "bootstrap_servers": "127.0.0.1:1",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "groupbuy",
        "sasl_plain_password": PASSWORD,
        "ssl_check_hostname": True,
        "ssl_cafile": str(ca_file),
    }
    # A child process is told where the password is, not the password.
    assert settings.as_env()["GROUPBUY_KAFKA_PASSWORD_FILE"] == str(password_file)
    assert PASSWORD not in repr(settings.as_env())
    assert PASSWORD not in repr(settings)
    assert ":pw@" not in repr(settings)  # the database URL's password neither


@pytest.mark.parametrize(
    ("more", "says"),
    [
        ({"GROUPBUY_KAFKA_SECURITY_PROTOCOL": "TLS"}, "must be one of PLAINTEXT, SSL"),
        ({"GROUPBUY_KAFKA_SASL_MECHANISM": "GSSAPI"}, "GROUPBUY_KAFKA_SASL_MECHANISM"),
        ({}, "needs GROUPBUY_KAFKA_USERNAME and GROUPBUY_KAFKA_PASSWORD"),
        (
            {"GROUPBUY_KAFKA_PASSWORD": PASSWORD, "GROUPBUY_KAFKA_CA_FILE": "/no/such/ca.pem"},
            "GROUPBUY_KAFKA_CA_FILE names no file",
        ),
        (
            {"GROUPBUY_KAFKA_PASSWORD": PASSWORD, "GROUPBUY_KAFKA_PASSWORD_FILE": "/x"},
            "not both",
        ),
        ({"GROUPBUY_KAFKA_PASSWORD_FILE": "/no/such/password"}, "cannot read"),
    ],
)
def test_settings_that_cannot_work_are_named_without_the_password(
    env: pytest.MonkeyPatch, more: dict[str, str], says: str
) -> None:
    secured(env, **more)
    with pytest.raises(ConfigurationError, match=says) as raised:
        KafkaSecurity.from_env()
    assert PASSWORD not in str(raised.value)
