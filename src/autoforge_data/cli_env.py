"""`afdb env` and `afdb branch`: look at the profiles, branch one environment into another.

Thin commands: parse, call one function of :mod:`autoforge_data.ops.envs` or
:mod:`autoforge_data.ops.branch`, print a table or ``--json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

env_app = typer.Typer(
    no_args_is_help=True,
    help="Environments (profiles dev, staging, prod): database, schema, size, backups, "
    "replication.\n\nExample: afdb env list",
)
branch_app = typer.Typer(
    no_args_is_help=True,
    help="Branches: a copy of an environment's database that never shares a write with it.\n\n"
    "Example: afdb branch create dev-copy --from prod --anonymize",
)


def register(app: typer.Typer) -> None:
    """Add the `env` and `branch` groups to the CLI."""
    app.add_typer(env_app, name="env")
    app.add_typer(branch_app, name="branch")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)


@env_app.command("list")
def env_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every profile: mode, database (no credentials), migration, size, last backup, replication.

    Example: afdb env list --json
    """
    from autoforge_data import cli
    from autoforge_data.ops.envs import list_envs

    rows = list_envs(Path.cwd())
    if as_json:
        cli._json([r.to_json() for r in rows])
        return
    table = Table(title="environments")
    for col in ("profile", "mode", "database", "migration", "size", "last backup", "replication"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r.profile,
            r.mode or "-",
            r.database or (f"error: {r.error}" if r.error else "-"),
            r.migration or "-",
            _size(r.size_bytes),
            r.last_backup or "-",
            r.replication or "-",
        )
    cli.console.print(table)


@env_app.command("show")
def env_show(
    profile: Annotated[
        str | None, typer.Argument(help="dev, staging or prod (default: the current profile).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """One profile in detail, including its backup location and branches folder.

    Example: afdb env show prod
    """
    from autoforge_data import cli
    from autoforge_data.ops.envs import env_info

    info = env_info(profile or cli._state.env, Path.cwd())
    if as_json:
        cli._json(info.to_json())
        return
    table = Table(title=f"environment {info.profile}", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in (
        ("mode", info.mode),
        ("database", info.database),
        ("migration", info.migration),
        ("size", _size(info.size_bytes)),
        ("last backup", info.last_backup),
        ("replication", info.replication),
        ("error", info.error),
        *((k, v) for k, v in info.details.items() if isinstance(v, str | int)),
    ):
        if value is not None or key != "error":
            table.add_row(key.replace("_", " "), "-" if value is None else str(value))
    cli.console.print(table)


@branch_app.command("create")
def branch_create(  # noqa: PLR0917 - a typer command's options are its parameters
    name: Annotated[str, typer.Argument(help="Branch name: a-z 0-9 . _ - (max 63).")],
    from_env: Annotated[
        str, typer.Option("--from", help="The profile to branch: dev, staging or prod.")
    ],
    at: Annotated[
        str | None,
        typer.Option(
            help="Point in time (ISO 8601, UTC): embedded uses the newest verified "
            "backup at or before it; Turso its point-in-time recovery."
        ),
    ] = None,
    schema_only: Annotated[
        bool, typer.Option("--schema-only", help="Same schema, no rows.")
    ] = False,
    anonymize: Annotated[
        bool, typer.Option("--anonymize", help="Pseudonymize emails/usernames, clear ids.")
    ] = False,
    drop_content: Annotated[
        bool,
        typer.Option("--drop-content", help="With --anonymize: replace prompt text, drop vectors."),
    ] = False,
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace an existing branch of that name.")
    ] = False,
    backend: Annotated[
        str, typer.Option(help="auto, embedded, sqld or turso (auto: from the source profile).")
    ] = "auto",
    namespace: Annotated[
        str | None, typer.Option(help="sqld: the source namespace (default: from its URL).")
    ] = None,
    source_db: Annotated[
        str | None, typer.Option(help="Turso: the source database (default: from its URL).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
) -> None:
    """Branch an environment: snapshot (embedded), namespace fork (sqld) or seeded DB (Turso).

    Example: afdb branch create dev-copy --from prod --anonymize --drop-content
    """
    from autoforge_data import cli
    from autoforge_data.ops.branch import BranchOptions, branches_dir, create_branch
    from autoforge_data.ops.branch import parse_timestamp as parse_at
    from autoforge_data.settings import Settings

    options = BranchOptions(
        name=name,
        at=parse_at(at) if at else None,
        schema_only=schema_only,
        anonymize=anonymize,
        drop_content=drop_content,
        replace=replace,
        backend=backend,  # type: ignore[arg-type]  # validated by BranchOptions
        source_namespace=namespace,
        source_database=source_db,
    ).validated()
    current = cli._settings()
    source = Settings.load(from_env, base_dir=Path.cwd())
    options = _with_folder(options, branches_dir(current))
    with cli.console.status(f"branching {source.env} into {name} ..."):
        record = create_branch(source, options)
    if as_json:
        cli._json(record.to_json())
        return
    cli.console.print(
        f"branch {record.name} ({record.kind}) from {record.source_env}: {record.location}"
    )
    cli.console.print(f"migration {record.migration or '-'}, {_size(record.size_bytes)}")
    cli.console.print(f"use it: {record.use}")


def _with_folder(options: Any, folder: Path) -> Any:
    from dataclasses import replace

    return replace(options, branches_dir=folder)


@branch_app.command("list")
def branch_list(
    check: Annotated[
        bool, typer.Option("--check", help="Ask sqld / Turso whether each remote branch exists.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Branches recorded in this profile's branches folder.

    Example: afdb branch list --json
    """
    from autoforge_data import cli
    from autoforge_data.ops.branch import check_remote, list_branches

    settings = cli._settings()
    records = list_branches(settings)
    if check:
        check_remote(settings, records)
    if as_json:
        cli._json([r.to_json() for r in records])
        return
    table = Table(title="branches")
    for col in ("name", "kind", "from", "created", "migration", "size", "status", "use"):
        table.add_column(col, overflow="fold")
    for r in records:
        table.add_row(
            r.name,
            r.kind,
            r.source_env,
            r.created_at,
            r.migration or "-",
            _size(r.size_bytes),
            r.status,
            r.use,
        )
    cli.console.print(table)


@branch_app.command("delete")
def branch_delete(
    name: Annotated[str, typer.Argument(help="The branch to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a branch (its file, namespace or Turso database) and its record; never a source.

    Example: afdb branch delete dev-copy --yes
    """
    from autoforge_data import cli
    from autoforge_data.ops.branch import delete_branch
    from autoforge_data.ops.names import check_name

    check_name(name, "branch name")
    settings = cli._settings()
    if not yes:
        typer.confirm(f"delete branch {name!r} and its data?", abort=True)
    record = delete_branch(settings, name)
    cli.console.print(f"deleted branch {record.name} ({record.kind}): {record.location}")
