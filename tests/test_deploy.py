"""Deploys end to end on real PostgreSQL, with a local HTTP server standing in for Slack.

Success (rehearsed on a clone first), a failing migration (earlier ones stay, or are rolled back on
request; the message names the backup and the restore command; maintenance ends off), a rehearsal
that fails (the target is never touched), and a table lock held by another session longer than
lock_timeout (the deploy retries, names the blocking pid, gives up cleanly, and traffic queued behind
it is released at each timeout rather than when the blocker ends).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases import snapshot, throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.deploy import deploys, maintenance, workflow
from pgshift.deploy.notify import Slack
from pgshift.errors import LockTimeout, MigrationError
from pgshift.migrations import history
from tests.conftest import write_migration
from tests.deploys import BAD, M1, M2, PASSWORD, apply_first, production, run_deploy, write_set
from tests.helpers import dead_pid, wait_for
from tests.slack import TOKEN, SlackStub


def columns(url: DatabaseUrl) -> list[str]:
    with Database.connect(url) as db:
        return [r[0] for r in db.rows("SELECT attname FROM pg_attribute WHERE attrelid = 'items'::regclass "
                                      "AND attnum > 0 AND NOT attisdropped ORDER BY attnum")]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text and TOKEN not in text


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_rehearsed_deploy_applies_backs_up_records_logs_and_tells_slack(
        db_url: DatabaseUrl, make_settings: Any, migrations_dir: Path, stub: SlackStub, own_machine: str) -> None:
    write_set(migrations_dir)
    settings = production(db_url, make_settings, stub)
    apply_first(settings)
    asked: list[str] = []
    lines: list[str] = []
    left = throwaway.name("clone")  # as a run still going would have it (its process is alive: this one)
    killed = f"pgshift_clone_{throwaway.HOST}_{dead_pid()}_0a0b0c"  # as a killed rehearsal would leave it
    with Database.connect(db_url.with_dbname("postgres")) as admin:
        throwaway.create(admin, left)
        throwaway.create(admin, killed)
    try:
        slack = Slack.from_settings(settings)
        report = workflow.deploy(settings, rehearse=True, notify=slack, progress=lines.append,
                                 confirm=lambda question: asked.append(",".join(question.about.ids)) is None)
    finally:
        with Database.connect(db_url.with_dbname("postgres")) as admin:
            throwaway.drop(admin, left)
            throwaway.drop(admin, killed)

    assert asked == [M2]
    assert any(left in line and "drop those no run is using" in line for line in lines)
    assert killed in api.cleaned_up()  # dropped by the first throwaway database the deploy made, and said
    assert report.outcome == "succeeded" and [a.id for a in report.applied] == [M2]
    assert report.rehearsal is not None and report.rehearsal.ok
    (timing,) = report.rehearsal.timings
    assert timing.id == M2 and timing.rollback_ms is not None and timing.reapply_ms is not None
    assert all(lock.startswith("AccessExclusiveLock on public.items") for lock in timing.locks)  # if sampled
    assert report.backup is not None and report.backup.is_file()
    assert columns(db_url) == ["id", "name", "price"]
    with Database.connect(db_url) as db:
        assert db.one("SELECT count(*) FROM items") == (3,)
        (row,) = deploys.recent(db)
        assert maintenance.state(db).enabled is False
        assert db.one(maintenance.QUERY) == (False,)
    assert (row.outcome, row.migrations, row.backup, row.rehearsed) == ("succeeded", [M2], report.backup.name, True)
    assert set(row.durations) == {M2} and row.finished_at is not None

    kinds = [m["text"] for m in stub.received]
    assert kinds == [f"deploy #{row.id} to production ({db_url.dbname}) started by {workflow.who()}",
                     f"maintenance mode ON for production ({db_url.dbname})",
                     f"maintenance mode off for production ({db_url.dbname})",
                     f"deploy #{row.id} to production ({db_url.dbname}) succeeded"]
    success = stub.received[-1]["attachments"][0]["text"]
    assert re.search(rf"migrations: {M2} \(\d+ ms\)", success)
    assert f"backup: {report.backup.name}" in success and f"by {workflow.who()}" in success

    log = report.log.read_text()
    assert report.log.name.startswith("migration_production_") and report.log.stat().st_mode & 0o077 == 0
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[apply\] SQL of " + M2, log, re.MULTILINE)
    assert "    ALTER TABLE items ADD COLUMN price int;" in log
    assert re.search(rf"\[rehearse\] {M2}: apply \d+ ms, rollback \d+ ms, re-apply \d+ ms; locks: ", log)
    for step in ("[rehearse]", "[lock]", "[backup]", "[maintenance]", "[verify]", "[outcome] succeeded"):
        assert step in log
    assert_no_secret(log, "\n".join(lines), *stub.raw)
    assert "postgresql://postgres:***@" in log

    again = run_deploy(settings, [], rehearse=True)
    assert again.outcome == "up to date" and len(stub.received) == 4  # nothing to tell


@pytest.mark.parametrize("on_failure", ["stop", "rollback"])
def test_a_failing_migration_names_the_backup_and_leaves_maintenance_off(
        db_url: DatabaseUrl, make_settings: Any, migrations_dir: Path, stub: SlackStub, on_failure: str) -> None:
    write_set(migrations_dir, broken=True)
    settings = production(db_url, make_settings, stub)
    apply_first(settings)
    lines: list[str] = []

    with pytest.raises(MigrationError) as caught:
        run_deploy(settings, lines, rehearse=False, on_failure=on_failure)

    message = str(caught.value)
    backups = sorted((settings.backups_dir).glob("backup_production_*.dump"))
    assert len(backups) == 1
    assert f"{BAD}.sql" in message and "division by zero" in message
    assert f"inv rollback.restore {backups[0].name}" in message and "Maintenance: off" in message
    assert "note" not in columns(db_url)  # the failing migration was undone by its own transaction
    with Database.connect(db_url) as db:
        records = history.records(db)
        (row,) = deploys.recent(db)
        assert maintenance.state(db).enabled is False
    if on_failure == "stop":
        assert "price" in columns(db_url) and records[M2].state == "applied"
        assert f"still in place: {M2}" in message
        assert (row.outcome, row.migrations) == ("failed", [M2])
        assert stub.received[-1]["text"].endswith("FAILED")
    else:
        assert "price" not in columns(db_url) and M2 not in records
        assert f"Rolled back (their rollback files, newest first): {M2}" in message
        log = Path(message.rsplit("Log: ", 1)[1]).read_text()  # rolled back while the application was away
        assert log.index(f"[rollback] rolled back {M2}") < log.index("[maintenance] maintenance off")
        assert (row.outcome, row.migrations) == ("rolled back", [])
        assert stub.received[-1]["text"].endswith("failed and was rolled back")
    assert records[BAD].state == "failed"
    assert stub.received[-2]["text"].startswith("maintenance mode off")
    assert f"backup: {backups[0].name}" in stub.received[-1]["attachments"][0]["text"]
    assert_no_secret(message, "\n".join(lines), *stub.raw)


def test_a_failing_rehearsal_never_touches_the_target(
        db_url: DatabaseUrl, make_settings: Any, migrations_dir: Path, stub: SlackStub) -> None:
    write_set(migrations_dir, broken=True)
    settings = production(db_url, make_settings, stub)
    apply_first(settings)
    with Database.connect(db_url) as db:
        before = (snapshot.take(db), history.records(db), db.rows("SELECT * FROM items ORDER BY id"))

    with pytest.raises(workflow.RehearsalFailed) as caught:
        run_deploy(settings, [], rehearse=True)

    assert f"on a copy of the target, {BAD}.sql, line 2: division by zero" in str(caught.value)
    assert "the target was not touched" in str(caught.value)
    with Database.connect(db_url) as db:
        after = (snapshot.take(db), history.records(db), db.rows("SELECT * FROM items ORDER BY id"))
        assert not deploys.exists(db) and not maintenance.exists(db)
        leftovers = db.rows("SELECT datname FROM pg_database WHERE datname LIKE %s",  # this process's clones
                            [f"pgshift\\_scratch\\_{os.getpid()}\\_%"])
    assert before == after and leftovers == []
    assert not settings.backups_dir.exists() or not list(settings.backups_dir.iterdir())
    (told,) = stub.received  # the team hears of it; nothing else happened
    assert told["text"].endswith("FAILED") and "the target was not touched" in told["attachments"][0]["text"]


def test_a_rollback_that_leaves_something_behind_fails_the_rehearsal(
        db_url: DatabaseUrl, make_settings: Any, migrations_dir: Path, stub: SlackStub) -> None:
    write_set(migrations_dir)
    (migrations_dir / f"{M2}.sql").write_text("ALTER TABLE items ADD COLUMN price int;\n"
                                              "CREATE TABLE prices (id int PRIMARY KEY);\n")
    settings = production(db_url, make_settings, stub)  # M2's rollback drops the column but forgets the table
    apply_first(settings)
    with pytest.raises(workflow.RehearsalFailed) as caught:
        run_deploy(settings, [], rehearse=True)
    message = str(caught.value)
    assert f"on a copy of the target, {M2}.rollback.sql: after the rollback the schema differs" in message
    assert "+ column public.prices.id" in message and "the target was not touched" in message
    assert "price" not in columns(db_url) and [m["text"][-6:] for m in stub.received] == ["FAILED"]


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_table_lock_held_longer_than_lock_timeout_fails_the_deploy_cleanly(
        db_url: DatabaseUrl, make_settings: Any, migrations_dir: Path, stub: SlackStub) -> None:
    write_set(migrations_dir)
    settings = production(db_url, make_settings, stub, lock_timeout=0.3, lock_retries=2, retry_backoff=0.1,
                          skip_backup=True)
    apply_first(settings)
    blocker = Database.connect(db_url)
    blocker_pid = blocker.pid
    watcher = Database.connect(db_url)
    traffic_done: list[tuple[Any, ...] | None] = []
    try:
        blocker.execute("BEGIN; SELECT count(*) FROM items;")  # a long read: holds ACCESS SHARE on items

        def traffic() -> None:
            wait_for(lambda: watcher.one("SELECT count(*) FROM pg_locks WHERE relation = 'items'::regclass "
                                         "AND mode = 'AccessExclusiveLock' AND NOT granted") != (0,),
                     "the deploy to queue for its lock")
            with Database.connect(db_url) as app:  # a request arriving behind the queued ALTER TABLE
                traffic_done.append(app.one("SELECT count(*) FROM items"))

        thread = threading.Thread(target=traffic)
        thread.start()
        with pytest.raises(LockTimeout) as caught:
            run_deploy(settings, [], rehearse=False)
        thread.join(timeout=20)
        # The request finished while the blocker still held its lock: it waited for the deploy's
        # lock_timeout, never for the blocker's transaction.
        assert traffic_done == [(3,)]
        assert blocker.in_transaction
        message = str(caught.value)
        assert f"blocked by pid {blocker_pid}" in message and "3 attempts" in message
        assert "nothing of it was applied" in message and "Maintenance: off" in message
    finally:
        blocker.close()
        watcher.close()
    assert "price" not in columns(db_url)
    with Database.connect(db_url) as db:
        (row,) = deploys.recent(db)
        assert row.outcome == "failed" and maintenance.state(db).enabled is False
        assert db.one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                      " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())") == (0,)
    assert stub.received[-1]["text"].endswith("FAILED")
    assert f"pid {blocker_pid}" in stub.received[-1]["attachments"][0]["text"]


def test_a_plan_refuses_a_migration_that_does_not_parse(
        db_url: DatabaseUrl, make_settings: Any, migrations_dir: Path, stub: SlackStub) -> None:
    write_set(migrations_dir)
    write_migration(migrations_dir, BAD, "ALTER TABLE items ADD COLUMN note text\nSELEC 1;\n", "SELECT 1;\n")
    settings = production(db_url, make_settings, stub, preflight_drift=False)
    planned = workflow.plan(settings, rehearse=False)
    assert not planned.proceed and planned.exit_code == 1
    assert any(f"{BAD}.sql" in p and "syntax error" in p for p in planned.problems), planned.problems
    assert [m.id for m in planned.pending] == [M1, M2, BAD]
