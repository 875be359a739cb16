"""Read models rebuilt from the campaign-events topic, up to its end now."""

from __future__ import annotations

from typing import Any

import psycopg
from kafka import TopicPartition

from consumers.batch import position_name
from consumers.positions import PositionTable
from consumers.projector import UnappliableRecordError
from infra.adapters import kafka_clients
from infra.replay.rebuilt import Progress, Rebuilt
from infra.settings import Settings
from projections.live import check
from projections.read_models import ReadModelTables
from projections.rebuild import ReadModelBuild
from projections.wire import decode


def rebuild_from_kafka(
    settings: Settings,
    topic: str,
    conn: psycopg.Connection[Any],
    tables: ReadModelTables,
    progress: Progress,
) -> Rebuilt:
    """Every message of the campaign-events topic up to its end now, folded into `tables`."""
    rebuilt = Rebuilt(tables, "kafka")
    build = ReadModelBuild(tables)
    consumer = kafka_clients.reader(
        settings,
        enable_auto_commit=False,
        max_poll_records=5000,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    try:
        known = consumer.partitions_for_topic(topic)
        if not known:
            raise LookupError(f"Kafka has no topic {topic!r}")
        partitions = [TopicPartition(topic, p) for p in known]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = {p: end for p, end in consumer.end_offsets(partitions).items() if end > 0}
        starts = consumer.beginning_offsets(list(ends))
        total = sum(end - starts[p] for p, end in ends.items())
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(tables.create_statement())
            while any(consumer.position(p) < end for p, end in ends.items()):
                polled = consumer.poll(timeout_ms=1000)
                for partition, records in polled.items():
                    name = position_name(partition.topic, partition.partition)
                    for record in records:
                        if record.offset >= ends.get(partition, 0):
                            continue  # written after the rebuild started: the projector's
                        rebuilt.positions[name] = record.offset
                        rebuilt.events += 1
                        _fold(build, record)
                progress(rebuilt.events, total)
                build.flush(cur)
            build.finish(cur)
            positions = PositionTable(tables.positions)
            for name, offset in rebuilt.positions.items():
                positions.start(cur, name, offset)
    finally:
        consumer.close(autocommit=False)
    rebuilt.applied = build.applied
    return rebuilt


def _fold(build: ReadModelBuild, record: Any) -> None:
    """Fold one record, or stop where the projector stops: at a record it cannot apply."""
    try:
        event = decode(record.value)
        check(event)
        build.apply(event)
    except Exception as error:  # a missing field, a bad value, a gap: never skipped
        reason = f"{type(error).__name__}: {error}"
        raise UnappliableRecordError(
            record.topic, record.partition, record.offset, reason
        ) from None
