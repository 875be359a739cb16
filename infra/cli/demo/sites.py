"""The demo's campaign and its three simulated storefront sites, publishing to the orders topic."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaProducer

from domain.definition import CampaignDefinition
from domain.timefmt import format_instant

SITES = ("site-a", "site-b", "site-c")
SUPPLIER_ID = "acme"
# The contract's example prices; the quantities are scaled to the number of orders (see `tiers`).
PRICES = ("120.00", "99.00", "85.00", "79.00")
FLOOR_PRICE = "79.00"
MAX_PER_BUYER = 5
# Limits of conditional orders: most fill once the price falls; "75.00" is below the floor,
# so those buyers are always released.
LIMITS = ("110.00", "99.00", "85.00", "75.00")
SELLING_WINDOW = 0.85  # sites stop publishing this far into the campaign, before its deadline

PLACED, CONDITIONAL, CANCELLED, INVALID = "placed", "conditional", "cancelled", "invalid"


def tiers(orders: int) -> list[dict[str, Any]]:
    """Tiers the demo's orders walk through: about two units an order, 10/30/60 % of them."""
    units = 2 * orders
    starts = [1, max(2, units // 10), max(3, units * 3 // 10), max(4, units * 6 // 10)]
    return [{"min_quantity": q, "unit_price": p} for q, p in zip(starts, PRICES, strict=True)]


def definition(campaign_id: str, orders: int, deadline: datetime) -> CampaignDefinition:
    schedule = tiers(orders)
    return CampaignDefinition.from_json_dict(
        {
            "campaign_id": campaign_id,
            "sku": "LAPTOP-X1",
            "title": "X1 laptop, 16 GB",
            "supplier_id": SUPPLIER_ID,
            "currency": "EUR",
            "floor_price": FLOOR_PRICE,
            "pricing": {"kind": "tiers", "tiers": schedule},
            "minimum_quantity": schedule[1]["min_quantity"],
            "max_per_buyer": MAX_PER_BUYER,
            "deadline": format_instant(deadline),
        }
    )


@dataclass(frozen=True)
class Planned:
    """One message a site will publish, `at` a fraction (0..1) of the campaign's duration."""

    at: float
    site_id: str
    kind: str
    key: bytes
    value: bytes


def plan(campaign_id: str, orders: int, rng: random.Random) -> list[Planned]:
    """`orders` order.placed messages, about 10 % of them later cancelled, and a few invalid."""
    planned: list[Planned] = []
    buyers_per_site = max(3, orders // len(SITES))
    for n in range(orders):
        site = SITES[n % len(SITES)]
        at = rng.uniform(0.02, SELLING_WINDOW)
        message: dict[str, Any] = {
            "type": "order.placed",
            "order_id": f"{site}:{n}",
            "site_id": site,
            "campaign_id": campaign_id,
            "buyer_id": f"b-{rng.randrange(buyers_per_site)}",
            "quantity": rng.choice((1, 1, 2, 2, 3, 4)),
            "placed_at": format_instant(datetime.now(UTC)),
        }
        conditional = rng.random() < 0.35
        if conditional:
            message["max_unit_price"] = rng.choice(LIMITS)
        planned.append(_planned(at, site, CONDITIONAL if conditional else PLACED, message))
        if rng.random() < 0.1:
            cancel_at = min(SELLING_WINDOW, at + rng.uniform(0.05, 0.2))
            planned.append(_planned(cancel_at, site, CANCELLED, cancellation(message)))
    for n in range(max(4, orders // 15)):
        site = SITES[n % len(SITES)]
        planned.append(_invalid(campaign_id, site, n, rng.uniform(0.02, SELLING_WINDOW)))
    return sorted(planned, key=lambda p: p.at)


def cancellation(placed: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "order.cancelled",
        "order_id": placed["order_id"],
        "site_id": placed["site_id"],
        "campaign_id": placed["campaign_id"],
        "cancelled_at": placed["placed_at"],
    }


def _planned(at: float, site: str, kind: str, message: dict[str, Any]) -> Planned:
    return Planned(at, site, kind, message["campaign_id"].encode(), json.dumps(message).encode())


def _invalid(campaign_id: str, site: str, n: int, at: float) -> Planned:
    """Bad JSON and wrong types go to the DLQ; the others get a rejection result."""
    order = {
        "type": "order.placed",
        "order_id": f"{site}:bad-{n}",
        "site_id": site,
        "campaign_id": campaign_id,
        "buyer_id": f"b-bad-{n}",
        "quantity": 1,
        "placed_at": format_instant(datetime.now(UTC)),
    }
    kind = n % 4
    if kind == 0:
        value = b'{"type": "order.placed", "order_id": '  # cut off mid-message
    elif kind == 1:
        value = json.dumps(order | {"quantity": "two"}).encode()
    elif kind == 2:
        value = json.dumps(order | {"campaign_id": f"{campaign_id}-gone"}).encode()
    else:
        value = json.dumps(order | {"quantity": -3}).encode()
    return Planned(at, site, INVALID, campaign_id.encode(), value)


def malformed(planned: Planned) -> bool:
    """Whether the message is one the DLQ takes (no result): not JSON or of the wrong types."""
    if planned.kind != INVALID:
        return False
    try:
        fields = json.loads(planned.value)
    except ValueError:
        return True
    return not isinstance(fields["quantity"], int)


@dataclass
class Sites:
    """Publishes a plan in real time on a thread; `sent` counts (site, kind) as it goes."""

    producer: KafkaProducer
    topic: Callable[[str], str]  # each site's own orders topic
    planned: list[Planned]
    started: float  # time.monotonic() at fraction 0
    duration: float  # seconds of fraction 1
    stop: threading.Event = field(default_factory=threading.Event)
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(self) -> None:
        try:
            for planned in self.planned:
                wait = self.started + planned.at * self.duration - time.monotonic()
                if wait > 0:
                    self.producer.flush()
                    if self.stop.wait(wait):
                        return
                topic = self.topic(planned.site_id)
                self.producer.send(topic, key=planned.key, value=planned.value)
                self.sent[planned.site_id, planned.kind] += 1
            self.producer.flush()
        except BaseException as error:  # reported by the demo, which owns the terminal
            self.error = error
        finally:
            self.done.set()

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name="demo-sites", daemon=True)
        thread.start()
        return thread
