"""groupbuy on the secured local broker (SASL_SSL, SCRAM-SHA-512, a CA made at its start,
the StandardAuthorizer): its services connect with their credentials; nobody else does."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.local.secure_kafka import LocalSecureKafka
from infra.services.ingest import run_ingest
from infra.services.relay import run_relay
from infra.settings import KafkaSecurity, Settings
from tests.support.builders import campaign, placed
from tests.support.kafka_io import publish, read_json
from tests.support.pipeline import running

ORDERS = 3
REFUSED_WITHIN_MS = 5000


@pytest.fixture(scope="module")
def broker() -> LocalSecureKafka:
    kafka = LocalSecureKafka.from_env()
    kafka.start()  # or finds it running
    return kafka


@pytest.fixture
def secured(settings: Settings, broker: LocalSecureKafka) -> Settings:
    exports = broker.exports()
    security = KafkaSecurity(
        protocol=exports["GROUPBUY_KAFKA_SECURITY_PROTOCOL"],
        mechanism=exports["GROUPBUY_KAFKA_SASL_MECHANISM"],
        username=exports["GROUPBUY_KAFKA_USERNAME"],
        password=broker.password_file.read_text(),
        ca_file=str(broker.ca_file),
    )
    return dataclasses.replace(settings, kafka_bootstrap=broker.bootstrap, kafka_security=security)


def test_the_services_place_orders_and_answer_them_over_sasl_ssl(
    secured: Settings, unique: str
) -> None:
    topics = Topics(secured.topic_prefix)
    campaign_id = f"secure-{unique}"
    app = open_app(secured)
    app.open_campaign(campaign(campaign_id, max_per_buyer=None), datetime.now(UTC))
    app.close()
    orders = [placed(campaign_id, n) for n in range(ORDERS)]

    with running(run_ingest, secured), running(run_relay, secured):
        publish(secured, topics.orders, orders)
        results = read_json(secured, topics.order_results, ORDERS)

    assert sorted(r["order_id"] for r in results) == sorted(o["order_id"] for o in orders)
    assert {r["type"] for r in results} == {"order.accepted"}


def wrong_credentials(security: KafkaSecurity, case: str) -> dict[str, Any]:
    if case == "plaintext":
        return {}
    if case == "TLS without credentials":
        return {"security_protocol": "SSL", "ssl_cafile": security.ca_file}
    return security.client_options() | {"sasl_plain_password": "not-the-password"}


def list_topics(bootstrap: str, options: dict[str, Any]) -> set[str]:
    client = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=REFUSED_WITHIN_MS,
        bootstrap_timeout_ms=REFUSED_WITHIN_MS,
        **options,
    )
    try:
        return set(client.list_topics())
    finally:
        client.close()


@pytest.mark.parametrize("case", ["plaintext", "TLS without credentials", "a wrong password"])
def test_a_client_without_the_right_credentials_is_refused(secured: Settings, case: str) -> None:
    options = wrong_credentials(secured.kafka_security, case)
    with pytest.raises(KafkaError):
        list_topics(secured.kafka_bootstrap, options)


def test_the_right_credentials_are_let_in(secured: Settings) -> None:
    options = secured.kafka_security.client_options()
    assert "__consumer_offsets" in list_topics(secured.kafka_bootstrap, options)
