"""Builds the GroupBuying application on the PostgreSQL event store."""

from __future__ import annotations

from contextlib import suppress

import psycopg
from eventsourcing.postgres import PostgresFactory
from eventsourcing.utils import Environment, EnvType, get_topic
from psycopg.rows import dict_row
from psycopg.sql import SQL, Identifier

from domain.application import GroupBuying
from infra.adapters.event_store import GroupBuyingRecorder
from infra.adapters.transcoder import FlatJSONTranscoder
from infra.settings import Settings, eventsourcing_env

OUTBOX_TABLE = "groupbuying_outbox"
CONNINFO = "POSTGRES_CONNINFO"  # our own key in the eventsourcing settings


class GroupBuyingFactory(PostgresFactory):
    """eventsourcing's PostgreSQL factory, whose pool connects with the whole conninfo.

    The library gives its pool only the database, host, port, user and password; the
    conninfo adds groupbuy's keepalives and timeouts, and whatever else GROUPBUY_DATABASE_URL
    says (sslmode, sslrootcert, ...).
    """

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        conninfo = self.env.get(CONNINFO)
        if conninfo:
            pool = self.datastore.pool  # not opened yet: no connection has been made
            pool.conninfo = conninfo
            pool.kwargs = {"row_factory": dict_row}  # they would override the conninfo's


def store_env(settings: Settings) -> dict[str, str]:
    """eventsourcing settings: our recorder and transcoder, one row per tracked partition,
    tables created."""
    return eventsourcing_env(settings.database_url, settings.database_schema) | {
        "PERSISTENCE_MODULE": get_topic(GroupBuyingFactory),
        CONNINFO: settings.postgres_conninfo,
        "PROCESS_RECORDER_TOPIC": get_topic(GroupBuyingRecorder),
        "TRANSCODER_TOPIC": get_topic(FlatJSONTranscoder),
        "SINGLE_ROW_TRACKING": "y",
        "CREATE_TABLE": "y",
        "POSTGRES_POOL_SIZE": "4",
        # Kafka positions are saved with the events; a slow batch must not be cut off.
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "60",
        # The library sets this one itself around its table locks (0, its default, is never).
        "POSTGRES_LOCK_TIMEOUT": "30",
    }


# For a process or thread that alone uses its store (ingestion): one connection, not four,
# each of which costs a password handshake at start, when every ingest process starts at once.
ONE_USER = {"POSTGRES_POOL_SIZE": "1"}


def open_app(settings: Settings, **env: str) -> GroupBuying:
    return GroupBuying(env=store_env(settings) | env)


def ensure_schema(settings: Settings) -> None:
    """Create GROUPBUY_DATABASE_SCHEMA unless it exists.

    Looked for first: CREATE SCHEMA IF NOT EXISTS needs the right to create schemas even when
    there is nothing to create, which a read-only role lacks.
    """
    with psycopg.connect(settings.postgres_conninfo, autocommit=True) as conn:
        found = conn.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (settings.database_schema,)
        ).fetchone()
        if found is None:
            schema = Identifier(settings.database_schema)
            # Another process starting at the same time may create it first.
            with suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema):
                conn.execute(SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))


def recorder_of(app: GroupBuying) -> GroupBuyingRecorder:
    """The application's recorder, typed as ours: `store_env` chose it."""
    recorder = app.recorder
    assert isinstance(recorder, GroupBuyingRecorder), type(recorder)
    return recorder
