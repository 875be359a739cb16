"""The JSON Schemas in docs/schemas/ hold every message groupbuy's own code makes or reads."""

from __future__ import annotations

import ast
import inspect
import itertools
import json
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from jsonschema import Draft202012Validator

import consumers.settlement
from consumers.batch import OutboxMessage
from consumers.order_messages import MalformedMessageError, OrderMessage, PlaceOrder, decode
from consumers.order_results import ANSWERS, event_result, mismatch_result, order_result
from consumers.settlement import settlement_messages
from domain import money
from domain.application import GroupBuying
from domain.campaign import Campaign
from domain.definition import CampaignDefinition
from domain.errors import DefinitionError, UnknownCampaignError
from domain.outcomes import Outcome, Reason
from projections.wire import MESSAGE_TYPES, encode
from tests.support.schemas import (
    BUYERS,
    DEFINITION_SCHEMA,
    EVENTS,
    ORDERS,
    RESULTS,
    SCHEMA_FILES,
    SCHEMAS,
    SUPPLIER,
    problems,
)
from tests.unit.builders import (
    DEADLINE,
    DURING,
    LAPTOP_X1,
    OPENED_AT,
    PLACED,
    definition_json,
    small_definition,
)

NEW_DEADLINE = DEADLINE + timedelta(days=1)
LINEAR_YEN: dict[str, Any] = {
    "kind": "linear",
    "list_price": "1000",
    "from_quantity": 2,
    "to_quantity": 12,
}


def without(message: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != name}


@dataclass
class Traffic:
    """The messages one history made, by topic, as their readers decode them."""

    app: GroupBuying
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    results: list[OutboxMessage] = field(default_factory=list)
    lenient_orders: list[dict[str, Any]] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    clock: Iterator[datetime] = field(
        default_factory=lambda: (DURING + timedelta(seconds=s) for s in itertools.count())
    )

    def order(
        self, *, lenient: bool = False, at: datetime | None = None, **fields: Any
    ) -> Outcome | None:
        """Sends an order.placed message; `lenient` ones break the schema but still decode."""
        message = {"type": "order.placed", "placed_at": "2026-11-27T10:00:00+01:00"} | fields
        return self._send(message, at, lenient=lenient)

    def forged(self, topic_site: str, **fields: Any) -> None:
        """An order naming a site other than that of the topic it was sent to."""
        message = {"type": "order.placed", "placed_at": "2026-11-27T10:00:00Z"} | fields
        self.messages.append((ORDERS, message))
        command = decode(json.dumps(message).encode(), topic_site)
        assert command.site_id != topic_site
        self.results.append(mismatch_result(RESULTS, command))

    def cancel(self, at: datetime | None = None, **fields: Any) -> Outcome | None:
        message = {"type": "order.cancelled", "cancelled_at": "2026-11-27T11:00:00Z"} | fields
        return self._send(message, at)

    def _send(
        self, message: dict[str, Any], at: datetime | None, *, lenient: bool = False
    ) -> Outcome | None:
        if lenient:
            self.lenient_orders.append(message)
        else:
            self.messages.append((ORDERS, message))
        command = decode(json.dumps(message).encode())
        outcome = self._apply(command, at or next(self.clock))
        if outcome is None or not outcome.recorded:
            # Recorded nothing, so no event answers it: ingestion writes the result itself.
            self.results.append(order_result(RESULTS, command, outcome))
        return outcome

    def _apply(self, command: OrderMessage, now: datetime) -> Outcome | None:
        try:
            if isinstance(command, PlaceOrder):
                return self.app.place_order(command.campaign_id, command, now)
            return self.app.cancel_order(
                command.campaign_id, command.order_id, command.site_id, now
            )
        except UnknownCampaignError:
            return None

    def close(self, campaign_id: str, now: datetime) -> None:
        assert self.app.close_if_due(campaign_id, now)
        self.closed.append(campaign_id)

    def publish(self) -> None:
        """What the relay and settle write for the history so far."""
        slugs: dict[UUID, str] = {}
        for notification in self.app.recorder.select_notifications(start=1, limit=10_000):
            event = self.app.mapper.to_domain_event(notification)
            if isinstance(event, Campaign.Opened):
                slugs[event.originator_id] = event.campaign_id
            campaign_id = slugs[event.originator_id]
            self.messages.append((EVENTS, json.loads(encode(event, campaign_id))))
            result = event_result(lambda site: RESULTS, campaign_id, event)
            if result is not None:
                self.results.append(result)
        self.messages += [(RESULTS, json.loads(result.value)) for result in self.results]
        for campaign_id in self.closed:
            self.app.forget(campaign_id)  # as settle does: the campaign as stored
            campaign = self.app.get_campaign(campaign_id)
            for message in settlement_messages(campaign, SUPPLIER, lambda site: BUYERS):
                self.messages.append((message.topic, json.loads(message.value)))


def reason_of(outcome: Outcome | None) -> Reason | None:
    """Why the campaign turned a message away (None: it took it)."""
    assert outcome is not None, "the campaign should exist"
    return outcome.reason


def run_history(app: GroupBuying) -> Traffic:
    """Five campaigns that, between them, make every message type and every reason."""
    traffic = Traffic(app)
    small: dict[str, Any] = {"campaign_id": "small", "site_id": "site-a"}
    app.open_campaign(small_definition(), OPENED_AT)
    # 10.00 from 1 unit, 8.00 from 5, 6.00 from 10; minimum 5, cap 20, 6 a buyer, cutoff 1 h.
    traffic.order(**small, order_id="a:1", buyer_id="buyer-1", quantity=4)
    traffic.order(**small, order_id="a:1", buyer_id="buyer-1", quantity=4)  # a repeat
    traffic.order(
        campaign_id="small",
        site_id="site-b",
        order_id="b:1",
        buyer_id="buyer-2",
        quantity=3,
        max_unit_price="8.00",
        placed_at="2026-11-27T10:00:00.250Z",
    )
    conditional = traffic.order(
        **small, order_id="a:2", buyer_id="buyer-3", quantity=2, max_unit_price="6.5"
    )
    assert reason_of(conditional) is None  # and left unfilled at 8.00: released at the close
    over_limit = traffic.order(**small, order_id="a:3", buyer_id="buyer-1", quantity=3)
    assert reason_of(over_limit) is Reason.PER_BUYER_LIMIT
    traffic.order(**small, order_id="a:3", buyer_id="buyer-1", quantity=3)  # a repeat
    invalid = traffic.order(
        **small, lenient=True, order_id="a:4", buyer_id="buyer-4", quantity=0, max_unit_price="0"
    )
    assert reason_of(invalid) is Reason.INVALID
    site_b: dict[str, Any] = {"campaign_id": "small", "site_id": "site-b"}
    traffic.order(**site_b, order_id="b:2", buyer_id="buyer-5", quantity=1, max_unit_price=None)
    traffic.cancel(**site_b, order_id="b:2")
    traffic.cancel(**site_b, order_id="b:2")  # a repeat
    unknown = traffic.cancel(**site_b, order_id="b:404")
    assert reason_of(unknown) is Reason.UNKNOWN_ORDER
    app.extend_deadline("small", NEW_DEADLINE, next(traffic.clock))
    late = traffic.cancel(**small, order_id="a:2", at=NEW_DEADLINE - timedelta(minutes=30))
    assert reason_of(late) is Reason.CUTOFF_PASSED
    traffic.close("small", NEW_DEADLINE + timedelta(milliseconds=1500))
    after = NEW_DEADLINE + timedelta(minutes=1)
    closed = traffic.order(**small, order_id="a:5", buyer_id="buyer-6", quantity=1, at=after)
    assert reason_of(closed) is Reason.CAMPAIGN_CLOSED
    traffic.cancel(**small, order_id="a:1", at=after)

    app.open_campaign(small_definition(campaign_id="failing"), OPENED_AT)
    traffic.order(campaign_id="failing", site_id="site-a", order_id="f:1", buyer_id="b", quantity=2)
    traffic.close("failing", DEADLINE)

    app.open_campaign(
        small_definition(campaign_id="sellout", maximum_quantity=8, max_per_buyer=None), OPENED_AT
    )
    sellout: dict[str, Any] = {"campaign_id": "sellout", "site_id": "site-c"}
    traffic.order(**sellout, order_id="s:1", buyer_id="buyer-1", quantity=5)
    too_many = traffic.order(**sellout, order_id="s:2", buyer_id="buyer-2", quantity=4)
    assert reason_of(too_many) is Reason.EXCEEDS_STOCK
    traffic.order(**sellout, order_id="s:3", buyer_id="buyer-3", quantity=3)  # closes it
    traffic.closed.append("sellout")
    sold = traffic.order(**sellout, order_id="s:4", buyer_id="buyer-4", quantity=1)
    assert reason_of(sold) is Reason.SOLD_OUT

    app.open_campaign(small_definition(campaign_id="called-off"), OPENED_AT)
    traffic.order(
        campaign_id="called-off", site_id="site-a", order_id="c:1", buyer_id="b", quantity=2
    )
    app.cancel_campaign("called-off", next(traffic.clock))
    traffic.closed.append("called-off")

    later = CampaignDefinition.from_json_dict(
        definition_json(
            campaign_id="later",
            currency="JPY",
            floor_price="500",
            pricing=LINEAR_YEN,
            minimum_quantity=1,
            maximum_quantity=None,
            max_per_buyer=None,
            cancellation_cutoff=None,
            opens_at="2026-11-28T00:00:00Z",
        )
    )
    app.open_campaign(later, OPENED_AT)
    yen: dict[str, Any] = {"campaign_id": "later", "site_id": "site-a"}
    early = traffic.order(**yen, order_id="y:1", buyer_id="buyer-1", quantity=5)
    assert reason_of(early) is Reason.NOT_OPEN
    on_time = datetime.fromisoformat("2026-11-29T08:00:00+00:00")
    traffic.order(**yen, order_id="y:2", buyer_id="b", quantity=5, max_unit_price="900", at=on_time)
    traffic.close("later", DEADLINE)

    traffic.order(campaign_id="no-such", site_id="site-a", order_id="n:1", buyer_id="b", quantity=1)
    traffic.forged("site-c", **small, order_id="a:6", buyer_id="buyer-7", quantity=1)
    traffic.cancel(campaign_id="no-such", site_id="site-a", order_id="n:1")
    traffic.publish()
    return traffic


@pytest.fixture(scope="module")
def traffic() -> Iterator[Traffic]:
    app = GroupBuying(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield run_history(app)
    app.close()


def schema_names() -> list[str]:
    return sorted(path.name for path in SCHEMAS.glob("*.json"))


def settlement_types() -> set[str]:
    """Every "type" the settlement code writes, read from its source."""
    tree = ast.parse(inspect.getsource(consumers.settlement))
    return {
        constant.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
        for key, value in zip(node.keys, node.values, strict=True)
        if isinstance(key, ast.Constant) and key.value == "type"
        for constant in ast.walk(value)
        if isinstance(constant, ast.Constant) and isinstance(constant.value, str)
    }


def types_on(topic: str) -> set[str]:
    return {kind for on, kind in SCHEMA_FILES if on == topic}


# The schema files themselves


@pytest.mark.parametrize("name", schema_names())
def test_every_schema_file_is_a_valid_draft_2020_12_schema_with_an_id_title_and_description(
    name: str,
) -> None:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://groupbuy.example/schemas/{name}"
    assert schema["title"]
    assert schema["description"]


def test_every_schema_file_is_used_and_every_file_used_exists() -> None:
    assert set(schema_names()) == {*SCHEMA_FILES.values(), DEFINITION_SCHEMA}


def test_every_campaign_event_type_the_relay_encodes_has_a_schema() -> None:
    assert types_on(EVENTS) == set(MESSAGE_TYPES.values())


def test_every_order_result_type_has_a_schema_and_the_result_schema_knows_every_reason() -> None:
    assert types_on(RESULTS) == set(ANSWERS.values())
    schema = json.loads((SCHEMAS / "order-result.json").read_text(encoding="utf-8"))
    assert set(schema["properties"]["type"]["enum"]) == set(ANSWERS.values())
    assert set(schema["properties"]["reason"]["enum"]) == {reason.value for reason in Reason}


def test_every_settlement_type_the_settlement_code_writes_has_a_schema() -> None:
    assert settlement_types() == types_on(SUPPLIER) | types_on(BUYERS)


# The messages of a real history


def test_the_history_makes_every_message_type_and_every_rejection_reason(
    traffic: Traffic,
) -> None:
    made = {(topic, message["type"]) for topic, message in traffic.messages}
    assert made == set(SCHEMA_FILES)
    reasons = {message.get("reason") for topic, message in traffic.messages if topic == RESULTS}
    assert reasons - {None} == {reason.value for reason in Reason}
    assert any(message.get("duplicate") for _, message in traffic.messages)


@pytest.mark.parametrize(("topic", "kind"), sorted(SCHEMA_FILES))
def test_every_message_of_this_type_matches_its_schema(
    traffic: Traffic, topic: str, kind: str
) -> None:
    name = SCHEMA_FILES[topic, kind]
    messages = [m for on, m in traffic.messages if on == topic and m["type"] == kind]
    assert messages, f"the history made no {kind} on {topic}"
    found = [problem for message in messages for problem in problems(name, message)]
    assert found == [], "\n".join(found)


def test_a_message_that_breaks_its_schema_is_caught(traffic: Traffic) -> None:
    closed = next(
        m for on, m in traffic.messages if on == EVENTS and m["type"] == "campaign.closed"
    )
    assert problems("campaign-closed.json", closed) == []
    assert problems("campaign-closed.json", closed | {"unit_price": 8.0})
    assert problems("campaign-closed.json", closed | {"filled_quantity": "7"})
    assert problems("campaign-closed.json", closed | {"closed_at": "2026-12-02 18:00:00"})
    assert problems("campaign-closed.json", without(closed, "lines"))
    assert problems("campaign-closed.json", closed | {"future_field": 1}) == []


# Order messages: the schemas against the ingest decoder


def test_an_order_the_schema_refuses_but_the_decoder_reads_is_rejected_as_invalid(
    traffic: Traffic,
) -> None:
    (lenient,) = traffic.lenient_orders
    assert problems("order-placed.json", lenient)
    decode(json.dumps(lenient).encode())  # readable: no dead letter
    about = [(on, m) for on, m in traffic.messages if m.get("order_id") == lenient["order_id"]]
    # Answered `invalid` from the outbox; never an event (docs/contract.md, field limits).
    assert [(on, m["type"], m["reason"]) for on, m in about] == [
        (RESULTS, "order.rejected", "invalid")
    ]


GOOD_CANCEL: dict[str, Any] = {
    "type": "order.cancelled",
    "order_id": "site-a:1001",
    "site_id": "site-a",
    "campaign_id": "laptop-x1",
    "cancelled_at": "2026-11-27T11:00:00Z",
}

DEAD_LETTERS = [
    pytest.param(PLACED | {"type": "order.shipped"}, id="unknown type"),
    pytest.param(without(PLACED, "type"), id="no type"),
    pytest.param(without(PLACED, "placed_at"), id="no placed_at"),
    pytest.param(PLACED | {"placed_at": None}, id="placed_at null"),
    pytest.param(PLACED | {"placed_at": "2026-11-27T10:00:00"}, id="placed_at without offset"),
    pytest.param(PLACED | {"placed_at": "yesterday"}, id="placed_at not a time"),
    pytest.param(PLACED | {"quantity": "2"}, id="quantity a string"),
    pytest.param(PLACED | {"quantity": True}, id="quantity a boolean"),
    pytest.param(PLACED | {"quantity": 2.5}, id="quantity a fraction"),
    pytest.param(PLACED | {"order_id": ""}, id="order_id empty"),
    pytest.param(PLACED | {"order_id": "   "}, id="order_id blank"),
    pytest.param(PLACED | {"order_id": "o" * 201}, id="order_id of 201 characters"),
    pytest.param(PLACED | {"site_id": 7}, id="site_id a number"),
    pytest.param(PLACED | {"max_unit_price": 95.0}, id="max_unit_price a number"),
    pytest.param(PLACED | {"max_unit_price": "NaN"}, id="max_unit_price NaN"),
    pytest.param(PLACED | {"max_unit_price": "ninety"}, id="max_unit_price not a number"),
    pytest.param(without(GOOD_CANCEL, "cancelled_at"), id="cancellation without cancelled_at"),
    pytest.param(GOOD_CANCEL | {"campaign_id": None}, id="cancellation with campaign_id null"),
]


def test_the_example_orders_match_their_schemas_and_decode() -> None:
    for message, name in ((PLACED, "order-placed.json"), (GOOD_CANCEL, "order-cancelled.json")):
        assert problems(name, message) == []
        decode(json.dumps(message).encode())


@pytest.mark.parametrize("message", DEAD_LETTERS)
def test_an_order_message_the_decoder_sends_to_the_dlq_is_refused_by_the_order_schemas(
    message: dict[str, Any],
) -> None:
    with pytest.raises(MalformedMessageError):
        decode(json.dumps(message).encode())
    assert problems("order-placed.json", message)
    assert problems("order-cancelled.json", message)


# The campaign definition file


def test_the_definitions_the_history_opened_and_the_spec_example_match_the_definition_schema(
    traffic: Traffic,
) -> None:
    opened = [m for on, m in traffic.messages if on == EVENTS and m["type"] == "campaign.opened"]
    envelope = {"type", "campaign_id", "version", "occurred_at"}
    assert len(opened) == 5
    for message in opened:
        definition = {k: v for k, v in message.items() if k not in envelope or k == "campaign_id"}
        assert problems(DEFINITION_SCHEMA, definition) == []
        CampaignDefinition.from_json_dict(definition)
    assert problems(DEFINITION_SCHEMA, LAPTOP_X1) == []


TIER_2 = {"kind": "tiers", "tiers": [{"min_quantity": 2, "unit_price": "9.00"}]}
TIER_FRACTION = {"kind": "tiers", "tiers": [{"min_quantity": 1, "unit_price": "9.001"}]}
REFUSED_DEFINITIONS = [
    pytest.param(definition_json(colour="red"), id="an unknown field"),
    pytest.param(definition_json(campaign_id="Laptop-X1"), id="campaign_id not a slug"),
    pytest.param(definition_json(supplier_id="-acme"), id="supplier_id not a slug"),
    pytest.param(definition_json(title=" "), id="title blank"),
    pytest.param(definition_json(sku="S" * 201), id="sku of 201 characters"),
    pytest.param(definition_json(currency="XAU"), id="currency not circulating"),
    pytest.param(definition_json(currency="eur"), id="currency in lowercase"),
    pytest.param(definition_json(floor_price=79), id="floor_price a number"),
    pytest.param(definition_json(floor_price="79.001"), id="floor_price below a cent"),
    pytest.param(definition_json(floor_price="0.00"), id="floor_price zero"),
    pytest.param(definition_json(floor_price="-79.00"), id="floor_price negative"),
    pytest.param(definition_json(floor_price="7.9e1"), id="floor_price with an exponent"),
    pytest.param(definition_json(currency="JPY", floor_price="79.50"), id="yen with sen"),
    pytest.param(definition_json(currency="KWD", floor_price="79.0005"), id="dinar below a fils"),
    pytest.param(
        definition_json(pricing={"kind": "steps", "tiers": []}), id="unknown pricing kind"
    ),
    pytest.param(definition_json(pricing={"kind": "tiers", "tiers": []}), id="no tiers"),
    pytest.param(definition_json(pricing=TIER_2), id="first tier not at 1"),
    pytest.param(definition_json(pricing=TIER_FRACTION), id="tier price below a cent"),
    pytest.param(
        definition_json(pricing=without(LINEAR_YEN, "to_quantity")), id="linear without its end"
    ),
    pytest.param(definition_json(pricing=LINEAR_YEN | {"tiers": []}), id="linear with tiers"),
    pytest.param(definition_json(minimum_quantity=0), id="minimum_quantity zero"),
    pytest.param(definition_json(minimum_quantity=None), id="no minimum_quantity"),
    pytest.param(definition_json(maximum_quantity="5000"), id="maximum_quantity a string"),
    pytest.param(definition_json(max_per_buyer=True), id="max_per_buyer a boolean"),
    pytest.param(definition_json(deadline="2026-12-01T19:00:00+01:00"), id="deadline not in UTC"),
    pytest.param(definition_json(deadline="2026-12-01"), id="deadline a date"),
    pytest.param(definition_json(cancellation_cutoff="P1M"), id="cutoff in months"),
    pytest.param(definition_json(cancellation_cutoff="PT"), id="cutoff empty"),
    pytest.param(definition_json(cancellation_cutoff="1 hour"), id="cutoff in words"),
    pytest.param(definition_json(opens_at=7), id="opens_at a number"),
]


@pytest.mark.parametrize("data", REFUSED_DEFINITIONS)
def test_a_definition_the_code_refuses_is_refused_by_the_definition_schema(
    data: dict[str, Any],
) -> None:
    with pytest.raises(DefinitionError):
        CampaignDefinition.from_json_dict(data)
    assert problems(DEFINITION_SCHEMA, data)


def test_the_definition_schema_lists_exactly_the_currencies_the_code_knows() -> None:
    schema = json.loads((SCHEMAS / DEFINITION_SCHEMA).read_text(encoding="utf-8"))
    listed = set(schema["properties"]["currency"]["enum"])
    letters = string.ascii_uppercase
    codes = {"".join(code) for code in itertools.product(letters, letters, letters)}
    assert listed == {code for code in codes if money.is_known_currency(code)}


@pytest.mark.parametrize(
    ("currency", "amount"), [("EUR", "79.5"), ("JPY", "500"), ("KWD", "1.125")]
)
def test_amounts_in_the_currencys_minor_unit_match_the_definition_schema(
    currency: str, amount: str
) -> None:
    data = definition_json(currency=currency, floor_price=amount, pricing=LINEAR_YEN)
    assert money.parse_money(amount, currency)
    CampaignDefinition.from_json_dict(data)
    assert problems(DEFINITION_SCHEMA, data) == []
