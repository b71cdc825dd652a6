"""constraints: a partial index serves a foreign key, a self-reference is one key, and a team can accept a finding."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgshift.checks import constraints
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.migrations import source
from pgshift.migrations.apply import Limits
from tests.commands import cli_env, inv_here
from tests.conftest import write_migration


def test_a_partial_index_on_the_foreign_key_not_null_covers_it(db_url: DatabaseUrl) -> None:
    with Database.connect(db_url) as db:
        db.execute("""
            CREATE TABLE parents (id bigint PRIMARY KEY);
            CREATE TABLE kids (id bigint PRIMARY KEY, parent_id bigint REFERENCES parents, other_id bigint
                               REFERENCES parents, live boolean NOT NULL DEFAULT true);
            CREATE INDEX kids_parent ON kids (parent_id) WHERE parent_id IS NOT NULL;
            CREATE INDEX kids_other ON kids (other_id) WHERE live;""")
        found = constraints.inspect(db).findings
    assert [(f.kind, f.id) for f in found] == [
        ("unindexed foreign key", "unindexed-foreign-key:public.kids.kids_other_id_fkey")]


def test_a_self_referencing_key_is_not_a_duplicate_of_itself(db_url: DatabaseUrl) -> None:
    with Database.connect(db_url) as db:
        db.execute("CREATE TABLE nodes (id bigint PRIMARY KEY, parent_id bigint REFERENCES nodes (id)); "
                   "CREATE INDEX nodes_parent ON nodes (parent_id);")
        assert constraints.inspect(db).findings == []
        db.execute("CREATE UNIQUE INDEX nodes_id_again ON nodes (id)")
        found = constraints.inspect(db).findings
    assert [(f.kind, f.id) for f in found] == [("duplicate index", "duplicate-index:public.nodes_id_again")]


def test_findings_accepted_by_id_or_by_kind_in_the_migration_that_made_them(
        db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20240101000000_events",
                    "-- pgshift: accept no-primary-key\nCREATE TABLE events (at timestamptz, body text);")
    write_migration(migrations_dir, "20240102000000_logs", "CREATE TABLE logs (line text);")
    write_migration(migrations_dir, "20240103000000_orders", "CREATE TABLE orders (id int PRIMARY KEY);\n"
                    "CREATE TABLE lines (id int PRIMARY KEY, order_id int REFERENCES orders);")
    write_migration(migrations_dir, "20240104000000_later",
                    "-- pgshift: accept unindexed-foreign-key:public.lines.lines_order_id_fkey\n"
                    "-- pgshift: accept no-primary-key\nALTER TABLE logs ADD COLUMN at timestamptz;")
    report = constraints.run(db_url, source.read(migrations_dir), Limits())
    assert not report.ok
    assert [f.id for f in report.findings] == ["no-primary-key:public.logs"]  # made by a migration not accepting it
    assert {(f.id, f.accepted_in) for f in report.accepted} == {
        ("no-primary-key:public.events", "20240101000000_events"),
        ("unindexed-foreign-key:public.lines.lines_order_id_fkey", "20240104000000_later")}
    assert report.summary().startswith("1 problem(s); 2 accepted; first: public.logs")
    assert report.as_json()["accepted"][0]["accepted_in"]


def test_inv_test_constraints_shows_accepted_findings_and_passes(
        task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20240101000000_events",
                    "-- pgshift: accept no-primary-key\nCREATE TABLE events (at timestamptz, body text);")
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    done = inv_here("test.constraints", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "accepted in 20240101000000_events: no-primary-key:public.events: table has no primary key" in done.stdout
    assert "ok: no missing indexes, keys or other schema smells, 1 accepted" in done.stdout


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_deploy_rehearsal_lets_an_accepted_finding_through_and_stops_on_another(
        db_url: DatabaseUrl, migrations_dir: Path) -> None:
    from pgshift.checks.performance import Thresholds
    from pgshift.deploy import rehearsal

    write_migration(migrations_dir, "20240101000000_events",
                    "-- pgshift: accept no-primary-key\nCREATE TABLE events (at timestamptz, body text);",
                    "DROP TABLE events;")
    migrations = source.read(migrations_dir)
    done = rehearsal.run(db_url, migrations, [migrations[0].id], Limits(), Thresholds(60, 2))
    assert done.problems == [], done.problems
    assert ("constraints (accepted in 20240101000000_events): no-primary-key:public.events: table has no primary key"
            in done.checks)
    write_migration(migrations_dir, "20240102000000_logs", "CREATE TABLE logs (line text);", "DROP TABLE logs;")
    migrations = source.read(migrations_dir)
    stopped = rehearsal.run(db_url, migrations, [m.id for m in migrations], Limits(), Thresholds(60, 2))
    assert [p for p in stopped.problems if "public.logs" in p], (stopped.problems, stopped.checks)


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_finding_accepted_in_the_config_is_listed_as_such_and_passes(
        task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20240101000000_events", "CREATE TABLE events (at timestamptz, body text);")
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    assert inv_here("test.constraints", env=env).returncode == 1
    env["INVOKE_PGSHIFT_ACCEPT"] = "no-primary-key:public.events"
    done = inv_here("test.constraints", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "accepted in config pgshift.accept: no-primary-key:public.events" in done.stdout
