"""Publishes outbox rows (order results, dead letters) to Kafka: at least once, in order."""

from __future__ import annotations

from kafka import KafkaProducer
from psycopg.sql import SQL, Identifier

from infra.follower import Connection
from infra.kafka_clients import confirm

BATCH = 2000


class OutboxPublisher:
    """Sends the oldest rows, waits for Kafka's acks, then deletes them."""

    def __init__(self, schema: str, table: str, producer: KafkaProducer) -> None:
        self.producer = producer
        qualified = Identifier(schema, table)
        self.select = SQL(
            "SELECT id, topic, key, value, headers FROM {} ORDER BY id LIMIT %s"
        ).format(qualified)
        self.delete = SQL("DELETE FROM {} WHERE id = ANY(%s)").format(qualified)

    def __call__(self, conn: Connection) -> int:
        rows = conn.execute(self.select, (BATCH,)).fetchall()
        if not rows:
            return 0
        futures = [
            self.producer.send(
                topic,
                key=key,
                value=value,
                headers=[(name, bytes.fromhex(hexed)) for name, hexed in headers],
            )
            for _, topic, key, value, headers in rows
        ]
        confirm(self.producer, futures)
        conn.execute(self.delete, ([row[0] for row in rows],))
        return len(rows)
