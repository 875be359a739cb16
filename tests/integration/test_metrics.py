"""Each service's metrics, scraped over HTTP while it works: the counts equal what was sent."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import UTC, datetime
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
    finally:
        assert ingest.stop() == 0
