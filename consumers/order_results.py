"""Messages to `groupbuy.order-results.v1` and the orders DLQ (SPEC section 3)."""

from __future__ import annotations

import json
from typing import Any

from consumers.batch import OutboxMessage, Record
from consumers.order_messages import CancelOrder, OrderMessage
from domain.outcomes import Outcome, Reason


def order_result(topic: str, command: OrderMessage, outcome: Outcome | None) -> OutboxMessage:
    """The one result of a well-formed order message; no outcome means an unknown campaign."""
    cancelling = isinstance(command, CancelOrder)
    fields: dict[str, Any] = {
        "type": _result_type(cancelling, accepted=outcome is not None and outcome.accepted),
        "order_id": command.order_id,
        "site_id": command.site_id,
        "campaign_id": command.campaign_id,
    }
    if outcome is None:
        fields["reason"] = Reason.UNKNOWN_CAMPAIGN.value
    else:
        if outcome.reason is not None:
            fields["reason"] = outcome.reason.value
        fields["unit_price"] = str(outcome.unit_price)
        fields["committed_quantity"] = outcome.committed_quantity
        if outcome.duplicate:
            fields["duplicate"] = True  # a redelivery or retry: the first answer, repeated
    return OutboxMessage(topic, command.site_id.encode(), json.dumps(fields).encode())


def _result_type(cancelling: bool, *, accepted: bool) -> str:
    if cancelling:
        return "order.cancelled" if accepted else "cancellation.rejected"
    return "order.accepted" if accepted else "order.rejected"


def dead_letter(topic: str, record: Record, error: str) -> OutboxMessage:
    """The record byte for byte, with headers saying what was wrong and where it came from."""
    about = (
        ("error", error.encode()),
        ("source.topic", record.topic.encode()),
        ("source.partition", str(record.partition).encode()),
        ("source.offset", str(record.offset).encode()),
    )
    return OutboxMessage(topic, record.key, record.value or b"", record.headers + about)
