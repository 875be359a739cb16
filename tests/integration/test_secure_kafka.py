"""groupbuy on the secured local broker (SASL_SSL, SCRAM-SHA-512, a CA made at its start,
the StandardAuthorizer): its services connect with their credentials; nobody else does."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from infra.adapters import kafka_clients
from infra.adapters.app import open_app
from infra.adapters.tenants import Registry
from infra.adapters.topics import Topics
from infra.local.secure_kafka import LocalSecureKafka
from infra.services.clock import run_clock
from infra.services.ingest import run_ingest
from infra.services.relay import run_relay
from infra.services.settle import run_settle
from infra.settings import KafkaSecurity, Settings
from tests.support.builders import campaign, placed
from tests.support.kafka_io import (
    make_site_topics,
    publish_orders,
    read_json,
    results_topics,
    wait_for,
)
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
    campaign_id = f"secure-{unique}"
    app = open_app(secured)
    app.open_campaign(campaign(campaign_id, max_per_buyer=None), datetime.now(UTC))
    app.close()
    orders = [placed(campaign_id, n) for n in range(ORDERS)]

    make_site_topics(secured)
    with running(run_ingest, secured), running(run_relay, secured):
        publish_orders(secured, orders)
        results = read_json(secured, results_topics(secured), ORDERS)

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


class Tenant:
    """A site's or supplier's own Kafka client, with the credentials its registration made."""

    def __init__(self, secured: Settings, tenant_id: str, password_file: Path) -> None:
        self.bootstrap = secured.kafka_bootstrap
        self.tenant_id = tenant_id
        self.options = secured.kafka_security.client_options() | {
            "sasl_plain_username": tenant_id,
            "sasl_plain_password": password_file.read_text().strip(),
        }

    def write(self, topic: str, values: list[bytes] | None = None, key: bytes = b"k") -> None:
        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap, max_block_ms=10_000, **self.options
        )
        try:
            for value in values or [b"{}"]:
                producer.send(topic, key=key, value=value).get(timeout=10)
        finally:
            producer.close(timeout=2)

    def read(self, topic: str) -> list[bytes]:
        """What `topic` holds, read in a consumer group named after the tenant."""
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=f"{self.tenant_id}-reader",
            enable_auto_commit=False,
            isolation_level="read_committed",  # settle writes in transactions
            **self.options,
        )
        try:
            # Unknown to a tenant that may not describe it: then partition 0, to be refused.
            numbers = consumer.partitions_for_topic(topic) or {0}
            partitions = [TopicPartition(topic, number) for number in sorted(numbers)]
            consumer.assign(partitions)
            ends = consumer.end_offsets(partitions)  # refused without the right
            consumer.seek_to_beginning(*partitions)
            values: list[bytes] = []
            deadline = time.monotonic() + 30
            while any(consumer.position(p) < ends[p] for p in partitions):
                assert time.monotonic() < deadline, f"{topic} not read to its end in 30 s"
                for records in consumer.poll(timeout_ms=500).values():
                    values += [record.value for record in records]
            return values
        finally:
            consumer.close(autocommit=False)


def test_each_site_and_supplier_reaches_its_own_topics_and_nothing_else(
    secured: Settings, unique: str, tmp_path: Path
) -> None:
    topics = Topics(secured.topic_prefix)
    registry = Registry(secured)
    site_a, site_b, supplier_x, supplier_y = (f"{n}-{unique}" for n in "abxy")
    for kind, tenant_id in [
        ("site", site_a),
        ("site", site_b),
        ("supplier", supplier_x),
        ("supplier", supplier_y),
    ]:
        registry.register(kind, tenant_id, tmp_path / tenant_id)
    kafka_clients.ensure_topics(secured, [topics.campaign_events])
    a, x = (
        Tenant(secured, site_a, tmp_path / site_a),
        Tenant(secured, supplier_x, tmp_path / supplier_x),
    )
    services = kafka_clients.producer(secured)  # what groupbuy's services write for them
    for topic in (topics.site_results(site_a), topics.settlements(supplier_x)):
        services.send(topic, key=b"k", value=b"for you").get(timeout=10)
    services.close()

    a.write(topics.site_orders(site_a))
    assert a.read(topics.site_results(site_a)) == [b"for you"]
    assert a.read(topics.site_buyer_settlements(site_a)) == []
    assert x.read(topics.settlements(supplier_x)) == [b"for you"]
    refused = [
        lambda: a.write(topics.site_orders(site_b)),
        lambda: a.write(topics.campaign_events),
        lambda: a.read(topics.site_results(site_b)),
        lambda: a.read(topics.site_buyer_settlements(site_b)),
        lambda: a.read(topics.settlements(supplier_x)),
        lambda: a.read(topics.campaign_events),
        lambda: x.read(topics.settlements(supplier_y)),
        lambda: x.write(topics.settlements(supplier_x)),
    ]
    for attempt in refused:  # the broker says why: the topic, or (no write at all) the cluster
        with pytest.raises(KafkaError, match="AuthorizationFailedError"):
            attempt()
    assert {t.tenant_id for t in registry.registered("site")} >= {site_a, site_b}


def open_closing_soon(secured: Settings, campaign_id: str, **changes: Any) -> None:
    """A campaign whose deadline is 10 s away and that succeeds with one unit."""
    deadline = datetime.now(UTC) + timedelta(seconds=10)
    stamp = deadline.isoformat().replace("+00:00", "Z")
    app = open_app(secured)
    try:
        definition = campaign(campaign_id, minimum_quantity=1, deadline=stamp, **changes)
        app.open_campaign(definition, datetime.now(UTC))
    finally:
        app.close()


def test_a_site_places_orders_and_reads_its_answers_and_settlements_with_its_own_credentials(
    secured: Settings, unique: str, tmp_path: Path
) -> None:
    topics = Topics(secured.topic_prefix)
    site, campaign_id = f"shop-{unique}", f"mine-{unique}"
    Registry(secured).register("site", site, tmp_path / site)
    open_closing_soon(secured, campaign_id)
    shop = Tenant(secured, site, tmp_path / site)
    orders = [placed(campaign_id, n, site_id=site, order_id=f"{site}:{n}") for n in range(ORDERS)]
    forged = placed(campaign_id, 9, site_id="site-b", order_id="site-b:9")  # in another's name

    with (
        running(run_ingest, secured),
        running(run_relay, secured),
        running(run_clock, secured),
        running(run_settle, secured),
    ):
        values = [json.dumps(message).encode() for message in [*orders, forged]]
        shop.write(topics.site_orders(site), values, key=campaign_id.encode())
        buyers = topics.site_buyer_settlements(site)
        wait_for(lambda: len(shop.read(buyers)) >= ORDERS, timeout=120, what="settlements")
    answers = [json.loads(value) for value in shop.read(topics.site_results(site))]
    settlements = [json.loads(value) for value in shop.read(buyers)]

    verdicts = {(a["order_id"], a["type"], a.get("reason")) for a in answers}
    assert verdicts == {(o["order_id"], "order.accepted", None) for o in orders} | {
        ("site-b:9", "order.rejected", "site_mismatch")
    }
    assert sorted(s["order_id"] for s in settlements) == sorted(o["order_id"] for o in orders)
    assert {(s["type"], s["site_id"]) for s in settlements} == {("commitment.filled", site)}


def test_a_supplier_reads_its_purchase_order_with_its_own_credentials(
    secured: Settings, unique: str, tmp_path: Path
) -> None:
    topics = Topics(secured.topic_prefix)
    supplier, campaign_id = f"maker-{unique}", f"po-{unique}"
    Registry(secured).register("supplier", supplier, tmp_path / supplier)
    open_closing_soon(secured, campaign_id, supplier_id=supplier)
    maker = Tenant(secured, supplier, tmp_path / supplier)
    make_site_topics(secured)

    with (
        running(run_ingest, secured),
        running(run_relay, secured),
        running(run_clock, secured),
        running(run_settle, secured),
    ):
        publish_orders(secured, [placed(campaign_id, n) for n in range(ORDERS)])
        wait_for(lambda: bool(maker.read(topics.settlements(supplier))), timeout=120)
    (issued,) = [json.loads(value) for value in maker.read(topics.settlements(supplier))]

    assert issued["type"] == "purchase_order.issued"
    assert (issued["supplier_id"], issued["quantity"]) == (supplier, ORDERS)
