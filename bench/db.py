"""Database benchmark: our use cases against the raw driver doing the same work, in one run.

Embedded (stdlib sqlite3 on the same file and PRAGMAs):
* get a prompt by id through ``get_prompt`` vs a raw ``execute(...).fetchone()`` (target ≤ 3×);
* list a user's latest 20 through ``list_prompts`` vs the raw query (target ≤ 3×);
* bulk-import 100,000 prompts with their first versions through ``import_prompts`` vs raw
  ``executemany`` in one transaction (target ≥ 0.5× the raw rate).
Remote (a real sqld on loopback):
* the create-prompt use case: HTTP round trips per call (target 1) and ops/s, against the same
  statements sent one per round trip (BEGIN, INSERT, INSERT, COMMIT) with a plain HTTP client.

Writes bench/results/db.json (a list of rows) and bench/results/db.md.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from autoforge_data.db import migrate
from autoforge_data.db.engine import Database
from autoforge_data.domain import utcnow
from autoforge_data.ids import new_id
from autoforge_data.services import prompts as svc
from autoforge_data.settings import Settings
from common import time_per_op, write_results

GET_SQL = (
    "SELECT id, owner_id, title, content, status, current_version, metadata, created_at, "
    "updated_at FROM prompts WHERE id = ?"
)
LIST_SQL = (
    "SELECT id, title, status, current_version, created_at, updated_at FROM prompts "
    "WHERE owner_id = ? AND id < ? ORDER BY id DESC LIMIT ?"
)


def _content(i: int) -> str:
    return (
        f"Prompt {i}: summarise the following support ticket in two sentences, list the "
        f"product areas and the urgency. Keep a neutral tone. Ticket number {i * 7919}."
    )


def embedded(tmp: Path, n_rows: int, n_import: int) -> list[dict[str, Any]]:
    """Point read, list 20 and bulk import against raw sqlite3 on the same file."""
    settings = Settings.load("prod", base_dir=tmp, data_dir=tmp / "data")
    rows: list[dict[str, Any]] = []
    with Database(settings) as db:
        migrate.upgrade(db)
        owner = svc.create_user(db, "bench@example.com", "bench").id
        svc.import_prompts(db, owner, [(f"T{i}", _content(i)) for i in range(n_rows)])
        ids = [p.id for p in svc.list_prompts(db, owner, limit=200).items]
        raw = sqlite3.connect(str(settings.target.path), isolation_level=None)
        raw.execute("PRAGMA synchronous = FULL")

        def raw_get(i: int) -> object:
            return raw.execute(GET_SQL, (ids[i % len(ids)],)).fetchone()

        def our_get(i: int) -> object:
            return svc.get_prompt(db, ids[i % len(ids)])

        def raw_list(i: int) -> object:
            return raw.execute(LIST_SQL, (owner, "~", 21)).fetchall()

        def our_list(i: int) -> object:
            return svc.list_prompts(db, owner, limit=20)

        for path, ours, base, n in (
            ("get_prompt", our_get, raw_get, 20000),
            ("list_latest_20", our_list, raw_list, 5000),
        ):
            time_per_op(base, 1000, 1)  # warm caches
            r = time_per_op(base, n)
            o = time_per_op(ours, n)
            rows.append(_row(path, "embedded", r, o, target="<= 3x raw"))
        raw.close()

    # Bulk import into fresh files: ours vs raw executemany, the same rows.
    items = [(f"T{i}", _content(i)) for i in range(n_import)]
    ours_dir, raw_dir = tmp / "imp_ours", tmp / "imp_raw"
    s2 = Settings.load("prod", base_dir=tmp, data_dir=ours_dir)
    with Database(s2) as db:
        migrate.upgrade(db)
        owner = svc.create_user(db, "bulk@example.com", "bulk").id
        t0 = time.perf_counter()
        svc.import_prompts(db, owner, items)
        ours_s = time.perf_counter() - t0
    s3 = Settings.load("prod", base_dir=tmp, data_dir=raw_dir)
    with Database(s3) as db:
        migrate.upgrade(db)
        owner = svc.create_user(db, "bulk@example.com", "bulk").id
    raw = sqlite3.connect(str(s3.target.path), isolation_level=None)
    raw.execute("PRAGMA synchronous = FULL")
    raw.execute("PRAGMA foreign_keys = ON")
    t0 = time.perf_counter()
    now = utcnow()
    prompts = [(new_id(), owner, t, c, "draft", 1, "{}", now, now) for t, c in items]
    raw.execute("BEGIN IMMEDIATE")
    raw.executemany(
        "INSERT INTO prompts (id, owner_id, title, content, status, current_version, "
        "metadata, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
        prompts,
    )
    raw.executemany(
        "INSERT INTO prompt_versions (prompt_id, version, title, content, created_at) "
        "VALUES (?,?,?,?,?)",
        [(p[0], 1, p[2], p[3], now) for p in prompts],
    )
    raw.execute("COMMIT")
    raw_s = time.perf_counter() - t0
    raw.close()
    rows.append(
        {
            "path": "bulk_import",
            "mode": "embedded",
            "n": n_import,
            "ours_rows_per_s": round(n_import / ours_s),
            "raw_rows_per_s": round(n_import / raw_s),
            "ratio": round(raw_s / ours_s, 3),
            "target": ">= 0.5x raw",
            "ok": raw_s / ours_s >= 0.5,
        }
    )
    return rows


def _row(
    path: str, mode: str, raw: dict[str, float], ours: dict[str, float], target: str
) -> dict[str, Any]:
    ratio = ours["p50_us"] / raw["p50_us"]
    return {
        "path": path,
        "mode": mode,
        "ours_p50_us": round(ours["p50_us"], 2),
        "ours_p99_us": round(ours["p99_us"], 2),
        "raw_p50_us": round(raw["p50_us"], 2),
        "raw_p99_us": round(raw["p99_us"], 2),
        "ratio": round(ratio, 3),
        "target": target,
        "ok": ratio <= 3.0,
    }


def remote(tmp: Path, calls: int) -> list[dict[str, Any]]:
    """Create-prompt over a real sqld: round trips per call and ops/s vs one statement per trip."""
    import httpx

    from servers import start_sqld

    server = start_sqld(tmp)
    try:
        settings = Settings.load("dev", base_dir=tmp, database_url=server.url)
        with Database(settings) as db:
            migrate.upgrade(db)
            owner = svc.create_user(db, "remote@example.com", "remote").id
            conn = db.writes.checkout()
            before = conn.round_trips
            db.writes.checkin(conn)
            t0 = time.perf_counter()
            for i in range(calls):
                svc.create_prompt(db, owner, f"T{i}", _content(i))
            ours_s = time.perf_counter() - t0
            conn = db.writes.checkout()
            trips = (conn.round_trips - before) / calls
            db.writes.checkin(conn)

        def stmt(sql: str, args: list[Any]) -> dict[str, Any]:
            return {"type": "execute", "stmt": {"sql": sql, "args": args}}

        def text(v: str) -> dict[str, str]:
            return {"type": "text", "value": v}

        client = httpx.Client(base_url=server.url, timeout=10)
        t0 = time.perf_counter()
        for i in range(calls):
            pid, now = new_id(), utcnow()
            baton = None
            steps = [
                stmt("BEGIN IMMEDIATE", []),
                stmt(
                    "INSERT INTO prompts (id, owner_id, title, content, status, current_version, "
                    "metadata, created_at, updated_at) VALUES (?,?,?,?,'draft',1,'{}',?,?)",
                    [
                        text(pid),
                        text(owner),
                        text(f"T{i}"),
                        text(_content(i)),
                        text(now),
                        text(now),
                    ],
                ),
                stmt(
                    "INSERT INTO prompt_versions (prompt_id, version, title, content, created_at) "
                    "VALUES (?,1,?,?,?)",
                    [text(pid), text(f"T{i}"), text(_content(i)), text(now)],
                ),
                stmt("COMMIT", []),
            ]
            for n, step in enumerate(steps):
                reqs = [step] + ([{"type": "close"}] if n == len(steps) - 1 else [])
                r = client.post("/v2/pipeline", json={"baton": baton, "requests": reqs})
                body = r.json()
                if body["results"][0]["type"] != "ok":
                    raise RuntimeError(json.dumps(body["results"][0]))
                baton = body["baton"]
        raw_s = time.perf_counter() - t0
        client.close()
    finally:
        server.stop()
    return [
        {
            "path": "create_prompt",
            "mode": "remote",
            "n": calls,
            "round_trips_per_call": round(trips, 3),
            "ours_ops_per_s": round(calls / ours_s, 1),
            "baseline": "one statement per round trip (4 trips)",
            "baseline_ops_per_s": round(calls / raw_s, 1),
            "ratio": round(raw_s / ours_s, 3),
            "target": "1 round trip",
            "ok": trips <= 1.0,
        }
    ]


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table for the README."""
    lines = [
        "| path | mode | ours | baseline (same run) | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "ours_p50_us" in r:
            ours = f"p50 {r['ours_p50_us']} µs, p99 {r['ours_p99_us']} µs"
            base = f"raw driver p50 {r['raw_p50_us']} µs"
            ratio = f"{r['ratio']}× the raw time"
        elif "ours_rows_per_s" in r:
            ours = f"{r['ours_rows_per_s']:,} rows/s"
            base = f"raw executemany {r['raw_rows_per_s']:,} rows/s"
            ratio = f"{r['ratio']}× the raw rate"
        else:
            ours = f"{r['round_trips_per_call']} round trips/call, {r['ours_ops_per_s']} ops/s"
            base = f"{r['baseline']}: {r['baseline_ops_per_s']} ops/s"
            ratio = f"{r['ratio']}× faster"
        lines.append(
            f"| {r['path']} | {r['mode']} | {ours} | {base} | {ratio} | {r['target']} "
            f"| {'yes' if r['ok'] else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and write its results."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000, help="prompts in the read benchmark")
    ap.add_argument("--import-rows", type=int, default=100_000, help="prompts to bulk-import")
    ap.add_argument("--remote-calls", type=int, default=300, help="create-prompt calls on sqld")
    ap.add_argument("--skip-remote", action="store_true", help="embedded only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = embedded(tmp / "emb", args.rows, args.import_rows)
        if not args.skip_remote:
            rows += remote(tmp / "remote", args.remote_calls)
    write_results("db", rows, table(rows))


if __name__ == "__main__":
    main()
