"""Child process of tests/test_crash.py: a writer that the test SIGKILLs at a random moment.

Usage: ``crash_writer.py DIR MODE`` (MODE: ``uow``, ``autocommit`` or ``ack-early``).

The child imports what it needs, then waits for a line on stdin (so the test can start the next
child while it checks the previous one: the import cost overlaps). It then opens
``DIR/data/prod.db`` through our engine (profile prod: ``synchronous=FULL``), creates
``crash_log`` if needed, prints ``ready <first txn id>`` (= max(txn) + 1) and writes 50-row
transactions until it is killed.

The acknowledgement log is stdout (a pipe): a transaction id is written with one ``os.write``
(atomic on a pipe), and in mode ``uow`` only after ``UnitOfWork.commit()`` returned.

* ``uow``: the real thing, one write unit of work (BEGIN IMMEDIATE ... COMMIT) per 50 rows.
* ``autocommit`` (sensitivity arm): no transaction, every INSERT commits on its own; the id is
  acknowledged after its 50 rows. A kill between rows must leave a partial transaction.
* ``ack-early`` (sensitivity arm): unit of work as in ``uow``, but the id is acknowledged at the
  start of the transaction, followed by 5 ms of "work" (a use case that notifies before it
  commits). A kill before COMMIT reaches the WAL must leave an acknowledged transaction missing;
  without the work the window would be only the 50 INSERTs, and a kill more often lands in the
  commit's fsync, when the transaction is already in the WAL and survives a process crash.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from autoforge_data.db.engine import Database
from autoforge_data.db.uow import UnitOfWork
from autoforge_data.settings import Settings

ROWS_PER_TXN = 50
EARLY_ACK_WORK_S = 0.005  # ack-early: work between the acknowledgement and COMMIT
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS crash_log ("
    "txn INTEGER NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL, "
    "PRIMARY KEY (txn, seq)) WITHOUT ROWID"  # half the size of a rowid table: faster checks
)
INSERT = "INSERT INTO crash_log (txn, seq, payload) VALUES (?, ?, ?)"


def open_db(base: Path) -> Database:
    """The database exactly as the app opens it in production (profile prod, no overrides)."""
    return Database(Settings.load("prod", base_dir=base, data_dir=base / "data"))


def ack(line: str) -> None:
    """One line to the acknowledgement pipe, in one write(2) call."""
    os.write(1, (line + "\n").encode())


def payload(txn: int, seq: int) -> str:
    """A row's payload, derived from its keys (so a torn row would be visible)."""
    return f"t{txn}s{seq}"


def main() -> None:
    """Wait for the go line, then write transactions forever (until SIGKILL)."""
    base, mode = Path(sys.argv[1]), sys.argv[2]
    if not sys.stdin.readline():
        return  # the test went away without starting us
    db = open_db(base)
    with UnitOfWork(db, write=True) as uow:
        uow.execute(SCHEMA)
        txn = int(uow.fetchone("SELECT coalesce(max(txn), 0) + 1 FROM crash_log")[0])
        uow.commit()
    ack(f"ready {txn}")
    while True:
        if mode == "autocommit":
            with db.writes.connection() as conn:  # autocommit: each INSERT is its own transaction
                for seq in range(ROWS_PER_TXN):
                    conn.execute(INSERT, (txn, seq, payload(txn, seq)))
            ack(str(txn))
        else:
            with UnitOfWork(db, write=True) as uow:
                if mode == "ack-early":
                    ack(str(txn))
                    time.sleep(EARLY_ACK_WORK_S)  # the rest of the use case, after the early ack
                for seq in range(ROWS_PER_TXN):
                    uow.execute(INSERT, (txn, seq, payload(txn, seq)))
                uow.commit()
            if mode == "uow":
                ack(str(txn))
        txn += 1


if __name__ == "__main__":
    main()
