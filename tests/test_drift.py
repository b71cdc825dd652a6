"""Drift: every status checks it against the snapshot stored when migrations were applied; hand changes
are named (added by hand, changed, gone), a clean database reports none, and a database migrated
before snapshots were kept is replayed once and then quick again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases import throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import ExitCode
from pgshift.schema.drift import DriftItem
from tests.commands import cli_env, inv_here, inv_process
from tests.conftest import write_migration
from tests.helpers import dead_pid

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS citext;  -- 1.6 on PostgreSQL 15, 1.8 on 18: a version is not drift
CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text NOT NULL,
                    plan text NOT NULL DEFAULT 'free');
CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint REFERENCES users (id), body text);
CREATE INDEX posts_user_id_idx ON posts (user_id);
CREATE FUNCTION word_count(t text) RETURNS integer LANGUAGE sql IMMUTABLE
    AS $$ SELECT array_length(regexp_split_to_array(t, '\\s+'), 1) $$;
"""

# Each hand change, and the line `inv status` (no flag) must show for it.
HAND_CHANGES = {
    "column added": ("ALTER TABLE users ADD COLUMN nickname varchar(40)",
                     "+ column public.users.nickname: added by hand (no migration made it): character varying(40)"),
    "index dropped": ("DROP INDEX posts_user_id_idx",
                      "- index public.posts_user_id_idx: gone (a migration made it): "
                      "CREATE INDEX posts_user_id_idx ON public.posts USING btree (user_id)"),
    "function body changed": (
        "CREATE OR REPLACE FUNCTION word_count(t text) RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT 0 $$",
        "~ function public.word_count(t text): changed by hand (differs from what the migrations made): "
        "body or attributes differ"),
    "default changed": ("ALTER TABLE users ALTER COLUMN plan SET DEFAULT 'pro'",
                        "~ column public.users.plan: changed by hand (differs from what the migrations made): "
                        "text NOT NULL DEFAULT 'free'::text -> text NOT NULL DEFAULT 'pro'::text"),
}


@pytest.fixture
def migrated(db_url: DatabaseUrl, make_settings: Any) -> Any:
    settings = make_settings(db_url)
    write_migration(settings.migrations_dir, "20250101000000_initial", SCHEMA)
    write_migration(settings.migrations_dir, "20250102000000_more", "ALTER TABLE users ADD COLUMN name text;")
    api.migrate(settings)
    return settings


def by_hand(url: DatabaseUrl, sql: str) -> None:
    with Database.connect(url) as db:
        db.execute(sql)


def forget_snapshots(url: DatabaseUrl) -> None:
    """As a database migrated before snapshots were kept."""
    by_hand(url, "DROP TABLE pgshift.schema_snapshots")


def test_a_clean_database_reports_no_drift_from_the_stored_snapshot(migrated: Any) -> None:
    status = api.status(migrated)
    assert status.drift is not None and status.drift.items == []
    assert status.drift.method == "snapshot" and status.drift.replayed == 0
    assert status.exit_code == ExitCode.OK
    assert status.as_json()["drift"]["clean"] is True
    assert api.status(migrated, drift=False).drift is None


@pytest.mark.parametrize("change", list(HAND_CHANGES))
def test_each_hand_change_is_named_by_plain_status(change: str, migrated: Any, db_url: DatabaseUrl) -> None:
    sql, line = HAND_CHANGES[change]
    for _ in range(2):  # the first stores the clean catalog's fingerprint, the second answers from it
        clean = api.status(migrated).drift
        assert clean is not None and clean.items == []
    with Database.connect(db_url) as db:
        assert db.one("SELECT count(*) FROM pgshift.schema_snapshots WHERE catalog IS NOT NULL") == (1,)
    by_hand(db_url, sql)
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrated.migrations_dir))
    shown = inv_here("status", env=env)
    assert shown.returncode == 1, shown.stderr
    drift_lines = [x.strip() for x in shown.stdout.splitlines() if x.startswith("  ")]
    assert len(drift_lines) == 1 and drift_lines[0].startswith(line), drift_lines
    assert "against the catalog snapshot stored when they were applied" in shown.stdout
    assert "drift: 1 difference(s)" in shown.stdout


def test_the_json_always_carries_drift_and_no_drift_skips_it(migrated: Any, db_url: DatabaseUrl) -> None:
    by_hand(db_url, "ALTER TABLE posts ADD COLUMN draft boolean")
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrated.migrations_dir))
    checked = inv_here("dev.status", "--json", env=env)
    assert checked.returncode == 1, checked.stderr
    assert json.loads(checked.stdout)["drift"]["differences"] == [
        {"kind": "column", "name": "public.posts.draft", "change": "unexpected", "detail": "boolean"}]
    skipped = inv_here("dev.status", "--json", "--no-drift", env=env)
    assert skipped.returncode == 0 and json.loads(skipped.stdout)["drift"] is None


def test_deploy_status_carries_drift_and_exits_1(migrated: Any, db_url: DatabaseUrl) -> None:
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrated.migrations_dir))
    clean = inv_here("deploy.status", "--json", env=env)
    assert clean.returncode == 0 and json.loads(clean.stdout)["drift"]["clean"] is True
    by_hand(db_url, "DROP INDEX posts_user_id_idx")
    drifted = inv_here("deploy.status", env=env)
    assert drifted.returncode == 1
    assert "- index public.posts_user_id_idx: gone" in drifted.stdout
    assert inv_here("deploy.status", "--no-drift", env=env).returncode == 0


def test_a_hand_change_stays_drift_after_the_next_migration(migrated: Any, db_url: DatabaseUrl) -> None:
    by_hand(db_url, "CREATE TABLE handmade (id int PRIMARY KEY)")
    write_migration(migrated.migrations_dir, "20250103000000_tags",
                    "CREATE TABLE tags (id int PRIMARY KEY); ALTER TABLE posts ADD COLUMN tag int;")
    api.migrate(migrated)
    status = api.status(migrated)
    assert status.drift is not None and status.drift.method == "snapshot"
    assert {(i.kind, i.name, i.change) for i in status.drift.items} == {
        ("table", "public.handmade", "unexpected"), ("column", "public.handmade.id", "unexpected"),
        ("constraint", "public.handmade.handmade_pkey", "unexpected"), ("index", "public.handmade_pkey", "unexpected")}


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_database_without_a_stored_snapshot_is_replayed_once_then_quick(migrated: Any, db_url: DatabaseUrl) -> None:
    forget_snapshots(db_url)
    by_hand(db_url, "ALTER TABLE users ADD COLUMN nickname varchar(40)")
    first = api.status(migrated)
    assert first.drift is not None and first.drift.method == "replay"
    assert first.drift.replayed == 2 and first.drift.stored
    assert first.drift.items == [DriftItem("column", "public.users.nickname", "unexpected", "character varying(40)")]
    second = api.status(migrated)
    assert second.drift is not None and second.drift.method == "snapshot"
    assert second.drift.items == first.drift.items
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrated.migrations_dir))
    forget_snapshots(db_url)
    shown = inv_here("status", env=env)
    assert "no snapshot stored for these migrations (applied before snapshots were kept): 2 replayed" in shown.stdout


def test_nothing_applied_yet_is_compared_with_an_empty_database(db_url: DatabaseUrl, make_settings: Any) -> None:
    settings = make_settings(db_url)
    write_migration(settings.migrations_dir, "20250101000000_initial", SCHEMA)
    status = api.status(settings)
    assert status.drift is not None and status.drift.items == [] and status.exit_code == ExitCode.PENDING
    by_hand(db_url, "CREATE SEQUENCE stray")
    assert [(i.kind, i.name) for i in api.status(settings).drift.items] == [("sequence", "public.stray")]  # type: ignore[union-attr]


def test_without_createdb_the_shadow_falls_back_to_the_embedded_server(
        migrated: Any, db_url: DatabaseUrl, embedded_folder: Path, make_settings: Any) -> None:
    forget_snapshots(db_url)
    role = "pgshift_no_createdb"
    with Database.connect(db_url.with_dbname("postgres")) as admin:
        if not admin.one("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]):
            admin.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")
    by_hand(db_url, f"GRANT SELECT ON ALL TABLES IN SCHEMA public, pgshift TO {role}; "
                    f"GRANT USAGE ON SCHEMA pgshift TO {role}")
    weak = make_settings(db_url.__class__(db_url.host, db_url.port, db_url.dbname, role),
                         embedded_dir=embedded_folder)
    status = api.status(weak)
    assert status.drift is not None and status.drift.method == "replay"
    assert status.drift.shadow.startswith("the embedded PostgreSQL 18 (the target's user may not create")
    assert status.drift.items == []


@pytest.mark.process
def test_drift_exits_1_from_a_real_process(migrated: Any, db_url: DatabaseUrl) -> None:
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrated.migrations_dir))
    assert inv_process("status", env=env).returncode == 0
    by_hand(db_url, "ALTER TABLE users ALTER COLUMN plan DROP DEFAULT")
    assert inv_process("status", env=env).returncode == 1
    assert inv_process("status", "--no-drift", env=env).returncode == 0


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_shadow_left_by_a_killed_process_is_dropped_by_the_next(
        migrated: Any, db_url: DatabaseUrl, server: DatabaseUrl, own_machine: str) -> None:
    forget_snapshots(db_url)  # a shadow is made only for a replay
    dead, live = f"pgshift_shadow_{throwaway.HOST}_{dead_pid()}_0a0b0c", throwaway.name("shadow")
    with Database.connect(server) as admin:
        for name in (dead, live):
            throwaway.create(admin, name)
    try:
        api.status(migrated)
        with Database.connect(server) as admin:
            left = set(throwaway.leftovers(admin))
        assert dead not in left and live in left
        assert dead in api.cleaned_up()
    finally:
        with Database.connect(server) as admin:
            for name in (dead, live):
                throwaway.drop(admin, name)


def test_snapshots_kept_before_fingerprints_are_compared_in_full_then_fingerprinted(
        migrated: Any, db_url: DatabaseUrl) -> None:
    by_hand(db_url, "ALTER TABLE pgshift.schema_snapshots DROP COLUMN catalog")
    status = api.status(migrated)
    assert status.drift is not None and status.drift.items == [] and status.drift.method == "snapshot"
    with Database.connect(db_url) as db:
        assert db.one("SELECT count(*) FROM pgshift.schema_snapshots WHERE catalog IS NOT NULL") == (1,)
    by_hand(db_url, "ALTER TABLE posts ADD COLUMN draft boolean")
    drifted = api.status(migrated).drift
    assert drifted is not None and [i.name for i in drifted.items] == ["public.posts.draft"]
