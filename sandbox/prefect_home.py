"""Fresh Prefect homes whose database is already migrated, for the tests and the benchmarks.

They start dozens of Prefect servers, each on a new home. On a new SQLite file the server first
runs Prefect's migrations and registers its block types: 16 CPU s a start on a 2-core machine,
against 8 on a migrated file. A home made here holds a copy of a database that one ephemeral
server migrated: the state of a server that has started once, as a user's is on day 2.
(`make prefect`'s own tests and the demo still start on new homes, as a user's first day does.)
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

CACHE = Path(tempfile.gettempdir()) / "langfuse-tlm-evals-prefect"
DB = "prefect.db"  # the file Prefect's default database URL names in PREFECT_HOME


def template() -> Path:
    """A migrated Prefect database, built once per Prefect version (and machine) by whichever
    process asks first; the others wait for it."""
    from prefect import __version__

    final = CACHE / f"prefect-{__version__}.db"
    if final.exists():
        return final
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # test workers start together: one builds
        if not final.exists():
            _build(final)
    return final


def _build(final: Path) -> None:
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env |= {
            "PREFECT_HOME": tmp,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # a busy 2-core machine
        }
        code = (
            "from prefect.client.orchestration import get_client\n"
            "with get_client(sync_client=True) as c:\n"
            "    c.hello()\n"  # starts the ephemeral server: migrations, block types
        )
        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
        db = Path(tmp) / DB
        with sqlite3.connect(db) as conn:  # one self-contained file (Prefect turns WAL back on)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode=DELETE")
        conn.close()
        part = final.with_suffix(".part")
        shutil.copyfile(db, part)
        part.rename(final)


def copy_database(to: Path) -> Path:
    """The migrated database copied to the file ``to``."""
    to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template(), to)
    return to


def fresh_home(home: Path) -> Path:
    """``home`` as a Prefect home with a migrated database (made if missing); a database
    already there is left as it is."""
    if not (home / DB).exists():
        copy_database(home / DB)
    return home
