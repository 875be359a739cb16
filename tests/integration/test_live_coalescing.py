"""The projector writes a campaign's row once a batch (coalescing): the read models end the
same as when every event is written on its own, whatever the events and however batched."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from domain.outcomes import Order
from infra.adapters.app import open_app
from infra.replay.stored_events import StoredEvents
from infra.settings import Settings
from projections.live import LiveProjection
from projections.read_models import ReadModelTables
from projections.wire import CampaignEvent
from tests.support.builders import campaign
from tests.support.read_models import table_rows

# One step of a campaign's life: an order (site, buyer, quantity, price limit), the
# cancellation of an earlier order, or an extended deadline. Buyers may take at most 6
# units, so some orders are refused (their events change only the version).
orders = st.tuples(
    st.sampled_from(["site-a", "site-b"]),
    st.integers(0, 2),
    st.integers(1, 4),
    st.sampled_from([None, "9.00", "7.00"]),
)
ordered = st.tuples(st.just("order"), orders)
steps = st.lists(
    # Mostly orders, so that buyers run into their limit and batches mix kinds of events.
    st.one_of(ordered, ordered, ordered, st.tuples(st.just("cancel"), st.integers(0, 50)))
    | st.tuples(st.just("extend"), st.none()),
    min_size=4,
    max_size=40,
)


@pytest.fixture
def tables(settings: Settings) -> tuple[ReadModelTables, ReadModelTables]:
    """Two empty sets of read models: one written event by event, one coalesced."""
    pair = (
        ReadModelTables(settings.database_schema, prefix="each_"),
        ReadModelTables(settings.database_schema, prefix="coalesced_"),
    )
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for t in pair:
            conn.execute(t.create_statement())
    return pair


def life(settings: Settings, campaign_id: str, plan: list[tuple[str, Any]], close: bool) -> None:
    """Open a campaign and play `plan` on it through the application, as ingest would."""
    app = open_app(settings)
    try:
        now = datetime.now(UTC)
        definition = campaign(campaign_id)
        app.open_campaign(definition, now)
        placed: list[Order] = []
        deadline = definition.deadline
        for n, (kind, detail) in enumerate(plan):
            if kind == "order":
                site, buyer, quantity, limit = detail
                order = Order(
                    f"{site}:{n}",
                    site,
                    f"buyer-{buyer}",
                    quantity,
                    None if limit is None else Decimal(limit),
                )
                app.place_order(campaign_id, order, now)
                placed.append(order)
            elif kind == "cancel" and placed:
                order = placed[detail % len(placed)]
                app.cancel_order(campaign_id, order.order_id, order.site_id, now)
            elif kind == "extend":
                deadline += timedelta(hours=1)
                app.extend_deadline(campaign_id, deadline, now)
        if close:
            app.close_if_due(campaign_id, deadline + timedelta(seconds=1))
    finally:
        app.close()


def stored_events(settings: Settings, campaign_id: str) -> list[CampaignEvent]:
    app = open_app(settings)
    try:
        events = StoredEvents(app)
        events.know([campaign_id])
        return [e for e in events.read(0) if e.campaign_id == campaign_id]
    finally:
        app.close()


# In one batch: a commitment, then a refusal (buyer 0's limit) and an extension after it,
# then a withdrawal and a refused second cancellation.
EVERY_KIND = [
    ("order", ("site-a", 0, 4, None)),
    ("order", ("site-a", 0, 4, None)),
    ("extend", None),
    ("order", ("site-b", 1, 2, None)),
    ("cancel", 0),
    ("cancel", 0),
]


@example(plan=EVERY_KIND, cuts=[12], close=False)
@example(plan=EVERY_KIND, cuts=[3], close=True)
@given(plan=steps, cuts=st.lists(st.integers(2, 12), min_size=1, max_size=10), close=st.booleans())
@hypothesis_settings(
    max_examples=60,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_coalesced_batches_leave_the_rows_that_event_by_event_writes_leave(
    settings: Settings,
    tables: tuple[ReadModelTables, ReadModelTables],
    plan: list[tuple[str, Any]],
    cuts: list[int],
    close: bool,
) -> None:
    campaign_id = f"coalesce-{abs(hash((tuple(plan), tuple(cuts), close))) % 10**12}"
    life(settings, campaign_id, plan, close)
    events = stored_events(settings, campaign_id)
    each, coalesced = tables
    one_by_one, batched = LiveProjection(each), LiveProjection(coalesced)
    start, n = 0, 0
    with psycopg.connect(settings.database_url) as conn:
        while start < len(events):  # batches of the sizes drawn, over and over
            batch = events[start : start + cuts[n % len(cuts)]]
            with conn.transaction(), conn.cursor() as cur:
                for event in batch:
                    one_by_one.apply(cur, event)
            with conn.transaction(), conn.cursor() as cur, batched.coalescing(cur):
                for event in batch:
                    batched.apply(cur, event)
            # After every batch, not only the last: a later event may hide a wrong write.
            assert table_rows(conn, coalesced) == table_rows(conn, each)
            start, n = start + len(batch), n + 1
        assert any(row[0] == campaign_id for row in table_rows(conn, coalesced)["campaigns"])


def test_a_batch_of_one_campaigns_commitments_updates_its_row_once(
    settings: Settings, tables: tuple[ReadModelTables, ReadModelTables]
) -> None:
    campaign_id = "coalesce-hot"
    life(settings, campaign_id, [("order", ("site-a", n, 1, None)) for n in range(5)], False)
    opening, *commitments = stored_events(settings, campaign_id)
    assert len(commitments) == 5

    def row_updates(tables: ReadModelTables, coalescing: bool) -> int:
        """How often the batch updated the campaign's row, as PostgreSQL counted it."""
        projection = LiveProjection(tables)
        with psycopg.connect(settings.database_url) as conn:
            with conn.transaction(), conn.cursor() as cur:
                projection.apply(cur, opening)
            with conn.transaction(), conn.cursor() as cur:
                with projection.coalescing(cur) if coalescing else contextlib.nullcontext():
                    for event in commitments:
                        projection.apply(cur, event)
                # This transaction's own counts, before it ends.
                row = cur.execute(
                    "SELECT n_tup_upd FROM pg_stat_xact_user_tables "
                    "WHERE schemaname = %s AND relname = %s",
                    (tables.schema, tables.prefix + "campaigns"),
                ).fetchone()
        assert row is not None
        return int(row[0])

    each, coalesced = tables
    assert row_updates(each, coalescing=False) == 5
    assert row_updates(coalesced, coalescing=True) == 1
