"""Operators over HTTP, with an operator key: open, extend and cancel campaigns; register
sites. What `groupbuy campaign` and `groupbuy site add` do, with the same rules: a refused
definition is `422` naming each field, an unknown campaign `404`, a campaign whose state
refuses the change (closed, a deadline not later, an id taken by another definition) `409`.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Header, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from kafka.errors import KafkaError

from domain.application import GroupBuying
from domain.campaign import Campaign
from domain.definition import CampaignDefinition
from domain.errors import CampaignError, DefinitionError, UnknownCampaignError
from domain.timefmt import format_instant, parse_instant
from infra.adapters import kafka_clients
from infra.adapters.api_keys import ApiKeys
from infra.adapters.app import open_app
from infra.adapters.tenants import Registry, TenantError
from infra.adapters.topics import Topics
from infra.http.sites import Connect, holder_of, refusal, unprocessable
from infra.settings import Settings


class Domain:
    """The domain service on the event store, opened at the first operator's request (a
    server that only reads never needs to write), used by one request at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: GroupBuying | None = None
        self.lock = threading.Lock()

    @contextmanager
    def acting(self) -> Iterator[GroupBuying]:
        """The service, domain refusals as HTTP answers."""
        with self.lock:
            if self.app is None:
                self.app = open_app(self.settings)
            try:
                yield self.app
            except UnknownCampaignError as error:
                raise HTTPException(404, str(error)) from None
            except DefinitionError as error:
                raise definition_refused(error) from None
            except CampaignError as error:
                raise HTTPException(409, str(error)) from None

    def close(self) -> None:
        if self.app is not None:
            self.app.close()


def operator_routes(settings: Settings, connection: Connect, domain: Domain) -> APIRouter:
    keys = ApiKeys(settings)
    topics = Topics(settings.topic_prefix)

    def operator(authorization: str | None) -> str:
        """Who asked for the operator key in `authorization`; 401 or 403 otherwise."""
        holder = holder_of(keys, connection, authorization, "an operator's")
        if holder.kind != "operator":
            raise HTTPException(403, "this is a site's key; operators' endpoints need theirs")
        return holder.tenant_id

    router = APIRouter(prefix="/v1", tags=["operators"])

    @router.post("/campaigns", status_code=201)
    async def open_campaign(
        request: Request, response: Response, authorization: str | None = Header(default=None)
    ) -> Any:
        """Open a campaign (the body: a definition, `docs/schemas/campaign-definition.json`).
        `201`, or `200` for the same definition opened again (nothing changes)."""
        body = await request.body()
        return await run(lambda: opened(body, authorization, response))

    def opened(body: bytes, authorization: str | None, response: Response) -> Any:
        operator(authorization)
        try:
            fields = json.loads(body)
        except ValueError as error:
            raise refusal([], f"the body is not JSON: {error}") from None
        try:
            definition = CampaignDefinition.from_json_dict(fields)
        except DefinitionError as error:
            raise definition_refused(error) from None
        # The supplier's topic exists from its first campaign on (as `campaign open` does).
        kafka_clients.ensure_topics(settings, [topics.settlements(definition.supplier_id)])
        with domain.acting() as app:
            try:
                app.get_campaign(definition.campaign_id)
                response.status_code = 200
            except UnknownCampaignError:
                pass
            app.open_campaign(definition, datetime.now(UTC))
            campaign = app.get_campaign(definition.campaign_id)
        response.headers["Location"] = f"/v1/campaigns/{campaign.campaign_id}"
        return summary(campaign)

    @router.post("/campaigns/{campaign_id}/extend")
    async def extend(
        campaign_id: str, request: Request, authorization: str | None = Header(default=None)
    ) -> Any:
        """Move the deadline later: the body is `{"deadline": "2026-12-08T18:00:00Z"}`."""
        body = await request.body()

        def extended() -> Any:
            operator(authorization)
            try:
                fields = json.loads(body)
                deadline = parse_instant(fields["deadline"])
            except (ValueError, TypeError, KeyError) as error:
                message = f"an RFC 3339 instant in UTC is needed: {error}"
                raise refusal(["deadline"], message) from None
            with domain.acting() as app:
                app.extend_deadline(campaign_id, deadline, datetime.now(UTC))
                return summary(app.get_campaign(campaign_id))

        return await run(extended)

    @router.post("/campaigns/{campaign_id}/cancel")
    async def cancel(campaign_id: str, authorization: str | None = Header(default=None)) -> Any:
        """Cancel the campaign: it closes, and every commitment is released."""

        def cancelled() -> Any:
            operator(authorization)
            with domain.acting() as app:
                app.cancel_campaign(campaign_id, datetime.now(UTC))
                return summary(app.get_campaign(campaign_id))

        return await run(cancelled)

    @router.post("/sites", status_code=201)
    async def register_site(
        request: Request, authorization: str | None = Header(default=None)
    ) -> Any:
        """Register a site (the body: `{"site_id": "site-a"}`): its topics, and on a SASL
        cluster its Kafka user and ACLs. The answer holds, once, the site's first API key
        and, on a SASL cluster, its Kafka password: neither is kept in clear."""
        body = await request.body()

        def registered() -> Any:
            who = operator(authorization)
            try:
                site_id = json.loads(body)["site_id"]
            except (ValueError, TypeError, KeyError) as error:
                raise refusal(["site_id"], f"the site's id is needed: {error}") from None
            sasl = settings.kafka_security.protocol.startswith("SASL_")
            password = secrets.token_urlsafe(24) if sasl else None
            try:
                tenant = Registry(settings).register("site", str(site_id), None, password)
            except TenantError as error:
                raise refusal(["site_id"], str(error)) from None
            answer = {
                "site_id": tenant.tenant_id,
                "topics": tenant.topics,
                "api_key": keys.new("site", tenant.tenant_id, f"operator {who}"),
            }
            return answer | ({"kafka_password": password} if password else {})

        return await run(registered)

    return router


async def run(work: Callable[[], Any]) -> Any:
    """`work` on a worker thread: it waits for the event store, Kafka or a lock. Kafka
    unreachable (topics are made) is 503."""
    try:
        return await run_in_threadpool(work)
    except KafkaError as error:
        raise HTTPException(503, f"Kafka cannot be reached: {error}") from error


def summary(campaign: Campaign) -> dict[str, str]:
    return {
        "campaign_id": campaign.campaign_id,
        "status": campaign.status,
        "deadline": format_instant(campaign.deadline),
    }


def definition_refused(error: DefinitionError) -> HTTPException:
    """422 naming each field of the definition at fault, as `groupbuy campaign open` does."""
    return unprocessable([(problem.field, problem.message) for problem in error.problems])
