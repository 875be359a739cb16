"""`groupbuy campaign ...`: operators open, extend and cancel campaigns, and read them back."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

from psycopg.sql import SQL, Identifier
from rich.console import Console
from rich.live import Live
from rich.table import Table

from domain.application import GroupBuying
from domain.campaign import Campaign
from domain.definition import CampaignDefinition
from domain.errors import CampaignError, DefinitionError, UnknownCampaignError
from domain.timefmt import format_instant, parse_instant
from infra.adapters import kafka_clients
from infra.adapters.topics import Topics
from infra.cli.common import (
    EXIT_CODES,
    INVALID,
    NOT_FOUND,
    REFUSED,
    CommandError,
    event_store,
    json_file,
    read_models,
    require_kafka,
)
from infra.cli.output import plain
from infra.settings import Settings
from projections import queries
from projections.read_models import ReadModelTables


def add_commands(commands: Any) -> None:
    campaign = commands.add_parser(
        "campaign",
        help="operator commands on campaigns",
        description="Open, extend and cancel campaigns; show them as the live read model does.",
        epilog=EXIT_CODES,
    )
    actions = campaign.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, summary: str, run: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(
            name, help=summary, description=summary, epilog=EXIT_CODES
        )
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
        parser.set_defaults(run=run)
        return parser

    opening = action(
        "open", "open a campaign from a JSON definition (docs/contract.md)", open_campaign
    )
    opening.add_argument("file", metavar="FILE", help="the definition's JSON file, - for stdin")
    show = action("show", "one campaign as the live read model shows it", show_campaign)
    show.add_argument("campaign_id", metavar="ID")
    watch = action(
        "watch",
        "follow one campaign live, pushed by the projector's commits, until it closes",
        watch_campaign,
    )
    watch.add_argument("campaign_id", metavar="ID")
    listing = action("list", "every campaign, soonest deadline first", list_campaigns)
    listing.add_argument("--status", choices=["open", "succeeded", "failed", "cancelled"])
    extend = action("extend", "move an open campaign's deadline later", extend_deadline)
    extend.add_argument("campaign_id", metavar="ID")
    extend.add_argument(
        "--deadline",
        metavar="T",
        required=True,
        help='the new deadline, e.g. "2026-12-08T18:00:00Z"',
    )
    cancel = action(
        "cancel", "call a campaign off: it closes and every commitment is released", cancel_campaign
    )
    cancel.add_argument("campaign_id", metavar="ID")


def open_campaign(settings: Settings, arguments: argparse.Namespace) -> int:
    definition = read_definition(arguments.file)
    # The supplier's topic exists from its first campaign's opening on, so that a supplier
    # that subscribes early misses nothing (docs/contract.md, "Supplier settlements").
    require_kafka(settings)
    supplier_topic = Topics(settings.topic_prefix).settlements(definition.supplier_id)
    kafka_clients.ensure_topics(settings, [supplier_topic])
    now = datetime.now(UTC)
    with domain_service(settings) as app:
        app.open_campaign(definition, now)
        campaign = app.get_campaign(definition.campaign_id)
    return _done(arguments, "opened", campaign)


def extend_deadline(settings: Settings, arguments: argparse.Namespace) -> int:
    try:
        deadline = parse_instant(arguments.deadline)
    except ValueError as error:
        raise CommandError(f"--deadline {error}") from None
    with domain_service(settings) as app:
        app.extend_deadline(arguments.campaign_id, deadline, datetime.now(UTC))
        campaign = app.get_campaign(arguments.campaign_id)
    return _done(arguments, "extended", campaign)


def cancel_campaign(settings: Settings, arguments: argparse.Namespace) -> int:
    with domain_service(settings) as app:
        app.cancel_campaign(arguments.campaign_id, datetime.now(UTC))
        campaign = app.get_campaign(arguments.campaign_id)
    return _done(arguments, "cancelled", campaign)


def read_definition(file: str) -> CampaignDefinition:
    """The definition in `file` (- for stdin); errors name the file and each bad field."""
    try:
        return CampaignDefinition.from_json_dict(json_file(file))
    except DefinitionError as error:
        raise CommandError(f"{'stdin' if file == '-' else file}: {error}") from None


@contextmanager
def domain_service(settings: Settings) -> Iterator[GroupBuying]:
    """The domain service on the event store; domain refusals become exit codes."""
    with event_store(settings) as app:
        try:
            yield app
        except UnknownCampaignError as error:
            raise CommandError(str(error), NOT_FOUND) from None
        except DefinitionError as error:
            raise CommandError(str(error), INVALID) from None
        except CampaignError as error:
            raise CommandError(str(error), REFUSED) from None


def _done(arguments: argparse.Namespace, what: str, campaign: Campaign) -> int:
    summary = {
        "campaign_id": campaign.campaign_id,
        "status": campaign.status,
        "deadline": format_instant(campaign.deadline),
    }
    if arguments.json:
        print(json.dumps(summary))
    else:
        print(
            f"{what} {summary['campaign_id']}: {summary['status']}, deadline {summary['deadline']}"
        )
    return 0


def show_campaign(settings: Settings, arguments: argparse.Namespace) -> int:
    with read_models(settings.for_reading()) as conn:
        view = queries.campaign(
            conn, ReadModelTables(settings.database_schema), arguments.campaign_id
        )
    if view is None:
        raise CommandError(
            f"no campaign {arguments.campaign_id!r} in the read model "
            "(is `groupbuy project` running, and was the campaign opened?)",
            NOT_FOUND,
        )
    if arguments.json:
        print(json.dumps(view, indent=2))
        return 0
    Console().print(campaign_table(view))
    return 0


def watch_campaign(settings: Settings, arguments: argparse.Namespace) -> int:
    """Show the campaign, then again whenever the projector commits a change to it (its
    notification, as `groupbuy serve` hears it), until it closes; with --json, one line per
    change. Ctrl-C ends it too."""
    tables = ReadModelTables(settings.database_schema)
    console = Console()
    live = console.is_terminal and not arguments.json
    # On the primary, replica or not: a standby cannot LISTEN.
    with read_models(settings) as conn, read_models(settings) as listener:
        listener.execute(SQL("LISTEN {}").format(Identifier(tables.channel)))
        view = queries.campaign(conn, tables, arguments.campaign_id)
        if view is None:
            raise CommandError(
                f"no campaign {arguments.campaign_id!r} in the read model "
                "(is `groupbuy project` running, and was the campaign opened?)",
                NOT_FOUND,
            )
        screen = Live(campaign_table(view), console=console) if live else nullcontext()
        with screen:
            shown = None
            while True:
                if view is not None and view["version"] != shown:
                    shown = view["version"]
                    if isinstance(screen, Live):
                        screen.update(campaign_table(view))
                    else:
                        print(
                            json.dumps(view) if arguments.json else plain_summary(view), flush=True
                        )
                if view is None or view["status"] != "open":
                    return 0
                # Woken by any campaign's change (or after a second, to be sure): read again.
                for _ in listener.notifies(timeout=1.0, stop_after=1):
                    pass
                view = queries.campaign(conn, tables, arguments.campaign_id)


def plain_summary(view: dict[str, Any]) -> str:
    """One line of a campaign's figures, for a terminal that is not one (a pipe, a log)."""
    return (
        f"{view['campaign_id']} v{view['version']} {view['status']}: {view['currency']} "
        f"{view['unit_price']} a unit, {view['committed_quantity']} units committed, "
        f"{view['buyers']} buyers, next price {view['next_unit_price']} in "
        f"{view['units_to_next_price']} units, deadline {view['deadline']}"
    )


def campaign_table(view: dict[str, Any]) -> Table:
    table = Table(title=plain(f"{view['campaign_id']}: {view['title']}"), show_header=False)
    for name in SHOWN:
        table.add_row(name.replace("_", " "), plain(view.get(name)))
    for site in view["sites"]:
        table.add_row(plain(f"site {site['site_id']}"), plain(site["quantity"]))
    return table


SHOWN = (
    "status",
    "currency",
    "unit_price",
    "committed_quantity",
    "filled_quantity",
    "buyers",
    "next_unit_price",
    "units_to_next_price",
    "minimum_quantity",
    "maximum_quantity",
    "deadline",
    "closed_at",
    "close_reason",
)


def list_campaigns(settings: Settings, arguments: argparse.Namespace) -> int:
    with read_models(settings.for_reading()) as conn:
        rows = queries.campaigns(conn, ReadModelTables(settings.database_schema), arguments.status)
    if arguments.json:
        print(json.dumps(rows, indent=2))
        return 0
    Console().print(campaigns_table(rows))
    return 0


def campaigns_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(*(name.replace("_", " ") for name in LISTED))
    for row in rows:
        table.add_row(*(plain(row[name]) for name in LISTED))
    return table


LISTED = (
    "campaign_id",
    "status",
    "unit_price",
    "committed_quantity",
    "buyers",
    "next_unit_price",
    "units_to_next_price",
    "deadline",
)
