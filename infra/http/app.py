"""The HTTP application of `groupbuy serve`: public reads of the live read models.

Money is a decimal string and an instant RFC 3339 in UTC, as on the topics. Every read
answers with an `ETag` (a hash of the body) and `Cache-Control`, so that a storefront's CDN
can cache it, and a client that sends the ETag back in `If-None-Match` gets `304`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from enum import StrEnum
from typing import Any

import psycopg
from fastapi import FastAPI, HTTPException, Request, Response
from psycopg_pool import ConnectionPool, PoolTimeout

from infra.settings import Settings
from projections import queries
from projections.read_models import ReadModelTables

# The live figures change with every order: a CDN may serve a copy a second old, and an
# older one while it asks again.
LIVE = "public, max-age=1, stale-while-revalidate=5"
POOL_TIMEOUT = 5.0  # seconds a request waits for a database connection before 503


class Status(StrEnum):
    OPEN = "open"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def create_app(settings: Settings) -> FastAPI:
    """The application over the read models of `settings`' schema."""
    tables = ReadModelTables(settings.database_schema)
    pool = ConnectionPool(
        settings.postgres_conninfo,
        min_size=1,
        max_size=4,
        kwargs={"autocommit": True},
        open=False,
        name="groupbuy-http",
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=False)
        try:
            yield
        finally:
            pool.close()

    @contextmanager
    def connection() -> Iterator[psycopg.Connection[Any]]:
        try:
            with pool.connection(timeout=POOL_TIMEOUT) as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as error:
            raise HTTPException(503, "the database cannot be reached") from error
        except psycopg.errors.UndefinedTable as error:
            # The projector makes the read models when it first starts.
            raise HTTPException(503, "the read models are not made yet") from error

    app = FastAPI(
        title="groupbuy",
        summary="Live prices of group-buying campaigns",
        version="1",
        lifespan=lifespan,
    )

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """The process answers (nothing else is asked)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz(response: Response) -> dict[str, str]:
        """The database answers and the read models exist: 200, else 503 saying which."""
        try:
            with pool.connection(timeout=POOL_TIMEOUT) as conn:
                name = tables.campaigns.as_string(conn)
                made = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
        except (PoolTimeout, psycopg.Error):
            response.status_code = 503
            return {"status": "the database cannot be reached"}
        if made is None or made[0] is None:
            response.status_code = 503
            return {"status": "the read models are not made yet"}
        return {"status": "ready"}

    @app.get("/v1/campaigns", tags=["campaigns"])
    def list_campaigns(request: Request, status: Status | None = None) -> Response:
        """Every campaign (or those of one status), soonest deadline first."""
        with connection() as conn:
            found = queries.campaigns(conn, tables, status.value if status else None)
        return cached(request, {"campaigns": found})

    @app.get("/v1/campaigns/{campaign_id}", tags=["campaigns"])
    def one_campaign(request: Request, campaign_id: str) -> Response:
        """One campaign's live read model, with its units by site."""
        with connection() as conn:
            found = queries.campaign(conn, tables, campaign_id)
        if found is None:
            raise HTTPException(404, f"no campaign {campaign_id!r}")
        return cached(request, found)

    @app.get("/v1/campaigns/{campaign_id}/prices", tags=["campaigns"])
    def prices(request: Request, campaign_id: str) -> Response:
        """Each price the campaign showed, with the units committed then, oldest first."""
        with connection() as conn:
            if queries.campaign(conn, tables, campaign_id) is None:
                raise HTTPException(404, f"no campaign {campaign_id!r}")
            history = queries.price_history(conn, tables, campaign_id)
        return cached(request, {"campaign_id": campaign_id, "prices": history})

    return app


def cached(request: Request, body: Any) -> Response:
    """`body` as JSON with its ETag; `304` when the client holds that version already."""
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    etag = '"' + hashlib.sha256(content).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": LIVE}
    if etag in _tags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type="application/json", headers=headers)


def _tags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header (weak ones compare as strong: RFC 9110)."""
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
