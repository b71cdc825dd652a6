"""Consecutive plain migrations share one message, each still in its own transaction with its record.

A failure inside such a batch leaves what came before it applied, itself failed with its file and
line, and what comes after it pending; a lock timeout retries that one migration alone; a killed
process leaves every migration of the batch either applied with its record or absent without one.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError
from pgshift.migrations import apply, history
from tests.conftest import INV, ROOT, cli_env, write_migration

IDS = [f"2025010{n}000000_m{n}" for n in range(1, 6)]
GATE = 7788


def write_five(folder: Path, third: str) -> None:
    for n, ident in enumerate(IDS, start=1):
        plain = f"CREATE TABLE t{n} (id int);\nINSERT INTO t{n} VALUES ({n});\n"
        write_migration(folder, ident, third if n == 3 else plain)


def states(url: DatabaseUrl) -> dict[str, str]:
    with Database.connect(url) as db:
        return {i: r.state for i, r in history.records(db).items()}


def tables(url: DatabaseUrl) -> set[str]:
    with Database.connect(url) as db:
        return {r[0] for r in db.rows("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def test_plain_migrations_share_a_batch_and_special_ones_go_alone(migrations_dir: Path) -> None:
    write_five(migrations_dir, "CREATE INDEX CONCURRENTLY i ON t1 (id);")
    from pgshift.migrations import source

    pending = [apply.Pending(m, None) for m in source.read(migrations_dir)]
    assert [p.migration.id for p in apply._batch(pending, 0)] == IDS[:2]
    assert [p.migration.id for p in apply._batch(pending, 2)] == IDS[2:3]  # runs outside a transaction
    assert [p.migration.id for p in apply._batch(pending, 3)] == IDS[3:]


@pytest.mark.parametrize(("third", "line", "message"), [
    ("CREATE TABLE t3 (id int);\n-- a comment\nSELECT 1 / 0;\n", 3, "division by zero"),
    ("CREATE TABLE t3 (id int);\n\nCREAT TABLE oops (id int);\n", 3, "syntax error"),
])
def test_a_failure_inside_a_batch_keeps_what_came_before_and_reports_the_file_and_line(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any, third: str, line: int,
        message: str) -> None:
    write_five(migrations_dir, third)
    with pytest.raises(MigrationError) as caught:
        api.migrate(make_settings(db_url))
    where = f"{IDS[2]}.sql, line {line}:" if line else f"{IDS[2]}.sql:"
    assert where in str(caught.value) and message in str(caught.value)
    assert caught.value.applied_before == tuple(IDS[:2])
    assert states(db_url) == {IDS[0]: "applied", IDS[1]: "applied", IDS[2]: "failed"}
    assert tables(db_url) == {"t1", "t2"}  # t3 was rolled back with its migration

    write_migration(migrations_dir, IDS[2], "CREATE TABLE t3 (id int);\n")
    result = api.migrate(make_settings(db_url))
    assert [a.id for a in result.result.applied] == IDS[2:]
    assert set(states(db_url).values()) == {"applied"}
    assert tables(db_url) == {f"t{n}" for n in range(1, 6)}


def test_each_migration_of_a_batch_records_its_own_duration(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_five(migrations_dir, "CREATE TABLE t3 (id int);\nSELECT pg_sleep(0.3);\n")
    result = api.migrate(make_settings(db_url))
    took = {a.id: a.duration_ms for a in result.result.applied}
    assert took[IDS[2]] >= 300
    assert all(took[i] < 300 for i in IDS if i != IDS[2])
    with Database.connect(db_url) as db:
        recorded = dict(db.rows("SELECT id, duration_ms FROM pgshift.migrations"))
    assert recorded == took


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_lock_timeout_inside_a_batch_retries_that_migration_alone(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, "20250100000000_base", "CREATE TABLE base (id int);")
    api.migrate(make_settings(db_url))
    write_five(migrations_dir, "ALTER TABLE base ADD COLUMN v int;\nCREATE TABLE t3 (id int);\n")
    with Database.connect(db_url) as blocker:
        blocker.execute("BEGIN; LOCK TABLE base IN ACCESS SHARE MODE")
        release = threading.Timer(0.8, blocker.execute, ["ROLLBACK"])
        release.start()
        try:
            result = api.migrate(make_settings(db_url, lock_timeout=0.2, lock_retries=5, retry_backoff=0.2))
        finally:
            release.join()
    attempts = {a.id: a.attempts for a in result.result.applied}
    assert list(attempts) == IDS
    assert attempts[IDS[2]] > 1 and all(attempts[i] == 1 for i in IDS if i != IDS[2])
    assert set(states(db_url).values()) == {"applied"}


def test_killed_inside_a_batch_leaves_each_migration_whole_or_absent(
        db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_five(migrations_dir, f"CREATE TABLE t3 (id int);\nSELECT pg_advisory_xact_lock_shared({GATE}, 1);\n"
                               "INSERT INTO t3 VALUES (3);\n")
    env = cli_env(db_url, ENVIRONMENT="development", INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    with Database.connect(db_url) as gate:
        gate.execute(f"SELECT pg_advisory_lock({GATE}, 1)")
        child = subprocess.Popen([INV, "dev.migrate"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not gate.one("SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                           "AND NOT granted"
                     " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())", [GATE])[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the batch never reached the gate"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        gate.execute(f"SELECT pg_advisory_unlock({GATE}, 1)")
        deadline = time.monotonic() + 20
        while gate.one("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND pid <> pg_backend_pid()")[0]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the killed process's session never ended"
            time.sleep(0.02)
        with Database.connect(db_url) as db:
            recorded = {i for i, r in history.records(db).items() if r.state == "applied"}
            present = {f"2025010{n}000000_m{n}" for n in range(1, 6)
                       if db.has_relation(f"t{n}") and db.one(f"SELECT count(*) FROM t{n}") == (1,)}
            absent = {f"2025010{n}000000_m{n}" for n in range(1, 6) if not db.has_relation(f"t{n}")}
        assert recorded == present and present | absent == set(IDS), (recorded, present, absent)
        assert {IDS[0], IDS[1]} <= recorded
    done = subprocess.run([INV, "dev.migrate"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert states(db_url) == dict.fromkeys(IDS, "applied")
