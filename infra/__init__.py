"""Wiring and real services: settings, Kafka and PostgreSQL adapters, CLI, local launchers."""
