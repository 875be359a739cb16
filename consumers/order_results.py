"""Messages to the sites' `groupbuy.order-results.<site_id>.v1` and to the orders DLQ
(docs/contract.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from consumers.batch import OutboxMessage, Record
from consumers.order_messages import CancelOrder, OrderMessage
from domain.campaign import Campaign
from domain.outcomes import Outcome, Reason

# The events that answer an order message, and the result each one gives.
ANSWERING = (
    Campaign.CommitmentPlaced,
    Campaign.OrderRejected,
    Campaign.CommitmentWithdrawn,
    Campaign.CancellationRejected,
)
ANSWERS: dict[type[Any], str] = dict(
    zip(
        ANSWERING,
        ("order.accepted", "order.rejected", "order.cancelled", "cancellation.rejected"),
        strict=True,
    )
)


def order_result(topic: str, command: OrderMessage, outcome: Outcome | None) -> OutboxMessage:
    """The result of an order message that recorded nothing: a repeat or an unknown campaign.

    A command that recorded an event is answered by that event (`event_result`).
    """
    cancelling = isinstance(command, CancelOrder)
    kind = _result_type(cancelling, accepted=outcome is not None and outcome.accepted)
    if outcome is None:
        ids = (command.order_id, command.site_id, command.campaign_id)
        return _result(topic, kind, *ids, reason=Reason.UNKNOWN_CAMPAIGN.value)
    return _result(
        topic,
        kind,
        command.order_id,
        command.site_id,
        command.campaign_id,
        reason=None if outcome.reason is None else outcome.reason.value,
        figures=(outcome.unit_price, outcome.committed_quantity),
        duplicate=outcome.duplicate,
    )


def mismatch_result(topic: str, command: OrderMessage) -> OutboxMessage:
    """The answer to a message that names a site other than its topic's: refused unread by
    any campaign, so no site can place or cancel an order in another's name."""
    kind = _result_type(isinstance(command, CancelOrder), accepted=False)
    ids = (command.order_id, command.site_id, command.campaign_id)
    return _result(topic, kind, *ids, reason=Reason.SITE_MISMATCH.value)


def event_result(
    results_topic: Callable[[str], str], campaign_id: str, event: object
) -> OutboxMessage | None:
    """The result an event of campaign `campaign_id` gives, if it answers an order message:
    to the topic `results_topic` names for the event's site."""
    if not isinstance(event, ANSWERING):
        return None
    return _result(
        results_topic(event.site_id),
        ANSWERS[type(event)],
        event.order_id,
        event.site_id,
        campaign_id,
        reason=getattr(event, "reason", None),
        figures=(event.unit_price, event.committed_quantity),
    )


def _result(
    topic: str,
    kind: str,
    order_id: str,
    site_id: str,
    campaign_id: str,
    *,
    reason: str | None,
    figures: tuple[Decimal, int] | None = None,
    duplicate: bool = False,
) -> OutboxMessage:
    fields: dict[str, Any] = {
        "type": kind,
        "order_id": order_id,
        "site_id": site_id,
        "campaign_id": campaign_id,
    }
    if reason is not None:
        fields["reason"] = reason
    if figures is not None:
        fields["unit_price"] = str(figures[0])
        fields["committed_quantity"] = figures[1]
    if duplicate:
        fields["duplicate"] = True  # a redelivery or retry: the first answer, repeated
    return OutboxMessage(topic, campaign_id.encode(), json.dumps(fields).encode())


def _result_type(cancelling: bool, *, accepted: bool) -> str:
    if cancelling:
        return "order.cancelled" if accepted else "cancellation.rejected"
    return "order.accepted" if accepted else "order.rejected"


def dead_letter(topic: str, record: Record, error: str) -> OutboxMessage:
    """The record byte for byte, with headers saying what was wrong and where it came from."""
    about = (
        # A reason may quote the message, lone surrogates and all: escaped, never refused.
        ("error", error.encode("utf-8", "backslashreplace")),
        ("source.topic", record.topic.encode()),
        ("source.partition", str(record.partition).encode()),
        ("source.offset", str(record.offset).encode()),
    )
    return OutboxMessage(topic, record.key, record.value or b"", record.headers + about)
