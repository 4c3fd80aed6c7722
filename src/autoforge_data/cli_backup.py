"""`afdb backup`: create, list, verify, restore, prune, schedule; `afdb backup redis`.

Thin commands: parse, call one function of :mod:`autoforge_data.ops.backup` (and its
``backup_verify``, ``backup_restore``, ``schedule``, ``redis_backup`` siblings), print.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

backup_app = typer.Typer(
    no_args_is_help=True,
    help="Verified backups and safe restores of the database (and Redis RDB snapshots).\n\n"
    "Example: afdb backup create && afdb backup verify",
)

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Backup location (file:///dir or s3://bucket/prefix); "
        "default AFDB_BACKUP_URL, then backups/<profile> beside the database.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
KeepLast = Annotated[int | None, typer.Option("--keep-last", help="Keep the N newest.")]
KeepDaily = Annotated[int | None, typer.Option("--keep-daily", help="Keep the newest of D days.")]
KeepWeekly = Annotated[
    int | None, typer.Option("--keep-weekly", help="Keep the newest of W ISO weeks.")
]


def register(app: typer.Typer) -> None:
    """Add the `backup` group to the CLI."""
    app.add_typer(backup_app, name="backup")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


@backup_app.command("create")
def create(  # noqa: PLR0917 - a typer command's options are its parameters
    name: Annotated[str | None, typer.Option("--name", help="Backup name (a-z 0-9 . _ -).")] = None,
    url: UrlOpt = None,
    compression: Annotated[str, typer.Option(help="zstd, gzip or none.")] = "zstd",
    level: Annotated[int, typer.Option(help="Compression level (zstd default 1).")] = 1,
    encrypt: Annotated[
        bool | None,
        typer.Option("--encrypt/--no-encrypt", help="AES-256-GCM (default: if a key is set)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Take an online snapshot and store it compressed, signed (and encrypted if configured).

    Example: afdb --env prod backup create --name before-migration
    """
    from autoforge_data import cli
    from autoforge_data.ops.backup import BackupOptions, create_backup

    options = BackupOptions(
        name=name, url=url, compression=compression, level=level, encrypt=encrypt
    )
    with cli._database() as db:
        info = create_backup(db, options)
    m = info.manifest
    if as_json:
        cli._json(
            {
                "name": m.name,
                "path": info.location,
                "seconds": info.seconds,
                "mb_per_s": info.mb_per_s,
                "manifest": m.__dict__ | {"hmac": "…"},
            }
        )
        return
    cli.console.print(
        f"backup {m.name}: {_mb(m.raw_size_bytes)} → {_mb(m.size_bytes)} ({m.compression}"
        f"{', encrypted' if m.encrypted else ''}) in {info.seconds:.2f} s → {info.location}"
    )


@backup_app.command("list")
def list_cmd(url: UrlOpt = None, as_json: JsonOpt = False) -> None:
    """Every backup, oldest first: name, time, size, whether its last verify drill passed.

    Example: afdb backup list --json
    """
    from autoforge_data import cli
    from autoforge_data.ops.backup import list_backups

    entries = list_backups(cli._settings(), url)
    if as_json:
        cli._json([e.to_json() for e in entries])
        return
    table = Table(title="backups")
    for col in ("name", "created", "size", "db size", "migration", "verified", "note"):
        table.add_column(col, overflow="fold")
    for e in entries:
        verified = "yes" if e.verified else ("FAILED" if e.verify_ok is False else "no")
        table.add_row(
            e.name,
            e.created_at,
            _mb(e.size_bytes),
            _mb(e.raw_size_bytes),
            e.migration or "-",
            verified,
            e.error or "",
        )
    cli.console.print(table)


@backup_app.command("verify")
def verify(
    name: Annotated[str | None, typer.Argument(help="Backup name (default: the newest).")] = None,
    url: UrlOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Restore drill into a temporary file: integrity (libSQL), rows, migration, searches.

    Example: afdb backup verify
    """
    from autoforge_data import cli
    from autoforge_data.errors import Corrupt
    from autoforge_data.ops.backup_verify import VerifyOptions, verify_backup

    report = verify_backup(cli._settings(), VerifyOptions(name=name, url=url))
    if as_json:
        cli._json(report.to_json())
    if not report.ok:
        raise Corrupt(f"backup {report.name} failed verification: {report.error}")
    if not as_json:
        searches = (
            f"vector search {report.vector_hits} hits, keyword search {report.keyword_hits} hits"
        )
        notes = f" ({'; '.join(report.notes)})" if report.notes else ""
        cli.console.print(
            f"backup {report.name} ok: {sum(report.row_counts.values())} rows, migration "
            f"{report.migration}, {searches}{notes}; {report.seconds:.1f} s"
        )


@backup_app.command("restore")
def restore(
    name: Annotated[str | None, typer.Argument(help="Backup name (default: the newest).")] = None,
    url: UrlOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    rollback: Annotated[
        bool, typer.Option("--rollback", help="Put back the file the last restore replaced.")
    ] = False,
) -> None:
    """Validate a backup completely, then swap it in (the previous file is kept).

    Example: afdb --env staging backup restore --yes
    """
    from autoforge_data import cli
    from autoforge_data.ops.backup_restore import (
        RestoreOptions,
        RestorePlan,
        restore_backup,
        rollback_restore,
    )

    settings = cli._settings()
    if rollback:
        used = rollback_restore(settings)
        cli.console.print(f"rolled back to {used.name}")
        return

    def confirm(plan: RestorePlan) -> bool:
        return typer.confirm(
            f"Replace {plan.live_path} with backup {plan.name} ({plan.created_at}, "
            f"{plan.rows} rows, migration {plan.migration})?"
        )

    report = restore_backup(settings, RestoreOptions(name=name, url=url, yes=yes, confirm=confirm))
    kept = f"; previous file kept as {report.previous_path}" if report.previous_path else ""
    cli.console.print(f"restored {report.name} into {report.live_path}{kept}")


@backup_app.command("prune")
def prune(
    keep_last: KeepLast = None,
    keep_daily: KeepDaily = None,
    keep_weekly: KeepWeekly = None,
    url: UrlOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only print what would go.")] = False,
) -> None:
    """Delete the backups no retention rule keeps.

    Example: afdb backup prune --keep-last 3 --keep-daily 7 --keep-weekly 4
    """
    from autoforge_data import cli
    from autoforge_data.ops.backup import RetentionPolicy, prune_backups

    policy = RetentionPolicy(keep_last, keep_daily, keep_weekly)
    gone = prune_backups(cli._settings(), policy, url=url, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    cli.console.print(f"{verb} {len(gone)} backup(s){': ' + ', '.join(gone) if gone else ''}")


@backup_app.command("schedule")
def schedule(  # noqa: PLR0917 - a typer command's options are its parameters
    every: Annotated[str, typer.Option("--every", help="Interval: 30m, 1h, 1d.")] = "1h",
    jitter: Annotated[float, typer.Option(help="Random spread of each wait (0.1 = ±10%).")] = 0.1,
    keep_last: KeepLast = None,
    keep_daily: KeepDaily = None,
    keep_weekly: KeepWeekly = None,
    url: UrlOpt = None,
) -> None:
    """Back up every interval until stopped; one scheduler at a time (lock file), prune after.

    Example: afdb --env prod backup schedule --every 1h --keep-last 24 --keep-daily 7
    """
    from autoforge_data import cli
    from autoforge_data.ops.backup import BackupOptions, RetentionPolicy
    from autoforge_data.ops.schedule import BackupScheduler, ScheduleOptions, parse_interval

    settings = cli._settings()
    policy = RetentionPolicy(keep_last, keep_daily, keep_weekly)
    retention = (
        policy
        if any(v is not None for v in (keep_last, keep_daily, keep_weekly))
        else RetentionPolicy.from_settings(settings)
    )
    options = ScheduleOptions(
        every=parse_interval(every),
        jitter=jitter,
        retention=retention,
        backup=BackupOptions(url=url),
    )

    def report(info: Any, error: Any) -> None:
        if info is not None:
            cli.console.print(f"backup {info.manifest.name} done in {info.seconds:.1f} s")
        if error is not None:
            cli.err_console.print(f"backup failed: {error.one_line()}")

    scheduler = BackupScheduler(settings, options, on_result=report)
    signal.signal(signal.SIGTERM, lambda *_: scheduler._stop.set())
    if not scheduler.try_lead():
        cli.console.print("another scheduler holds the lock: standing by")
    cli.console.print(f"backing up every {options.every:.0f} s (Ctrl-C stops)")
    try:
        scheduler.run_forever()
    except KeyboardInterrupt:
        scheduler.stop()


@backup_app.command("redis")
def redis_cmd(
    url: Annotated[str, typer.Option("--url", help="redis://host:port of the server.")],
    to: Annotated[Path, typer.Option("--to", help="A folder, or the .rdb file to write.")],
    timeout: Annotated[float, typer.Option(help="Seconds the transfer may take.")] = 600.0,
) -> None:
    """Save an RDB snapshot through the replication protocol (password: AFDB_REDIS_PASSWORD).

    Example: afdb backup redis --url redis://127.0.0.1:6379 --to backups/redis/
    """
    from autoforge_data import cli
    from autoforge_data.ops.redis_backup import RedisBackupOptions, backup_redis

    info = backup_redis(cli._settings(), RedisBackupOptions(url=url, dest=to, timeout=timeout))
    cli.console.print(
        f"saved {info.path} ({_mb(info.size_bytes)}, RDB version {info.rdb_version}) "
        f"in {info.seconds:.2f} s"
    )
