"""Sites and suppliers: their topics, and on a secured cluster their Kafka users and ACLs.

A site may write its orders topic and read its two result topics, and use consumer groups
named after it; a supplier may read its settlements topic, and use groups named after it.
ACLs name topics literally, so `site-a` is never granted `site-ab`'s topics. Nobody else is
granted anything: groupbuy's services run as the cluster's super-user.
"""

from __future__ import annotations

import getpass
import re
import secrets
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourceType,
)
from kafka.admin._users import ScramMechanism, UserScramCredentialUpsertion
from psycopg.sql import SQL, Composed, Identifier

from domain.text import SLUG, SLUG_HINT
from infra.adapters import kafka_clients
from infra.adapters.topics import Topics
from infra.settings import Settings

TABLE = "groupbuying_tenants"
KINDS = ("site", "supplier")
RESERVED = {"dlq"}  # `groupbuy.orders.dlq.v1` is the dead letters' topic
MECHANISMS = {
    "SCRAM-SHA-256": ScramMechanism.SCRAM_SHA_256,
    "SCRAM-SHA-512": ScramMechanism.SCRAM_SHA_512,
}


class TenantError(ValueError):
    """A registration that cannot be made; the message says why."""


@dataclass(frozen=True)
class Tenant:
    kind: str
    tenant_id: str
    registered_at: datetime
    registered_by: str
    topics: list[str]


def check_id(kind: str, tenant_id: str) -> None:
    if not re.fullmatch(SLUG, tenant_id):
        raise TenantError(f"a {kind} id must be a slug ({SLUG_HINT}), got {tenant_id!r}")
    if tenant_id in RESERVED:
        raise TenantError(f"{tenant_id!r} is reserved: it names one of groupbuy's own topics")


def topics_of(topics: Topics, kind: str, tenant_id: str) -> list[str]:
    if kind == "site":
        return topics.site_topics(tenant_id)
    return [topics.settlements(tenant_id)]


def acls_of(topics: Topics, kind: str, tenant_id: str) -> list[ACL]:
    """What the tenant may do: literal topic names, groups prefixed by its id."""
    grants: list[tuple[str, ACLOperation]] = []
    if kind == "site":
        grants += [(topics.site_orders(tenant_id), ACLOperation.WRITE)]
        grants += [(topics.site_results(tenant_id), ACLOperation.READ)]
        grants += [(topics.site_buyer_settlements(tenant_id), ACLOperation.READ)]
    else:
        grants += [(topics.settlements(tenant_id), ACLOperation.READ)]
    principal = f"User:{tenant_id}"

    def allow(operation: ACLOperation, pattern: ResourcePattern) -> ACL:
        return ACL(principal, "*", operation, ACLPermissionType.ALLOW, pattern)

    acls = []
    for topic, operation in grants:
        pattern = ResourcePattern(ResourceType.TOPIC, topic, ACLResourcePatternType.LITERAL)
        acls += [allow(operation, pattern), allow(ACLOperation.DESCRIBE, pattern)]
    groups = ResourcePattern(ResourceType.GROUP, tenant_id, ACLResourcePatternType.PREFIXED)
    return [*acls, allow(ACLOperation.READ, groups)]


def password_from(path: Path) -> str:
    """The password in `path`; a new one, written there (readable by its owner only), if the
    file does not exist. Never printed."""
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24) + "\n")
    password = path.read_text().strip()
    if not password:
        raise TenantError(f"the password file {str(path)!r} is empty")
    return password


class Registry:
    """Registrations, recorded in the event store's schema (who registered whom, when)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.table = Identifier(settings.database_schema, TABLE)

    def register(
        self, kind: str, tenant_id: str, password_file: Path | None, password: str | None = None
    ) -> Tenant:
        """Make the tenant's topics and, on a SASL cluster, its Kafka user with `password`
        (else the one in `password_file`, made there if missing) and ACLs; record it."""
        check_id(kind, tenant_id)
        topics = Topics(self.settings.topic_prefix)
        names = topics_of(topics, kind, tenant_id)
        kafka_clients.ensure_topics(self.settings, names)
        security = self.settings.kafka_security
        if security.protocol.startswith("SASL_"):
            if password is None and password_file is None:
                raise TenantError(
                    f"a secured cluster needs --password-file for the {kind}'s Kafka user"
                )
            if password is None:
                assert password_file is not None
                password = password_from(password_file)
            self._grant(kind, tenant_id, password)
        return self._record(kind, tenant_id, names)

    def registered(self, kind: str) -> list[Tenant]:
        topics = Topics(self.settings.topic_prefix)
        with self._table() as conn:
            rows = conn.execute(
                SQL(
                    "SELECT tenant_id, registered_at, registered_by FROM {} WHERE kind = %s "
                    "ORDER BY tenant_id"
                ).format(self.table),
                (kind,),
            ).fetchall()
        return [Tenant(kind, i, at, by, topics_of(topics, kind, i)) for i, at, by in rows]

    def _grant(self, kind: str, tenant_id: str, password: str) -> None:
        mechanism = MECHANISMS.get(self.settings.kafka_security.mechanism or "")
        if mechanism is None:
            raise TenantError("tenants' Kafka users need a SCRAM mechanism (SCRAM-SHA-512)")
        topics = Topics(self.settings.topic_prefix)
        with closing(kafka_clients.admin(self.settings)) as admin:
            admin.alter_user_scram_credentials(
                [UserScramCredentialUpsertion(tenant_id, mechanism, password)]
            )
            result: Any = admin.create_acls(acls_of(topics, kind, tenant_id))
        if result.get("failed"):
            raise TenantError(f"the brokers refused the {kind}'s ACLs: {result['failed']}")

    def _record(self, kind: str, tenant_id: str, names: list[str]) -> Tenant:
        by = getpass.getuser()
        with self._table() as conn, conn.transaction():
            row = conn.execute(
                SQL(
                    "INSERT INTO {} VALUES (%s, %s, %s, %s) ON CONFLICT (kind, tenant_id) "
                    "DO UPDATE SET kind = EXCLUDED.kind RETURNING registered_at, registered_by"
                ).format(self.table),
                (kind, tenant_id, datetime.now(UTC), by),
            ).fetchone()
        assert row is not None
        return Tenant(kind, tenant_id, row[0], row[1], names)

    def _table(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return with_table(
            self.settings,
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (kind text NOT NULL, tenant_id text NOT NULL, "
                "registered_at timestamptz NOT NULL, registered_by text NOT NULL, "
                "PRIMARY KEY (kind, tenant_id))"
            ).format(self.table),
        )


@contextmanager
def with_table(settings: Settings, create: Composed) -> Iterator[psycopg.Connection[Any]]:
    """A connection (autocommit) to the database, where `create` (a CREATE TABLE IF NOT
    EXISTS) has made the caller's table."""
    with closing(psycopg.connect(settings.postgres_conninfo, autocommit=True)) as conn:
        conn.execute(create)
        yield conn
