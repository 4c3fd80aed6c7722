"""`afdb apikey`: API keys of the HTTP service (create shows the secret once; list; revoke).

The secret goes to stdout alone (so `KEY=$(afdb apikey create ...)` works); everything else to
stderr. Only a hash of the key is stored: a lost key cannot be shown again, create a new one.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

apikey_app = typer.Typer(
    no_args_is_help=True,
    help="API keys for the HTTP API (Authorization: Bearer <key>).\n\n"
    "Example: afdb apikey create --scope read --name dashboard --expires 90d",
)


def register(app: typer.Typer) -> None:
    """Add the apikey command group to the `afdb` app."""
    app.add_typer(apikey_app, name="apikey")


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Option("--name", help="What the key is for (1-100 characters).")],
    scope: Annotated[
        str, typer.Option("--scope", help="read, write (includes read) or admin (everything).")
    ] = "read",
    expires: Annotated[
        str | None,
        typer.Option("--expires", help="Lifetime (90m, 12h, 30d, 2w) or an ISO time; none: never."),
    ] = None,
) -> None:
    """Create an API key and print it once (only its hash is stored).

    Example: afdb apikey create --scope write --name ci --expires 30d
    """
    from autoforge_data import cli
    from autoforge_data.services import apikeys

    with cli._database() as db:
        new = apikeys.create_key(db, name, scope, expires=expires)
    key = new.key
    until = f", expires {key.expires_at}" if key.expires_at else ""
    cli.err_console.print(
        f"created key {key.id} ({key.name}, scope {key.scope}{until}); it is shown only once:",
        markup=False,
    )
    typer.echo(new.secret)


@apikey_app.command("list")
def apikey_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List API keys (never their secrets): scope, state, created, last used, expiry.

    Example: afdb apikey list --json
    """
    from autoforge_data import cli
    from autoforge_data.services import apikeys

    with cli._database() as db:
        keys = apikeys.list_keys(db)
    if as_json:
        cli._json([{**asdict(k), "state": k.state()} for k in keys])
        return
    table = Table()
    for col in ("id", "name", "scope", "state", "created", "last used", "expires"):
        table.add_column(col)
    for k in keys:
        table.add_row(
            k.id,
            k.name,
            k.scope,
            k.state(),
            k.created_at,
            k.last_used_at or "-",
            k.expires_at or "-",
        )
    cli.console.print(table)


@apikey_app.command("revoke")
def apikey_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (afdb apikey list).")],
) -> None:
    """Revoke an API key: servers refuse it within seconds (at once in the same process).

    Example: afdb apikey revoke 01JD2X7K9Q8W3E5R6T7Y8U9I0P
    """
    from autoforge_data import cli
    from autoforge_data.services import apikeys

    with cli._database() as db:
        key = apikeys.revoke_key(db, key_id)
    cli.console.print(f"revoked {key.id} ({key.name}) at {key.revoked_at}")
