"""Helpers for tests that make a worker fall silent the way a hung process or a vanished machine would."""

import os
import signal
import sqlite3
import time

from core.workspace import db


def freeze(pid: int, settle: float = 0.0) -> None:
    """Pause the process (SIGSTOP), never inside a write of the workspace database: it would hold the lock for
    no one. `settle` gives a call already on its way (say, to a relay) time to land before the check."""
    while True:
        os.kill(pid, signal.SIGSTOP)
        time.sleep(settle)
        con = sqlite3.connect(db.db_path(), timeout=1, isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            con.close()
