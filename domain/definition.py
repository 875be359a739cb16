"""A campaign definition, as the operator writes it in JSON, validated field by field."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from domain.errors import DefinitionError, Problem
from domain.fields import FieldReader
from domain.money import is_known_currency, quantum
from domain.pricing import LinearSchedule, PriceSchedule, Tier, TierSchedule, schedule_from_dict
from domain.text import SLUG, SLUG_HINT
from domain.timefmt import EARLIEST_INSTANT, format_duration, format_instant, parse_duration

# The most units a definition may name, and a campaign commit: far above any real campaign,
# and a total that every read model's integer column holds.
MAX_QUANTITY = 1_000_000_000

_FIELD_NAMES = (
    "campaign_id sku title supplier_id currency floor_price pricing minimum_quantity "
    "maximum_quantity max_per_buyer deadline cancellation_cutoff opens_at"
)
_FIELDS = frozenset(_FIELD_NAMES.split())


@dataclass(frozen=True, slots=True)
class CampaignDefinition:
    """Everything an operator decides when opening a campaign."""

    campaign_id: str
    sku: str
    title: str
    supplier_id: str
    currency: str
    pricing: PriceSchedule
    minimum_quantity: int
    maximum_quantity: int | None
    max_per_buyer: int | None
    deadline: datetime
    cancellation_cutoff: timedelta | None = None
    opens_at: datetime | None = None

    @property
    def floor_price(self) -> Decimal:
        """No unit price goes below this."""
        return self.pricing.floor_price

    @classmethod
    def from_json_dict(cls, data: Mapping[str, Any]) -> CampaignDefinition:
        """Validates a decoded JSON definition; raises DefinitionError naming every problem."""
        problems: list[Problem] = []
        if not isinstance(data, Mapping):
            raise DefinitionError([Problem("definition", "must be a JSON object")])
        reader = FieldReader(data, "", problems)
        reader.reject_unknown(_FIELDS)
        definition = _read(reader)
        if problems or definition is None:
            raise DefinitionError(problems)
        return definition

    def problems_at_opening(self, now: datetime) -> list[Problem]:
        """Why this campaign cannot open at `now`: its deadline has passed, or its
        cancellation cutoff would come before it opens."""
        if self.deadline <= now:
            return [Problem("deadline", f"must be later than now ({format_instant(now)})")]
        opening = now if self.opens_at is None else max(now, self.opens_at)
        since = f"opening ({format_instant(opening)})"
        problem = _cutoff_problem(self.cancellation_cutoff, self.deadline, opening, since)
        return [] if problem is None else [problem]

    def to_event_fields(self) -> dict[str, Any]:
        """The fields of the Opened event: money as Decimal, time as datetime."""
        cutoff = self.cancellation_cutoff
        return {
            "campaign_id": self.campaign_id,
            "sku": self.sku,
            "title": self.title,
            "supplier_id": self.supplier_id,
            "currency": self.currency,
            "floor_price": self.floor_price,
            "pricing": self.pricing.to_dict(),
            "minimum_quantity": self.minimum_quantity,
            "maximum_quantity": self.maximum_quantity,
            "max_per_buyer": self.max_per_buyer,
            "deadline": self.deadline,
            "cancellation_cutoff": format_duration(cutoff) if cutoff is not None else None,
            "opens_at": self.opens_at,
        }

    @classmethod
    def from_event_fields(cls, fields: Mapping[str, Any]) -> CampaignDefinition:
        """Rebuilds a definition from an Opened event, trusting what was validated then."""
        cutoff = fields["cancellation_cutoff"]
        currency = fields["currency"]
        floor_price = Decimal(fields["floor_price"])
        return cls(
            campaign_id=fields["campaign_id"],
            sku=fields["sku"],
            title=fields["title"],
            supplier_id=fields["supplier_id"],
            currency=currency,
            pricing=schedule_from_dict(fields["pricing"], floor_price, quantum(currency)),
            minimum_quantity=fields["minimum_quantity"],
            maximum_quantity=fields["maximum_quantity"],
            max_per_buyer=fields["max_per_buyer"],
            deadline=fields["deadline"],
            cancellation_cutoff=parse_duration(cutoff) if cutoff is not None else None,
            opens_at=fields["opens_at"],
        )

    def to_json_dict(self) -> dict[str, Any]:
        """The definition as its JSON file writes it: money and time as strings."""
        return {name: _jsonable(value) for name, value in self.to_event_fields().items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return format_instant(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


def _read(reader: FieldReader) -> CampaignDefinition | None:
    # Read in the order of the file, so that problems are listed in that order too.
    campaign_id = reader.text("campaign_id", pattern=SLUG, hint=SLUG_HINT)
    sku, title = reader.text("sku"), reader.text("title")
    supplier_id = reader.text("supplier_id", pattern=SLUG, hint=SLUG_HINT)
    currency = _read_currency(reader)
    pricing = _read_pricing(reader, reader.money("floor_price", currency or "EUR"), currency)
    minimum, maximum, per_buyer = _read_quantities(reader)
    deadline, cutoff, opens_at = _read_times(reader)
    if (
        campaign_id is None
        or sku is None
        or title is None
        or supplier_id is None
        or currency is None
        or pricing is None
        or minimum is None
        or deadline is None
    ):
        return None
    return CampaignDefinition(
        campaign_id=campaign_id,
        sku=sku,
        title=title,
        supplier_id=supplier_id,
        currency=currency,
        pricing=pricing,
        minimum_quantity=minimum,
        maximum_quantity=maximum,
        max_per_buyer=per_buyer,
        deadline=deadline,
        cancellation_cutoff=cutoff,
        opens_at=opens_at,
    )


def _read_currency(reader: FieldReader) -> str | None:
    currency = reader.text("currency", pattern="[A-Z]{3}", hint="an ISO 4217 code such as EUR")
    if currency is not None and not is_known_currency(currency):
        reader.problem("currency", f"{currency!r} is not a circulating ISO 4217 currency code")
        return None
    return currency


def _read_quantities(reader: FieldReader) -> tuple[int | None, int | None, int | None]:
    minimum = reader.integer("minimum_quantity", maximum=MAX_QUANTITY)
    maximum = reader.integer("maximum_quantity", maximum=MAX_QUANTITY, optional=True)
    if minimum is not None and maximum is not None and maximum < minimum:
        reader.problem("maximum_quantity", f"must be at least minimum_quantity ({minimum})")
    return minimum, maximum, reader.integer("max_per_buyer", maximum=MAX_QUANTITY, optional=True)


def _read_times(
    reader: FieldReader,
) -> tuple[datetime | None, timedelta | None, datetime | None]:
    deadline = reader.instant("deadline")
    cutoff = reader.duration("cancellation_cutoff", optional=True)
    opens_at = reader.instant("opens_at", optional=True)
    if deadline is not None and opens_at is not None and opens_at >= deadline:
        reader.problem("opens_at", "must be before the deadline")
    elif deadline is not None:
        # Without opens_at the opening is known only when it happens (`problems_at_opening`);
        # the earliest instant still keeps `deadline - cutoff` a representable time.
        start = EARLIEST_INSTANT if opens_at is None else opens_at
        since = "2000-01-01" if opens_at is None else "opens_at"
        problem = _cutoff_problem(cutoff, deadline, start, since)
        if problem is not None:
            reader.problems.append(problem)
    return deadline, cutoff, opens_at


def _cutoff_problem(
    cutoff: timedelta | None, deadline: datetime, start: datetime, since: str
) -> Problem | None:
    # A cutoff at or before the opening would refuse every cancellation from the start.
    if cutoff is None or cutoff < deadline - start:
        return None
    span = format_duration(deadline - start)
    message = f"must be shorter than the {span} from {since} to the deadline"
    return Problem("cancellation_cutoff", message)


def _read_pricing(
    reader: FieldReader, floor_price: Decimal | None, currency: str | None
) -> PriceSchedule | None:
    # An unknown currency is reported once; amounts are still checked, as if in cents.
    currency = currency or "EUR"
    pricing = reader.object("pricing")
    if pricing is None:
        return None
    kind = pricing.value("kind")
    if kind == "tiers":
        pricing.reject_unknown(frozenset({"kind", "tiers"}))
        tiers = _read_tiers(pricing, currency)
        return TierSchedule(tiers, floor_price) if tiers and floor_price else None
    if kind == "linear":
        keys = frozenset({"kind", "list_price", "from_quantity", "to_quantity"})
        pricing.reject_unknown(keys)
        return _read_linear(pricing, floor_price, currency)
    if kind is not None:
        pricing.problem("kind", f'must be "tiers" or "linear", not {kind!r}')
    return None


def _read_tiers(pricing: FieldReader, currency: str) -> tuple[Tier, ...] | None:
    readers = pricing.objects("tiers")
    if readers is None:
        return None
    tiers: list[Tier] = []
    for reader in readers:
        reader.reject_unknown(frozenset({"min_quantity", "unit_price"}))
        start = reader.integer("min_quantity", maximum=MAX_QUANTITY)
        price = reader.money("unit_price", currency)
        if start is None or price is None:
            continue
        if not tiers and start != 1:
            reader.problem("min_quantity", f"the first tier must start at 1, not {start}")
        elif tiers and start <= tiers[-1].min_quantity:
            reader.problem(
                "min_quantity", f"must be above the previous tier's {tiers[-1].min_quantity}"
            )
        elif tiers and price > tiers[-1].unit_price:
            reader.problem(
                "unit_price", f"must not exceed the previous tier's {tiers[-1].unit_price}"
            )
        tiers.append(Tier(start, price))
    return tuple(tiers) if len(tiers) == len(readers) else None


def _read_linear(
    pricing: FieldReader, floor_price: Decimal | None, currency: str
) -> LinearSchedule | None:
    list_price = pricing.money("list_price", currency)
    start = pricing.integer("from_quantity", maximum=MAX_QUANTITY)
    end = pricing.integer("to_quantity", maximum=MAX_QUANTITY)
    if start is not None and end is not None and end <= start:
        pricing.problem("to_quantity", f"must be above from_quantity ({start})")
        return None
    if list_price is not None and floor_price is not None and list_price < floor_price:
        pricing.problem("list_price", f"must be at least floor_price ({floor_price})")
        return None
    if list_price is None or start is None or end is None or floor_price is None:
        return None
    return LinearSchedule(list_price, start, end, floor_price, quantum(currency))
