"""Configuration from GROUPBUY_* environment variables (docs/contract.md)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from infra.local.common import LauncherError
from infra.local.kafka_cluster import local_kafka_bootstrap
from infra.local.postgres import LocalPostgres

# What each PostgreSQL connection gets unless GROUPBUY_DATABASE_URL says otherwise. A server
# that vanished without a word (a blackholed host, a half-open connection) is noticed within
# about a minute: keepalive probes after 30 s of quiet, 3 of them 10 s apart, and data left
# unacknowledged for 60 s ends the connection (tcp_user_timeout).
CONNECTION_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
}
# The server's side of each session, in its `options`. It notices a vanished client as soon,
# and so hands that client's locks (the relay's advisory lock, a swap's table locks) on.
# A lock wait ends after 30 s in an error rather than never: the services retry it, a
# replay swap stops and can be run again; an ingest batch holds its locks for seconds at most.
# No statement_timeout: what hangs is a lock wait or a dead peer, both bounded here, while a
# rebuild's COPY of the whole history or an export may rightly run for minutes (a role can
# have one: ALTER ROLE ... SET statement_timeout).
SESSION_DEFAULTS = {
    "lock_timeout": "30s",
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "60000",
}
# libpq reads these variables for what a conninfo leaves unsaid: set, they count as said.
LIBPQ_VARIABLES = {"connect_timeout": "PGCONNECT_TIMEOUT", "options": "PGOPTIONS"}
URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:@/?#]*:).*@", re.IGNORECASE)
PARAMETER_PASSWORD = re.compile(r"(password\s*=\s*)('(?:\\.|[^'\\])*'?|[^\s&]*)", re.IGNORECASE)


class ConfigurationError(Exception):
    """A setting is missing or malformed; the message names the variable."""


PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True)
class KafkaSecurity:
    """How groupbuy's own clients prove who they are to the brokers, and check the brokers'
    certificates (docs/contract.md, "Configuration"). The password is never shown: not in
    this object's repr, not in an error."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None
    ca_file: str | None = None

    @classmethod
    def from_env(cls) -> KafkaSecurity:
        env = os.environ.get
        password_file = env("GROUPBUY_KAFKA_PASSWORD_FILE") or None
        if password_file and env("GROUPBUY_KAFKA_PASSWORD"):
            raise ConfigurationError(
                "set GROUPBUY_KAFKA_PASSWORD or GROUPBUY_KAFKA_PASSWORD_FILE, not both"
            )
        security = cls(
            protocol=(env("GROUPBUY_KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").upper(),
            mechanism=(env("GROUPBUY_KAFKA_SASL_MECHANISM") or "").upper() or None,
            username=env("GROUPBUY_KAFKA_USERNAME") or None,
            password=_read_secret(password_file)
            if password_file
            else env("GROUPBUY_KAFKA_PASSWORD"),
            password_file=password_file,
            ca_file=env("GROUPBUY_KAFKA_CA_FILE") or None,
        )
        security.check()
        return security

    def check(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigurationError(
                f"GROUPBUY_KAFKA_SECURITY_PROTOCOL must be one of {', '.join(PROTOCOLS)}, "
                f"got {self.protocol!r}"
            )
        if self.protocol.startswith("SASL_"):
            if self.mechanism not in MECHANISMS:
                raise ConfigurationError(
                    f"GROUPBUY_KAFKA_SASL_MECHANISM must be one of {', '.join(MECHANISMS)} "
                    f"with {self.protocol}, got {self.mechanism!r}"
                )
            if not self.username or not self.password:
                raise ConfigurationError(
                    f"{self.protocol} needs GROUPBUY_KAFKA_USERNAME and GROUPBUY_KAFKA_PASSWORD "
                    "(or GROUPBUY_KAFKA_PASSWORD_FILE)"
                )
        if self.ca_file and not Path(self.ca_file).is_file():
            raise ConfigurationError(f"GROUPBUY_KAFKA_CA_FILE names no file: {self.ca_file!r}")

    def client_options(self) -> dict[str, Any]:
        """kafka-python's options for these settings."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol.startswith("SASL_"):
            options |= {
                "sasl_mechanism": self.mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        if self.protocol.endswith("SSL"):
            options["ssl_check_hostname"] = True
            if self.ca_file:
                options["ssl_cafile"] = self.ca_file
        return options

    def as_env(self) -> dict[str, str]:
        """The GROUPBUY_KAFKA_* variables a child process reads these settings from: the
        password's file when it came from one."""
        values = {
            "GROUPBUY_KAFKA_SECURITY_PROTOCOL": self.protocol,
            "GROUPBUY_KAFKA_SASL_MECHANISM": self.mechanism,
            "GROUPBUY_KAFKA_USERNAME": self.username,
            "GROUPBUY_KAFKA_CA_FILE": self.ca_file,
        }
        if self.password_file:
            values["GROUPBUY_KAFKA_PASSWORD_FILE"] = self.password_file
        else:
            values["GROUPBUY_KAFKA_PASSWORD"] = self.password
        return {name: value for name, value in values.items() if value}


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as error:
        raise ConfigurationError(
            f"cannot read GROUPBUY_KAFKA_PASSWORD_FILE {path!r}: {error.strerror}"
        ) from None


DATABASE_VARIABLE, READ_DATABASE_VARIABLE = "GROUPBUY_DATABASE_URL", "GROUPBUY_READ_DATABASE_URL"


@dataclass(frozen=True)
class Settings:
    database_url: str = field(repr=False)  # it may hold a password: see __repr__
    kafka_bootstrap: str
    topic_prefix: str = ""
    database_schema: str = "public"
    kafka_security: KafkaSecurity = KafkaSecurity()
    # A replica the readers read from instead (docs/operations.md, "Read replica").
    read_database_url: str | None = field(default=None, repr=False)
    # True in the copy `for_reading` makes: its database_url is the replica's.
    reading: bool = False

    def __repr__(self) -> str:
        read_url = self.read_database_url and redacted(self.read_database_url)
        return (
            f"Settings(database_url={redacted(self.database_url)!r}, "
            f"kafka_bootstrap={self.kafka_bootstrap!r}, topic_prefix={self.topic_prefix!r}, "
            f"database_schema={self.database_schema!r}, kafka_security={self.kafka_security!r}, "
            f"read_database_url={read_url!r}, reading={self.reading!r})"
        )

    @classmethod
    def from_env(cls) -> Settings:
        """The configured services, or the local ones that `make up` starts."""
        settings = cls(
            database_url=os.environ.get(DATABASE_VARIABLE) or LocalPostgres.from_env().url,
            kafka_bootstrap=os.environ.get("GROUPBUY_KAFKA_BOOTSTRAP") or local_bootstrap(),
            topic_prefix=os.environ.get("GROUPBUY_TOPIC_PREFIX", ""),
            # Lets several installations (or test runs) share one database.
            database_schema=os.environ.get("GROUPBUY_DATABASE_SCHEMA", "public"),
            kafka_security=KafkaSecurity.from_env(),
            read_database_url=os.environ.get(READ_DATABASE_VARIABLE) or None,
        )
        # A malformed URL is named before any use.
        database_parameters(settings.database_url)
        if settings.read_database_url:
            database_parameters(settings.read_database_url, READ_DATABASE_VARIABLE)
        return settings

    def for_reading(self) -> Settings:
        """These settings as a reader uses them: on GROUPBUY_READ_DATABASE_URL when set, so
        that reports and public reads leave the primary to the writers."""
        if not self.read_database_url:
            return self
        return replace(self, database_url=self.read_database_url, reading=True)

    @property
    def database_variable(self) -> str:
        """The variable database_url came from, for errors a person can act on."""
        return READ_DATABASE_VARIABLE if self.reading else DATABASE_VARIABLE

    @property
    def postgres_conninfo(self) -> str:
        """What to connect to PostgreSQL with: the URL, and groupbuy's connection defaults."""
        return postgres_conninfo(self.database_url)

    def as_env(self) -> dict[str, str]:
        """These settings as the GROUPBUY_* variables a child process reads."""
        values = {
            "GROUPBUY_DATABASE_URL": self.database_url,
            "GROUPBUY_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "GROUPBUY_TOPIC_PREFIX": self.topic_prefix,
            "GROUPBUY_DATABASE_SCHEMA": self.database_schema,
        }
        if self.read_database_url:
            values[READ_DATABASE_VARIABLE] = self.read_database_url
        return values | self.kafka_security.as_env()


def local_bootstrap() -> str:
    """The Kafka that `make up` starts: one broker, or GROUPBUY_KAFKA_NODES of them."""
    try:
        return local_kafka_bootstrap()
    except LauncherError as error:
        raise ConfigurationError(str(error)) from None


def postgres_conninfo(database_url: str) -> str:
    """`database_url` (a URL or key=value conninfo) with CONNECTION_DEFAULTS and
    SESSION_DEFAULTS for whatever it, or libpq's variables, leave unsaid."""
    given = database_parameters(database_url)
    variables = {k: os.environ[v] for k, v in LIBPQ_VARIABLES.items() if v in os.environ}
    given = variables | given
    added = {k: v for k, v in CONNECTION_DEFAULTS.items() if k not in given}
    options = given.get("options", "")
    said = options.replace("-", "_")  # `-c lock_timeout=1s` and `--lock-timeout=1s` alike
    session = [f"-c {k}={v}" for k, v in SESSION_DEFAULTS.items() if f"{k}=" not in said]
    if session:
        added["options"] = " ".join([*session, options]).strip()
    return make_conninfo(database_url, **added)


def database_parameters(database_url: str, variable: str = DATABASE_VARIABLE) -> dict[str, str]:
    """The libpq parameters of `database_url`; an error naming `variable` (where the URL
    came from) that never shows the password."""
    try:
        parameters = {k: str(v) for k, v in conninfo_to_dict(database_url).items()}
    except psycopg.ProgrammingError:
        # libpq's own message quotes the string it could not parse, password and all.
        raise ConfigurationError(
            f"{variable} must be a PostgreSQL URL "
            "(postgresql://user:password@host:port/database) or key=value conninfo "
            f"(host=... dbname=...), got {redacted(database_url)!r}"
        ) from None
    ports = parameters.get("port", "")
    if not all(port.strip().isdigit() for port in ports.split(",") if ports):
        raise ConfigurationError(
            f"{variable} names port {ports!r}, not a number: {redacted(database_url)!r}"
        )
    return parameters


def redacted(database_url: str) -> str:
    """`database_url` with its password, in the URL or as a parameter, shown as ***."""
    return PARAMETER_PASSWORD.sub(r"\1***", URL_PASSWORD.sub(r"\1***@", database_url))


def database_address(database_url: str) -> str:
    """Where GROUPBUY_DATABASE_URL points, as host:port/database: nothing secret in it."""
    try:
        parameters = database_parameters(database_url)
    except ConfigurationError:
        return redacted(database_url)
    host = parameters.get("host") or parameters.get("hostaddr") or "localhost"
    return f"{host}:{parameters.get('port') or 5432}/{parameters.get('dbname', '')}"


def eventsourcing_env(database_url: str, schema: str = "") -> dict[str, str]:
    """The eventsourcing library's PostgreSQL settings for GROUPBUY_DATABASE_URL."""
    parameters = database_parameters(database_url)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parameters.get("dbname") or parameters.get("user") or "postgres",
        "POSTGRES_HOST": parameters.get("host") or parameters.get("hostaddr") or "",
        "POSTGRES_PORT": parameters.get("port") or "5432",
        "POSTGRES_USER": parameters.get("user", ""),
        "POSTGRES_PASSWORD": parameters.get("password", ""),
    }
    if schema:
        env["POSTGRES_SCHEMA"] = schema
    return env


def metrics_port() -> int | None:
    """`GROUPBUY_METRICS_PORT`: where a service answers `/metrics`, `/healthz` and
    `/readyz`; None when unset (off)."""
    value = os.environ.get("GROUPBUY_METRICS_PORT", "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) > 65535:
        raise ConfigurationError(
            f"GROUPBUY_METRICS_PORT must be a port number, 0 to 65535, got {value!r}"
        )
    return int(value)


READY_MAX_LAG = 10_000  # records a consumer may be behind and still be ready


def ready_max_lag() -> int:
    """`GROUPBUY_READY_MAX_LAG`: the most records a consumer service may be behind on any of
    its partitions while `/readyz` says ready."""
    value = os.environ.get("GROUPBUY_READY_MAX_LAG", "").strip()
    if not value:
        return READY_MAX_LAG
    if not value.isdigit():
        raise ConfigurationError(
            f"GROUPBUY_READY_MAX_LAG must be a whole number of records, got {value!r}"
        )
    return int(value)


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def log_format() -> str:
    """`GROUPBUY_LOG_FORMAT`: `text` (the default) or `json`, one object per line."""
    value = (os.environ.get("GROUPBUY_LOG_FORMAT") or "text").strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigurationError(f"GROUPBUY_LOG_FORMAT must be text or json, got {value!r}")
    return value


def log_level() -> str:
    """`GROUPBUY_LOG_LEVEL`: the least severe level logged (default INFO)."""
    value = (os.environ.get("GROUPBUY_LOG_LEVEL") or "INFO").strip().upper()
    if value not in LOG_LEVELS:
        raise ConfigurationError(
            f"GROUPBUY_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {value!r}"
        )
    return value


def effective(settings: Settings) -> dict[str, str]:
    """What a service runs with, as its variables, secrets masked: a start's first log."""
    env = settings.as_env() | {
        "GROUPBUY_DATABASE_URL": redacted(settings.database_url),
        READ_DATABASE_VARIABLE: redacted(settings.read_database_url or ""),
        "GROUPBUY_METRICS_PORT": "off" if (port := metrics_port()) is None else str(port),
        "GROUPBUY_TOPIC_PARTITIONS": os.environ.get("GROUPBUY_TOPIC_PARTITIONS", "8"),
        "GROUPBUY_TOPIC_REPLICATION": os.environ.get("GROUPBUY_TOPIC_REPLICATION", ""),
        "GROUPBUY_READY_MAX_LAG": str(ready_max_lag()),
        "GROUPBUY_LOG_FORMAT": log_format(),
        "GROUPBUY_LOG_LEVEL": log_level(),
        "GROUPBUY_INSTANCE": os.environ.get("GROUPBUY_INSTANCE", ""),
    }
    if "GROUPBUY_KAFKA_PASSWORD" in env:
        env["GROUPBUY_KAFKA_PASSWORD"] = "***"
    return {name: value for name, value in env.items() if value}
