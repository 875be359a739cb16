"""`groupbuy site add|list` and `supplier add`: a tenant's topics, made as groupbuy makes its
own, and a record of who registered it."""

from __future__ import annotations

import json
from pathlib import Path

from kafka.admin import ConfigResource, ConfigResourceType

from infra.adapters import kafka_clients
from infra.adapters.topics import Topics
from infra.settings import Settings
from tests.support.pipeline import groupbuy


def test_a_site_and_a_supplier_get_their_topics_and_are_listed(
    settings: Settings, unique: str, tmp_path: Path
) -> None:
    topics = Topics(settings.topic_prefix)
    site, supplier = f"shop-{unique}", f"maker-{unique}"

    # A password file: a secured cluster makes each tenant's user (unused on plain text).
    added = groupbuy(settings, "site", "add", site, "--password-file", str(tmp_path / site))
    supplied = groupbuy(
        settings, "supplier", "add", supplier, "--password-file", str(tmp_path / supplier)
    )
    listed = groupbuy(settings, "site", "list", "--json")

    assert added.returncode == 0, added.stderr
    assert supplied.returncode == 0, supplied.stderr
    with kafka_clients.admin(settings) as admin:
        existing = set(admin.list_topics())
        orders = ConfigResource(
            ConfigResourceType.TOPIC,
            topics.site_orders(site),
            configs={"message.timestamp.type": None},
        )
        described = admin.describe_configs([orders], config_filter="all")
    assert {*topics.site_topics(site), topics.settlements(supplier)} <= existing
    timing = described["topic"][topics.site_orders(site)]["message.timestamp.type"]["value"]
    assert timing == "LogAppendTime"  # no site can backdate its orders
    (entry,) = json.loads(listed.stdout)
    assert entry["id"] == site
    assert entry["registered_by"]
    assert entry["topics"] == topics.site_topics(site)


def test_an_id_that_is_not_a_slug_or_is_reserved_is_refused(settings: Settings) -> None:
    bad = groupbuy(settings, "site", "add", "Shop A")
    reserved = groupbuy(settings, "site", "add", "dlq")

    assert bad.returncode == 1
    assert "must be a slug" in bad.stderr
    assert reserved.returncode == 1
    assert "reserved" in reserved.stderr
