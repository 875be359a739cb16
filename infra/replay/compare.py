"""Two sets of read models compared row by row, campaign by campaign."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.sql import SQL

from projections.read_models import ReadModelTables

COMPARED = ("campaigns", "campaign_sites", "price_history", "commitments")


@dataclass
class Comparison:
    """Rows that differ between two sets of read models, campaign by campaign."""

    compared: int = 0  # campaigns at the same version in both sets
    skipped: list[str] = field(default_factory=list)  # campaigns seen further in one set
    differences: list[str] = field(default_factory=list)


def compare(
    conn: psycopg.Connection[Any], live: ReadModelTables, rebuilt: ReadModelTables
) -> Comparison:
    """Compare the campaigns both sets have seen up to the same version, row by row.

    While the services run, the live set may be ahead of the rebuild or behind it; such a
    campaign is listed as skipped, not as a difference.
    """
    versions = SQL("SELECT campaign_id, version FROM {}")
    live_at = dict(conn.execute(versions.format(live.campaigns)).fetchall())
    rebuilt_at = dict(conn.execute(versions.format(rebuilt.campaigns)).fetchall())
    result = Comparison()
    same = sorted(c for c in live_at.keys() & rebuilt_at.keys() if live_at[c] == rebuilt_at[c])
    result.compared = len(same)
    for campaign_id in sorted(live_at.keys() | rebuilt_at.keys()):
        at = (live_at.get(campaign_id), rebuilt_at.get(campaign_id))
        if at[0] != at[1]:
            result.skipped.append(f"{campaign_id}: live at v{at[0]}, rebuilt at v{at[1]}")
    only = SQL(
        "SELECT * FROM {} WHERE campaign_id = ANY(%(same)s) "
        "EXCEPT SELECT * FROM {} ORDER BY 1, 2, 3"
    )
    for name in COMPARED:
        for here, there, label in ((live, rebuilt, "live"), (rebuilt, live, "rebuilt")):
            query = only.format(here.table(name), there.table(name))
            for row in conn.execute(query, {"same": same}):
                result.differences.append(f"{here.prefix}{name}: only {label} has {_row(row)}")
    return result


def _row(row: tuple[Any, ...]) -> str:
    return "(" + ", ".join("null" if v is None else str(v) for v in row) + ")"
