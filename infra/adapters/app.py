"""Builds the GroupBuying application on the PostgreSQL event store."""

from __future__ import annotations

from eventsourcing.utils import get_topic

from domain.application import GroupBuying
from infra.adapters.event_store import GroupBuyingRecorder
from infra.adapters.transcoder import FlatJSONTranscoder
from infra.settings import Settings, eventsourcing_env

OUTBOX_TABLE = "groupbuying_outbox"


def store_env(settings: Settings) -> dict[str, str]:
    """eventsourcing settings: our recorder and transcoder, one row per tracked partition,
    tables created."""
    return eventsourcing_env(settings.database_url, settings.database_schema) | {
        "PROCESS_RECORDER_TOPIC": get_topic(GroupBuyingRecorder),
        "TRANSCODER_TOPIC": get_topic(FlatJSONTranscoder),
        "SINGLE_ROW_TRACKING": "y",
        "CREATE_TABLE": "y",
        "POSTGRES_POOL_SIZE": "4",
        # Kafka positions are saved with the events; a slow batch must not be cut off.
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "60",
    }


# For a process or thread that alone uses its store (ingestion): one connection, not four,
# each of which costs a password handshake at start, when every ingest process starts at once.
ONE_USER = {"POSTGRES_POOL_SIZE": "1"}


def open_app(settings: Settings, **env: str) -> GroupBuying:
    return GroupBuying(env=store_env(settings) | env)


def recorder_of(app: GroupBuying) -> GroupBuyingRecorder:
    """The application's recorder, typed as ours: `store_env` chose it."""
    recorder = app.recorder
    assert isinstance(recorder, GroupBuyingRecorder), type(recorder)
    return recorder
