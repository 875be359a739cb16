"""Sites over HTTP: place and cancel orders with the site's API key, read an order back.

An order posted here is the message a site would write to Kafka itself: it is decoded to
the same field limits as ingestion does (a refusal is `422` naming the field), then
published to the site's own orders topic by an idempotent producer, and answered `202`
once Kafka has it. Ingestion decides, as for any order, and answers on the site's results
topic. A retried POST publishes the same order again; the campaign counts an order once
by its (`site_id`, `order_id`), so a retry never counts twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import psycopg
from fastapi import APIRouter, Header, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from psycopg.rows import dict_row
from psycopg.sql import SQL

from consumers.order_messages import (
    MAX_MESSAGE_BYTES,
    CancelOrder,
    MalformedMessageError,
    PlaceOrder,
    decode,
)
from infra.adapters.api_keys import ApiKeys, Holder
from infra.adapters.topics import Topics
from infra.settings import Settings
from projections.read_models import ReadModelTables
from projections.wire import jsonable, rfc3339

Connect = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]
Publish = Callable[[str, bytes, bytes], None]  # topic, key, value: returns once Kafka has it
# (campaign, site, order) -> the order's rejection as the event store holds it, or None
Rejection = Callable[[str, str, str], dict[str, Any] | None]
BEARER = re.compile(r"Bearer +(\S+)", re.IGNORECASE)
NAMED = re.compile(r"field '([a-z_]+)'")
PLACE, CANCEL = "order.placed", "order.cancelled"


def site_routes(
    settings: Settings, connection: Connect, publish: Publish, rejection: Rejection
) -> APIRouter:
    """The sites' endpoints; `connection` lends a read-model connection, `publish` sends,
    `rejection` looks for an order's refusal in the event store."""
    router = APIRouter(prefix="/v1/sites/{site_id}", tags=["sites"])
    keys = ApiKeys(settings)
    topics = Topics(settings.topic_prefix)
    tables = ReadModelTables(settings.database_schema)

    def authorize(site_id: str, authorization: str | None) -> None:
        """Nothing, for site `site_id`'s own key; else 401 (no key, or not a key) or 403."""
        holder = holder_of(keys, connection, authorization, "a site's")
        if holder.kind != "site" or holder.tenant_id != site_id:
            raise HTTPException(403, f"this key is not site {site_id!r}'s")

    async def send(site_id: str, kind: str, request: Request, authorization: str | None) -> Any:
        body = await request.body()
        if len(body) > MAX_MESSAGE_BYTES:
            raise HTTPException(413, f"an order message is at most {MAX_MESSAGE_BYTES} bytes")
        await run_in_threadpool(authorize, site_id, authorization)
        message, command = message_of(body, kind, site_id)
        await run_in_threadpool(
            publish, topics.site_orders(site_id), command.campaign_id.encode(), message
        )
        return {
            "order_id": command.order_id,
            "campaign_id": command.campaign_id,
            "site_id": site_id,
            "status": "published",
            "result_topic": topics.site_results(site_id),
            "order": f"/v1/sites/{site_id}/orders/{quote(command.order_id, safe='')}"
            f"?campaign_id={command.campaign_id}",
        }

    @router.post("/orders", status_code=202)
    async def place(
        site_id: str,
        request: Request,
        response: Response,
        authorization: str | None = Header(default=None),
    ) -> Any:
        """Place an order (the fields of `order.placed`; `type` and `site_id` may be left
        out, `placed_at` too: now). `202` once it is on the site's orders topic; its
        result comes on the site's results topic, and `order` reads it once accepted."""
        answer = await send(site_id, PLACE, request, authorization)
        response.headers["Location"] = answer["order"]
        return answer

    @router.post("/cancellations", status_code=202)
    async def cancel(
        site_id: str, request: Request, authorization: str | None = Header(default=None)
    ) -> Any:
        """Cancel an order (the fields of `order.cancelled`: `order_id`, `campaign_id`)."""
        return await send(site_id, CANCEL, request, authorization)

    @router.get("/orders/{order_id:path}")  # an order id may hold a slash
    def order(
        site_id: str,
        order_id: str,
        campaign_id: str,
        authorization: str | None = Header(default=None),
    ) -> Any:
        """The site's order: as the read models hold it once accepted (`state`: committed,
        withdrawn, filled, ...), else its refusal by the campaign (`state` rejected, with
        `reason`); `404` before either, or for an order refused before any campaign saw it
        (invalid, an unknown campaign: its result on the results topic says why)."""
        authorize(site_id, authorization)
        query = SQL(
            "SELECT campaign_id, order_id, site_id, buyer_id, quantity, max_unit_price, state, "
            "filled_quantity, unit_price, placed_at, updated_at FROM {} "
            "WHERE campaign_id = %s AND site_id = %s AND order_id = %s"
        ).format(tables.commitments)
        with connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(query, (campaign_id, site_id, order_id)).fetchone()
        if row is not None:
            return jsonable(row)
        refused = rejection(campaign_id, site_id, order_id)
        if refused is None:
            raise HTTPException(
                404, f"no order {order_id!r} of site {site_id!r} in campaign {campaign_id!r}"
            )
        return refused

    return router


def holder_of(keys: ApiKeys, connection: Connect, authorization: str | None, whose: str) -> Holder:
    """Whom the bearer key of `authorization` speaks for; 401 without one that groupbuy
    issued (`whose`: what key the message asks for)."""
    given = BEARER.fullmatch(authorization or "")
    if given is None:
        raise HTTPException(
            401,
            f"{whose} API key is needed: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    with connection() as conn:
        holder = keys.holder(conn, given.group(1))
    if holder is None:
        raise HTTPException(
            401, "this API key is not one groupbuy issued", {"WWW-Authenticate": "Bearer"}
        )
    return holder


def message_of(body: bytes, kind: str, site_id: str) -> tuple[bytes, PlaceOrder | CancelOrder]:
    """The orders-topic message a body stands for, decoded as ingestion will; 422 naming
    the fields at fault, 403 for a body in another site's name."""
    try:
        fields = json.loads(body, object_pairs_hook=unique_keys)
    except (ValueError, RecursionError) as error:
        raise refusal([], f"the body is not JSON: {error}") from None
    if not isinstance(fields, dict):
        raise refusal([], "the body must be a JSON object")
    if fields.setdefault("type", kind) != kind:
        raise refusal(["type"], f"must be {kind!r} here")
    if fields.setdefault("site_id", site_id) != site_id:
        raise HTTPException(403, f"this key places orders for site {site_id!r} only")
    stamp = "placed_at" if kind == PLACE else "cancelled_at"
    fields.setdefault(stamp, rfc3339(datetime.now(UTC)))
    message = json.dumps(fields, ensure_ascii=False).encode()
    try:
        command = decode(message, site_id)
    except MalformedMessageError as error:
        raise refusal(NAMED.findall(str(error)), str(error)) from None
    if command.problem:
        named = [part.split(" ", 1)[0] for part in command.problem.split("; ")]
        raise refusal([name for name in named if name in fields], command.problem)
    return message, command


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise ValueError("a field is given twice")
    return fields


def refusal(names: list[str], message: str) -> HTTPException:
    """422 saying `message` of each field in `names`, or of the body as a whole."""
    return unprocessable([(name, message) for name in names] or [(None, message)])


def unprocessable(faults: list[tuple[str | None, str]]) -> HTTPException:
    """422 in FastAPI's shape: each (field, what is wrong), the field under `loc` (None:
    the body as a whole)."""
    detail = [
        {"loc": ["body"] if name is None else ["body", name], "msg": message, "type": "value_error"}
        for name, message in faults
    ]
    return HTTPException(422, detail)
