"""Child process of the Litestream drill: writes transactions until SIGKILLed, with an ack log.

Usage: ``litestream_writer.py DIR [PAUSE_S]``. Like ``crash_writer.py``: it imports, waits for a
line on stdin, opens ``DIR/data/prod.db`` through our engine (profile prod: WAL,
``synchronous=FULL``), prints ``ready <first txn>`` and then writes 10-row transactions, pausing
``PAUSE_S`` (default 0.004 s) between them. After ``UnitOfWork.commit()`` returned it writes
``<txn> <unix time>`` to stdout in one ``os.write`` (the acknowledgement log, with the time the
commit was acknowledged, which the drill compares with the time Litestream was killed).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.settings import Settings

ROWS = 10
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS drill_log (txn INTEGER NOT NULL, seq INTEGER NOT NULL, "
    "payload TEXT NOT NULL, PRIMARY KEY (txn, seq)) WITHOUT ROWID"
)
INSERT = "INSERT INTO drill_log (txn, seq, payload) VALUES (?, ?, ?)"


def open_db(base: Path) -> Database:
    """The database as the app opens it in production (profile prod)."""
    return Database(Settings.load("prod", base_dir=base, data_dir=base / "data"))


def main() -> None:
    """Wait for the go line, then write and acknowledge transactions until killed."""
    base = Path(sys.argv[1])
    pause = float(sys.argv[2]) if len(sys.argv) > 2 else 0.004
    if not sys.stdin.readline():
        return
    db = open_db(base)
    checkpoint = os.environ.get("DRILL_WAL_AUTOCHECKPOINT")
    if checkpoint is not None:  # the pool is LIFO: one thread writes through this connection
        with db.writes.connection() as conn:
            conn.execute(f"PRAGMA wal_autocheckpoint = {int(checkpoint)}")
    with UnitOfWork(db, write=True) as uow:
        uow.execute(SCHEMA)
        txn = int(uow.fetchone("SELECT coalesce(max(txn), 0) + 1 FROM drill_log")[0])
        uow.commit()
    os.write(1, f"ready {txn}\n".encode())
    while True:
        with UnitOfWork(db, write=True) as uow:
            for seq in range(ROWS):
                uow.execute(INSERT, (txn, seq, f"t{txn}s{seq}" * 8))
            uow.commit()
        os.write(1, f"{txn} {time.time():.6f}\n".encode())
        txn += 1
        time.sleep(pause)


if __name__ == "__main__":
    main()
