"""`afdb replicate` (Litestream, supervised) and `afdb restore --from-replica`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autoforge_data.errors import InvalidInput


def replicate(
    to: Annotated[
        str | None,
        typer.Option("--to", help="Replica URL: file:///folder or s3://bucket/prefix "
                     "(default AFDB_REPLICATE_URL)."),
    ] = None,
    sync_interval: Annotated[
        float | None,
        typer.Option("--sync-interval", min=0.001, max=3600,
                     help="Seconds between pushes (default AFDB_REPLICATE_SYNC_INTERVAL, 1)."),
    ] = None,
    verify_every: Annotated[
        float,
        typer.Option("--verify-every", min=0,
                     help="Seconds between restore drills of the replica (0: never)."),
    ] = 3600.0,
    status: Annotated[
        bool, typer.Option("--status", help="Only print the replication state and exit.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --status: JSON output.")] = False,
) -> None:
    """Replicate the embedded database continuously with Litestream (runs until stopped).

    Writes a private Litestream config beside the database, runs `litestream replicate`,
    restarts it with backoff if it dies, restores the replica into a temp file every
    --verify-every seconds to check it with libSQL, and stops cleanly on Ctrl-C or SIGTERM.

    Example: afdb --env prod replicate --to file:///mnt/replica/prod
    """
    from autoforge_data import cli
    from autoforge_data.ops import litestream

    settings = cli._settings()
    if status:
        _print_status(settings, as_json)
        return
    plan = litestream.plan_replication(settings, to, sync_interval)
    if not plan.db_path.exists():
        raise InvalidInput(f"{plan.db_path} does not exist", hint="run: afdb init")
    litestream.write_config(plan, settings)
    supervisor = litestream.Supervisor(
        plan,
        litestream.child_env(settings),
        options=litestream.SupervisorOptions(verify_every=verify_every or None),
        status=lambda line: cli.console.print(line, markup=False, soft_wrap=True),
        settings=settings,
    )
    raise typer.Exit(supervisor.run())


def _print_status(settings: object, as_json: bool) -> None:
    from autoforge_data import cli
    from autoforge_data.ops.replication import replication_status

    info = replication_status(settings)  # type: ignore[arg-type]
    if as_json:
        cli._json(info)
        return
    ls = info.get("litestream") or {}
    if not ls:
        cli.console.print(f"mode {info['mode']}: no Litestream replication applies")
        return
    lag = ls.get("lag_seconds")
    cli.console.print(
        f"litestream: {ls.get('state')} -> {ls.get('replica') or '-'}; "
        f"local txid {ls.get('local_txid')}, replica txid {ls.get('replica_txid')}, "
        f"lag {'-' if lag is None else f'{lag:.1f}s'}, restarts {ls.get('restarts', 0)}",
        markup=False,
        soft_wrap=True,
    )


def restore(
    from_replica: Annotated[
        bool, typer.Option("--from-replica", help="Restore from the Litestream replica.")
    ] = False,
    timestamp: Annotated[
        str | None,
        typer.Option("--timestamp", help="Point in time, ISO 8601 UTC (default: the latest)."),
    ] = None,
    to: Annotated[
        Path | None,
        typer.Option("--to", help="New file to create (default: <db>.restored-<time>.db)."),
    ] = None,
    replica: Annotated[
        str | None, typer.Option("--replica", help="Replica URL (default AFDB_REPLICATE_URL).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON output.")] = False,
) -> None:
    """Restore the Litestream replica into a NEW file and verify it with libSQL.

    The live database is never touched and an existing file is never overwritten; the restored
    file passes PRAGMA integrity_check (libSQL) before it gets its name.

    Example: afdb --env prod restore --from-replica --timestamp 2026-11-27T15:00:00Z --to /tmp/p.db
    """
    from autoforge_data import cli
    from autoforge_data.ops import litestream
    from autoforge_data.ops import litestream_restore as lr

    if not from_replica:
        raise InvalidInput(
            "say where to restore from: --from-replica",
            hint="backups are restored with: afdb backup restore",
        )
    settings = cli._settings()
    plan = litestream.plan_replication(settings, replica)
    options = lr.RestoreOptions(
        plan=plan,
        target=to or lr.default_restore_target(plan.db_path),
        timestamp=lr.parse_timestamp(timestamp) if timestamp else None,
    )
    report = lr.restore_from_replica(options, settings)
    if as_json:
        cli._json(
            {
                "path": str(report.path),
                "integrity": report.integrity,
                "row_counts": report.row_counts,
                "seconds": round(report.seconds, 3),
                "timestamp": report.timestamp,
            }
        )
        return
    counts = ", ".join(f"{k} {v}" for k, v in report.row_counts.items())
    cli.console.print(
        f"restored to {report.path} in {report.seconds:.1f}s; integrity ok (libSQL); "
        f"rows: {counts}",
        markup=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add `replicate` and `restore` to the afdb command."""
    app.command("replicate")(replicate)
    app.command("restore")(restore)
