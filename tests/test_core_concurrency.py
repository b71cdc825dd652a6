"""Two and ten processes migrating one database at once: each migration applied exactly once."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.migrations.lock import LOCK_NAMESPACE
from tests.conftest import INV, ROOT, cli_env, write_migration


def write_counted_set(folder: Path, count: int) -> None:
    write_migration(folder, "20250101000000_log", "CREATE TABLE applied_log (id text NOT NULL);")
    for n in range(1, count + 1):
        ident = f"202501020000{n:02d}_step_{n}"
        write_migration(folder, ident, f"INSERT INTO applied_log VALUES ('{ident}');\nSELECT pg_sleep(0.02);\n"
                                       f"CREATE TABLE step_{n} (id int);")


def start(url: DatabaseUrl, folder: Path, lock_wait: str) -> subprocess.Popen[str]:
    return subprocess.Popen([INV, "dev.migrate"], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env=cli_env(url, ENVIRONMENT="development", INVOKE_PGSHIFT_LOCK_WAIT=lock_wait,
                                        INVOKE_PGSHIFT_MIGRATIONS_DIR=str(folder)))


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 10])
def test_parallel_runs_apply_each_migration_once(
        db_url: DatabaseUrl, migrations_dir: Path, processes: int) -> None:
    write_counted_set(migrations_dir, 12)
    procs = [start(db_url, migrations_dir, lock_wait="120") for _ in range(processes)]
    results = [(p.wait(timeout=180), p.stderr.read() if p.stderr else "") for p in procs]
    assert [code for code, _ in results] == [0] * processes, results
    with Database.connect(db_url) as db:
        counts = db.rows("SELECT id, count(*) FROM applied_log GROUP BY id ORDER BY id")
        recorded = db.one("SELECT count(*) FROM pgshift.migrations WHERE state = 'applied'")
    assert len(counts) == 12 and all(n == 1 for _, n in counts), counts
    assert recorded == (13,)


@pytest.mark.slow
def test_a_waiting_process_gives_up_naming_the_holder(db_url: DatabaseUrl, migrations_dir: Path) -> None:
    # The first migration waits for a lock the test holds, so it holds the migration lock as long as needed.
    write_migration(migrations_dir, "20250101000000_slow",
                    "SELECT pg_advisory_xact_lock(4242, 1);\nCREATE TABLE slow (id int);")
    gate = Database.connect(db_url)
    gate.execute("SELECT pg_advisory_lock(4242, 1)")
    first = start(db_url, migrations_dir, lock_wait="60")
    ours = ("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
    with Database.connect(db_url) as db:
        for _ in range(200):  # wait until the first process holds the lock
            if db.one(ours, [LOCK_NAMESPACE]) is not None:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        holder = db.one(ours, [LOCK_NAMESPACE])
    assert holder is not None
    second = start(db_url, migrations_dir, lock_wait="0.5")
    _out, err = second.communicate(timeout=60)
    assert second.returncode == 1
    assert f"another migration holds the lock: pid {holder[0]} (pgshift " in err
    assert err.count("\n") == 1  # one line, no traceback
    gate.close()  # the first migration goes on
    assert first.wait(timeout=60) == 0
