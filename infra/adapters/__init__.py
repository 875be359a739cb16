"""How groupbuy talks to PostgreSQL and Kafka: the event store and one client factory."""
