"""The HTTP application of `groupbuy serve`: public reads of the live read models.

Money is a decimal string and an instant RFC 3339 in UTC, as on the topics. Every read
answers with an `ETag` (a hash of the body) and `Cache-Control`, so that a storefront's CDN
can cache it, and a client that sends the ETag back in `If-None-Match` gets `304`.

With GROUPBUY_READ_DATABASE_URL, the campaign list, price histories and demand curves are
read from that replica, and say how far behind it is (`Groupbuy-Replica-Lag`). The live
figures (one campaign, the streams) stay on the primary: they are read again on its
notifications and kept until the next, so a replica's older copy would be kept too. The
sites' and operators' endpoints stay there as well: they read what they have just written.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import astuple, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.persistence import PersistenceError
from fastapi import FastAPI, Header, HTTPException, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, StreamingResponse
from kafka import KafkaProducer
from kafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from psycopg_pool import ConnectionPool, PoolTimeout

from analysis.demand_curve import demand_curve
from analysis.fold import fold
from domain.campaign import Campaign
from infra.adapters import kafka_clients, metrics
from infra.adapters.app import open_app
from infra.adapters.replica import ReplicaLag, replica_lag
from infra.http.live import EVERY, Frame, LiveFeed
from infra.http.operators import Domain, operator_routes
from infra.http.sites import site_routes
from infra.settings import Settings
from projections import queries
from projections.read_models import ReadModelTables
from projections.wire import jsonable

# The live figures change with every order: a CDN may serve a copy a second old, and an
# older one while it asks again.
LIVE = "public, max-age=1, stale-while-revalidate=5"
POOL_TIMEOUT = 5.0  # seconds a request waits for a database connection before 503
PUBLISH_TIMEOUT = 10.0  # seconds Kafka has to acknowledge an order posted over HTTP
RETRY_MS = 2000  # how soon an SSE client whose stream broke connects again
STATIC = Path(__file__).parent / "static"
# The dashboard and the widget, by path; kept a few minutes by browsers and CDNs.
PAGES = {
    "/": "index.html",
    "/dashboard.js": "dashboard.js",
    "/dashboard.css": "dashboard.css",
    "/widget.js": "widget.js",
    "/widget.html": "widget.html",
}
PAGE_CACHE = "public, max-age=300"
LAG_HEADER, STREAMING_HEADER = "Groupbuy-Replica-Lag", "Groupbuy-Replica-Streaming"


class Status(StrEnum):
    OPEN = "open"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def create_app(settings: Settings) -> FastAPI:
    """The application over the read models of `settings`' schema."""
    tables = ReadModelTables(settings.database_schema)
    reading = settings.for_reading()
    on_replica = reading is not settings
    pool = connection_pool(settings, "groupbuy-http")
    read_pool = connection_pool(reading, "groupbuy-http-reads") if on_replica else pool
    pools = [pool, read_pool] if on_replica else [pool]

    def read_live(campaign_id: str) -> Frame | None:
        with pool.connection(timeout=POOL_TIMEOUT) as conn:
            return queries.live(conn, tables, campaign_id)

    feed = LiveFeed(settings.postgres_conninfo, tables.channel, read_live)
    # The event store, read only (the demand curve): it connects at the first read.
    store = open_app(settings, CREATE_TABLE="n", POSTGRES_POOL_SIZE="2")
    read_store = (
        open_app(reading, CREATE_TABLE="n", POSTGRES_POOL_SIZE="2") if on_replica else store
    )
    stores = [store, read_store] if on_replica else [store]
    domain = Domain(settings)  # the operators' writes
    producers: list[KafkaProducer] = []  # made at the first order: Kafka may come up later
    making = threading.Lock()

    def publish(topic: str, key: bytes, value: bytes) -> None:
        """Send, and return once Kafka acknowledged it; 503 if it does not."""
        try:
            with making:
                if not producers:
                    # A send waits this long at most for a topic's metadata, too.
                    producer = kafka_clients.producer(
                        settings, max_block_ms=int(PUBLISH_TIMEOUT * 1000)
                    )
                    producers.append(producer)
            producers[0].send(topic, key=key, value=value).get(timeout=PUBLISH_TIMEOUT)
        except KafkaError as error:
            raise HTTPException(503, f"Kafka did not take the order: {error}") from error

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for opening in pools:
            opening.open(wait=False)
        listening = asyncio.create_task(feed.listen(), name="groupbuy-live")
        try:
            yield
        finally:
            await feed.stop()
            listening.cancel()
            for closing in pools:
                closing.close()
            for closing_store in stores:
                closing_store.close()
            domain.close()
            for producer in producers:
                producer.close(timeout=5)

    @contextmanager
    def connection(lent: ConnectionPool = pool) -> Iterator[psycopg.Connection[Any]]:
        try:
            with lent.connection(timeout=POOL_TIMEOUT) as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError) as error:
            raise HTTPException(503, "the database cannot be reached") from error
        except psycopg.errors.UndefinedTable as error:
            # The projector makes the read models when it first starts.
            raise HTTPException(503, "the read models are not made yet") from error

    @contextmanager
    def read(headers: dict[str, str]) -> Iterator[psycopg.Connection[Any]]:
        """A connection for a public read; on a replica, its lag is put in `headers`."""
        with connection(read_pool) as conn:
            yield conn
            if on_replica:
                headers |= lag_headers(replica_lag(conn))

    def lag_now() -> dict[str, str]:
        """The lag headers of the replica, read before an answer from its event store."""
        if not on_replica:
            return {}
        with connection(read_pool) as conn:
            return lag_headers(replica_lag(conn))

    app = FastAPI(
        title="groupbuy",
        summary="Live prices of group-buying campaigns",
        version="1",
        lifespan=lifespan,
    )

    def rejection(campaign_id: str, site_id: str, order_id: str) -> dict[str, Any] | None:
        """The campaign's last refusal of the site's order, from the event store."""
        try:
            events = store.events.get(Campaign.create_id(campaign_id))
            refusals = [
                event
                for event in events
                if isinstance(event, Campaign.OrderRejected)
                and (event.site_id, event.order_id) == (site_id, order_id)
            ]
        except PersistenceError as error:
            raise HTTPException(503, "the event store cannot be read") from error
        if not refusals:
            return None
        last = refusals[-1]
        view: dict[str, Any] = jsonable(
            {
                "campaign_id": campaign_id,
                "order_id": order_id,
                "site_id": site_id,
                "buyer_id": last.buyer_id,
                "quantity": last.quantity,
                "max_unit_price": last.max_unit_price,
                "state": "rejected",
                "reason": last.reason,
                "placed_at": last.placed_at,
            }
        )
        return view

    app.include_router(site_routes(settings, connection, publish, rejection))
    app.include_router(operator_routes(settings, connection, domain))
    # Public reads may be made from any storefront's pages (the widget): no credentials.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET"],
        expose_headers=[LAG_HEADER, STREAMING_HEADER],
    )
    for path, name in PAGES.items():
        app.add_api_route(path, page(name), methods=["GET"], include_in_schema=False)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process answers (nothing else is asked)."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["operations"], response_class=Response)
    def metrics_text() -> Response:
        """Prometheus text: the live streams open, and the server process's figures."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/readyz", tags=["operations"])
    def readyz(response: Response) -> dict[str, str]:
        """The database (and the replica read from, if any) answers and the read models
        exist: 200, else 503 saying which."""
        for lent, where in zip(pools, ("", " (GROUPBUY_READ_DATABASE_URL)"), strict=False):
            status = readiness(lent, tables, where)
            if status != "ready":
                response.status_code = 503
                return {"status": status}
        return {"status": "ready"}

    @app.get("/v1/campaigns", tags=["campaigns"])
    def list_campaigns(request: Request, status: Status | None = None) -> Response:
        """Every campaign (or those of one status), soonest deadline first."""
        headers: dict[str, str] = {}
        with read(headers) as conn:
            found = queries.campaigns(conn, tables, status.value if status else None)
        return cached(request, {"campaigns": found}, headers)

    @app.get("/v1/campaigns/{campaign_id}", tags=["campaigns"])
    async def one_campaign(request: Request, campaign_id: str) -> Response:
        """One campaign's live read model, with its units by site."""

        def read() -> Encoded | None:
            with connection() as conn:
                found = queries.campaign(conn, tables, campaign_id)
            return None if found is None else encoded(found)

        # Kept in memory until the projector changes the campaign (`LiveFeed.answer`).
        answer = await feed.answer(campaign_id, read)
        if answer is None:
            raise HTTPException(404, f"no campaign {campaign_id!r}")
        return cached(request, answer)

    @app.get("/v1/campaigns/{campaign_id}/prices", tags=["campaigns"])
    def prices(request: Request, campaign_id: str) -> Response:
        """Each price the campaign showed, with the units committed then, oldest first."""
        headers: dict[str, str] = {}
        with read(headers) as conn:
            if queries.campaign(conn, tables, campaign_id) is None:
                raise HTTPException(404, f"no campaign {campaign_id!r}")
            history = queries.price_history(conn, tables, campaign_id)
        return cached(request, {"campaign_id": campaign_id, "prices": history}, headers)

    @app.get("/v1/campaigns/{campaign_id}/demand", tags=["campaigns"])
    def demand(request: Request, campaign_id: str) -> Response:
        """The demand curve, from the event store: the standing units at each maximum price
        the buyers gave, how many would pay at least it, and the price the group clears at
        (what `groupbuy demand --json` prints). A supplier sizes a pre-series with it."""
        headers = lag_now()  # first: the events read after are at least this fresh
        try:
            events = list(read_store.events.get(Campaign.create_id(campaign_id)))
        except PersistenceError as error:
            raise HTTPException(503, "the event store cannot be read") from error
        campaign = fold(events)
        if campaign is None:
            raise HTTPException(404, f"no campaign {campaign_id!r}")
        return cached(request, demand_curve(campaign).to_json_dict(), headers)

    @app.get(
        "/v1/campaigns/{campaign_id}/live",
        tags=["campaigns"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    def live(
        campaign_id: str, last_event_id: str | None = Header(default=None)
    ) -> StreamingResponse:
        """The campaign's live figures as Server-Sent Events, pushed when the projector
        commits a change: event `campaign`, id the read model's version, data the figures
        `GET /v1/campaigns` lists. A client that reconnects with `Last-Event-ID` gets the
        current figures only if they moved on."""
        with connection() as conn:
            if queries.live(conn, tables, campaign_id) is None:
                raise HTTPException(404, f"no campaign {campaign_id!r}")
        seen = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
        return StreamingResponse(
            events(feed, campaign_id, seen),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    @app.get(
        "/v1/live",
        tags=["campaigns"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    def live_everything() -> StreamingResponse:
        """Every campaign's live figures as Server-Sent Events (what the dashboard shows):
        event `campaign` for each campaign at first, then for each one the projector
        changes."""
        return StreamingResponse(
            every_event(feed, read_all, read_live),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    def read_all() -> list[Frame]:
        with pool.connection(timeout=POOL_TIMEOUT) as conn:
            return queries.campaigns(conn, tables)

    return app


async def every_event(
    feed: LiveFeed,
    read_all: Callable[[], list[Frame]],
    read_one: Callable[[str], Frame | None],
) -> AsyncIterator[str]:
    """Server-Sent Events of every campaign, then of each as it changes."""
    yield f"retry: {RETRY_MS}\n\n"
    queue = feed.follow()  # from before the first read: no change is lost
    metrics.LIVE_STREAMS.labels("all").inc()
    try:
        for frame in await asyncio.to_thread(read_all):
            yield event(frame)
        async for changed in feed.changes(queue):
            if changed is None:
                yield ": keepalive\n\n"
                continue
            if EVERY in changed:
                frames = await asyncio.to_thread(read_all)
            else:
                found = [await asyncio.to_thread(read_one, c) for c in sorted(changed)]
                frames = [frame for frame in found if frame is not None]
            for frame in frames:
                yield event(frame)
    finally:
        feed.unfollow(queue)
        metrics.LIVE_STREAMS.labels("all").dec()


def event(frame: Frame, with_id: bool = False) -> str:
    """One Server-Sent Event `campaign` holding `frame` (its id the version, if asked)."""
    data = json.dumps(frame, separators=(",", ":"), ensure_ascii=False)
    head = f"id: {frame['version']}\n" if with_id else ""
    return f"{head}event: campaign\ndata: {data}\n\n"


async def events(feed: LiveFeed, campaign_id: str, seen: int | None) -> AsyncIterator[str]:
    """Server-Sent Events of the campaign's frames, with a comment for each quiet spell."""
    yield f"retry: {RETRY_MS}\n\n"
    with metrics.LIVE_STREAMS.labels("campaign").track_inprogress():
        async for frame in feed.frames(campaign_id, seen):
            if frame is None:
                yield ": keepalive\n\n"
            else:
                yield event(frame, with_id=True)


def page(name: str) -> Callable[[], FileResponse]:
    """An endpoint serving the static file `name` (the dashboard's, the widget's)."""

    def serve() -> FileResponse:
        return FileResponse(STATIC / name, headers={"Cache-Control": PAGE_CACHE})

    return serve


@dataclass(frozen=True)
class Encoded:
    """An answer's JSON and its entity tag (a hash of it)."""

    content: bytes
    etag: str


def encoded(body: Any) -> Encoded:
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Encoded(content, '"' + hashlib.sha256(content).hexdigest()[:32] + '"')


def connection_pool(settings: Settings, name: str) -> ConnectionPool:
    """A pool of autocommit connections to `settings`' database, opened with the app."""
    return ConnectionPool(
        settings.postgres_conninfo,
        min_size=1,
        max_size=4,
        kwargs={"autocommit": True},
        open=False,
        name=name,
    )


def readiness(pool: ConnectionPool, tables: ReadModelTables, where: str) -> str:
    """`ready` when the database of `pool` answers and holds the read models, else why
    not; `where` says which database, when there are two."""
    try:
        with pool.connection(timeout=POOL_TIMEOUT) as conn:
            name = tables.campaigns.as_string(conn)
            made = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
    except (PoolTimeout, psycopg.Error):
        return f"the database{where} cannot be reached"
    if made is None or made[0] is None:
        return f"the read models are not made yet{where}"
    return "ready"


def lag_headers(lag: ReplicaLag | None) -> dict[str, str]:
    """How stale an answer read from a replica may be: its lag in seconds, and whether it
    streams from its primary at all; nothing from a primary."""
    if lag is None:
        return {}
    headers = {LAG_HEADER: f"{lag.seconds:.1f}"}
    if not lag.streaming:
        headers[STREAMING_HEADER] = "no"
    return headers


def cached(request: Request, body: Any, extra: dict[str, str] | None = None) -> Response:
    """`body` as JSON with its ETag (and the `extra` headers); `304` when the client holds
    that version already."""
    content, etag = astuple(body if isinstance(body, Encoded) else encoded(body))
    headers = {"ETag": etag, "Cache-Control": LIVE} | (extra or {})
    if etag in _tags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type="application/json", headers=headers)


def _tags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header (weak ones compare as strong: RFC 9110)."""
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
