"""One small campaign's history, shared by the analysis unit tests."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from domain.campaign import Campaign
from tests.unit.builders import DEADLINE, OPENED_AT, order, small_definition

HOUR = timedelta(hours=1)
# 10.00 from 1 unit, 8.00 from 5, 6.00 from 10; floor 5.00, minimum 5, cap 20, 6 per buyer.
T1, T2, T3, T4 = (OPENED_AT + n * HOUR for n in range(1, 5))
CLOSED_AT = DEADLINE + timedelta(minutes=1)


def history(*, close: bool = True) -> list[Any]:
    """3 units at any price, 4 up to 8.00 (withdrawn again), 5 up to 6.00; then the deadline.

    Live price: 10.00, 8.00 (7 units), 6.00 (12 units), back to 10.00 when the 4 leave;
    it fails at the deadline with 3 units filled, below the minimum of 5.
    """
    campaign = Campaign.open(small_definition(), OPENED_AT)
    campaign.place_order(order(3, buyer="b1", order_id="a:1"), T1)
    campaign.place_order(order(4, buyer="b2", order_id="a:2", max_price="8.00"), T2)
    campaign.place_order(order(5, buyer="b3", order_id="a:3", max_price="6.00"), T3)
    campaign.cancel_order("a:2", "site-a", T4)
    if close:
        campaign.close_if_due(CLOSED_AT)
    return list(campaign.collect_events())
