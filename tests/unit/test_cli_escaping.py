"""Ids and titles are shown as plain text: never rich markup, never terminal controls."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console, RenderableType

from infra.cli.analyst import history_table
from infra.cli.campaign import campaign_table, campaigns_table
from infra.cli.demo.view import purchase_order, settlement_summary
from infra.cli.output import plain

HOSTILE = ["[/x]", "\x1b[2J", "\x1b]0;pwn\x07", "[red]loud[/red]", "a\x9b31mb", "\u202eevil"]
SHOWN = ["[/x]", "\\x1b[2J", "\\x1b]0;pwn\\x07", "[red]loud[/red]", "a\\x9b31mb", "\\u202eevil"]
CONTROLS = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0), 0x202E]}


def rendered(renderable: RenderableType) -> str:
    """What a terminal would receive: rich's own styling left out, so any control is ours."""
    out = io.StringIO()
    Console(file=out, width=400, color_system=None, force_terminal=True).print(renderable)
    return out.getvalue()


def assert_shown_not_obeyed(output: str) -> None:
    assert not CONTROLS & set(output.replace("\n", ""))
    for shown in SHOWN:
        assert shown in output


def view(site_ids: list[str]) -> dict[str, Any]:
    return {
        "campaign_id": "camp-1",
        "title": "[red]Big sale[/red] \x1b[2J",
        "status": "open",
        "close_reason": "[bold]",
        "sites": [{"site_id": site_id, "quantity": 1} for site_id in site_ids],
    }


def test_campaign_show_prints_markup_and_escape_sequences_in_values_as_text() -> None:
    output = rendered(campaign_table(view(HOSTILE)))

    assert_shown_not_obeyed(output)
    assert "[red]Big sale[/red]" in output
    assert "[bold]" in output


def test_campaign_list_prints_hostile_titles_and_ids_as_text() -> None:
    rows = [
        {name: site_id for name in ("campaign_id", "status", "deadline")} for site_id in HOSTILE
    ]
    filled = [row | {"unit_price": "1.00", "committed_quantity": 1, "buyers": 1} for row in rows]
    filled = [row | {"next_unit_price": None, "units_to_next_price": None} for row in filled]

    assert_shown_not_obeyed(rendered(campaigns_table(filled)))


def test_history_prints_hostile_values_as_text() -> None:
    state = {"campaign_id": "camp-1", "at": "2026-01-01T00:00:00Z", "note": ""}
    state |= {f"field_{n}": value for n, value in enumerate(HOSTILE)}

    assert_shown_not_obeyed(rendered(history_table(state)))


def test_the_demo_shows_a_purchase_order_from_the_topic_as_text() -> None:
    order = {
        "type": "purchase_order.issued",
        "purchase_order_id": "po-[/x]",
        "supplier_id": "\x1b]0;pwn\x07",
        "currency": "EUR",
        "unit_price": "6.00",
        "quantity": len(HOSTILE),
        "total": "36.00",
        "sku": "[red]loud[/red]",
        "closed_at": "\x1b[2J",
        "reason": "a\x9b31mb",
        "lines": [{"site_id": site_id, "quantity": 1} for site_id in HOSTILE],
    }
    settlements = [
        {"site_id": site_id, "type": "commitment.filled", "quantity": 1, "amount": "6.00"}
        for site_id in HOSTILE
    ]

    assert_shown_not_obeyed(rendered(purchase_order(order)))
    assert_shown_not_obeyed(rendered(settlement_summary(order, settlements)))


@pytest.mark.parametrize(("value", "shown"), [*zip(HOSTILE, SHOWN, strict=True), (None, "-")])
def test_plain_shows_every_control_character_as_an_escape(value: str | None, shown: str) -> None:
    assert plain(value).plain == shown
