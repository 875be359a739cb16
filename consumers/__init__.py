"""Kafka consumer processes: decode, call the domain or a projection, track."""
