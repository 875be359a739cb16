"""Configuration from GROUPBUY_* environment variables (docs/contract.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from infra.local.kafka import LocalKafka
from infra.local.postgres import LocalPostgres


class ConfigurationError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    kafka_bootstrap: str
    topic_prefix: str = ""
    database_schema: str = "public"

    @classmethod
    def from_env(cls) -> Settings:
        """The configured services, or the local ones that `make up` starts."""
        return cls(
            database_url=os.environ.get("GROUPBUY_DATABASE_URL") or LocalPostgres.from_env().url,
            kafka_bootstrap=os.environ.get("GROUPBUY_KAFKA_BOOTSTRAP")
            or LocalKafka.from_env().bootstrap,
            topic_prefix=os.environ.get("GROUPBUY_TOPIC_PREFIX", ""),
            # Lets several installations (or test runs) share one database.
            database_schema=os.environ.get("GROUPBUY_DATABASE_SCHEMA", "public"),
        )

    def as_env(self) -> dict[str, str]:
        """These settings as the GROUPBUY_* variables a child process reads."""
        return {
            "GROUPBUY_DATABASE_URL": self.database_url,
            "GROUPBUY_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "GROUPBUY_TOPIC_PREFIX": self.topic_prefix,
            "GROUPBUY_DATABASE_SCHEMA": self.database_schema,
        }


def eventsourcing_env(database_url: str, schema: str = "") -> dict[str, str]:
    """The eventsourcing library's PostgreSQL settings for a postgresql:// URL."""
    parts = urlsplit(database_url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
        raise ConfigurationError(
            f"GROUPBUY_DATABASE_URL must look like postgresql://user:password@host:port/db, "
            f"got {database_url!r}"
        )
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": parts.hostname,
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or ""),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
    }
    if schema:
        env["POSTGRES_SCHEMA"] = schema
    return env
