"""Through a real PgBouncer: transaction pooling is refused before anything is locked or applied, with
the fix; session pooling works, ten deployers at once included."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from tests.commands import INV, ROOT, cli_env, inv_here
from tests.conftest import write_migration
from tests.pgbouncer import pgbouncer

ID = "20250101000000_create_accounts"


def env(url: DatabaseUrl, folder: Path) -> dict[str, str]:
    return cli_env(url, ENVIRONMENT="development", INVOKE_PGSHIFT_MIGRATIONS_DIR=str(folder),
                   INVOKE_PGSHIFT_LOCK_WAIT="120")


@pytest.mark.parametrize("stats_user", [True, False], ids=["mode-read", "mode-hidden"])
@pytest.mark.slow  # a second or more: left out of the fast tier
def test_transaction_pooling_is_refused_in_one_line_and_nothing_is_applied(
        db_url: DatabaseUrl, migrations_dir: Path, stats_user: bool) -> None:
    write_migration(migrations_dir, ID, "create table accounts (id int);")
    with pgbouncer(db_url, "transaction", stats_user=stats_user) as pooled:
        done = inv_here("dev.migrate", env=env(pooled, migrations_dir))
        status = inv_here("status", "--no-drift", env=env(pooled, migrations_dir))  # reading needs no session
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "through PgBouncer at 127.0.0.1:" in line and "session-pooled" in line
    assert ("in transaction pooling" in line) is stats_user
    assert status.returncode == 3 and ID in status.stdout
    with Database.connect(db_url) as db:
        assert not db.has_relation("public.accounts") and not db.has_relation("pgshift.migrations")
        held = db.one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = "
                      "(SELECT oid FROM pg_database WHERE datname = current_database())")
    assert held == (0,)  # no lock stranded on a pooled session


@pytest.mark.process
@pytest.mark.slow
def test_ten_deployers_through_session_pooling_apply_each_migration_once(
        db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20250101000000_log", "CREATE TABLE applied_log (id text NOT NULL);")
    for n in range(1, 9):
        ident = f"202501020000{n:02d}_step_{n}"
        write_migration(migrations_dir, ident, f"INSERT INTO applied_log VALUES ('{ident}');\n"
                                               f"CREATE TABLE step_{n} (id int);\n"
                                               f"create index concurrently step_{n}_id on step_{n} (id);")
    with pgbouncer(db_url, "session") as pooled:
        procs = [subprocess.Popen([INV, "dev.migrate"], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=env(pooled, migrations_dir)) for _ in range(10)]
        results = [(p.wait(timeout=240), p.stderr.read() if p.stderr else "") for p in procs]
    assert [code for code, _ in results] == [0] * 10, results
    with Database.connect(db_url) as db:
        counts = db.rows("SELECT id, count(*) FROM applied_log GROUP BY id ORDER BY id")
        recorded = db.one("SELECT count(*) FROM pgshift.migrations WHERE state = 'applied'")
    assert len(counts) == 8 and all(n == 1 for _, n in counts), counts
    assert recorded == (9,)
