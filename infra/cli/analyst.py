"""`groupbuy history|whatif|demand|export`: analyst reports, read from the event store."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from analysis.demand_curve import DemandCurve, demand_curve
from analysis.errors import AnalysisError
from analysis.fold import fold
from analysis.history import state_at
from analysis.whatif import CHANGEABLE, Comparison, compare
from domain.errors import DefinitionError
from infra.cli import export
from infra.cli.common import (
    EXIT_CODES,
    CommandError,
    campaign_events,
    event_store,
    instant_argument,
    json_file,
    require_extra,
)
from infra.cli.output import plain
from infra.settings import Settings

WHATIF_FILE_HELP = f"""\
FILE (JSON, `-` for stdin) changes the campaign's definition for the replay. Either a price
schedule as in a campaign definition's "pricing", e.g.
  {{"kind": "tiers", "tiers": [{{"min_quantity": 1, "unit_price": "10.00"}},
                             {{"min_quantity": 50, "unit_price": "7.50"}}]}}
or an object with any of {", ".join(sorted(CHANGEABLE))}, e.g.
  {{"pricing": {{"kind": "linear", "list_price": "10.00", "from_quantity": 10,
               "to_quantity": 100}}, "floor_price": "6.00", "minimum_quantity": 20,
   "maximum_quantity": null}}
(null removes the stock cap). Every other field stays as the campaign was opened. The real
orders and cancellations are replayed at their real times, including those the campaign
rejected (a higher cap may accept them); the domain's own rules decide each one.
"""


def add_commands(commands: Any) -> None:
    history = commands.add_parser(
        "history",
        epilog=EXIT_CODES,
        help="a campaign as it stood at an instant, from its events",
        description="The campaign as it stood at instant T: every event up to T, replayed.",
    )
    history.add_argument("campaign_id")
    history.add_argument("--at", required=True, metavar="T", help="RFC 3339 UTC instant")
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")
    history.set_defaults(run=show_history)
    whatif = commands.add_parser(
        "whatif",
        help="replay a campaign's real orders under another price schedule",
        description="Replays the campaign's real orders and cancellations, at their real "
        "times, under another definition, and prints both outcomes side by side.",
        epilog=f"{WHATIF_FILE_HELP}\n\n{EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    whatif.add_argument("campaign_id")
    whatif.add_argument("--pricing", required=True, metavar="FILE", help="see below")
    whatif.add_argument("--json", action="store_true", help="print JSON instead of a table")
    whatif.set_defaults(run=show_whatif)
    demand = commands.add_parser(
        "demand",
        epilog=EXIT_CODES,
        help="the demand curve: units committed at each maximum price",
        description="Units committed (and not withdrawn) at each maximum unit price, and how "
        "many units would be bought at that price or more.",
    )
    demand.add_argument("campaign_id")
    demand.add_argument("--json", action="store_true", help="print JSON instead of a table")
    demand.add_argument("--png", metavar="PATH", help="also draw the curve into a PNG file")
    demand.set_defaults(run=show_demand)
    export.add_command(commands)


def show_history(settings: Settings, arguments: argparse.Namespace) -> int:
    at = instant_argument("--at", arguments.at)
    with event_store(settings.for_reading(), read_only=True) as app:
        events = campaign_events(app, arguments.campaign_id)
    try:
        state = state_at(arguments.campaign_id, events, at)
    except AnalysisError as error:
        raise CommandError(str(error)) from None
    view = state.to_json_dict()
    if arguments.json:
        print(json.dumps(view, indent=2))
        return 0
    Console().print(history_table(view))
    return 0


def history_table(view: dict[str, Any]) -> Table:
    """A campaign as it stood at an instant (`CampaignState.to_json_dict()`)."""
    table = Table(title=plain(f"{view['campaign_id']} at {view['at']}"), show_header=False)
    for name, value in view.items():
        if name not in ("campaign_id", "at") and (name != "note" or value):
            table.add_row(name.replace("_", " "), plain(value))
    return table


def show_whatif(settings: Settings, arguments: argparse.Namespace) -> int:
    changes = json_file(arguments.pricing)
    with event_store(settings.for_reading(), read_only=True) as app:
        events = campaign_events(app, arguments.campaign_id)
    try:
        comparison = compare(events, changes, datetime.now(UTC))
    except DefinitionError as error:
        problems = "\n".join(f"  - {problem}" for problem in error.problems)
        raise CommandError(f"{arguments.pricing}: fix these fields:\n{problems}") from None
    if arguments.json:
        print(json.dumps(comparison.to_json_dict(), indent=2))
        return 0
    Console().print(whatif_table(comparison))
    return 0


def whatif_table(comparison: Comparison) -> Table:
    changed = ", ".join(sorted(comparison.changes)) or "nothing"
    table = Table(
        "",
        "real",
        "what-if",
        "change",
        title=plain(f"{comparison.campaign_id}: what if ({changed} changed)"),
    )
    real, whatif = comparison.real.to_json_dict(), comparison.whatif.to_json_dict()
    for name in real:
        change = difference(real[name], whatif[name])
        table.add_row(name.replace("_", " "), plain(real[name]), plain(whatif[name]), change)
    return table


def difference(real: Any, whatif: Any) -> str:
    """whatif - real for figures (money stays exact), blank otherwise."""
    if not isinstance(real, int | str) or not isinstance(whatif, int | str):
        return ""
    try:
        delta = Decimal(whatif) - Decimal(real)
    except ArithmeticError:
        return ""
    return f"{delta:+}" if delta else ""


def show_demand(settings: Settings, arguments: argparse.Namespace) -> int:
    if arguments.png:
        require_extra("matplotlib", "analyst", "groupbuy demand --png")
    with event_store(settings.for_reading(), read_only=True) as app:
        campaign = fold(campaign_events(app, arguments.campaign_id))
    assert campaign is not None
    curve = demand_curve(campaign)
    if arguments.png:
        from infra.cli.demand_chart import draw  # matplotlib takes a moment to import

        draw(curve, campaign.pricing, Path(arguments.png))
    if arguments.json:
        print(json.dumps(curve.to_json_dict(), indent=2))
    else:
        Console().print(demand_table(curve))
    if arguments.png:
        print(f"demand curve drawn into {arguments.png}", file=sys.stderr)
    return 0


def demand_table(curve: DemandCurve) -> Table:
    table = Table(
        "max unit price",
        "units",
        "units willing at this price or more",
        "schedule price for them",
        title=plain(f"{curve.campaign_id}: demand ({curve.currency})"),
        caption=plain(
            f"clears at {curve.clearing_price} with {curve.filled_quantity} units filled, "
            f"of {curve.total} committed"
        ),
    )
    table.add_row("any price", str(curve.unconditional), str(curve.unconditional), "")
    for point in curve.points:
        table.add_row(
            plain(point.max_unit_price),
            plain(point.units),
            plain(point.willing),
            plain(point.schedule_price),
        )
    return table
