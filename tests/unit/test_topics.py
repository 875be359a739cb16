"""Which topic is whose: every site's own topics, told apart from groupbuy's by name alone."""

from __future__ import annotations

import re

import pytest

from infra.adapters.topics import APPEND_TIME, Topics

TOPICS = Topics("acme.")


@pytest.mark.parametrize(
    ("name", "site"),
    [
        ("acme.groupbuy.orders.site-a.v1", "site-a"),
        ("acme.groupbuy.orders.dlq-2.v1", "dlq-2"),  # a site may begin with the word
        ("acme.groupbuy.orders.dlq.v1", None),  # the dead letters' topic
        ("groupbuy.orders.site-a.v1", None),  # another installation's (no prefix)
        ("acme.groupbuy.orders.v1", None),  # the shared topic of older versions
        ("acme.groupbuy.orders.Site-A.v1", None),  # no slug
        ("acme.groupbuy.orders.a.b.v1", None),
        ("acme.groupbuy.order-results.site-a.v1", None),
        ("xacme.groupbuy.orders.site-a.v1", None),
    ],
)
def test_ingestion_follows_every_sites_orders_topic_and_nothing_else(
    name: str, site: str | None
) -> None:
    assert TOPICS.site_of_orders(name) == site
    assert bool(re.match(TOPICS.orders_pattern, name)) is (site is not None)


def test_a_prefix_with_pattern_characters_matches_only_itself() -> None:
    topics = Topics("a.b+")
    assert topics.site_of_orders("a.b+groupbuy.orders.s.v1") == "s"
    assert topics.site_of_orders("axbbgroupbuy.orders.s.v1") is None


@pytest.mark.parametrize(
    ("name", "site"),
    [
        (TOPICS.site_orders("site-a"), "site-a"),
        (TOPICS.site_results("site-a"), "site-a"),
        (TOPICS.site_buyer_settlements("site-b"), "site-b"),
        (TOPICS.settlements("site-a"), None),  # a supplier's
        (TOPICS.orders_dlq, None),
        (TOPICS.campaign_events, None),
        ("acme.groupbuy.order-results.Not A Slug.v1", None),
    ],
)
def test_a_sites_three_topics_name_it(name: str, site: str | None) -> None:
    assert TOPICS.site_of(name) == site


def test_only_orders_and_the_clock_are_timed_by_the_broker() -> None:
    timed = {
        name
        for name in TOPICS.site_topics("s")
        if APPEND_TIME.items() <= TOPICS.configs(name).items()
    }
    assert timed == {TOPICS.site_orders("s")}
    assert APPEND_TIME.items() <= TOPICS.configs(TOPICS.clock).items()
