"""`groupbuy replay`: every read model rebuilt from zero, beside the live ones (blue/green)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from infra.adapters.app import open_app
from infra.adapters.replica import current_lsn, wait_for_replay
from infra.adapters.topics import Topics
from infra.cli.common import (
    DIFFERENT,
    EXIT_CODES,
    INVALID,
    UNREACHABLE,
    CommandError,
    connect_postgres,
    positive,
    postgres_address,
    require_kafka,
    require_postgres,
)
from infra.replay.compare import Comparison, compare
from infra.replay.from_kafka import rebuild_from_kafka
from infra.replay.from_store import rebuild_from_store
from infra.replay.rebuilt import Rebuilt, fresh_tables
from infra.replay.swap import swap
from infra.settings import Settings
from projections.read_models import ReadModelTables

SHOWN_DIFFERENCES = 50
REPLAY_WAIT = 60.0  # seconds a replica has to replay the rebuilt read models before --verify


def add_command(commands: Any) -> None:
    summary = "rebuild every read model from zero into a fresh schema, beside the live ones"
    replay = commands.add_parser(
        "replay",
        help=summary,
        description=f"{summary.capitalize()}. The services can keep running.",
        epilog=EXIT_CODES,
    )
    replay.add_argument(
        "--source",
        choices=["store", "kafka"],
        default="store",
        help="the PostgreSQL event store (default) or the campaign-events topic",
    )
    replay.add_argument(
        "--verify", action="store_true", help="compare with the live read models, list differences"
    )
    replay.add_argument(
        "--swap",
        action="store_true",
        help="make the rebuilt set the live one; the old one is kept in a schema of its own",
    )
    replay.add_argument(
        "--workers",
        type=positive(int),
        default=min(4, os.cpu_count() or 1),
        help="processes folding the event store, each a share of the campaigns "
        "(default: the cores, at most 4)",
    )
    replay.add_argument("--json", action="store_true", help="print the outcome as JSON")
    replay.set_defaults(run=run_replay)


def run_replay(settings: Settings, arguments: argparse.Namespace) -> int:
    live = ReadModelTables(settings.database_schema)
    console = Console(stderr=True)
    if arguments.source == "kafka":
        require_kafka(settings)
    if arguments.source == "store" or arguments.verify:
        require_postgres(settings.for_reading())  # a replica read from is named at once
    with connect_postgres(settings, autocommit=True) as conn:
        app = open_app(settings)
        try:
            tables = fresh_tables(conn, live)
            with Progress(
                TextColumn(f"replaying from {arguments.source}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=arguments.json,
            ) as bar:
                task = bar.add_task("replay", total=None)

                def progress(done: int, total: int) -> None:
                    bar.update(task, completed=done, total=total)

                rebuilt = _rebuild(settings, arguments, conn, tables, progress)
            outcome: dict[str, Any] = {
                "source": rebuilt.source,
                "events": rebuilt.events,
                "applied": rebuilt.applied,
                "schema": tables.schema,
            }
            if rebuilt.unreadable:
                outcome["unreadable"] = rebuilt.unreadable
            if arguments.verify:
                comparison = _compare(settings, conn, live, tables)
                outcome |= {
                    "campaigns_compared": comparison.compared,
                    "campaigns_skipped": comparison.skipped,
                    "differences": comparison.differences,
                }
            if arguments.swap:
                retired, caught_up = swap(conn, app, live, rebuilt)
                outcome |= {"swapped": True, "caught_up": caught_up, "retired_schema": retired}
        finally:
            app.close()
    _report(console, outcome, arguments.json)
    return DIFFERENT if outcome.get("differences") else 0


def _rebuild(
    settings: Settings,
    arguments: argparse.Namespace,
    conn: Any,
    tables: ReadModelTables,
    progress: Any,
) -> Rebuilt:
    if arguments.source == "store":
        return rebuild_from_store(settings, conn, tables, progress, arguments.workers)
    topic = Topics(settings.topic_prefix).campaign_events
    try:
        return rebuild_from_kafka(settings, topic, conn, tables, progress)
    except LookupError as error:
        raise CommandError(f"{error}: is GROUPBUY_TOPIC_PREFIX right?", INVALID) from None


def _compare(
    settings: Settings, conn: Any, live: ReadModelTables, rebuilt: ReadModelTables
) -> Comparison:
    """The live and rebuilt read models compared, on the replica when there is one: the
    rebuilt tables, written on the primary, reach it too, and once it has replayed them
    the comparison's scans of both sets run there."""
    reading = settings.for_reading()
    if not reading.reading:
        return compare(conn, live, rebuilt)
    written = current_lsn(conn)
    with connect_postgres(reading, autocommit=True) as replica:
        if not wait_for_replay(replica, written, REPLAY_WAIT):
            raise CommandError(
                f"the replica at {postgres_address(reading)} has not replayed the rebuilt "
                f"read models within {REPLAY_WAIT:.0f} s: run again once it has caught up, or "
                f"unset {reading.database_variable} to compare on the primary",
                UNREACHABLE,
            )
        return compare(replica, live, rebuilt)


def _report(console: Console, outcome: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(outcome))
        return
    print(
        f"replayed {outcome['events']:,} events from the {outcome['source']} "
        f"({outcome['applied']:,} applied) into schema {outcome['schema']}"
    )
    if "differences" in outcome:
        differences, skipped = outcome["differences"], outcome["campaigns_skipped"]
        print(
            f"verified {outcome['campaigns_compared']} campaigns: {len(differences)} differences"
            + (
                f", {len(skipped)} skipped (live and rebuilt at different versions)"
                if skipped
                else ""
            )
        )
        for line in [*skipped, *differences][:SHOWN_DIFFERENCES]:
            print(f"  {line}")
    if outcome.get("swapped"):
        print(
            f"swapped: the rebuilt read models are live ({outcome['caught_up']} events caught up); "
            f"the previous ones are in schema {outcome['retired_schema']}"
        )
    else:
        console.print(
            f"the live read models are unchanged; --swap puts the rebuilt ones in their place "
            f"(or DROP SCHEMA {outcome['schema']} CASCADE)"
        )
