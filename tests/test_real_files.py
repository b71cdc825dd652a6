"""Apply on files as real histories have them: comment-only placeholders, rollbacks that must run
statement by statement, enum values added and used at once, concurrent index builds on a busy table,
and the lock budget that keeps the application's queries moving while a migration waits."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import ExitCode, LockTimeout, MigrationError
from pgshift.migrations import history
from tests.conftest import write_migration

A, PLACEHOLDER, BLOCK, B = ("20240101000000_create_accounts", "20240102000000_moved_to_seed",
                            "20240103000000_nothing_here", "20240104000000_add_email")


def comment_only_folder(folder: Path) -> None:
    write_migration(folder, A, "create table if not exists accounts (id bigint primary key);",
                    "drop table accounts;")
    write_migration(folder, PLACEHOLDER, "-- The statements of this migration moved to seed.sql.\n-- Kept so the "
                    "history stays the same everywhere.\n", "-- nothing to undo\n")
    write_migration(folder, BLOCK, "/* intentionally left empty:\n   see 20240104 */\n")
    write_migration(folder, B, "alter table accounts add column if not exists email text;")


def test_comment_only_files_status_apply_and_the_plan_give_one_answer(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    comment_only_folder(migrations_dir)
    settings = make_settings(db_url)
    ids = [A, PLACEHOLDER, BLOCK, B]

    before = api.status(settings)
    assert [(m.id, m.state, m.empty) for m in before.migrations] == [(i, "pending", False) for i in ids]
    plan = api.plan(settings, rehearse=False)
    assert [m.id for m in plan.pending] == ids and plan.empty == []

    result = api.migrate(settings)
    assert [a.id for a in result.result.applied] == ids and result.result.empty == []

    after = api.status(settings)
    assert after.exit_code == ExitCode.OK and {m.state for m in after.migrations} == {"applied"}
    assert api.plan(settings, rehearse=False).pending == []
    assert api.migrate(settings).result.applied == []

    # The placeholder's checksum guards it like any other applied file.
    (migrations_dir / f"{PLACEHOLDER}.sql").write_text("delete from accounts;\n")
    assert [m.state for m in api.status(settings).migrations if m.id == PLACEHOLDER] == ["modified"]


def test_a_rollback_file_with_the_false_header_runs_statement_by_statement_journaled(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    start = "20230101000000_start"
    write_migration(migrations_dir, start, "select 1;")
    write_migration(migrations_dir, A, "create table a (id int); create table b (id int);",
                    "-- transactional: false\ndrop table b;\ndrop table c;\ndrop table a;\n")
    write_migration(migrations_dir, B, "create index if not exists a_id on a (id);",
                    "-- transactional: false\ndrop index concurrently if exists a_id;\n")
    settings = make_settings(db_url)
    api.migrate(settings)
    with pytest.raises(MigrationError, match=r"rollback\.sql, line 3: .*statements 1-1 of 3 are done and journaled"):
        api.rollback_to(settings, start)  # B first, then A, which stops at its statement 2
    with Database.connect(db_url) as db:
        assert not db.has_relation("public.a_id") and B not in history.records(db)
        assert not db.has_relation("public.b") and db.has_relation("public.a")  # A's statement 1 stayed
        assert history.rollback_journal(db)[A][1] == 1 and A in history.records(db)
    (migrations_dir / f"{A}.rollback.sql").write_text("-- transactional: false\ndrop table b;\n"
                                                      "drop table if exists c;\ndrop table a;\n")
    done = api.rollback_to(settings, start)  # resumes at statement 2: statement 1 is not run again
    assert [r.id for r in done.rolled_back] == [A]
    with Database.connect(db_url) as db:
        assert not db.has_relation("public.a") and history.rollback_journal(db) == {}
        assert set(history.records(db)) == {start}


ENUM = "20240201000000_mood_meh"


@pytest.mark.parametrize("style", ["upper", "lower"])
def test_an_enum_value_added_and_used_at_once_is_committed_between_and_said(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any, style: str) -> None:
    write_migration(migrations_dir, A, "CREATE SCHEMA app; CREATE TYPE app.mood AS ENUM ('sad', 'ok');\n"
                    "CREATE TABLE app.people (id int PRIMARY KEY, mood app.mood NOT NULL DEFAULT 'ok');\n"
                    "INSERT INTO app.people VALUES (1, 'sad'), (2, 'ok');")
    sql = ("ALTER TYPE app.mood ADD VALUE IF NOT EXISTS 'meh' AFTER 'sad';\n"
           "UPDATE app.people SET mood = 'meh' WHERE id = 1;\n"
           "ALTER TABLE app.people ALTER COLUMN mood SET DEFAULT 'meh';\n")
    write_migration(migrations_dir, ENUM, sql.lower().replace("'MEH'", "'meh'") if style == "lower" else sql)
    settings = make_settings(db_url)
    api.migrate(settings, upto=A)

    pending = [m for m in api.status(settings).migrations if m.id == ENUM]
    assert pending[0].detail is not None and "uses the enum value 'meh' that line 1 adds" in pending[0].detail
    (planned,) = api.plan(settings, rehearse=False).pending
    assert planned.transactional is False and "enum value 'meh'" in planned.mode

    (applied,) = api.migrate(settings).result.applied
    assert applied.id == ENUM and applied.transactional is False
    with Database.connect(db_url) as db:
        assert db.rows("SELECT id, mood::text FROM app.people ORDER BY id") == [(1, "meh"), (2, "ok")]
    assert api.status(settings).exit_code == ExitCode.OK


def test_an_enum_value_added_and_not_used_stays_in_one_transaction(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, A, "create type mood as enum ('sad');")
    write_migration(migrations_dir, ENUM, "alter type mood add value 'meh';\ncreate table t (m mood);")
    (first, second) = api.migrate(make_settings(db_url)).result.applied
    assert first.transactional and second.transactional


def hold_table(url: DatabaseUrl, table: str, seconds: float, ready: threading.Event,
               mode: str = "ACCESS SHARE") -> threading.Thread:
    """Another session holds a lock on ``table`` (by default a long read's) for ``seconds``."""

    def run() -> None:
        with Database.connect(url) as db:
            db.execute(f"BEGIN; LOCK TABLE {table} IN {mode} MODE;")
            ready.set()
            time.sleep(seconds)
            db.execute("COMMIT")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    return thread


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_concurrent_index_build_retries_behind_a_long_transaction_and_leaves_no_invalid_index(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, A, "create table items (id int primary key, sku text);"
                    "insert into items select g, 'sku' || g from generate_series(1, 1000) g;")
    write_migration(migrations_dir, B, "create index concurrently items_sku on items (sku);")
    settings = make_settings(db_url, lock_timeout=0.3, concurrent_wait_timeout=0.3, lock_retries=20,
                             retry_backoff=0.1)
    api.migrate(settings, upto=A)
    holder = hold_table(db_url, "items", 1.5, threading.Event(), mode="ROW EXCLUSIVE")  # a writer
    (applied,) = api.migrate(settings).result.applied
    holder.join()
    assert applied.id == B and applied.attempts > 1
    with Database.connect(db_url) as db:
        assert db.rows("SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_sku'::regclass") == [(True,)]
        assert history.records(db)[B].state == "applied"


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_concurrent_index_build_that_never_gets_its_turn_names_the_blocker_and_drops_its_leftover(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, A, "create table items (id int primary key, sku text);")
    write_migration(migrations_dir, B, "create index concurrently items_sku on items (sku);")
    settings = make_settings(db_url, lock_timeout=0.2, concurrent_wait_timeout=0.2, lock_retries=2,
                             retry_backoff=0.05)
    api.migrate(settings, upto=A)
    ready = threading.Event()
    with Database.connect(db_url) as blocker:
        blocker.execute("BEGIN; LOCK TABLE items IN ROW EXCLUSIVE MODE;")  # a writer's lock
        ready.set()
        with pytest.raises(LockTimeout, match=rf"line 1: CREATE INDEX CONCURRENTLY waited longer than "
                                              rf"concurrent_wait_timeout .*\(waiting for writers before build\), "
                                              rf"3 attempts; held up by pid {blocker.pid}"):
            api.migrate(settings)
        blocker.execute("COMMIT")
    with Database.connect(db_url) as db:
        assert history.records(db)[B].state == "failed"
    (applied,) = api.migrate(settings).result.applied  # the next run settles what the last try left
    assert applied.id == B
    with Database.connect(db_url) as db:
        assert db.rows("SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_sku'::regclass") == [(True,)]


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_no_application_query_waits_longer_than_the_lock_budget_while_a_migration_retries(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, A, "create table orders (id int primary key, total int);"
                    "insert into orders select g, g from generate_series(1, 100) g;")
    write_migration(migrations_dir, B, "alter table orders add column note text;")
    base = make_settings(db_url)
    settings = replace(base, lock_timeout=0.5, lock_retries=20, retry_backoff=0.2)
    api.migrate(settings, upto=A)
    waits: list[float] = []
    stop = threading.Event()

    def application() -> None:
        with Database.connect(db_url) as app:
            while not stop.is_set():
                started = time.monotonic()
                app.rows("SELECT total FROM orders WHERE id = 7")
                waits.append(time.monotonic() - started)
                time.sleep(0.01)

    loop = threading.Thread(target=application, daemon=True)
    loop.start()
    holder = hold_table(db_url, "orders", 3.0, threading.Event())  # a long report holds the table
    (applied,) = api.migrate(settings).result.applied
    holder.join()
    stop.set()
    loop.join(10)
    assert applied.id == B and applied.attempts > 1  # it waited politely, more than once
    assert len(waits) > 50
    assert max(waits) <= settings.lock_timeout + 0.1, f"an application query waited {max(waits):.3f} s"


def test_pgcrypto_and_uuid_ossp_work_on_both_servers_the_embedded_one_included(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, A, 'create extension if not exists "uuid-ossp";\n'
                    "create extension if not exists pgcrypto;\n"
                    "create table tokens (id uuid primary key default uuid_generate_v4(), secret text not null);\n"
                    "insert into tokens (secret) values (crypt('hunter2', gen_salt('bf')));")
    with Database.connect(db_url) as db:
        here = db.one("SELECT count(*) FROM pg_available_extensions WHERE name IN ('pgcrypto', 'uuid-ossp')")
    if here != (2,) and os.environ.get("CI") != "true":  # the pack is fetched once; offline it cannot be
        pytest.skip("the extension pack could not be fetched on this machine (offline?)")
    assert [a.id for a in api.migrate(make_settings(db_url)).result.applied] == [A]
    with Database.connect(db_url) as db:
        assert db.one("SELECT secret = crypt('hunter2', secret) FROM tokens") == (True,)


def test_an_extension_the_server_lacks_is_named_with_the_fix_not_blamed_on_the_file(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, A, "create extension if not exists postgis;\n"
                    "create table places (id int primary key);")
    with pytest.raises(MigrationError) as caught:
        api.migrate(make_settings(db_url))
    message = str(caught.value)
    assert "postgis" in message and "the server lacks the extension" in message and "DATABASE_URL" in message
    assert "fix the file" not in message and "nothing of it was applied" in message
