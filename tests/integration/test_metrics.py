"""Each service's metrics, scraped over HTTP while it works: the counts equal what was sent."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from infra.adapters.app import open_app
from infra.settings import Settings
from tests.support.builders import campaign, cancelled, placed
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
    first = placed(campaign_id, 0, quantity=2) | {"buyer_id": "buyer-1"}
    messages = [
        first,
        first,  # sent again: a duplicate
        # The same buyer of the same site (order 9 is site-a's too): 4 units > 3.
        placed(campaign_id, 9, quantity=2) | {"buyer_id": "buyer-1"},
        *[placed(campaign_id, n, quantity=1) for n in range(2, 7)],  # 5 accepted
        placed(f"nowhere-{unique}", 7),  # unknown campaign
        cancelled(first),  # accepted
        cancelled(placed(campaign_id, 99)),  # an order never placed
        b"not json",  # two dead letters
        b'{"type": "order.placed"}',
    ]
    port = free_port()
    ingest = ServiceProcess(
        "ingest", settings, tmp_path / "ingest.log", env={"GROUPBUY_METRICS_PORT": str(port)}
    )
    try:
        wait_for(lambda: status(port, "/healthz") == 200, what="the metrics endpoint")
        assert status(port, "/readyz") == 200
        publish_orders(settings, messages)

        def all_counted() -> bool:
            samples = scrape(port)
            counted = sum(v for (name, _), v in samples.items() if name == "groupbuy_orders_total")
            return counted == len(messages) - 2

        wait_for(all_counted, what="every order counted")
        samples = scrape(port)
        assert orders(samples, "order", "accepted") == 6
        assert orders(samples, "order", "duplicate") == 1
        assert orders(samples, "order", "rejected", "per_buyer_limit") == 1
        assert orders(samples, "order", "rejected", "unknown_campaign") == 1
        assert orders(samples, "cancellation", "accepted") == 1
        assert orders(samples, "cancellation", "rejected", "unknown_order") == 1
        letters = (("cause", "malformed"), ("service", "ingest"))
        assert samples[("groupbuy_dead_letters_total", letters)] == 2
        batches = samples[("groupbuy_batch_records_count", (("service", "ingest"),))]
        records = samples[("groupbuy_batch_records_sum", (("service", "ingest"),))]
        assert records == len(messages)  # every record in exactly one saved batch
        assert 1 <= batches <= len(messages)
        assert status(port, "/nowhere") == 404
        wait_for(lambda: caught_up(port, "ingest", "orders"), what="ingest's lag back to 0")
    finally:
        assert ingest.stop() == 0


def test_the_projector_and_settle_count_what_they_saved_and_published(
    settings: Settings, unique: str, tmp_path: Path
) -> None:
    make_site_topics(settings)
    campaign_id = f"metrics-settle-{unique}"
    app = open_app(settings)
    app.open_campaign(campaign(campaign_id), datetime.now(UTC))
    ports = {"project": free_port(), "settle": free_port()}
    services = [
        ServiceProcess(name, settings, tmp_path / f"{name}.log") for name in ("ingest", "relay")
    ]
    services += [
        ServiceProcess(
            name, settings, tmp_path / f"{name}.log", env={"GROUPBUY_METRICS_PORT": str(port)}
        )
        for name, port in ports.items()
    ]
    try:
        publish_orders(settings, [placed(campaign_id, n) for n in range(3)])

        def projected() -> float:
            samples = scrape(ports["project"]) if status(ports["project"], "/healthz") else {}
            return samples.get(("groupbuy_batch_records_sum", (("service", "project"),)), 0.0)

        wait_for(lambda: projected() == 4, what="the opening and 3 commitments projected")
        app.cancel_campaign(campaign_id, datetime.now(UTC))

        def settled() -> float:
            samples = scrape(ports["settle"])
            return samples.get(("groupbuy_campaigns_settled_total", (("outcome", "cancelled"),)), 0)

        wait_for(
            lambda: status(ports["settle"], "/healthz") == 200 and settled() == 1,
            what="the campaign settled",
        )
        wait_for(lambda: projected() == 5, what="the close projected")
        for service, port in [("project", ports["project"])]:
            wait_for(
                partial(caught_up, port, service, "campaign-events"), what=f"{service}'s lag at 0"
            )
        samples = scrape(ports["settle"])
        assert samples[("groupbuy_settle_transactions_total", (("result", "committed"),))] >= 1
        assert samples.get(("groupbuy_settle_transactions_total", (("result", "aborted"),)), 0) == 0
    finally:
        app.close()
        for service in services:
            assert service.stop() == 0
