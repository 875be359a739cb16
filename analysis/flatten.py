"""Stored campaign events as flat rows: a fixed set of typed columns, nulls where absent."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

from projections.wire import MESSAGE_TYPES, jsonable

Kind = Literal["int", "text", "money", "instant", "json"]


@dataclass(frozen=True)
class Column:
    """A column of the export: money is exact Decimal, nested values are JSON text."""

    name: str
    kind: Kind


# Identity and bookkeeping first; `campaign_id` is the slug, on every row.
HEAD = (
    Column("notification_id", "int"),
    Column("campaign_id", "text"),
    Column("originator_id", "text"),
    Column("version", "int"),
    Column("type", "text"),
    Column("timestamp", "instant"),
)
_LIBRARY_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic"}


def _kind(annotation: str) -> Kind:
    """The column kind of an event field's (string) annotation."""
    base = annotation.removesuffix(" | None")
    kinds: dict[str, Kind] = {
        "int": "int",
        "str": "text",
        "Decimal": "money",
        "datetime": "instant",
    }
    if base in kinds:
        return kinds[base]
    if base.startswith(("dict[", "list[")):
        return "json"
    msg = f"no column kind for an event field annotated {annotation!r}"
    raise TypeError(msg)


def _event_columns() -> tuple[Column, ...]:
    """Every field of every event type, once, in the order the types declare them."""
    seen = {column.name for column in HEAD}
    columns: list[Column] = []
    for event_class in MESSAGE_TYPES:
        for field in dataclasses.fields(event_class):
            if field.name not in seen and field.name not in _LIBRARY_FIELDS:
                seen.add(field.name)
                columns.append(Column(field.name, _kind(str(field.type))))
    return tuple(columns)


COLUMNS = HEAD + _event_columns()
_FIELD_COLUMNS = COLUMNS[len(HEAD) :]


def flatten(notification_id: int, campaign_id: str, event: Any) -> dict[str, Any]:
    """One row per event: every column present, None where this event type has no field."""
    row: dict[str, Any] = {
        "notification_id": notification_id,
        "campaign_id": campaign_id,
        "originator_id": str(UUID(str(event.originator_id))),
        "version": event.originator_version,
        "type": MESSAGE_TYPES[type(event)],
        "timestamp": event.timestamp,
    }
    state = vars(event)
    for column in _FIELD_COLUMNS:
        value = state.get(column.name)
        if column.kind == "json" and value is not None:
            value = json.dumps(jsonable(value), separators=(",", ":"))
        row[column.name] = value
    return row
