"""Hot campaign: 100,000 commitments into one campaign; do the last run as fast as the first?"""

# Usage:
#   python -m bench.hot_campaign                          # in memory, then on PostgreSQL
#   python -m bench.hot_campaign --count 5000 --store memory
#   python -m bench.hot_campaign --cache deepcopy         # the alternatives, to compare
#   python -m bench.hot_campaign --snapshot-interval 10000

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from statistics import median
from typing import Any

from bench.common import isolated_settings, spec_campaign
from domain.application import GroupBuying
from domain.campaign import Campaign
from domain.definition import CampaignDefinition
from domain.outcomes import Order
from infra.settings import eventsourcing_env

WINDOW = 1_000
START = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
# What each --cache choice means in eventsourcing's settings.
CACHES = {
    "in-place": {},  # GroupBuying's defaults: cached, used in place, not fast-forwarded
    "deepcopy": {"DEEPCOPY_FROM_AGGREGATE_CACHE": "y"},  # the library's default for a cache
    "fastforward": {"AGGREGATE_CACHE_FASTFORWARD": "y"},  # re-read newer events each time
    "off": {"AGGREGATE_CACHE_MAXSIZE": ""},  # replay every event for every command
}
LIMITS = [Decimal(p) for p in range(80, 120, 2)]


def definition(campaign_id: str) -> CampaignDefinition:
    return spec_campaign(
        campaign_id,
        max_per_buyer=5,
        deadline="2026-12-01T18:00:00Z",
        cancellation_cutoff="PT1H",
    )


def order(n: int) -> Order:
    """Every third order is conditional, over twenty distinct price limits."""
    limit = LIMITS[n % len(LIMITS)] if n % 3 == 0 else None
    return Order(f"site-{n % 5}:{n}", f"site-{n % 5}", f"buyer-{n}", 1 + n % 3, limit)


@contextlib.contextmanager
def store_env(store: str) -> Iterator[dict[str, str]]:
    """eventsourcing settings for the store; on PostgreSQL a schema of its own, dropped after.

    On PostgreSQL this is the library's own process recorder, as the domain alone uses it.
    """
    if store == "memory":
        yield {"PERSISTENCE_MODULE": "eventsourcing.popo"}
        return
    with isolated_settings("hot") as settings:
        env = eventsourcing_env(settings.database_url, settings.database_schema)
        yield env | {"CREATE_TABLE": "y"}


def application(snapshot_interval: int) -> type[GroupBuying]:
    """GroupBuying, snapshotting the campaign every `snapshot_interval` events if not 0."""
    if not snapshot_interval:
        return GroupBuying
    intervals = {Campaign: snapshot_interval}
    attributes = {"name": GroupBuying.name, "snapshotting_intervals": intervals}
    return type("SnapshottingGroupBuying", (GroupBuying,), attributes)


def place(app: GroupBuying, campaign_id: str, count: int, probe_every: int = 0) -> list[float]:
    """Places `count` orders into a newly opened campaign; commands per second by window.

    Every `probe_every` orders it also times a fresh campaign, the control: same store,
    same moment, same machine, but no history. The probe is left out of the windows.
    """
    app.open_campaign(definition(campaign_id), START)
    rates, window_start = [], time.perf_counter()
    for n in range(count):
        # One millisecond apart: the time is the order's, not the machine's.
        app.place_order(campaign_id, order(n), START + timedelta(milliseconds=n + 1))
        if (n + 1) % WINDOW == 0:
            now = time.perf_counter()
            rates.append(WINDOW / (now - window_start))
            window_start = now
        if probe_every and (n + 1) % probe_every == 0:
            fresh = place(app, f"{campaign_id}-control-{n + 1}", WINDOW)[0]
            print(
                f"  after {n + 1:>7,}: {campaign_id} {median(rates[-5:]):>9,.1f}/s "
                f"(median of the last 5 windows), a fresh campaign {fresh:>9,.1f}/s",
                flush=True,
            )
            window_start = time.perf_counter()
    return rates


def run(store: str, count: int, cache: str, snapshot_interval: int) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    with store_env(store) as env, application(snapshot_interval)(env=env | CACHES[cache]) as app:
        started = time.perf_counter()
        rates = place(app, "hot", count, probe_every=count // 10 if count >= 20 * WINDOW else 0)
        elapsed = time.perf_counter() - started
        # The control: if a campaign without history is no faster, history is not the cause.
        fresh = place(app, "fresh", WINDOW)[0]
        hot = app.get_campaign("hot")
        assert hot.committed_quantity == sum(order(n).quantity for n in range(count))
        app.forget("hot")
        loading = time.perf_counter()
        hot = app.get_campaign("hot")
        cold_load = time.perf_counter() - loading
    return {
        "store": store,
        "cache": cache,
        "snapshot_interval": snapshot_interval,
        "commands": count,
        "events": hot.version,
        "first_1000_per_s": round(rates[0], 1),
        "last_1000_per_s": round(rates[-1], 1),
        "last_to_first": round(rates[-1] / rates[0], 3),
        # Five windows at each end: one window is ~0.1 s, short enough for a neighbour's
        # burst of CPU on this shared machine to show; medians say what the code does.
        "first_5_median_per_s": round(median(rates[:5]), 1),
        "last_5_median_per_s": round(median(rates[-5:]), 1),
        "median_last_to_first": round(median(rates[-5:]) / median(rates[:5]), 3),
        "fresh_campaign_1000_per_s": round(fresh, 1),
        "last_to_fresh": round(rates[-1] / fresh, 3),
        "overall_per_s": round(count / elapsed, 1),
        "cold_load_s": round(cold_load, 3),
        "unit_price": str(hot.unit_price),
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def print_run(figures: dict[str, Any]) -> None:
    print(
        f"{figures['store']:<8} cache={figures['cache']:<11} "
        f"snapshots={figures['snapshot_interval'] or 'off':<6} {figures['commands']:>7,} commands: "
        f"first {WINDOW:,} {figures['first_1000_per_s']:>9,.1f}/s, "
        f"last {WINDOW:,} {figures['last_1000_per_s']:>9,.1f}/s, "
        f"ratio {figures['last_to_first']:.3f} "
        f"(medians of 5 windows: {figures['first_5_median_per_s']:,.1f}/s, "
        f"{figures['last_5_median_per_s']:,.1f}/s, ratio {figures['median_last_to_first']:.3f}); "
        f"a fresh campaign's first {WINDOW:,} then {figures['fresh_campaign_1000_per_s']:,.1f}/s; "
        f"overall {figures['overall_per_s']:,.1f}/s; "
        f"cold load of {figures['events']:,} events {figures['cold_load_s']:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="commitments to place")
    parser.add_argument("--store", choices=["memory", "postgres", "both"], default="both")
    parser.add_argument("--cache", choices=list(CACHES), default="in-place")
    parser.add_argument("--snapshot-interval", type=int, default=0, help="0: no snapshots")
    args = parser.parse_args()
    if args.count < WINDOW:
        parser.error(f"--count must be at least {WINDOW}")
    stores = ["memory", "postgres"] if args.store == "both" else [args.store]
    runs = []
    for store in stores:
        runs.append(run(store, args.count, args.cache, args.snapshot_interval))
        print_run(runs[-1])
    print(json.dumps({"benchmark": "hot_campaign", "aggregate": Campaign.__name__, "runs": runs}))


if __name__ == "__main__":
    main()
