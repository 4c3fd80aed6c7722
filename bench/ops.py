"""Operations benchmark: backup, restore, verify, branch, replication lag, Litestream drill.

Every measurement has a baseline from the same run:

* backup MB/s: ``ops.backup.create_backup`` vs the raw engine backup (stdlib sqlite3
  ``Connection.backup`` of the same file into a new file); target ≥ 0.8× the raw rate;
* restore MB/s: ``ops.backup_restore.restore_backup`` vs the raw engine copying the backup's
  database back into a new live file; target ≥ 0.8×;
* verify seconds (``verify_backup``: a full restore drill with integrity check, counts, searches);
* branch creation seconds (``create_branch``, embedded) vs the raw engine backup;
* replication lag p50/p99: a sqld read replica (write on the primary, poll the replica), an
  embedded replica with its default 1 s background sync, and Litestream to a file:// replica
  (commit → the LTX file holding it is in the replica);
* the Litestream drill with the app's WAL auto-checkpoint on (SQLite's default, 1000 pages) and
  off (0): restores that fail the libSQL integrity check, per configuration.

The database is ~150 MB of prompts (with versions and the FTS index), built once into
``bench/.cache/ops/source.db`` and copied for each run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.domain import utcnow
from autoforge_data.ids import new_id
from autoforge_data.settings import Settings
from common import ROOT, write_results

CACHE = ROOT / "bench" / ".cache" / "ops"
STALL_S = 10.0
PROMPTS = 16_000  # ~150 MB with versions and the FTS index
VOCABULARY = (
    "summarise classify extract translate rewrite evaluate compare explain list outline draft "
    "customer ticket invoice contract policy report email review changelog incident release "
    "tone neutral formal concise friendly bullet paragraph table json schema field value step "
    "context example constraint format length audience product support security billing "
    "latency error retry timeout region cluster replica backup restore branch schema index"
)


def build_source(n: int = PROMPTS) -> Path:
    """The cached source database (built once: ~150 MB of prompts, versions and FTS)."""
    path = CACHE / "source.db"
    if path.exists():
        return path
    work = CACHE / "build"
    shutil.rmtree(work, ignore_errors=True)
    settings = Settings.load("dev", base_dir=work, data_dir=work)
    with Database(settings) as db:
        migrate.upgrade(db)
    rng = random.Random(7)
    words = VOCABULARY.split()
    raw = sqlite3.connect(str(settings.target.path), isolation_level=None)
    raw.execute("PRAGMA foreign_keys = ON")
    owners = [new_id() for _ in range(50)]
    now = utcnow()
    raw.execute("BEGIN")
    raw.executemany(
        "INSERT INTO users (id, email, username, metadata, created_at, updated_at) "
        "VALUES (?,?,?,?,?,?)",
        [(o, f"user{i}@example.com", f"user{i}", "{}", now, now) for i, o in enumerate(owners)],
    )
    for start in range(0, n, 2000):
        batch = []
        for i in range(start, min(n, start + 2000)):
            text = " ".join(rng.choice(words) for _ in range(rng.randint(150, 350)))
            batch.append((new_id(), rng.choice(owners), f"prompt {i}", text, now))
        raw.executemany(
            "INSERT INTO prompts (id, owner_id, title, content, status, current_version, "
            "metadata, created_at, updated_at) VALUES (?,?,?,?,'active',1,'{}',?,?)",
            [(p, o, t, c, ts, ts) for p, o, t, c, ts in batch],
        )
        raw.executemany(
            "INSERT INTO prompt_versions (prompt_id, version, title, content, created_at) "
            "VALUES (?,1,?,?,?)",
            [(p, t, c, ts) for p, _o, t, c, ts in batch],
        )
    raw.execute("COMMIT")
    raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw.close()
    assert settings.target.path is not None
    os.replace(settings.target.path, path)
    shutil.rmtree(work, ignore_errors=True)
    return path


def mb(path: Path) -> float:
    """File size in MB (10^6 bytes)."""
    return path.stat().st_size / 1e6


def raw_backup(src: Path, dst: Path) -> float:
    """Seconds for stdlib sqlite3's online backup of ``src`` into a new file ``dst``."""
    t0 = time.perf_counter()
    s = sqlite3.connect(str(src))
    d = sqlite3.connect(str(dst))
    s.backup(d)
    d.close()
    s.close()
    return time.perf_counter() - t0


def best(fn: Callable[[int], float], repeat: int) -> float:
    """The fastest of ``repeat`` runs (seconds); these machines are shared and noisy."""
    return min(fn(i) for i in range(repeat))


def backup_rows(tmp: Path, source: Path, repeat: int) -> list[dict[str, Any]]:
    """Backup, verify, restore and branch against the raw engine in the same run."""
    from autoforge_data.ops.backup import BackupOptions, create_backup
    from autoforge_data.ops.backup_restore import RestoreOptions, restore_backup
    from autoforge_data.ops.backup_verify import VerifyOptions, verify_backup
    from autoforge_data.ops.branch import BranchOptions, create_branch

    data = tmp / "data"
    data.mkdir(mode=0o700, parents=True)
    live = data / "dev.db"
    shutil.copyfile(source, live)
    size = mb(live)
    settings = Settings.load("dev", base_dir=tmp, data_dir=data)
    url = f"file://{tmp / 'backups'}"

    raw_b = best(lambda i: raw_backup(live, tmp / f"raw{i}.db"), repeat)

    snapshot_s: list[float] = []

    def ours_backup(i: int) -> float:
        with Database(settings) as db:
            info = create_backup(db, BackupOptions(name=f"b{i}", url=url))
        snapshot_s.append(info.snapshot_seconds)
        return info.seconds

    our_b = best(ours_backup, repeat)
    raw_r = best(lambda i: raw_backup(tmp / "raw0.db", tmp / f"rawr{i}.db"), repeat)

    def ours_restore(i: int) -> float:
        return restore_backup(settings, RestoreOptions(name="b0", url=url, yes=True)).seconds

    our_r = best(ours_restore, repeat)
    t0 = time.perf_counter()
    report = verify_backup(settings, VerifyOptions(name="b0", url=url))
    verify_s = time.perf_counter() - t0

    def ours_branch(i: int) -> float:
        t = time.perf_counter()
        create_branch(settings, BranchOptions(name=f"br{i}", backend="embedded"))
        return time.perf_counter() - t

    branch_s = best(ours_branch, repeat)
    snap = min(snapshot_s)
    return [
        _ratio_row(
            "backup", size, our_b, raw_b,
            f"create_backup (zstd 1, HMAC manifest); its snapshot step alone "
            f"{size / snap:.1f} MB/s ({raw_b / snap:.2f}× raw)",
        ),
        _ratio_row("restore", size, our_r, raw_r, "restore_backup (validate, swap, keep old)"),
        {
            "what": "verify",
            "db_mb": round(size, 1),
            "seconds": round(verify_s, 2),
            "ok": report.ok,
            "note": "restore drill: integrity (libSQL), counts, vector + keyword search",
        },
        {
            "what": "branch",
            "db_mb": round(size, 1),
            "seconds": round(branch_s, 2),
            "raw_seconds": round(raw_b, 2),
            "ratio": round(raw_b / branch_s, 3),
            "note": "create_branch embedded (snapshot + libSQL check + record) vs raw backup",
        },
    ]


def _ratio_row(what: str, size: float, ours: float, raw: float, note: str) -> dict[str, Any]:
    ratio = raw / ours
    return {
        "what": what,
        "db_mb": round(size, 1),
        "ours_mb_s": round(size / ours, 1),
        "raw_mb_s": round(size / raw, 1),
        "ratio": round(ratio, 3),
        "target": ">= 0.8x raw",
        "ok": ratio >= 0.8,
        "note": note,
    }


def _lag_row(what: str, samples: list[float], note: str) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "what": what,
        "samples": len(samples),
        "p50_ms": round(statistics.median(samples) * 1000, 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "note": note,
    }


def lag_rows(tmp: Path, sqld_samples: int, replica_samples: int) -> list[dict[str, Any]]:
    """sqld read replica and embedded replica lag against a real sqld primary."""
    from autoforge_data.db import hrana
    from autoforge_data.ops.replication import measure_sqld_lag
    from servers import start_sqld

    primary = start_sqld(tmp, name="primary")
    replica = start_sqld(tmp, primary=primary, name="replica")
    try:
        def conn(url: str) -> Callable[[], Any]:
            return lambda: hrana.connect(url, timeout=5.0)

        stats = measure_sqld_lag(
            conn(primary.url), conn(replica.url), table="bench_lag", samples=sqld_samples
        )
        rows = [_lag_row("sqld read replica", stats.samples,
                         "commit on the primary → visible through the replica's HTTP API")]
        rows.append(_embedded_replica_lag(tmp, primary.url, replica_samples))
    finally:
        replica.stop()
        primary.stop()
    return rows


def _embedded_replica_lag(tmp: Path, url: str, samples: int) -> dict[str, Any]:
    from autoforge_data.db import hrana
    from autoforge_data.db.uow import UnitOfWork

    settings = Settings.load(
        "dev", base_dir=tmp, database_url=str(tmp / "emb" / "replica.db"), sync_url=url,
        sync_interval=1.0,
    )
    writer = hrana.connect(url, timeout=5.0)
    writer.execute("CREATE TABLE IF NOT EXISTS bench_emb (id TEXT PRIMARY KEY)")
    writer.commit()
    out = []
    with Database(settings) as db:
        db.replica.sync()
        for _ in range(samples):
            key = new_id()
            writer.execute("INSERT INTO bench_emb (id) VALUES (?)", (key,))
            writer.commit()
            t0 = time.perf_counter()
            while True:
                with UnitOfWork(db) as uow:
                    if uow.fetchone("SELECT 1 FROM bench_emb WHERE id = ?", (key,)):
                        break
                time.sleep(0.005)
            out.append(time.perf_counter() - t0)
            time.sleep(random.uniform(0, 1.1))  # a random phase against the 1 s sync loop
    writer.close()
    return _lag_row("embedded replica (sync every 1 s)", out,
                    "commit on the primary (another client) → read from the local file")


def litestream_lag(tmp: Path, samples: int) -> dict[str, Any]:
    """Commit → the replica (file://, sync 1 s) holds an LTX file with that transaction."""
    from autoforge_data.ops import litestream
    from autoforge_data.ops.replication import litestream_status

    data = tmp / "ls"
    replica_url = f"file://{tmp / 'ls-replica'}"
    settings = Settings.load("prod", base_dir=tmp, data_dir=data, replicate_url=replica_url)
    with Database(settings) as db:
        migrate.upgrade(db)
    plan = litestream.plan_replication(settings, replica_url, 1.0)
    litestream.write_config(plan, settings)
    with open(plan.log_path, "ab") as log:
        proc = __import__("subprocess").Popen(
            litestream.replicate_argv(plan), stdout=log, stderr=log,
            env=litestream.child_env(settings),
        )
    out: list[float] = []
    stalls = 0
    try:
        raw = sqlite3.connect(str(plan.db_path), isolation_level=None)
        raw.execute("CREATE TABLE IF NOT EXISTS bench_ls (id INTEGER PRIMARY KEY, v TEXT)")
        time.sleep(2)
        for i in range(samples):
            before = litestream_status(settings)["replica_txid"] or 0
            raw.execute("INSERT INTO bench_ls (v) VALUES (?)", (f"row {i}",))
            t0 = time.perf_counter()
            while (litestream_status(settings)["replica_txid"] or 0) <= before:
                if time.perf_counter() - t0 > STALL_S:
                    stalls += 1
                    break
                time.sleep(0.01)
            else:
                out.append(time.perf_counter() - t0)
            time.sleep(random.uniform(0, 1.1))  # a random phase against monitor + sync loops
        raw.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    row = _lag_row("Litestream file:// (sync 1 s)", out,
                   "commit → an LTX file with it in the replica (monitor 1 s + sync 1 s)")
    row["stalls"] = stalls
    row["note"] += f"; {stalls} of {samples} commits not shipped within {STALL_S:g} s"
    return row


def drill_rows(tmp: Path, rounds: int) -> list[dict[str, Any]]:
    """The Litestream drill with the app's auto-checkpoint at 1000 pages and at 0."""
    sys.path.insert(0, str(ROOT / "tests"))
    import test_litestream_drill as drill_mod
    from autoforge_data.errors import Corrupt
    from autoforge_data.ops import litestream

    rows = []
    for checkpoint in ("1000", "0"):
        base = tmp / f"drill{checkpoint}"
        base.mkdir()
        drill_mod.APP_WAL_AUTOCHECKPOINT = checkpoint
        from litestream_writer import open_db

        db = open_db(base)
        migrate.upgrade(db)
        db.close()
        settings = Settings.load("prod", base_dir=base, data_dir=base / "data")
        plan = litestream.plan_replication(settings, f"file://{base / 'replica'}", 1.0)
        litestream.write_config(plan, settings)
        (base / "restores").mkdir()
        d = drill_mod.Drill(
            base, settings, plan,
            drill_mod.Replicator(plan, litestream.child_env(settings)), drill_mod.Writer(base),
        )
        corrupt, outside, lossy = 0, 0, 0
        rng = random.Random(20261127)
        t0 = time.perf_counter()
        try:
            d.ensure_running()
            for _ in range(rounds):
                try:
                    r = drill_mod.kill_round(d, rng)
                except Corrupt:
                    corrupt += 1
                    continue
                outside += bool(r.outside)
                lossy += bool(r.lost)
        finally:
            d.stop()
        rows.append({
            "what": f"Litestream drill, app wal_autocheckpoint={checkpoint}",
            "rounds": rounds,
            "corrupt_restores": corrupt,
            "rounds_losing_beyond_window": outside,
            "rounds_missing_recent_acks": lossy,
            "seconds": round(time.perf_counter() - t0, 1),
        })
        shutil.rmtree(base, ignore_errors=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown tables of the run."""
    lines = [
        "### Backup, restore, verify, branch (same database, raw engine baseline in the same run)",
        "",
        "| operation | DB MB | ours | raw engine | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for r in rows:
        if "ours_mb_s" in r:
            lines.append(
                f"| {r['what']} | {r['db_mb']} | {r['ours_mb_s']} MB/s | {r['raw_mb_s']} MB/s "
                f"| {r['ratio']}× | {r['target']} | {'yes' if r['ok'] else 'NO'} |"
            )
            notes.append(f"- {r['what']}: {r['note']}")
        elif r["what"] == "verify":
            lines.append(f"| verify | {r['db_mb']} | {r['seconds']} s | — | — | — | "
                         f"{'ok' if r['ok'] else 'FAILED'} |")
        elif r["what"] == "branch":
            lines.append(f"| branch create | {r['db_mb']} | {r['seconds']} s | "
                         f"{r['raw_seconds']} s (raw backup) | {r['ratio']}× | — | — |")
    lines += ["", *notes, "", "### Replication lag", ""]
    lines += ["| path | samples | p50 | p99 | max | what |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "p50_ms" in r:
            lines.append(f"| {r['what']} | {r['samples']} | {r['p50_ms']} ms | {r['p99_ms']} ms "
                         f"| {r['max_ms']} ms | {r['note']} |")
    lines += ["", "### Litestream drill: the app's auto-checkpoint", "",
              "| configuration | rounds | corrupt restores | rounds losing acks beyond the window "
              "| time |", "|---|---|---|---|---|"]
    for r in rows:
        if "corrupt_restores" in r:
            lines.append(f"| {r['what']} | {r['rounds']} | {r['corrupt_restores']} | "
                         f"{r['rounds_losing_beyond_window']} | {r['seconds']} s |")
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and write bench/results/ops.json and ops.md."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3, help="runs per timed operation (best)")
    ap.add_argument("--sqld-samples", type=int, default=200)
    ap.add_argument("--replica-samples", type=int, default=40)
    ap.add_argument("--litestream-samples", type=int, default=20)
    ap.add_argument("--drill-rounds", type=int, default=40)
    ap.add_argument("--skip", nargs="*", default=[], choices=["backup", "lag", "drill"])
    args = ap.parse_args()
    os.environ.setdefault("RUST_LOG", "error")
    rows: list[dict[str, Any]] = []
    source = build_source()
    with tempfile.TemporaryDirectory(dir=CACHE) as d:
        tmp = Path(d)
        if "backup" not in args.skip:
            rows += backup_rows(tmp / "backup", source, args.repeat)
        if "lag" not in args.skip:
            rows += lag_rows(tmp / "lag", args.sqld_samples, args.replica_samples)
            rows.append(litestream_lag(tmp / "lslag", args.litestream_samples))
        if "drill" not in args.skip:
            rows += drill_rows(tmp, args.drill_rounds)
    write_results("ops", rows, table(rows))


if __name__ == "__main__":
    main()
