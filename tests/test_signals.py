"""Signals and kills of a migrating process, as the server sees them.

SIGTERM ends ``dev.migrate`` like Ctrl-C: the running statement is cancelled and rolled back, exit 130
with one line. ``kill -9`` leaves a server session behind only until the server notices the client is
gone (every session asks it to check): then it ends, and nothing commits after the tool died. A
session the server has not ended, holding the migration lock for a client of ours that no longer
runs, is ended by the next run, which says so.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from pgshift.databases.db import Database, application_name
from pgshift.dburl import DatabaseUrl
from pgshift.migrations import history, lock
from tests.commands import INV, ROOT, cli_env, inv_here
from tests.conftest import write_migration

FIRST, SLOW, LATER = "20250101000000_first", "20250102000000_slow", "20250103000000_later"


def write_slow_set(folder: Path) -> None:
    write_migration(folder, FIRST, "CREATE TABLE first_t (id int);\n")
    write_migration(folder, SLOW, "SELECT pg_sleep(60);\nCREATE TABLE slept (id int);\n")
    write_migration(folder, LATER, "CREATE TABLE later (id int);\n")


def start_migrate(url: DatabaseUrl, folder: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([INV, "dev.migrate"], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=cli_env(url, ENVIRONMENT="development", INVOKE_PGSHIFT_MIGRATIONS_DIR=str(folder)))


def sessions_of(db: Database, pid: int) -> list[tuple[int, str | None]]:
    """The server sessions the process ``pid`` opened, and what each waits on."""
    return [(int(p), w) for p, w in db.rows(
        "SELECT pid, wait_event FROM pg_stat_activity WHERE application_name = %s", [application_name(pid)])]


def wait_sleeping(db: Database, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not any(w == "PgSleep" for _p, w in sessions_of(db, process.pid)):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the migration never reached its pg_sleep"
        time.sleep(0.02)


def relation(db: Database, name: str) -> bool:
    return db.one("SELECT to_regclass(%s) IS NOT NULL", [name]) == (True,)


def test_every_session_asks_the_server_to_watch_its_client(server: DatabaseUrl) -> None:
    with Database.connect(server) as db:
        assert db.one("SHOW client_connection_check_interval") == ("1s",)


@pytest.mark.process
def test_sigterm_mid_statement_rolls_back_and_exits_130(db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_slow_set(migrations_dir)
    with Database.connect(db_url) as db:
        process = start_migrate(db_url, migrations_dir)
        try:
            wait_sleeping(db, process)
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=30)
        finally:
            process.kill()
        assert process.returncode == 130 and stderr == "aborted\n", stdout + stderr
        assert sessions_of(db, process.pid) == []
        records = history.records(db)
        assert records[FIRST].state == "applied" and SLOW not in records and LATER not in records
        assert relation(db, "first_t") and not relation(db, "slept") and not relation(db, "later")
        assert lock.is_free(db)


@pytest.mark.process
def test_kill_9_mid_statement_ends_the_server_session_and_commits_nothing(
        db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, SLOW, "SELECT pg_sleep(60);\nCREATE TABLE slept (id int);\n")
    write_migration(migrations_dir, LATER, "CREATE TABLE later (id int);\n")
    with Database.connect(db_url) as db:
        process = start_migrate(db_url, migrations_dir)
        try:
            wait_sleeping(db, process)
        finally:
            process.kill()
        process.communicate(timeout=30)
        # Without the server's check the session sleeps its 60 s, then commits both migrations.
        deadline = time.monotonic() + 15
        while sessions_of(db, process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sessions_of(db, process.pid) == [], "the killed tool's session is still running on the server"
        assert lock.is_free(db)
        assert not relation(db, "slept") and not relation(db, "later")
        assert not relation(db, "pgshift.migrations") or history.records(db) == {}


def hold_lock_as(url: DatabaseUrl, client_pid: int) -> Database:
    """A session holding the migration lock that calls itself a session of pgshift pid ``client_pid``."""
    holder = Database.connect(url)
    holder.execute("SELECT set_config('application_name', %s, false)", [application_name(client_pid)])
    holder.execute("SELECT pg_advisory_lock(%s, %s)", [lock.LOCK_NAMESPACE, lock.LOCK_ID])
    return holder


def dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_a_lock_held_for_a_dead_client_of_ours_is_taken_back(db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, FIRST, "CREATE TABLE first_t (id int);\n")
    gone = dead_pid()
    holder = hold_lock_as(db_url, gone)
    try:
        done = inv_here("dev.migrate", env=cli_env(db_url, ENVIRONMENT="development", INVOKE_PGSHIFT_LOCK_WAIT="5",
                                                   INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir)))
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"held by server session {holder.pid}, whose client (pgshift pid {gone} on this machine) is gone: " \
               "ended that session" in done.stdout, done.stdout
        with Database.connect(db_url) as db:
            assert history.records(db)[FIRST].state == "applied"
            assert db.one("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [holder.pid]) == (0,)
    finally:
        holder.conn.close()


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_lock_held_for_a_live_client_is_waited_for_not_taken(db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, FIRST, "CREATE TABLE first_t (id int);\n")
    with subprocess.Popen(["sleep", "60"]) as alive:
        holder = hold_lock_as(db_url, alive.pid)
        try:
            done = inv_here("dev.migrate", env=cli_env(db_url, ENVIRONMENT="development",
                                                       INVOKE_PGSHIFT_LOCK_WAIT="1",
                                                       INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir)))
            assert done.returncode != 0 and "another migration holds the lock" in done.stderr, done.stderr
            assert "ended that session" not in done.stdout + done.stderr
            assert holder.one("SELECT 1") == (1,)  # still there
        finally:
            holder.conn.close()
            alive.kill()


def test_a_task_without_progress_still_says_it_ended_an_orphan(db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, FIRST, "CREATE TABLE first_t (id int);\n")
    env = cli_env(db_url, ENVIRONMENT="development", INVOKE_PGSHIFT_LOCK_WAIT="5",
                  INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    assert inv_here("dev.migrate", env=env).returncode == 0
    gone = dead_pid()
    holder = hold_lock_as(db_url, gone)
    try:
        done = inv_here("dev.mark", FIRST, "--reverted", "--reason", "undone by hand", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"note: the migration lock is held by server session {holder.pid}, whose client (pgshift pid " \
               f"{gone} on this machine) is gone: ended that session" in done.stderr, done.stderr
    finally:
        holder.conn.close()


def scratch_of(db: Database, pid: int) -> list[str]:
    """The throwaway databases the process ``pid`` made."""
    return [str(n) for (n,) in db.rows("SELECT datname FROM pg_database WHERE datname ~ %s",
                                       [f"^pgshift_[a-z]+_[0-9a-f]{{6}}_{pid}_"])]


@pytest.mark.process
def test_sigterm_to_test_performance_drops_its_scratch_database(db_url: DatabaseUrl, server: DatabaseUrl,
                                                                migrations_dir: Path) -> None:
    write_migration(migrations_dir, FIRST, "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);\n")
    write_migration(migrations_dir, SLOW, "ALTER TABLE items ADD COLUMN note text;\n")
    env = cli_env(db_url, ENVIRONMENT="development", INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    assert inv_here("dev.migrate", "--to", FIRST, env=env).returncode == 0
    with Database.connect(server) as admin:
        process = subprocess.Popen([INV, "test.performance", "--rows", "50000000"], cwd=ROOT, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not any(w is None or w != "ClientRead" for _p, w in sessions_of(admin, process.pid)) \
                    or not scratch_of(admin, process.pid):
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "test.performance never started filling its scratch database"
                time.sleep(0.05)
            time.sleep(0.5)  # well into the fill
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
        assert process.returncode == 130 and stderr.endswith("aborted\n"), stdout + stderr
        assert scratch_of(admin, process.pid) == []
        assert sessions_of(admin, process.pid) == []
