"""The sites' HTTP API keys: issued once, stored hashed, looked up by their public part.

A key reads `gbk_<key id>_<secret>`. The key id (16 hex digits) finds its row; the secret
(32 random bytes) is stored only as its SHA-256, compared in constant time. A key this
random needs no slow hash: nobody can guess it from its digest faster than by trying keys.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import re
import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from infra.adapters.tenants import with_table
from infra.settings import Settings

TABLE = "groupbuying_api_keys"
SHAPE = re.compile(r"gbk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class Holder:
    """Who a key speaks for: a `site` and its id, or an `operator` and who asked for it."""

    kind: str
    tenant_id: str


class ApiKeys:
    """The keys of one installation, in the event store's schema."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.table = Identifier(settings.database_schema, TABLE)

    def issue(self, kind: str, tenant_id: str, path: Path) -> None:
        """Make a key for `tenant_id` and write it to `path` (a new file, mode 0600); the
        key is never printed, and only its digest is kept."""
        path.touch(mode=0o600, exist_ok=False)  # first: a key file is never written over
        try:
            key = self.new(kind, tenant_id, getpass.getuser())
        except BaseException:
            path.unlink()
            raise
        path.write_text(key + "\n")

    def new(self, kind: str, tenant_id: str, issued_by: str) -> str:
        """A new key for `tenant_id`, its digest stored: the caller alone ever has it."""
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        with self._table() as conn:
            conn.execute(
                SQL("INSERT INTO {} VALUES (%s, %s, %s, %s, %s, %s)").format(self.table),
                (key_id, kind, tenant_id, digest(secret), datetime.now(UTC), issued_by),
            )
        return f"gbk_{key_id}_{secret}"

    def holder(self, conn: psycopg.Connection[Any], key: str) -> Holder | None:
        """Whom `key` speaks for; None for a key that is malformed, unknown or wrong."""
        shaped = SHAPE.fullmatch(key)
        if shaped is None:
            return None
        key_id, secret = shaped.groups()
        query = SQL("SELECT kind, tenant_id, secret_sha256 FROM {} WHERE key_id = %s")
        try:
            row = conn.execute(query.format(self.table), (key_id,)).fetchone()
        except psycopg.errors.UndefinedTable:
            return None  # no key was ever issued
        if row is None or not hmac.compare_digest(bytes(row[2]), digest(secret)):
            return None
        return Holder(row[0], row[1])

    def _table(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return with_table(
            self.settings,
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (key_id text PRIMARY KEY, kind text NOT NULL, "
                "tenant_id text NOT NULL, secret_sha256 bytea NOT NULL, "
                "issued_at timestamptz NOT NULL, issued_by text NOT NULL)"
            ).format(self.table),
        )


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
