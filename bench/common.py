"""What the benchmarks share: an isolated schema and topic prefix, figures, timing."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg

from domain.definition import CampaignDefinition
from infra.adapters.kafka_clients import delete_topics_named
from infra.settings import Settings


@contextlib.contextmanager
def isolated_settings(name: str) -> Iterator[Settings]:
    """The configured services, with a fresh schema and topic prefix dropped afterwards."""
    unique = uuid.uuid4().hex[:8]
    settings = replace(
        Settings.from_env(),
        topic_prefix=f"bench-{name}-{unique}.",
        database_schema=f"bench_{unique}",
    )
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{settings.database_schema}"')
    try:
        yield settings
    finally:
        if not os.environ.get("BENCH_KEEP"):
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{settings.database_schema}" CASCADE')
            delete_topics_named(settings, settings.topic_prefix)


def report(figures: dict[str, Any]) -> None:
    """Print the figures readably, then as one JSON object on the last line."""
    width = max(map(len, figures))
    for name, value in figures.items():
        shown = ", ".join(map(_shown, value)) if isinstance(value, list) else _shown(value)
        print(f"{name:<{width}}  {shown}")
    print(json.dumps(figures))


def _shown(value: float) -> str:
    return f"{value:,.3g}" if isinstance(value, float) and value < 10 else f"{value:,.0f}"


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM), in MiB."""
    return memory_mib(pid, "VmHWM")


def memory_mib(pid: int, field: str) -> float:
    """A memory figure of /proc/PID/status (VmRSS: resident now; VmHWM: its peak), in MiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


SPEC_CAMPAIGN: dict[str, Any] = {
    "sku": "BENCH-1",
    "title": "Benchmark product",
    "supplier_id": "acme",
    "currency": "EUR",
    "floor_price": "79.00",
    "pricing": {
        "kind": "tiers",
        "tiers": [
            {"min_quantity": 1, "unit_price": "120.00"},
            {"min_quantity": 100, "unit_price": "99.00"},
            {"min_quantity": 500, "unit_price": "85.00"},
            {"min_quantity": 1000, "unit_price": "79.00"},
        ],
    },
    "minimum_quantity": 100,
}


def spec_campaign(campaign_id: str, **fields: Any) -> CampaignDefinition:
    """The tiers of docs/contract.md's example campaign, with `fields` added or changed."""
    return CampaignDefinition.from_json_dict(SPEC_CAMPAIGN | {"campaign_id": campaign_id} | fields)
