"""The JSON Schemas of docs/schemas/, looked up by topic and message type."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"

# The topics a message type travels on; the same type name means different messages on two
# of them (order.cancelled, order.rejected, cancellation.rejected).
ORDERS = "groupbuy.orders.<site_id>.v1"
RESULTS = "groupbuy.order-results.<site_id>.v1"
EVENTS = "groupbuy.campaign-events.v1"
SUPPLIER = "groupbuy.settlements.<supplier_id>.v1"
BUYERS = "groupbuy.buyer-settlements.<site_id>.v1"

SCHEMA_FILES: dict[tuple[str, str], str] = {
    (ORDERS, "order.placed"): "order-placed.json",
    (ORDERS, "order.cancelled"): "order-cancelled.json",
    (RESULTS, "order.accepted"): "order-result.json",
    (RESULTS, "order.rejected"): "order-result.json",
    (RESULTS, "order.cancelled"): "order-result.json",
    (RESULTS, "cancellation.rejected"): "order-result.json",
    (EVENTS, "campaign.opened"): "campaign-opened.json",
    (EVENTS, "commitment.placed"): "commitment-placed.json",
    (EVENTS, "order.rejected"): "order-rejected.json",
    (EVENTS, "commitment.withdrawn"): "commitment-withdrawn.json",
    (EVENTS, "cancellation.rejected"): "cancellation-rejected.json",
    (EVENTS, "deadline.extended"): "deadline-extended.json",
    (EVENTS, "campaign.closed"): "campaign-closed.json",
    (SUPPLIER, "purchase_order.issued"): "purchase-order-issued.json",
    (SUPPLIER, "campaign.failed"): "campaign-failed.json",
    (BUYERS, "commitment.filled"): "commitment-filled.json",
    (BUYERS, "commitment.released"): "commitment-released.json",
}
DEFINITION_SCHEMA = "campaign-definition.json"


def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return Draft202012Validator(schema, format_checker=FormatChecker())


def problems(name: str, message: Any) -> list[str]:
    """What is wrong with `message` under the schema `name`, one line each."""
    return [
        f"{name}: {'/'.join(map(str, error.absolute_path)) or '(message)'}: {error.message}"
        for error in validator(name).iter_errors(message)
    ]
