"""`groupbuy serve`: the HTTP API on uvicorn (the `groupbuy[http]` extra)."""

from __future__ import annotations

import argparse
from typing import Any

from infra.adapters import logs
from infra.cli.common import EXIT_CODES, INVALID, CommandError, require_postgres
from infra.settings import Settings, log_level


def add_command(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve the HTTP API: live campaigns, prices, health",
        description=(
            "Serve the HTTP API (docs/contract.md, 'HTTP'): the campaigns' live read models, "
            "their price histories, /healthz and /readyz; OpenAPI at /openapi.json."
        ),
        epilog=EXIT_CODES,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="port to listen on (8080)")
    serve.set_defaults(run=run_serve)


def run_serve(settings: Settings, arguments: argparse.Namespace) -> int:
    try:
        import uvicorn

        from infra.http.app import create_app
    except ImportError as error:  # the optional extra is missing
        raise CommandError(
            f"groupbuy serve needs the http extra (pip install 'groupbuy[http]'): {error}",
            INVALID,
        ) from None
    require_postgres(settings)  # an unreachable database is named at once
    if settings.read_database_url:
        require_postgres(settings.for_reading())  # and the replica the public reads come from
    logs.configure("serve")  # GROUPBUY_LOG_FORMAT and _LEVEL, uvicorn's lines too
    logs.log_configuration("serve", settings)
    uvicorn.run(
        create_app(settings),
        host=arguments.host,
        port=arguments.port,
        log_config=None,  # its records go to the root logger's handler, as configured
        log_level=log_level().lower(),
        access_log=False,
        # Live streams never end by themselves: stop waiting for them after this long.
        timeout_graceful_shutdown=2,
    )
    return 0
