"""dev.squash --upto ID: a history folded into one migration that builds the same schema, and every
database keeps working: one that applied the old migrations reads them as the squash, a new one gets it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases import snapshot, throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError
from pgshift.migrations import apply, drift, history, order, source
from tests.commands import cli_env, inv_here
from tests.conftest import write_migration

# A history as a team writes it: lower case, IF NOT EXISTS, a schema of its own, an enum, a standalone
# unique index, a view and a function, and changes to what earlier migrations made.
HISTORY = [
    ("20250101000000_app_schema",
     "create schema if not exists app;\ncreate type app.order_status as enum ('new', 'paid', 'shipped');\n",
     "drop type if exists app.order_status;\ndrop schema if exists app;\n"),
    ("20250102000000_customers",
     "create table if not exists app.customers (\n    id bigint generated always as identity primary key,\n"
     "    email text not null,\n    created_at timestamptz not null default now()\n);\n",
     "drop table if exists app.customers;\n"),
    ("20250103000000_customer_email_unique",
     "create unique index if not exists customers_email_key on app.customers (lower(email));\n",
     "drop index if exists app.customers_email_key;\n"),
    ("20250104000000_orders",
     "create table if not exists app.orders (\n    id bigserial primary key,\n"
     "    customer_id bigint not null references app.customers (id) on delete cascade,\n"
     "    status app.order_status not null default 'new',\n    total numeric(12, 2) not null check (total >= 0)\n);\n",
     "drop table if exists app.orders;\n"),
    ("20250105000000_orders_customer_index",
     "create index if not exists orders_customer_idx on app.orders (customer_id);\n",
     "drop index if exists app.orders_customer_idx;\n"),
    ("20250106000000_customer_name",
     "alter table app.customers add column if not exists name text;\n",
     "alter table app.customers drop column if exists name;\n"),
    ("20250107000000_order_total_function",
     "create or replace function app.order_total(c bigint) returns numeric\n    language sql stable\n"
     "    as $$ select coalesce(sum(total), 0) from app.orders where customer_id = c $$;\n",
     "drop function if exists app.order_total(bigint);\n"),
    ("20250108000000_paid_orders_view",
     "create or replace view app.paid_orders as\n    select id, customer_id, total from app.orders "
     "where status = 'paid';\n",
     "drop view if exists app.paid_orders;\n"),
    ("20250109000000_customer_phone",
     "alter table app.customers add column if not exists phone text;\n",
     "alter table app.customers drop column if exists phone;\n"),
    ("20250110000000_order_note",
     "alter table app.orders add column if not exists note text;\n",
     "alter table app.orders drop column if exists note;\n"),
]
UPTO = HISTORY[7][0]
SQUASH = "20250108000000_squash"


def _write_history(folder: Path) -> None:
    for ident, forward, rollback in HISTORY:
        write_migration(folder, ident, forward, rollback)


def _objects(url: DatabaseUrl) -> dict[str, str]:
    with Database.connect(url) as db:
        return snapshot.take(db).objects


def _status(settings: Any) -> Any:
    return api.status(settings)


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_squash_keeps_old_databases_working_and_gives_new_ones_the_same_schema(
        db_url: DatabaseUrl, server: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    _write_history(migrations_dir)
    dev = make_settings(db_url)
    with throwaway.empty(server, "test") as other_url, throwaway.empty(server, "test") as fresh_url:
        other = make_settings(other_url)  # another database (staging, production) that applied all ten
        assert len(api.migrate(dev).result.applied) == 10
        assert len(api.migrate(other).result.applied) == 10
        old_path = _objects(db_url)
        with Database.connect(other_url) as db:
            newest = db.one("SELECT max(applied_at) FROM pgshift.migrations WHERE id <= %s", [UPTO])

        done = api.squash(dev, UPTO, reason="fold the first quarter")
        assert done.migration.id == SQUASH and done.settled
        assert done.replaced == [ident for ident, _, _ in HISTORY[:8]]
        assert done.objects == len(old_path) - 2  # all but the two columns of the later migrations
        left = sorted(p.name for p in migrations_dir.iterdir())
        assert left == [f"{SQUASH}.rollback.sql", f"{SQUASH}.sql", "20250109000000_customer_phone.rollback.sql",
                        "20250109000000_customer_phone.sql", "20250110000000_order_note.rollback.sql",
                        "20250110000000_order_note.sql"]
        text = (migrations_dir / f"{SQUASH}.sql").read_text()
        assert text.startswith("-- pgshift: squash of 8 migrations")
        assert f"-- replaces {HISTORY[0][0]} " in text and "create or replace view \"app\".\"paid_orders\"" in text

        # the development database: its records now name the squash, logged with the reason
        with Database.connect(db_url) as db:
            assert [r[0] for r in db.rows("SELECT id FROM pgshift.migrations ORDER BY id")] == [
                SQUASH, HISTORY[8][0], HISTORY[9][0]]
            assert db.one("SELECT action, migration, reason FROM pgshift.audit") == (
                "squash", SQUASH, "fold the first quarter")
        found = _status(dev)
        assert found.summary() == "up to date: 3 applied", found.summary()
        assert found.drift is not None and not found.drift.items

        # the other database was not touched by the squash: it reads its old records as the squash
        found = _status(other)
        assert found.summary() == "up to date: 3 applied", found.summary()
        assert found.drift is not None and not found.drift.items, found.drift
        with Database.connect(other_url) as db:  # without a stored reference, drift replays the squash
            db.execute("DELETE FROM pgshift.schema_snapshots")
        found = _status(other)
        assert found.drift is not None and found.drift.method == "replay" and found.drift.replayed == 3
        assert not found.drift.items, found.drift

        # the next migration applies on both; the other database's record is rewritten as it does
        write_migration(migrations_dir, "20250111000000_order_shipped_at",
                        "alter table app.orders add column if not exists shipped_at timestamptz;\n",
                        "alter table app.orders drop column if exists shipped_at;\n")
        assert [a.id for a in api.migrate(dev).result.applied] == ["20250111000000_order_shipped_at"]
        assert [a.id for a in api.migrate(other).result.applied] == ["20250111000000_order_shipped_at"]
        with Database.connect(other_url) as db:
            assert [r[0] for r in db.rows("SELECT id FROM pgshift.migrations ORDER BY id")] == [
                SQUASH, HISTORY[8][0], HISTORY[9][0], "20250111000000_order_shipped_at"]
            assert db.one("SELECT action, migration FROM pgshift.audit") == ("squash", SQUASH)
            assert db.one("SELECT applied_at FROM pgshift.migrations WHERE id = %s", [SQUASH]) == newest
        found = _status(other)
        assert found.summary() == "up to date: 4 applied" and not found.drift.items, found.drift

        # a new database gets the squash and the later ones: the same catalog as the old path
        applied = api.migrate(make_settings(fresh_url)).result.applied
        assert [a.id for a in applied] == [SQUASH, HISTORY[8][0], HISTORY[9][0], "20250111000000_order_shipped_at"]
        assert drift.differ(_objects(db_url), _objects(fresh_url)) == []
        assert _objects(fresh_url) == _objects(other_url)


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_the_squash_rolls_back_to_an_empty_schema(db_url: DatabaseUrl, migrations_dir: Path,
                                                  make_settings: Any, task_db_url: DatabaseUrl) -> None:
    _write_history(migrations_dir)
    api.squash(make_settings(task_db_url), UPTO)  # the development database had applied nothing
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT to_regclass('pgshift.migrations')") == (None,)  # its record untouched
    settings = make_settings(db_url)
    api.migrate(settings, upto=SQUASH)
    assert "table app.orders" in _objects(db_url)
    squash = next(m for m in source.read(migrations_dir) if m.id == SQUASH)
    with Database.connect(db_url) as db:
        apply.rollback(db, squash, apply.Limits.of(settings))
        assert db.one("SELECT count(*) FROM pgshift.migrations") == (0,)
    assert drift.differ(drift.EMPTY, _objects(db_url)) == []


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_squash_refusals_are_one_line_with_exit_2(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    _write_history(migrations_dir)
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    unknown = inv_here("dev.squash", "--upto", "20250199000000_nope", env=env)
    assert unknown.returncode == 2
    assert "no such migration" in unknown.stderr and len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr
    write_migration(migrations_dir, "20250104000001_seed_statuses",
                    "insert into app.customers (email) values ('ops@example.com');\n"
                    "update app.customers set email = lower(email);\n", "delete from app.customers;\n")
    before = sorted(p.name for p in migrations_dir.iterdir())
    refused = inv_here("dev.squash", "--upto", UPTO, env=env)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "20250104000001_seed_statuses.sql, line 1: INSERT" in refused.stderr
    assert "line 2: UPDATE" in refused.stderr and "--force" in refused.stderr
    assert sorted(p.name for p in migrations_dir.iterdir()) == before  # nothing changed
    forced = inv_here("dev.squash", "--upto", UPTO, "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert "left out: 20250104000001_seed_statuses.sql, line 1: INSERT" in forced.stdout
    assert "-- Left out (data changes, squashed with --force)" in (migrations_dir / f"{SQUASH}.sql").read_text()
    status = json.loads(inv_here("dev.status", "--json", env=env).stdout)
    assert [m["id"] for m in status["migrations"]] == [SQUASH, HISTORY[8][0], HISTORY[9][0]]


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_inv_test_passes_on_a_squashed_history(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    _write_history(migrations_dir)
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    assert inv_here("dev.migrate", env=env).returncode == 0
    done = inv_here("dev.squash", "--upto", UPTO, env=env)
    assert done.returncode == 0, done.stderr
    assert "the development database now records it in their place" in done.stdout
    checked = inv_here("test", "--json", "--rows", "0", env=env)
    report = json.loads(checked.stdout)
    assert checked.returncode == 0, report
    trips = {t["id"]: t["state"] for t in report["checks"]["backward"]["trips"]}
    assert trips[SQUASH] == "ok"


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_database_part_way_through_the_squashed_history_is_told_what_to_do(
        task_db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    _write_history(migrations_dir)
    with throwaway.empty(task_db_url.with_dbname("postgres"), "test") as dev_url:
        api.squash(make_settings(dev_url), UPTO)
    settings = make_settings(task_db_url)
    files = [m.id for m in source.read(migrations_dir)]  # the folder after the squash
    with Database.connect(task_db_url) as db:  # it had applied the first five before the squash
        for _, forward, _ in HISTORY[:5]:
            db.execute(forward)
        history.ensure(db)
        for ident, forward, _ in HISTORY[:5]:
            db.execute(history.upsert_sql(db, id=ident, checksum=source.checksum(forward), state="applied",
                                          duration_ms=1, transactional=True))
    found = api.status(settings, drift=False)
    missing = [s for s in found.migrations if s.state == "missing"]
    assert len(missing) == 5 and "squashed into 20250108000000_squash" in (missing[0].detail or "")
    with pytest.raises(MigrationError, match=r"was squashed into 20250108000000_squash.*checkout before the squash"):
        api.migrate(settings)
    assert [m.id for m in source.read(migrations_dir)] == files
    with Database.connect(task_db_url) as db:  # nothing was applied or rewritten
        assert db.one("SELECT count(*) FROM pgshift.migrations") == (5,)


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_squash_of_a_squash_still_maps_the_oldest_records(task_db_url: DatabaseUrl, migrations_dir: Path,
                                                            make_settings: Any) -> None:
    _write_history(migrations_dir)
    old = make_settings(task_db_url)
    api.migrate(old)  # all ten, as the original files
    with throwaway.empty(task_db_url.with_dbname("postgres"), "test") as dev_url:
        dev = make_settings(dev_url)
        api.squash(dev, UPTO)
        again = api.squash(dev, HISTORY[8][0])  # the squash and the ninth, folded again
    assert again.migration.id == "20250109000000_squash"
    assert again.replaced == [SQUASH, HISTORY[8][0]]
    assert f"-- replaces {HISTORY[0][0]} " in again.migration.sql and f" in {SQUASH}" in again.migration.sql
    found = api.status(old)
    assert found.summary() == "up to date: 2 applied", found.summary()
    assert found.drift is not None and not found.drift.items
    write_migration(migrations_dir, "20250111000000_more", "create table if not exists app.more (id int);\n",
                    "drop table if exists app.more;\n")
    assert [a.id for a in api.migrate(old).result.applied] == ["20250111000000_more"]
    with Database.connect(task_db_url) as db:
        assert [r[0] for r in db.rows("SELECT id FROM pgshift.migrations ORDER BY id")] == [
            "20250109000000_squash", HISTORY[9][0], "20250111000000_more"]


def test_rollback_to_on_the_old_records_settles_them_first(task_db_url: DatabaseUrl, migrations_dir: Path,
                                                           make_settings: Any) -> None:
    _write_history(migrations_dir)
    old = make_settings(task_db_url)
    api.migrate(old)
    with throwaway.empty(task_db_url.with_dbname("postgres"), "test") as dev_url:
        api.squash(make_settings(dev_url), UPTO)
    done = api.rollback_to(old, SQUASH)
    assert [r.id for r in done.rolled_back] == [HISTORY[9][0], HISTORY[8][0]]
    with Database.connect(task_db_url) as db:
        assert [r[0] for r in db.rows("SELECT id FROM pgshift.migrations ORDER BY id")] == [SQUASH]
    found = api.status(old)
    assert found.summary() == "pending migrations: 1 applied, 2 pending", found.summary()
    assert found.drift is not None and not found.drift.items


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_the_order_check_accepts_a_squash_of_main_s_migrations(tmp_path: Path, task_db_url: DatabaseUrl,
                                                               make_settings: Any) -> None:
    repo = tmp_path
    folder = repo / "migrations"  # the make_settings folder
    _write_history(folder)
    (folder / order.HEAD_FILE).write_text(HISTORY[-1][0] + "\n")

    def git(*args: str) -> None:
        done = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                              capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-qm", "history")
    git("checkout", "-qb", "squash")
    settings = make_settings(task_db_url)
    api.squash(settings, UPTO)
    assert (folder / order.HEAD_FILE).read_text() == HISTORY[-1][0] + "\n"
    report = api.order(settings)
    assert report.ok, report.problems
