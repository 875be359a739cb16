"""`export` rows: one per event, every column present, nested values as JSON text."""

from __future__ import annotations

import json
from decimal import Decimal

from analysis.flatten import COLUMNS, flatten
from domain.campaign import Campaign
from tests.unit.analysis_history import T1, history


def test_the_columns_are_the_identity_then_every_event_field_once() -> None:
    names = [column.name for column in COLUMNS]

    assert names[:6] == [
        "notification_id",
        "campaign_id",
        "originator_id",
        "version",
        "type",
        "timestamp",
    ]
    assert len(names) == len(set(names))
    assert {"pricing", "max_unit_price", "reason", "previous_deadline", "lines"} <= set(names)


def test_every_row_has_every_column_with_nulls_where_the_event_has_no_such_field() -> None:
    rows = [flatten(n, "small", event) for n, event in enumerate(history(), start=1)]

    assert all(list(row) == [c.name for c in COLUMNS] for row in rows)
    placed = rows[1]
    assert placed["type"] == "commitment.placed"
    assert (placed["version"], placed["timestamp"], placed["quantity"]) == (2, T1, 3)
    assert (placed["unit_price"], placed["max_unit_price"], placed["sku"]) == (
        Decimal("10.00"),
        None,
        None,
    )
    assert placed["originator_id"] == str(Campaign.create_id("small"))


def test_nested_values_are_compact_json_with_money_as_strings() -> None:
    opened = flatten(1, "small", history()[0])

    pricing = json.loads(opened["pricing"])
    assert pricing["tiers"][0] == {"min_quantity": 1, "unit_price": "10.00"}
    assert (opened["type"], opened["campaign_id"], opened["currency"]) == (
        "campaign.opened",
        "small",
        "EUR",
    )
