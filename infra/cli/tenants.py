"""`groupbuy site add|list|key` and `groupbuy supplier add|list`: register the tenants."""

from __future__ import annotations

import argparse
import getpass
import json
from pathlib import Path
from typing import Any

from infra.adapters.api_keys import ApiKeys
from infra.adapters.tenants import Registry, Tenant, TenantError
from infra.cli.common import EXIT_CODES, INVALID, CommandError, require_postgres
from infra.cli.output import plain
from infra.settings import Settings


def add_commands(commands: Any) -> None:
    for kind, what in (("site", "a storefront site"), ("supplier", "a supplier")):
        parser = commands.add_parser(
            kind,
            help=f"register {what}, or list them",
            description=(
                f"Register {what}: create its topics and, on a secured cluster, its Kafka "
                "user and ACLs (docs/contract.md, 'Tenants')."
            ),
            epilog=EXIT_CODES,
        )
        actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
        adding = actions.add_parser("add", help=f"register {what}", epilog=EXIT_CODES)
        adding.add_argument("tenant_id", metavar="ID")
        adding.add_argument(
            "--password-file",
            metavar="FILE",
            type=Path,
            help="its Kafka password on a secured cluster: read from FILE, or made and "
            "written there (mode 0600) when FILE does not exist; never printed",
        )
        adding.set_defaults(run=add_tenant, kind=kind)
        listing = actions.add_parser("list", help=f"every {kind} registered", epilog=EXIT_CODES)
        listing.add_argument("--json", action="store_true", help="print JSON instead of lines")
        listing.set_defaults(run=list_tenants, kind=kind)
        if kind == "site":
            keying = actions.add_parser(
                "key",
                help="issue an HTTP API key for a registered site",
                description=(
                    "Issue a bearer key with which the site places and cancels orders over "
                    "HTTP (docs/contract.md, 'Sites over HTTP'). It is written to FILE, "
                    "which must not exist (mode 0600), and never printed; only its digest "
                    "is stored. A site may hold several keys."
                ),
                epilog=EXIT_CODES,
            )
            keying.add_argument("tenant_id", metavar="ID")
            keying.add_argument("--out", metavar="FILE", type=Path, required=True)
            keying.set_defaults(run=issue_key, kind=kind)


def add_tenant(settings: Settings, arguments: argparse.Namespace) -> int:
    require_postgres(settings)
    try:
        tenant = Registry(settings).register(
            arguments.kind, arguments.tenant_id, arguments.password_file
        )
    except TenantError as error:
        raise CommandError(str(error), INVALID) from None
    print(f"{tenant.kind} {plain(tenant.tenant_id)} registered; topics:")
    for topic in tenant.topics:
        print(f"  {plain(topic)}")
    return 0


def add_operator_command(commands: Any) -> None:
    parser = commands.add_parser(
        "operator",
        help="issue an operator's HTTP API key",
        description="Operators' keys for groupbuy serve (docs/contract.md, 'Operators over HTTP').",
        epilog=EXIT_CODES,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    keying = actions.add_parser(
        "key",
        help="issue a key with which an operator opens, extends and cancels campaigns and "
        "registers sites over HTTP",
        description=(
            "Issue an operator's bearer key, written to FILE (which must not exist; mode "
            "0600) and never printed; only its digest is stored."
        ),
        epilog=EXIT_CODES,
    )
    keying.add_argument("--out", metavar="FILE", type=Path, required=True)
    keying.add_argument(
        "--name", default=getpass.getuser(), help="who holds it (default: your login)"
    )
    keying.set_defaults(run=issue_operator_key)


def issue_operator_key(settings: Settings, arguments: argparse.Namespace) -> int:
    require_postgres(settings)
    write_key(settings, "operator", arguments.name, arguments.out)
    print(f"an operator's API key for {plain(arguments.name)} is in {plain(str(arguments.out))}")
    return 0


def write_key(settings: Settings, kind: str, holder: str, path: Path) -> None:
    """Issue a key into `path`; a file that exists or cannot be written is exit 1."""
    try:
        ApiKeys(settings).issue(kind, holder, path)
    except OSError as error:  # FileExistsError too: a key is never written over
        raise CommandError(f"cannot write the key to {str(path)!r}: {error}", INVALID) from None


def issue_key(settings: Settings, arguments: argparse.Namespace) -> int:
    require_postgres(settings)
    site = arguments.tenant_id
    if site not in {t.tenant_id for t in Registry(settings).registered("site")}:
        raise CommandError(
            f"no site {plain(site)!r} is registered: groupbuy site add {plain(site)} first",
            INVALID,
        )
    write_key(settings, "site", site, arguments.out)
    print(f"an API key for site {plain(site)} is in {plain(str(arguments.out))}")
    return 0


def list_tenants(settings: Settings, arguments: argparse.Namespace) -> int:
    require_postgres(settings)
    tenants = Registry(settings).registered(arguments.kind)
    if arguments.json:
        print(json.dumps([as_json(t) for t in tenants], indent=2))
        return 0
    for tenant in tenants:
        when = tenant.registered_at.isoformat(timespec="seconds")
        print(f"{plain(tenant.tenant_id)}  registered {when} by {plain(tenant.registered_by)}")
    return 0


def as_json(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": tenant.tenant_id,
        "registered_at": tenant.registered_at.isoformat(),
        "registered_by": tenant.registered_by,
        "topics": tenant.topics,
    }
