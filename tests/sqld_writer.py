"""Child process of tests/test_sqld_replication.py: writes to a sqld through our Hrana driver.

Usage: ``sqld_writer.py URL MODE`` (MODE ``ack`` or ``ack-early``). Writes 5-row transactions
(BEGIN + 5 INSERTs + COMMIT: one HTTP request) into ``load_log`` and writes ``<txn>`` to stdout
only after ``commit()`` returned (``ack-early``, the sensitivity arm: before sending the commit).
When the server is down a commit fails; the writer then moves on to the next transaction id (the
failed one may or may not have committed: it is never acknowledged) and retries every 20 ms.
"""

from __future__ import annotations

import os
import sys
import time

from autoforge_data.db import hrana

ROWS = 5


def main() -> None:
    """Write until killed."""
    url, mode = sys.argv[1], sys.argv[2]
    conn = hrana.connect(url, timeout=2.0, connect_timeout=0.5)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS load_log (txn INTEGER NOT NULL, seq INTEGER NOT NULL, "
        "PRIMARY KEY (txn, seq))"
    )
    conn.commit()
    txn = int(conn.execute("SELECT coalesce(max(txn), 0) + 1 FROM load_log").fetchone()[0])
    os.write(1, b"ready\n")
    while True:
        try:
            for seq in range(ROWS):
                conn.execute("INSERT INTO load_log (txn, seq) VALUES (?, ?)", (txn, seq))
            if mode == "ack-early":
                os.write(1, f"{txn}\n".encode())
            conn.commit()
            if mode == "ack":
                os.write(1, f"{txn}\n".encode())
        except hrana.Error:
            conn.rollback()
            time.sleep(0.02)
        txn += 1


if __name__ == "__main__":
    main()
