"""How a rebuild writes a commitment in its final state, known before the fold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from projections.rebuild import Endings
from projections.wire import CampaignEvent

AT = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def event(kind: str, campaign_id: str = "c", at: datetime = AT, **fields: Any) -> CampaignEvent:
    return CampaignEvent(kind, campaign_id, 2, at, fields)


def placed(
    order_id: str, quantity: int = 2, limit: str | None = None, site_id: str = "site-a"
) -> CampaignEvent:
    return event(
        "commitment.placed",
        order_id=order_id,
        site_id=site_id,
        quantity=quantity,
        max_unit_price=limit,
    )


def closed(outcome: str, price: str, campaign_id: str = "c") -> CampaignEvent:
    return event("campaign.closed", campaign_id, outcome=outcome, unit_price=price)


def test_a_commitment_of_a_campaign_still_open_stays_committed() -> None:
    assert Endings().of(placed("o-1")) == ("committed", None, None, AT)


def test_a_withdrawn_commitment_is_written_withdrawn_at_its_withdrawal() -> None:
    endings = Endings()
    later = AT + timedelta(minutes=5)
    endings.note(event("commitment.withdrawn", at=later, order_id="o-1", site_id="site-a"))
    endings.note(closed("succeeded", "8.00"))

    assert endings.of(placed("o-1")) == ("withdrawn", None, None, later)
    assert endings.of(placed("o-2"))[0] == "filled"
    assert endings.of(placed("o-1", site_id="site-b"))[0] == "filled"  # another site's o-1


def test_a_success_fills_the_willing_and_releases_the_unwilling_at_the_final_price() -> None:
    endings = Endings()
    endings.note(closed("succeeded", "8.00"))

    assert endings.of(placed("o-1", 3)) == ("filled", 3, Decimal("8.00"), AT)
    assert endings.of(placed("o-2", 3, limit="8.00")) == ("filled", 3, Decimal("8.00"), AT)
    assert endings.of(placed("o-3", 3, limit="7.99")) == ("released", 0, Decimal("8.00"), AT)


def test_a_failed_or_cancelled_campaign_releases_every_commitment() -> None:
    endings = Endings()
    endings.note(closed("failed", "10.00"))
    endings.note(closed("cancelled", "9.00", campaign_id="d"))

    assert endings.of(placed("o-1")) == ("released", 0, Decimal("10.00"), AT)
    other = event(
        "commitment.placed", "d", order_id="o-1", site_id="site-a", quantity=1, max_unit_price=None
    )
    assert endings.of(other) == ("released", 0, Decimal("9.00"), AT)
