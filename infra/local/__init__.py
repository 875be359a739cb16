"""Throwaway Kafka and PostgreSQL on loopback, for development, tests and the demo."""
