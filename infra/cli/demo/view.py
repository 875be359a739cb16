"""What the demo shows: the live campaign while sites sell, then the purchase order."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from infra.cli.demo.sites import CANCELLED, CONDITIONAL, INVALID, PLACED, SITES
from infra.cli.output import plain


@dataclass
class Progress:
    """Everything the view shows, gathered from the sites, the read model and the topics."""

    campaign_id: str
    currency: str
    tiers: list[dict[str, Any]]
    deadline: datetime
    view: dict[str, Any] | None = None  # the live read model row, once projected
    sent: Counter[tuple[str, str]] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)  # "order.rejected: reason" etc.
    dead_letters: int = 0
    stage: str = "sites selling"

    def seconds_left(self, now: datetime) -> float:
        return max(0.0, (self.deadline - now).total_seconds())

    def sent_total(self, kind: str | None = None) -> int:
        return sum(n for (_, k), n in self.sent.items() if kind in (None, k))


def live(progress: Progress, now: datetime) -> RenderableType:
    """The campaign as it stands: price ladder, quantities, countdown, sites and results."""
    view = progress.view or {}
    price = view.get("unit_price", progress.tiers[0]["unit_price"])
    headline = Text.assemble(
        (f"{progress.currency} {price}", "bold green"),
        " a unit   ",
        (f"{view.get('committed_quantity', 0)}", "bold"),
        " units committed (",
        (f"{view.get('filled_quantity', 0)}", "bold"),
        " filled at this price)   ",
        (f"{view.get('buyers', 0)}", "bold"),
        " buyers   ",
        (f"{progress.seconds_left(now):5.1f} s", "bold yellow"),
        " to the deadline",
    )
    nxt = view.get("next_unit_price")
    to_go = (
        f"next price {progress.currency} {nxt} in {view.get('units_to_next_price')} more units"
        if nxt is not None
        else "at the lowest tier"
    )
    status = Text(f"{to_go}   ({progress.stage})", style="dim")
    return Panel(
        Group(headline, status, _ladder(progress, price)),
        title=plain(f"groupbuy demo: {progress.campaign_id}"),
        subtitle=_results_line(progress),
    )


def _ladder(progress: Progress, price: str) -> Table:
    table = Table(expand=True, box=None)
    table.add_column("tier from")
    table.add_column("unit price", justify="right")
    table.add_column("")
    for tier in progress.tiers:
        reached = Decimal(tier["unit_price"]) >= Decimal(price)
        mark = "◀ now" if tier["unit_price"] == price else ("reached" if reached else "")
        style = "bold green" if tier["unit_price"] == price else ("" if reached else "dim")
        table.add_row(f"{tier['min_quantity']} units", tier["unit_price"], mark, style=style)
    sites = Table(expand=True, box=None)
    for column in ("site", "firm", "conditional", "cancelled", "invalid", "committed"):
        sites.add_column(column, justify="left" if column == "site" else "right")
    quantities = {s["site_id"]: s["quantity"] for s in (progress.view or {}).get("sites", [])}
    for site in SITES:
        counts = [progress.sent[site, kind] for kind in (PLACED, CONDITIONAL, CANCELLED, INVALID)]
        sites.add_row(site, *map(str, counts), str(quantities.get(site, 0)))
    grid = Table.grid(expand=True, padding=(0, 4))
    grid.add_row(table, sites)
    return grid


def _results_line(progress: Progress) -> str:
    accepted = progress.results["order.accepted"]
    rejected = sum(n for kind, n in progress.results.items() if kind.startswith("order.rejected"))
    cancelled = progress.results["order.cancelled"]
    return (
        f"results: {accepted} accepted, {rejected} rejected, {cancelled} cancelled, "
        f"{progress.dead_letters} to the DLQ"
    )


def plain_line(progress: Progress, now: datetime) -> str:
    """One line of progress, for a log or a pipe rather than a terminal."""
    view = progress.view or {}
    price = view.get("unit_price", progress.tiers[0]["unit_price"])
    return (
        f"{progress.seconds_left(now):5.1f} s left: {progress.currency} {price} a unit, "
        f"{view.get('committed_quantity', 0)} units, {view.get('buyers', 0)} buyers, "
        f"{progress.sent_total()} messages sent; {_results_line(progress)} ({progress.stage})"
    )


def purchase_order(order: dict[str, Any]) -> RenderableType:
    """The supplier's message as read from its settlements topic (its text shown, not obeyed)."""
    if order["type"] != "purchase_order.issued":
        return Panel(
            plain(
                f"campaign failed: {order['filled_quantity']} units filled, "
                f"{order['minimum_quantity']} needed; every buyer is released"
            ),
            title=plain(f"to {order['supplier_id']}"),
        )
    table = Table(
        title=plain(f"purchase order {order['purchase_order_id']} to {order['supplier_id']}")
    )
    table.add_column("site")
    table.add_column("quantity", justify="right")
    table.add_column(plain(f"amount ({order['currency']})"), justify="right")
    for line in order["lines"]:
        amount = Decimal(order["unit_price"]) * line["quantity"]
        table.add_row(plain(line["site_id"]), plain(line["quantity"]), f"{amount:.2f}")
    table.add_section()
    table.add_row(
        plain(f"{order['sku']} at {order['unit_price']} a unit", style="bold"),
        plain(order["quantity"], style="bold"),
        plain(order["total"], style="bold"),
    )
    return Group(table, plain(f"closed at {order['closed_at']} ({order['reason']})"))


def settlement_summary(order: dict[str, Any], settlements: list[dict[str, Any]]) -> Table:
    """What the sites were told to charge, and whether it adds up to the purchase order."""
    table = Table(title="buyer settlements (groupbuy.buyer-settlements.<site>.v1)")
    for column in ("site", "filled", "units", "charged", "released"):
        table.add_column(column, justify="left" if column == "site" else "right")
    for site in sorted({s["site_id"] for s in settlements}):
        mine = [s for s in settlements if s["site_id"] == site]
        filled = [s for s in mine if s["type"] == "commitment.filled"]
        table.add_row(
            plain(site),
            str(len(filled)),
            str(sum(s["quantity"] for s in filled)),
            str(sum((Decimal(s["amount"]) for s in filled), Decimal("0.00"))),
            str(len(mine) - len(filled)),
        )
    charged = sum((Decimal(s["amount"]) for s in settlements), Decimal("0.00"))
    total = Decimal(order.get("total", "0.00"))
    verdict = "equals" if charged == total else "DIFFERS FROM"
    table.caption = f"charged in all {charged}, which {verdict} the purchase order total {total}"
    return table
