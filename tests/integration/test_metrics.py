"""Each service's metrics, scraped over HTTP while it works: the counts equal what was sent."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from infra.adapters.app import open_app
from infra.adapters.topics import Topics, partitions_from_env
from infra.services.clock import partition_for
from infra.settings import Settings
from tests.support.builders import SITES, campaign, cancelled, placed
from tests.support.kafka_io import make_site_topics, publish_orders, wait_for
from tests.support.pipeline import ServiceProcess, free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    """Every sample the service exposes, by name and labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0  # not listening yet


def orders(samples: Samples, kind: str, outcome: str, reason: str = "") -> float:
    labels = (("kind", kind), ("outcome", outcome), ("reason", reason))
    return samples.get(("groupbuy_orders_total", labels), 0.0)


def lags(samples: Samples, service: str) -> dict[tuple[str, str], float]:
    """`service`'s consumer lag by (topic, partition)."""
    return {
        (labels["topic"], labels["partition"]): value
        for (name, pairs), value in samples.items()
        if name == "groupbuy_consumer_lag" and (labels := dict(pairs))["service"] == service
    }


def partition_of(campaign_id: str) -> int:
    return partition_for(campaign_id.encode(), partitions_from_env())


def caught_up(port: int, service: str, topic_part: str) -> bool:
    """Whether `service` reports lags of partitions of topics containing `topic_part`, all
    0 (the records it was given, all applied)."""
    found = {k: v for k, v in lags(scrape(port), service).items() if topic_part in k[0]}
    return bool(found) and not any(found.values())


def test_ingest_counts_each_outcome_and_dead_letter_it_saved(
    settings: Settings, unique: str, tmp_path: Path
) -> None:
    make_site_topics(settings)
    campaign_id = f"metrics-{unique}"
    app = open_app(settings)
    app.open_campaign(campaign(campaign_id, max_per_buyer=3), datetime.now(UTC))
    app.close()
    messages = known_orders(campaign_id, unique)
    port = free_port()
    ingest = ServiceProcess(
        "ingest", settings, tmp_path / "ingest.log", env={"GROUPBUY_METRICS_PORT": str(port)}
    )
    try:
        wait_for(lambda: status(port, "/healthz") == 200, what="the metrics endpoint")
        wait_for(lambda: status(port, "/readyz") == 200, what="ingest ready: partitions assigned")
        publish_orders(settings, messages)

        def all_counted() -> bool:
            samples = scrape(port)
            counted = sum(v for (name, _), v in samples.items() if name == "groupbuy_orders_total")
            return counted == len(messages) - 2

        wait_for(all_counted, what="every order counted")
        samples = scrape(port)
        assert_counted(samples)
        batches = samples[("groupbuy_batch_records_count", (("service", "ingest"),))]
        records = samples[("groupbuy_batch_records_sum", (("service", "ingest"),))]
        assert records == len(messages)  # every record in exactly one saved batch
        assert 1 <= batches <= len(messages)
        assert status(port, "/nowhere") == 404
        wait_for(lambda: caught_up(port, "ingest", "orders"), what="ingest's lag back to 0")
    finally:
        assert ingest.stop() == 0


def labelled(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric, by their labels."""
    return {labels: value for (sample, labels), value in samples.items() if sample == name}


def test_every_services_metrics_follow_a_run_of_known_orders(
    settings: Settings, unique: str, tmp_path: Path
) -> None:
    """Five processes: the orders are published while ingest is down, so the clock reports
    the campaign held past its deadline by its partitions; once ingest (with two workers)
    has applied them, every count equals what was sent, every lag is back to 0, and the
    campaign closes and settles with one purchase order."""
    make_site_topics(settings)
    campaign_id = f"metrics-all-{unique}"
    deadline = datetime.now(UTC) + timedelta(seconds=12)
    app = open_app(settings)
    app.open_campaign(
        campaign(campaign_id, max_per_buyer=3, deadline=deadline.isoformat()), datetime.now(UTC)
    )
    app.close()
    messages = known_orders(campaign_id, unique)
    ports = {name: free_port() for name in ("relay", "project", "clock", "settle", "ingest")}

    def start(name: str, *arguments: str) -> ServiceProcess:
        env = {"GROUPBUY_METRICS_PORT": str(ports[name])}
        return ServiceProcess(name, settings, tmp_path / f"{name}.log", *arguments, env=env)

    services = [start(name) for name in ("relay", "project", "clock", "settle")]
    try:
        publish_orders(settings, messages)
        assert datetime.now(UTC) < deadline, "too slow to publish before the deadline"

        # Step 1. Past the deadline, the clock names the partitions that hold the campaign.
        topics = Topics(settings.topic_prefix)
        holding = {
            (
                ("campaign", campaign_id),
                ("partition", str(partition_of(campaign_id))),
                ("topic", topics.site_orders(site)),
            )
            for site in SITES
        }

        def held() -> set[tuple[tuple[str, str], ...]]:
            if status(ports["clock"], "/healthz") != 200:
                return set()
            return set(labelled(scrape(ports["clock"]), "groupbuy_campaign_held_seconds"))

        wait_for(lambda: held() == holding, 30, "the clock to report the held campaign")
        samples = scrape(ports["clock"])
        assert samples[("groupbuy_campaigns_overdue", ())] == 1
        held_for = labelled(samples, "groupbuy_campaign_held_seconds").values()
        assert all(seconds > 0 for seconds in held_for)

        # Step 2. Ingest applies the orders; every count equals what was sent.
        services.append(start("ingest", "--workers", "2"))

        def counted() -> float:
            if status(ports["ingest"], "/healthz") != 200:
                return 0
            return sum(labelled(scrape(ports["ingest"]), "groupbuy_orders_total").values())

        wait_for(lambda: counted() == len(messages) - 2, 60, "every order counted")
        samples = scrape(ports["ingest"])
        assert_counted(samples)
        assert samples[("groupbuy_batch_records_sum", (("service", "ingest"),))] == len(messages)
        assert samples[("groupbuy_ingest_workers", ())] == 2

        # Step 3. The campaign closes and settles: one purchase order.
        def settled() -> float:
            return scrape(ports["settle"]).get(("groupbuy_purchase_orders_total", ()), 0.0)

        wait_for(lambda: settled() == 1, 60, "the purchase order")
        wait_for(lambda: not held(), 10, "the held campaign to leave the clock's metric")
        samples = scrape(ports["clock"])
        assert samples[("groupbuy_campaigns_overdue", ())] == 0
        samples = scrape(ports["settle"])
        succeeded = ("groupbuy_campaigns_settled_total", (("outcome", "succeeded"),))
        assert samples[succeeded] == 1
        assert samples[("groupbuy_settle_transactions_total", (("result", "committed"),))] >= 1
        assert samples.get(("groupbuy_settle_transactions_total", (("result", "aborted"),)), 0) == 0

        # Step 4. Every lag back to 0, every service ready.
        for service, topic_part in [
            ("ingest", "orders"),
            ("project", "campaign-events"),
            ("settle", "campaign-events"),
        ]:
            wait_for(
                partial(caught_up, ports[service], service, topic_part),
                30,
                f"{service}'s lag back to 0",
            )

        def relayed() -> bool:
            samples = scrape(ports["relay"])
            backlog = ("groupbuy_relay_lag_events", ()), ("groupbuy_outbox_rows", ())
            return all(samples.get(name) == 0 for name in backlog)

        wait_for(relayed, 30, "the relay's backlog back to 0")
        for name, port in ports.items():
            assert status(port, "/readyz") == 200, name
        projected = scrape(ports["project"])
        # Each event projected once: the opening, 7 commitments, the order over the buyer
        # limit refused, the withdrawal, the cancellation of no order refused, the close.
        assert projected[("groupbuy_batch_records_sum", (("service", "project"),))] == 12
    finally:
        for process in services:
            assert process.stop() == 0


def known_orders(campaign_id: str, unique: str) -> list[dict[str, Any] | bytes]:
    """12 orders and cancellations with a known outcome each, and 2 dead letters: 7 orders
    accepted (14 units; 12 after the cancellation: the campaign succeeds), 1 duplicate,
    1 over the buyer limit (3), 1 for no campaign, 1 cancellation accepted, 1 of no order."""
    first = placed(campaign_id, 0, quantity=2) | {"buyer_id": "buyer-1"}
    return [
        first,
        first,  # sent again: a duplicate
        # The same buyer of the same site (order 9 is site-a's too): 4 units > 3.
        placed(campaign_id, 9, quantity=2) | {"buyer_id": "buyer-1"},
        *[placed(campaign_id, n, quantity=2) for n in range(2, 8)],  # 6 accepted
        placed(f"nowhere-{unique}", 7),  # unknown campaign
        cancelled(first),  # accepted
        cancelled(placed(campaign_id, 99)),  # an order never placed
        b"not json",  # two dead letters
        b'{"type": "order.placed"}',
    ]


def assert_counted(samples: Samples) -> None:
    """The counts of `known_orders`, each outcome and reason."""
    assert orders(samples, "order", "accepted") == 7
    assert orders(samples, "order", "duplicate") == 1
    assert orders(samples, "order", "rejected", "per_buyer_limit") == 1
    assert orders(samples, "order", "rejected", "unknown_campaign") == 1
    assert orders(samples, "cancellation", "accepted") == 1
    assert orders(samples, "cancellation", "rejected", "unknown_order") == 1
    letters = (("cause", "malformed"), ("service", "ingest"))
    assert samples[("groupbuy_dead_letters_total", letters)] == 2
