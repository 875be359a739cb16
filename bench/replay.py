"""Replay rate against a raw SELECT of the same rows, in the same run; peak memory."""

# Usage:
#   python -m bench.replay                    # 1,000,000 events over 200 campaigns
#   python -m bench.replay --events 100000    # a quick look

from __future__ import annotations

import argparse
import random
import resource
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
from psycopg.sql import SQL, Identifier

from bench.common import isolated_settings, report, spec_campaign
from domain.application import GroupBuying
from domain.outcomes import Order
from infra.adapters.app import open_app, recorder_of
from infra.replay.from_store import rebuild_from_store
from infra.replay.rebuilt import fresh_tables
from infra.replay.stored_events import PAGE
from infra.settings import Settings
from projections.read_models import ReadModelTables

START = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
LIMITS = [None, None, Decimal("120.00"), Decimal("99.00"), Decimal("85.00")]
SAVE_EVERY = 20_000  # events a transaction while making the history


def make_history(app: GroupBuying, events: int, campaigns: int) -> int:
    """About `events` events over `campaigns` campaigns; the number stored."""
    rng = random.Random(7)
    ids = [f"replay-{n}" for n in range(campaigns)]
    deadline = (START + timedelta(days=30)).isoformat()
    for campaign_id in ids:
        app.open_campaign(spec_campaign(campaign_id, deadline=deadline, max_per_buyer=None), START)
    loaded = {campaign_id: app.get_campaign(campaign_id) for campaign_id in ids}
    stored, pending, n = campaigns, 0, 0
    now = START
    while stored + pending < events - campaigns:
        n += 1
        now += timedelta(milliseconds=1)
        campaign = loaded[ids[n % campaigns]]
        order = Order(
            f"site-{n % 3}:{n}", f"site-{n % 3}", f"b-{n}", rng.randint(1, 3), rng.choice(LIMITS)
        )
        campaign.place_order(order, now)
        pending += 1
        if n % 10 == 0:  # one order in ten is withdrawn again
            campaign.cancel_order(order.order_id, order.site_id, now)
            pending += 1
        if pending >= SAVE_EVERY:
            app.save(*loaded.values())
            stored, pending = stored + pending, 0
    for campaign in loaded.values():
        campaign.close_if_due(START + timedelta(days=31))
    app.save(*loaded.values())
    return stored + pending + campaigns


def raw_select_rate(app: GroupBuying, settings: Settings) -> tuple[int, float]:
    """(rows, rows per second) for SELECT * of the events table, paged like the replay."""
    recorder = recorder_of(app)
    table = Identifier(settings.database_schema, recorder.events_table_name)
    rows = 0
    started = time.perf_counter()
    with psycopg.connect(settings.database_url) as conn, conn.cursor(name="raw") as cursor:
        cursor.itersize = PAGE
        cursor.execute(SQL("SELECT * FROM {} ORDER BY notification_id").format(table))
        for _ in cursor:
            rows += 1
    return rows, rows / (time.perf_counter() - started)


def replay_rate(settings: Settings, workers: int) -> tuple[int, float]:
    """(events, events per second) for a rebuild of every read model from the store."""
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        tables = fresh_tables(conn, ReadModelTables(settings.database_schema))
        started = time.perf_counter()
        rebuilt = rebuild_from_store(settings, conn, tables, lambda *_: None, workers)
        elapsed = time.perf_counter() - started
        conn.execute(SQL("DROP SCHEMA {} CASCADE").format(Identifier(tables.schema)))
    return rebuilt.events, rebuilt.events / elapsed


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__)
    arguments.add_argument("--events", type=int, default=1_000_000)
    arguments.add_argument("--campaigns", type=int, default=200)
    arguments.add_argument("--workers", type=int, default=2, help="replay processes")
    arguments.add_argument("--rounds", type=int, default=2, help="raw and replay, taken in turns")
    options = arguments.parse_args()
    with isolated_settings("replay") as settings:
        app = open_app(replace(settings), AGGREGATE_CACHE_MAXSIZE=str(options.campaigns))
        started = time.perf_counter()
        stored = make_history(app, options.events, options.campaigns)
        figures: dict[str, float | int] = {
            "events": stored,
            "campaigns": options.campaigns,
            "replay_workers": options.workers,
            "history_made_in_s": time.perf_counter() - started,
        }
        raw, replayed = [], []
        for _ in range(options.rounds):
            rows, rate = raw_select_rate(app, settings)
            raw.append(rate)
            events, rate = replay_rate(settings, options.workers)
            replayed.append(rate)
            assert rows == events == stored, (rows, events, stored)
        app.close()
        figures["raw_select_rows_per_s"] = max(raw)
        figures["replay_events_per_s"] = max(replayed)
        figures["ratio"] = figures["replay_events_per_s"] / figures["raw_select_rows_per_s"]
        figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        report(figures)


if __name__ == "__main__":
    main()
