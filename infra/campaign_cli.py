"""`groupbuy campaign show|list`: the live read model, as a table or as JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from infra.settings import Settings
from projections import queries
from projections.read_models import ReadModelTables


class CommandError(Exception):
    """Something a person can act on; the CLI prints it and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def add_commands(commands: Any) -> None:
    campaign = commands.add_parser("campaign", help="operator commands on campaigns")
    actions = campaign.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="one campaign as the live read model shows it")
    show.add_argument("campaign_id")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.set_defaults(run=show_campaign)
    listing = actions.add_parser("list", help="every campaign, soonest deadline first")
    listing.add_argument("--status", choices=["open", "succeeded", "failed", "cancelled"])
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(run=list_campaigns)


def show_campaign(settings: Settings, arguments: argparse.Namespace) -> int:
    with read_models(settings) as conn:
        view = queries.campaign(
            conn, ReadModelTables(settings.database_schema), arguments.campaign_id
        )
    if view is None:
        raise CommandError(
            f"no campaign {arguments.campaign_id!r} in the read model "
            "(is `groupbuy project` running, and was the campaign opened?)"
        )
    if arguments.json:
        print(json.dumps(view, indent=2))
        return 0
    table = Table(title=f"{view['campaign_id']}: {view['title']}", show_header=False)
    for name in SHOWN:
        table.add_row(name.replace("_", " "), _text(view.get(name)))
    for site in view["sites"]:
        table.add_row(f"site {site['site_id']}", str(site["quantity"]))
    Console().print(table)
    return 0


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
    with read_models(settings) as conn:
        rows = queries.campaigns(conn, ReadModelTables(settings.database_schema), arguments.status)
    if arguments.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = Table(*(name.replace("_", " ") for name in LISTED))
    for row in rows:
        table.add_row(*(_text(row[name]) for name in LISTED))
    Console().print(table)
    return 0


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


def read_models(settings: Settings) -> psycopg.Connection[Any]:
    try:
        conn = psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        raise CommandError(
            f"cannot reach PostgreSQL at {_where(settings.database_url)}: "
            f"{str(error).strip().splitlines()[-1]} (check GROUPBUY_DATABASE_URL, or `make up`)",
            exit_code=3,
        ) from None
    return conn


def _where(url: str) -> str:
    return url.rsplit("@", 1)[-1]  # never print the password


def _text(value: Any) -> str:
    return "-" if value is None else str(value)
