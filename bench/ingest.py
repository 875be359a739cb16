"""Ingest throughput against raw PostgreSQL inserts in the same run; peak RSS of the process."""

# Usage:
#   python -m bench.ingest --rounds 3                 # 100,000 orders over 20 campaigns; best of 3
#   python -m bench.ingest --workers 1 --rounds 3     # one worker: the process alone
#   python -m bench.ingest --workers 1 --processes 2  # two processes in the group, one worker each
#   python -m bench.ingest --campaigns 10000 --orders 20000 --no-baseline   # memory
#   python -m bench.ingest --timeline                 # orders stored and CPU busy, every 0.25 s

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaProducer

from bench.common import isolated_settings, peak_rss_mib, report, spec_campaign
from domain.definition import CampaignDefinition
from infra.adapters import kafka_clients
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.settings import Settings

GROUPBUY = str(Path(sys.executable).parent / "groupbuy")
RAW_BATCH = 500
CORES = len(os.sched_getaffinity(0))
PLACED = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
# The orders are spread over three sites, each published on its own site's orders topic as
# the site would (three topics of GROUPBUY_TOPIC_PARTITIONS partitions, all read by ingest).
SITES = ("site-0", "site-1", "site-2")


def definition(campaign_id: str) -> CampaignDefinition:
    return spec_campaign(campaign_id, deadline=(datetime.now(UTC) + timedelta(days=1)).isoformat())


def order(campaign_id: str, n: int, rng: random.Random) -> dict[str, Any]:
    site = SITES[n % len(SITES)]
    message: dict[str, Any] = {
        "type": "order.placed",
        "order_id": f"{site}:{n}",
        "site_id": site,
        "campaign_id": campaign_id,
        "buyer_id": f"b-{rng.randrange(1_000_000)}",
        "quantity": rng.randint(1, 3),
        # Each order its own time, as sites stamp them (a shared one would flatter encoding).
        "placed_at": (PLACED + timedelta(milliseconds=n)).isoformat().replace("+00:00", "Z"),
    }
    if n % 4 == 0:
        message["max_unit_price"] = rng.choice(["120.00", "99.00", "85.00"])
    return message


def orders_topics(settings: Settings) -> list[str]:
    """The benchmark's sites' orders topics."""
    return [Topics(settings.topic_prefix).site_orders(site) for site in SITES]


def make_site_topics(settings: Settings) -> None:
    """Each of the benchmark's sites' three topics and the dead letters', as `groupbuy site
    add` makes them: before ingest starts, which notices a site's orders topic made later only
    at its next metadata refresh."""
    topics = Topics(settings.topic_prefix)
    names = [name for site in SITES for name in topics.site_topics(site)]
    kafka_clients.ensure_topics(settings, [*names, topics.orders_dlq])


def prepare(settings: Settings, campaigns: int, orders: int) -> float:
    """Open the campaigns and pre-publish the orders, each to its site's topic; the
    publishing rate."""
    topics = Topics(settings.topic_prefix)
    make_site_topics(settings)
    app = open_app(settings)
    ids = [f"bench-{n}" for n in range(campaigns)]
    now = datetime.now(UTC)
    for campaign_id in ids:
        app.open_campaign(definition(campaign_id), now)
    app.close()
    rng = random.Random(42)
    producer = KafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, linger_ms=20, batch_size=256 * 1024
    )
    started = time.perf_counter()
    for n in range(orders):
        campaign_id = ids[n % campaigns]
        message = order(campaign_id, n, rng)
        producer.send(
            topics.site_orders(message["site_id"]),
            key=campaign_id.encode(),
            value=json.dumps(message).encode(),
        )
    producer.flush()
    producer.close()
    return orders / (time.perf_counter() - started)


def raw_insert_rate(settings: Settings, rows: int) -> float:
    """Rows per second for plain executemany inserts of event-sized rows, 500 a transaction."""
    table = f'"{settings.database_schema}".raw_events'
    state = json.dumps(order("bench-0", 0, random.Random(1)) | {"unit_price": "99.00"}).encode()
    with psycopg.connect(settings.database_url) as conn:
        conn.execute(
            f"CREATE TABLE {table} (originator_id uuid, originator_version bigint, "
            "topic text, state bytea, notification_id bigserial, "
            "PRIMARY KEY (originator_id, originator_version))"
        )
        conn.commit()
        ids = [uuid.uuid4() for _ in range(20)]
        started = time.perf_counter()
        for start in range(0, rows, RAW_BATCH):
            batch = [
                (ids[n % 20], n, "domain.campaign:Campaign.CommitmentPlaced", state)
                for n in range(start, min(start + RAW_BATCH, rows))
            ]
            with conn.cursor() as cursor:
                cursor.executemany(
                    f"INSERT INTO {table} (originator_id, originator_version, topic, state) "
                    "VALUES (%s, %s, %s, %s)",
                    batch,
                )
            conn.commit()
        return rows / (time.perf_counter() - started)


def stored_orders(watcher: psycopg.Connection[Any], settings: Settings, topics: list[str]) -> int:
    """How many orders the ingest has applied: the sum of its stored positions in `topics`."""
    row = watcher.execute(
        f'SELECT coalesce(sum(notification_id + 1), 0) FROM "{settings.database_schema}"'
        ".groupbuying_tracking WHERE application_name LIKE ANY(%s)",
        ([topic + ":%" for topic in topics],),
    ).fetchone()
    return int(row[0]) if row else 0


def machine_busy() -> tuple[int, int]:
    """CPU time of all cores so far, in clock ticks: (busy, total), from /proc/stat."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return sum(ticks) - idle, sum(ticks)


class Timeline:
    """Prints, every quarter second, the orders stored and how busy the machine was."""

    def __init__(self, started: float) -> None:
        self.started, self.last = started, (started, 0, machine_busy())

    def __call__(self, done: int) -> None:
        now, busy = time.perf_counter(), machine_busy()
        at, before, (busy_before, total_before) = self.last
        if now - at < 0.25:
            return
        share = (busy[0] - busy_before) / max(1, busy[1] - total_before)
        rate = (done - before) / (now - at)
        print(
            f"{now - self.started:5.2f} s  {done:7,} stored  {rate:7,.0f}/s  busy {share:4.0%}",
            file=sys.stderr,
        )
        self.last = (now, done, busy)


def family(pid: int) -> list[int]:
    """A process and its children (the workers of `groupbuy ingest --workers`)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def ingest_rate(
    settings: Settings, orders: int, processes: int, workers: int = 1, timeline: bool = False
) -> dict[str, float]:
    topics = orders_topics(settings)
    env = os.environ | settings.as_env()
    # One connection, opened before the clock starts: connecting for each look cost about 4 ms
    # of CPU on each side, taken from the processes being measured.
    watcher = psycopg.connect(settings.database_url, autocommit=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    group = [
        subprocess.Popen(
            [GROUPBUY, "ingest", "--workers", str(workers)], env=env, stderr=subprocess.DEVNULL
        )
        for _ in range(processes)
    ]
    first = None
    show = Timeline(started) if timeline else None
    try:
        while (done := stored_orders(watcher, settings, topics)) < orders:
            if show is not None:
                show(done)
            if first is None and done:
                first = (time.perf_counter(), done)
            if any(process.poll() is not None for process in group):
                raise RuntimeError("a groupbuy ingest process exited early")
            time.sleep(0.01)  # the finish is seen within 10 ms
        finished = time.perf_counter()
        peaks = [peak_rss_mib(pid) for process in group for pid in family(process.pid)]
    finally:
        for process in group:
            process.send_signal(signal.SIGTERM)
        for process in group:
            process.wait(timeout=60)
        watcher.close()
    assert first is not None
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = used.ru_utime + used.ru_stime - before.ru_utime - before.ru_stime
    return {
        # CPU of the ingest processes, start-up included, over the orders they applied.
        "ingest_cpu_us_per_order": cpu / orders * 1e6,
        "ingest_orders_per_s": orders / (finished - started),
        "ingest_orders_per_s_after_first_batch": (orders - first[1]) / (finished - first[0]),
        # The largest of the processes (coordinator or worker), and all of them together
        # (an overstatement: peaks come at different times, and forked code is shared).
        "ingest_peak_rss_mib": max(peaks),
        "ingest_peak_rss_mib_all_processes": sum(peaks),
    }


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__)
    arguments.add_argument("--orders", type=int, default=100_000)
    arguments.add_argument("--campaigns", type=int, default=20)
    arguments.add_argument("--no-baseline", action="store_true")
    arguments.add_argument("--processes", type=int, default=1, help="ingest processes in the group")
    arguments.add_argument(
        "--workers", type=int, default=CORES, help=f"workers of each ingest process ({CORES})"
    )
    arguments.add_argument(
        "--rounds", type=int, default=1, help="ingest and raw inserts, taken in turns"
    )
    arguments.add_argument(
        "--timeline", action="store_true", help="print orders stored and CPU busy every 0.25 s"
    )
    options = arguments.parse_args()
    figures: dict[str, Any] = {"orders": options.orders, "campaigns": options.campaigns}
    figures["ingest_processes"] = options.processes
    figures["ingest_workers"] = options.workers
    rounds = []
    for _ in range(options.rounds):
        # Each round its own topic and schema: campaigns must open before their orders come.
        with isolated_settings("ingest") as settings:
            measured = {
                "publish_orders_per_s": prepare(settings, options.campaigns, options.orders)
            }
            measured |= ingest_rate(
                settings, options.orders, options.processes, options.workers, options.timeline
            )
            if not options.no_baseline:
                measured["raw_insert_rows_per_s"] = raw_insert_rate(settings, options.orders)
            rounds.append(measured)
    for name in rounds[0]:  # the best of each (noise only ever slows a run); the peak RSS
        best = min if name == "ingest_cpu_us_per_order" else max
        figures[name] = best(measured[name] for measured in rounds)
    if not options.no_baseline:
        figures["ratio"] = figures["ingest_orders_per_s"] / figures["raw_insert_rows_per_s"]
        if options.rounds > 1:
            ratios = [m["ingest_orders_per_s"] / m["raw_insert_rows_per_s"] for m in rounds]
            figures["ratio_each_round"] = ratios
    report(figures)


if __name__ == "__main__":
    main()
