"""Concurrent index builds behind older transactions: their own wait budget, cancelled and retried tries,
the blockers named when it runs out, progress lines from pg_stat_progress_create_index, and no INVALID
index left, for CREATE INDEX CONCURRENTLY and REINDEX CONCURRENTLY, on real concurrent sessions."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases.db import Database, SqlFailure
from pgshift.dburl import DatabaseUrl
from pgshift.errors import LockTimeout
from pgshift.migrations import concurrent, history
from tests.commands import INV, ROOT, cli_env
from tests.conftest import write_migration

A, B = "20240101000000_create_items", "20240102000000_index_items"
TABLE = ("create table items (id int primary key, sku text);"
         "insert into items select g, 'sku' || g from generate_series(1, {rows}) g;")
INVALID = "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid"


@contextmanager
def old_snapshot(url: DatabaseUrl, app: str = "nightly-report") -> Iterator[Database]:
    """Another session holds a snapshot taken now, in an open repeatable-read transaction, and no lock
    on the migrated table: a concurrent build waits for it in its "waiting for old snapshots" phase."""
    with Database.connect(url) as session:
        session.execute(f"SET application_name = '{app}'")
        session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        session.execute("SELECT 1")  # the snapshot is taken here
        yield session
        if session.in_transaction:
            session.execute("COMMIT")


def ending_after_a_retry(url: DatabaseUrl, session: Database, index: str) -> threading.Thread:
    """End ``session``'s transaction once the build of ``index`` has been cancelled and tried again: a
    new ``index`` (a new oid) appears after the first one."""

    def run() -> None:
        with Database.connect(url) as db:
            first = None
            for _ in range(1200):
                row = db.one("SELECT to_regclass(%s)::oid", [index])
                oid = row[0] if row else None
                if first is None:
                    first = oid
                elif oid is not None and oid != first:
                    break
                time.sleep(0.05)
        session.execute("COMMIT")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class Ending:
    """A progress sink that ends ``session``'s transaction once ``count`` lines said ``needle``."""

    def __init__(self, session: Database, needle: str, count: int = 1) -> None:
        self.lines: list[str] = []
        self._session, self._needle, self._count = session, needle, count

    def __call__(self, text: str) -> None:
        self.lines.append(text)
        self.note(text)

    def note(self, text: str) -> None:
        if self._needle in text:
            self._count -= 1
            if self._count == 0:
                self._session.execute("COMMIT")


def invalid_indexes(url: DatabaseUrl) -> list[tuple[Any, ...]]:
    with Database.connect(url) as db:
        return db.rows(INVALID)


def valid(url: DatabaseUrl, index: str) -> bool:
    with Database.connect(url) as db:
        row = db.one("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [index])
        return bool(row and row[0])


def test_a_build_behind_an_old_snapshot_is_cancelled_at_its_budget_retried_and_succeeds_once_it_ends(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, A, TABLE.format(rows=1000))
    write_migration(migrations_dir, B, "create index concurrently items_sku on items (sku);")
    settings = make_settings(db_url, concurrent_wait_timeout=0.3, lock_retries=30, retry_backoff=0.1)
    api.migrate(settings, upto=A)
    with old_snapshot(db_url) as blocker:
        ender = ending_after_a_retry(db_url, blocker, "items_sku")
        (applied,) = api.migrate(settings).result.applied
        ender.join()
    assert applied.id == B and applied.attempts > 1  # cancelled at least once, then built
    assert valid(db_url, "items_sku")
    assert invalid_indexes(db_url) == []
    with Database.connect(db_url) as db:
        assert history.records(db)[B].state == "applied"


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_build_whose_old_snapshot_never_ends_names_the_blocker_and_leaves_nothing_invalid(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, A, TABLE.format(rows=1000))
    write_migration(migrations_dir, B, "create index concurrently items_sku on items (sku);")
    settings = make_settings(db_url, concurrent_wait_timeout=0.3, lock_retries=2, retry_backoff=0.05)
    api.migrate(settings, upto=A)
    with old_snapshot(db_url, app="nightly-report") as blocker:
        with pytest.raises(LockTimeout) as caught:
            api.migrate(settings)
        message = str(caught.value)
        assert re.search(rf"line 1: CREATE INDEX CONCURRENTLY waited longer than concurrent_wait_timeout \(0\.3s\) "
                         rf"for older transactions to end \(waiting for old snapshots\), 3 attempts; held up by "
                         rf"pid {blocker.pid} \(application 'nightly-report', .*idle in transaction, "
                         rf"transaction open \d+ s: SELECT 1\)", message), message
        assert "raise concurrent_wait_timeout" in message and "pg_terminate_backend" in message
        assert "was dropped" in message
        assert invalid_indexes(db_url) == []  # the last try's leftover is gone before the error
        assert blocker.in_transaction and blocker.rows("SELECT 2") == [(2,)]  # its own statement was cancelled
        with Database.connect(db_url) as db:
            assert history.records(db)[B].state == "failed"
    (applied,) = api.migrate(settings).result.applied  # the old transaction is over: the next run builds it
    assert applied.id == B and valid(db_url, "items_sku")


def test_a_table_lock_that_never_comes_is_still_bounded_by_lock_timeout(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, A, TABLE.format(rows=10))
    write_migration(migrations_dir, B, "create index concurrently items_sku on items (sku);")
    settings = make_settings(db_url, lock_timeout=0.2, lock_retries=1, retry_backoff=0.05)  # wait budget 30 s
    api.migrate(settings, upto=A)
    with Database.connect(db_url) as holder:
        holder.execute("BEGIN; LOCK TABLE items IN SHARE MODE;")  # conflicts with the build's own table lock
        with pytest.raises(LockTimeout, match=rf"could not get a table lock within 0.2s, 2 attempts; "
                                              rf"blocked by pid {holder.pid} "):
            api.migrate(settings)
        holder.execute("COMMIT")
    assert invalid_indexes(db_url) == []


def cancelled_reindex(url: DatabaseUrl, statement: str) -> None:
    """Leave what a REINDEX CONCURRENTLY cancelled mid-way leaves: another session runs it behind an old
    snapshot and cancels it while it waits."""
    with old_snapshot(url), Database.connect(url) as runner, Database.connect(url) as watcher:
        failed: list[SqlFailure] = []

        def run() -> None:
            try:
                runner.execute(statement)
            except SqlFailure as failure:
                failed.append(failure)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        for _ in range(200):
            if watcher.one("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event = 'virtualxid'",
                           [runner.pid]):
                break
            time.sleep(0.05)
        watcher.execute("SELECT pg_cancel_backend(%s)", [runner.pid])
        thread.join(10)
        assert failed and failed[0].sqlstate == concurrent.CANCELED


@pytest.mark.parametrize("target", ["index items_sku", "table items"])
def test_a_reindex_drops_the_ccnew_leftovers_of_a_failed_one_before_it_runs(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any, target: str) -> None:
    kind, name = target.split()
    write_migration(migrations_dir, A, TABLE.format(rows=1000) + "create index items_sku on items (sku);")
    write_migration(migrations_dir, B, f"reindex {kind} concurrently {name};")
    settings = make_settings(db_url, concurrent_wait_timeout=5)
    api.migrate(settings, upto=A)
    cancelled_reindex(db_url, f"REINDEX {kind} CONCURRENTLY {name}")
    assert [n for n, in invalid_indexes(db_url) if n.endswith("_ccnew")]  # the failed one's leftover
    (applied,) = api.migrate(settings).result.applied
    assert applied.id == B
    assert invalid_indexes(db_url) == []
    assert valid(db_url, "items_sku") and valid(db_url, "items_pkey")


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_reindex_behind_an_old_snapshot_retries_then_names_the_blocker_and_drops_its_ccnew(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, A, TABLE.format(rows=1000) + "create index items_sku on items (sku);")
    write_migration(migrations_dir, B, "reindex index concurrently items_sku;")
    settings = make_settings(db_url, concurrent_wait_timeout=0.3, lock_retries=1, retry_backoff=0.05)
    api.migrate(settings, upto=A)
    with old_snapshot(db_url, app="billing-export") as blocker:
        with pytest.raises(LockTimeout, match=rf"REINDEX CONCURRENTLY waited longer .*, 2 attempts; held up by "
                                              rf"pid {blocker.pid} \(application 'billing-export'"):
            api.migrate(settings)
        assert invalid_indexes(db_url) == []
        assert valid(db_url, "items_sku")  # the index it rebuilt still serves
        ender = ending_after_a_retry(db_url, blocker, "items_sku_ccnew")
        settings = make_settings(db_url, concurrent_wait_timeout=0.3, lock_retries=30, retry_backoff=0.1)
        (applied,) = api.migrate(settings).result.applied
        ender.join()
    assert applied.id == B and applied.attempts > 1
    assert invalid_indexes(db_url) == [] and valid(db_url, "items_sku")


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_progress_lines_come_every_few_seconds_without_a_terminal(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(concurrent, "REPORT_EVERY", 0.2)  # the interval, short for the test
    write_migration(migrations_dir, A, TABLE.format(rows=200_000))
    write_migration(migrations_dir, B, "create index concurrently items_sku on items (sku);")
    settings = make_settings(db_url)  # a budget far longer than the old transaction
    api.migrate(settings, upto=A)
    with old_snapshot(db_url) as blocker:
        sink = Ending(blocker, "waiting for old snapshots", count=3)  # three lines of the wait, then it ends
        (applied,) = api.migrate(settings, progress=sink).result.applied
        pid = blocker.pid
    assert applied.attempts == 1  # waited within its budget, not cancelled
    progress = [line for line in sink.lines if "CREATE INDEX CONCURRENTLY" in line]
    assert len(progress) >= 3, sink.lines
    assert all(line.startswith(f"{B}.sql, line 1: CREATE INDEX CONCURRENTLY items_sku: ") for line in progress)
    waiting = [line for line in progress if "waiting for old snapshots" in line]
    assert waiting and re.search(rf"older transactions 0 of 1 \(0%\), waiting for pid {pid}, \d+ s$",
                                 waiting[0]), waiting
    assert re.search(r"blocks \d+ of \d+ \(\d+%\)", waiting[0])


class LiveSink(Ending):
    """A terminal's sink: ordinary lines, and one line it rewrites (whose wait line ends the session)."""

    def __init__(self, session: Database) -> None:
        super().__init__(session, "waiting for old snapshots")
        self.live_updates: list[str] = []

    def live(self, text: str) -> None:
        self.live_updates.append(text)
        self.note(text)


def test_a_live_sink_gets_one_rewritten_line_cleared_at_the_end(
        task_db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, A, TABLE.format(rows=1000))
    write_migration(migrations_dir, B, "create index concurrently items_sku on items (sku);")
    settings = make_settings(task_db_url)
    api.migrate(settings, upto=A)
    with old_snapshot(task_db_url) as blocker:
        sink = LiveSink(blocker)
        api.migrate(settings, progress=sink)
    assert not [line for line in sink.lines if "CONCURRENTLY" in line]  # none among the ordinary lines
    assert any("waiting for old snapshots" in update for update in sink.live_updates), sink.live_updates
    assert sink.live_updates[-1] == ""  # cleared once the build is done


def at_a_terminal(args: list[str], env: dict[str, str], when: bytes, then: Callable[[], None],
                  limit: float = 90) -> tuple[int, bytes]:
    """Run ``inv`` with a pseudo-terminal as its stdout, calling ``then`` once it has written ``when``;
    its exit code and all it wrote."""
    master, replica = pty.openpty()
    proc = subprocess.Popen([INV, *args], cwd=ROOT, env={**env, "TERM": "xterm", "COLUMNS": "200"},
                            stdin=subprocess.DEVNULL, stdout=replica, stderr=replica, start_new_session=True)
    os.close(replica)
    seen = b""
    called = False
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if select.select([master], [], [], 0.1)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other end closed: the command is done
                break
            if not chunk:
                break
            seen += chunk
            if not called and when in seen:
                called = True
                then()
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(10), seen


@pytest.mark.process
def test_at_a_terminal_the_build_shows_one_line_rewritten_in_place(
        task_db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, A, TABLE.format(rows=1000))
    write_migration(migrations_dir, B, "create index concurrently items_sku on items (sku);")
    api.migrate(make_settings(task_db_url), upto=A)
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    with old_snapshot(task_db_url) as blocker:  # held until the terminal shows the wait
        code, seen = at_a_terminal(["dev.migrate"], env, b"waiting for old snapshots",
                                   lambda: blocker.execute("COMMIT"))
    assert code == 0, seen
    assert re.search(rb"\r[^\r\n]*CREATE INDEX CONCURRENTLY items_sku: waiting for old snapshots[^\r\n]*\x1b\[K",
                     seen), seen
    assert b"\r\x1b[Kapplied " + B.encode() in seen  # the line cleared before the next one
    assert b"applied 1 migration(s)" in seen and valid(task_db_url, "items_sku")
