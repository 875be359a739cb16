"""groupbuy serve under load: reads against /healthz in the same run, push latency, many
live clients.

Three measures, each printed, then all as one JSON line:

- reads: `GET /v1/campaigns/ID` and, as the framework's floor, `GET /healthz` of the same
  server, each at a steady rate (open loop: a request is timed from when it was due, so a
  slow server cannot slow the load down and hide its own delay); p50, p99, the rate
  reached, and the campaign's p99 as a ratio of /healthz's.
- push: orders published to Kafka at a steady rate, the services running; for each order,
  from its send to the first event of the campaign's live stream that counts it.
- clients: many live streams on one campaign while orders come in; how many saw the last
  figures, how many changes each saw, and the server's resident memory.
"""

# Usage:
#   python -m bench.http                                   # the figures docs/benchmarks.md records
#   python -m bench.http --rate 500 --seconds 5 --clients 200   # quicker

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
from kafka import KafkaProducer
from psycopg.sql import SQL

from bench.common import isolated_settings, memory_mib, peak_rss_mib, report, spec_campaign
from bench.ingest import GROUPBUY, make_site_topics
from infra.adapters.app import open_app
from infra.adapters.topics import Topics
from infra.settings import Settings
from projections.read_models import ReadModelTables

PORT = 18080
READ_CONNECTIONS = 32  # as a CDN's or a storefront's servers would keep open
LENGTH = re.compile(rb"(?i)\r\ncontent-length: *([0-9]+)")
SITE = "site-0"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * share) - 1))]


class Connection:
    """One keep-alive HTTP/1.1 connection, one request at a time. A load generator must
    cost less than the server it loads: httpx spent about a millisecond of CPU a request,
    as much as the server, on these two cores."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def get(self, path: str) -> int:
        """The status of `GET path`, its body read and dropped."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = LENGTH.search(head)
        await self.reader.readexactly(int(length.group(1)) if length else 0)
        return int(head[9:12])

    def close(self) -> None:
        self.writer.close()


async def steady_reads(
    idle: asyncio.Queue[Connection], path: str, rate: int, seconds: float
) -> dict[str, float]:
    """`rate` GETs of `path` a second for `seconds`, on the connections in `idle`:
    latencies from when each was due (waiting for a free connection included)."""
    latencies: list[float] = []
    failures = 0
    start = time.perf_counter()

    async def one(due: float) -> None:
        nonlocal failures
        connection = await idle.get()
        try:
            if await connection.get(path) != 200:
                failures += 1
        finally:
            idle.put_nowait(connection)
        latencies.append((time.perf_counter() - due) * 1000)

    tasks = []
    for n in range(int(rate * seconds)):
        due = start + n / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": percentile(latencies, 0.99),
        "per_s": len(latencies) / elapsed,
        "failures": failures,
    }


async def measure_reads(campaign_id: str, rate: int, seconds: float) -> dict[str, float]:
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    connections = [await Connection.open(PORT) for _ in range(READ_CONNECTIONS)]
    for connection in connections:
        idle.put_nowait(connection)
    try:
        await steady_reads(idle, "/healthz", rate, 1)  # warm: connections, imports
        floor = await steady_reads(idle, "/healthz", rate, seconds)
        read = await steady_reads(idle, f"/v1/campaigns/{campaign_id}", rate, seconds)
    finally:
        for connection in connections:
            connection.close()
    return {
        "healthz_p50_ms": floor["p50_ms"],
        "healthz_p99_ms": floor["p99_ms"],
        "healthz_per_s": floor["per_s"],
        "campaign_p50_ms": read["p50_ms"],
        "campaign_p99_ms": read["p99_ms"],
        "campaign_per_s": read["per_s"],
        "campaign_p99_vs_healthz": read["p99_ms"] / floor["p99_ms"],
        "read_failures": floor["failures"] + read["failures"],
    }


def order(campaign_id: str, n: int) -> bytes:
    return json.dumps(
        {
            "type": "order.placed",
            "order_id": f"{SITE}:{campaign_id}:{n}",
            "site_id": SITE,
            "campaign_id": campaign_id,
            "buyer_id": f"b-{n}",
            "quantity": 1,
            "placed_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
    ).encode()


async def publish(settings: Settings, campaign_id: str, rate: int, count: int) -> list[float]:
    """`count` one-unit orders at `rate` a second; when each was handed to the producer."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0)
    topic = Topics(settings.topic_prefix).site_orders(SITE)
    sent: list[float] = []
    start = time.perf_counter()
    for n in range(count):
        await asyncio.sleep(max(0.0, start + n / rate - time.perf_counter()))
        sent.append(time.perf_counter())
        producer.send(topic, key=campaign_id.encode(), value=order(campaign_id, n))
    await asyncio.to_thread(producer.flush)
    producer.close()
    return sent


async def follow(
    client: httpx.AsyncClient, path: str, until: int, seen: list[tuple[float, int]]
) -> None:
    """Read the live stream of `path`, noting when each event came and the units it counts,
    until it counts `until`."""
    async with client.stream("GET", path) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                committed = json.loads(line[6:])["committed_quantity"]
                seen.append((time.perf_counter(), committed))
                if committed >= until:
                    return


def poll_read_model(
    settings: Settings, campaign_id: str, until: int, seen: list[tuple[float, int]]
) -> None:
    """The campaign's committed units in its read model, every 5 ms, until `until`: when
    the projector's commit became visible, to tell the pipeline's share of the latency
    from the server's."""
    query = SQL("SELECT committed_quantity FROM {} WHERE campaign_id = %s").format(
        ReadModelTables(settings.database_schema).campaigns
    )
    deadline = time.monotonic() + 120
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(query, (campaign_id,)).fetchone()
            units = row[0] if row else 0
            if not seen or units != seen[-1][1]:
                seen.append((time.perf_counter(), units))
            if units >= until:
                return
            time.sleep(0.005)


def latencies_ms(sent: list[float], seen: list[tuple[float, int]]) -> list[float]:
    """For order n (one unit each), from its send to the first sighting of n + 1 units."""
    latencies, at = [], 0
    for n, sent_at in enumerate(sent):
        while seen[at][1] < n + 1:
            at += 1
        latencies.append((seen[at][0] - sent_at) * 1000)
    return latencies


async def measure_push(
    settings: Settings, base: str, campaign_id: str, rate: int, seconds: float
) -> dict[str, float]:
    count = int(rate * seconds)
    pushed: list[tuple[float, int]] = []
    stored: list[tuple[float, int]] = []
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        reader = asyncio.create_task(
            follow(client, f"/v1/campaigns/{campaign_id}/live", count, pushed)
        )
        poller = asyncio.create_task(
            asyncio.to_thread(poll_read_model, settings, campaign_id, count, stored)
        )
        await asyncio.sleep(1)  # the stream is open and has sent the current figures
        sent = await publish(settings, campaign_id, rate, count)
        await asyncio.wait_for(asyncio.gather(reader, poller), 120)
    latencies = latencies_ms(sent, pushed)
    in_store = latencies_ms(sent, stored)
    return {
        "push_orders": count,
        "push_rate_per_s": rate,
        "push_events": len(pushed),
        "push_p50_ms": statistics.median(latencies),
        "push_p99_ms": percentile(latencies, 0.99),
        "push_max_ms": max(latencies),
        "read_model_p50_ms": statistics.median(in_store),
        "read_model_p99_ms": percentile(in_store, 0.99),
        "server_share_p50_ms": statistics.median(
            [p - s for p, s in zip(latencies, in_store, strict=True)]
        ),
    }


async def measure_clients(
    settings: Settings, base: str, campaign_id: str, clients: int, orders: int, server: int
) -> dict[str, float]:
    """`clients` live streams while `orders` one-unit orders come in, 20 a second."""
    seen: list[list[tuple[float, int]]] = [[] for _ in range(clients)]
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=180) as client:
        path = f"/v1/campaigns/{campaign_id}/live"
        readers = [asyncio.create_task(follow(client, path, orders, s)) for s in seen]
        while sum(1 for s in seen if s) < clients:  # each has its first event
            await asyncio.sleep(0.2)
        before = memory_mib(server, "VmRSS")
        await publish(settings, campaign_id, 20, orders)
        done, _ = await asyncio.wait(readers, timeout=120)
    got_last = sum(1 for s in seen if s and s[-1][1] >= orders)
    # The projector commits several orders at once at times: a change is a commit, and
    # every client should have seen each figure any client saw.
    figures = [{units for _, units in s} for s in seen]
    pushed = set().union(*figures)
    changes = [len(f) - 1 for f in figures]  # past the first figures
    return {
        "clients": clients,
        "clients_orders": orders,
        "clients_got_last": got_last,
        "clients_saw_every_change": sum(1 for f in figures if f == pushed),
        "changes_pushed": len(pushed) - 1,
        "clients_changes_min": min(changes),
        "clients_changes_mean": statistics.mean(changes),
        "server_rss_mib_idle_streams": before,
        "server_rss_mib_after": memory_mib(server, "VmRSS"),
        "server_peak_rss_mib": peak_rss_mib(server),
        "clients_finished": len(done),
    }


def open_campaigns(settings: Settings, ids: list[str]) -> None:
    app = open_app(settings)
    deadline = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for campaign_id in ids:
        definition = spec_campaign(
            campaign_id, deadline=deadline, maximum_quantity=None, max_per_buyer=None
        )
        app.open_campaign(definition, datetime.now(UTC))
    app.close()


def wait_for_health(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"groupbuy serve is not ready at {base} after 60 s")


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__)
    arguments.add_argument("--rate", type=int, default=1000, help="reads a second")
    arguments.add_argument("--push-rate", type=int, default=500, help="orders a second")
    arguments.add_argument("--seconds", type=float, default=10)
    arguments.add_argument("--clients", type=int, default=1000)
    arguments.add_argument("--client-orders", type=int, default=40)
    options = arguments.parse_args()
    # A thousand streams need a thousand sockets here and in the server (inherited).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    base = f"http://127.0.0.1:{PORT}"
    with isolated_settings("http") as settings:
        read_id, push_id, crowd_id = "bench-read", "bench-push", "bench-crowd"
        open_campaigns(settings, [read_id, push_id, crowd_id])
        make_site_topics(settings)
        env = os.environ | settings.as_env()
        services = [
            subprocess.Popen([GROUPBUY, name], env=env) for name in ("ingest", "relay", "project")
        ]
        server = subprocess.Popen(
            [GROUPBUY, "serve", "--port", str(PORT)], env=env, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_health(base)
            time.sleep(5)  # the consumer groups settle, the openings are projected
            figures = asyncio.run(measure_reads(read_id, options.rate, options.seconds))
            figures |= asyncio.run(
                measure_push(settings, base, push_id, options.push_rate, options.seconds)
            )
            figures |= asyncio.run(
                measure_clients(
                    settings, base, crowd_id, options.clients, options.client_orders, server.pid
                )
            )
        finally:
            for process in [server, *services]:
                process.send_signal(signal.SIGTERM)
            for process in [server, *services]:
                process.wait(timeout=60)
    figures["cpu_cores"] = len(os.sched_getaffinity(0))
    report(figures)
    print(f"python {sys.version.split()[0]}", file=sys.stderr)


if __name__ == "__main__":
    main()
