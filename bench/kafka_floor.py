"""kafka-python alone: group members that only count the ingest benchmark's orders, timed.

They read what ingest reads: every site's orders topic, subscribed by the same pattern (the
ingest benchmark spreads its orders over three sites' topics)."""

# Usage:
#   python -m bench.kafka_floor                    # one process
#   python -m bench.kafka_floor --processes 2 --rounds 3

from __future__ import annotations

import argparse
import os
import selectors
import subprocess
import sys
import time
import uuid
from typing import Any

from bench.common import isolated_settings, report
from bench.ingest import prepare, raw_insert_rate
from infra.adapters import kafka_clients
from infra.adapters.topics import Topics
from infra.settings import Settings


def count(settings: Settings, pattern: str, group: str) -> None:
    """Child process: join the group on the topics `pattern` matches, read, print the
    running count after every poll."""
    consumer = kafka_clients.consumer(settings, group)
    consumer.subscribe(pattern=pattern)
    read = 0
    while True:
        for records in consumer.poll(timeout_ms=200, max_records=5000).values():
            read += len(records)
        print(read, flush=True)


def read_rate(settings: Settings, orders: int, processes: int, group: str) -> float:
    pattern = Topics(settings.topic_prefix).orders_pattern
    env = os.environ | settings.as_env()
    started = time.perf_counter()
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.kafka_floor", "--count", pattern, "--group", group],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    counts = [0] * processes
    try:
        with selectors.DefaultSelector() as ready:
            for number, child in enumerate(children):
                assert child.stdout is not None
                ready.register(child.stdout, selectors.EVENT_READ, number)
            while sum(counts) < orders:
                for key, _ in ready.select(timeout=60):
                    line = key.fileobj.readline()  # type: ignore[union-attr]
                    if not line:
                        raise RuntimeError("a counting process exited early")
                    counts[key.data] = int(line)
        return orders / (time.perf_counter() - started)
    finally:
        for child in children:
            child.kill()
            child.wait()


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__)
    arguments.add_argument("--orders", type=int, default=100_000)
    arguments.add_argument("--processes", type=int, default=1)
    arguments.add_argument("--rounds", type=int, default=1)
    arguments.add_argument("--count", metavar="PATTERN", help=argparse.SUPPRESS)
    arguments.add_argument("--group", help=argparse.SUPPRESS)
    options = arguments.parse_args()
    if options.count:
        count(Settings.from_env(), options.count, options.group)
        return
    rounds: list[dict[str, float]] = []
    for _ in range(options.rounds):
        with isolated_settings("floor") as settings:
            prepare(settings, 20, options.orders)
            group = "floor-" + uuid.uuid4().hex[:8]
            read = read_rate(settings, options.orders, options.processes, group)
            raw = raw_insert_rate(settings, options.orders)
            rounds.append({"read_records_per_s": read, "raw_insert_rows_per_s": raw})
    figures: dict[str, Any] = {"orders": options.orders, "processes": options.processes}
    figures["read_records_per_s"] = max(r["read_records_per_s"] for r in rounds)
    figures["raw_insert_rows_per_s"] = max(r["raw_insert_rows_per_s"] for r in rounds)
    figures["read_over_raw_each_round"] = [
        r["read_records_per_s"] / r["raw_insert_rows_per_s"] for r in rounds
    ]
    report(figures)


if __name__ == "__main__":
    main()
