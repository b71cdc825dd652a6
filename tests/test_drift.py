"""Drift: hand changes to a migrated database are reported by name; a clean one reports none."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases import throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import ExitCode
from pgshift.schema.drift import DriftItem
from tests.conftest import INV, ROOT, cli_env, write_migration
from tests.helpers import dead_pid

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS citext;  -- 1.6 on PostgreSQL 15, 1.8 on 18: a version is not drift
CREATE TABLE users (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email text NOT NULL);
CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint REFERENCES users (id), body text);
CREATE INDEX posts_user_id_idx ON posts (user_id);
CREATE FUNCTION word_count(t text) RETURNS integer LANGUAGE sql IMMUTABLE
    AS $$ SELECT array_length(regexp_split_to_array(t, '\\s+'), 1) $$;
"""


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


def test_a_clean_database_reports_no_drift(migrated: Any) -> None:
    status = api.status(migrated, drift=True)
    assert status.drift is not None and status.drift.items == [] and status.drift.replayed == 2
    assert status.exit_code == ExitCode.OK
    assert status.as_json()["drift"]["clean"] is True
    assert api.status(migrated).drift is None  # plain status does not check


def test_a_column_added_by_hand_is_reported(migrated: Any, db_url: DatabaseUrl) -> None:
    by_hand(db_url, "ALTER TABLE users ADD COLUMN nickname varchar(40)")
    status = api.status(migrated, drift=True)
    assert status.drift is not None
    assert status.drift.items == [DriftItem("column", "public.users.nickname", "unexpected", "character varying(40)")]
    assert status.exit_code == ExitCode.FAILED
    assert "drift: 1 difference(s)" in status.summary()


def test_an_index_dropped_by_hand_is_reported(migrated: Any, db_url: DatabaseUrl) -> None:
    by_hand(db_url, "DROP INDEX posts_user_id_idx")
    status = api.status(migrated, drift=True)
    assert status.drift is not None
    found = [(i.kind, i.name, i.change) for i in status.drift.items]
    assert found == [("index", "public.posts_user_id_idx", "missing")]
    assert status.exit_code == ExitCode.FAILED


def test_a_function_body_changed_by_hand_is_reported(migrated: Any, db_url: DatabaseUrl) -> None:
    by_hand(db_url, "CREATE OR REPLACE FUNCTION word_count(t text) RETURNS integer LANGUAGE sql IMMUTABLE "
                    "AS $$ SELECT 0 $$")
    status = api.status(migrated, drift=True)
    assert status.drift is not None
    assert [(i.kind, i.name, i.change) for i in status.drift.items] == [
        ("function", "public.word_count(t text)", "changed")]
    assert "body" in status.drift.items[0].detail


def test_without_createdb_the_shadow_falls_back_to_the_embedded_server(
        migrated: Any, db_url: DatabaseUrl, embedded_folder: Path, make_settings: Any) -> None:
    role = "pgshift_no_createdb"
    with Database.connect(db_url.with_dbname("postgres")) as admin:
        if not admin.one("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]):
            admin.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")
    by_hand(db_url, f"GRANT SELECT ON ALL TABLES IN SCHEMA public, pgshift TO {role}; "
                    f"GRANT USAGE ON SCHEMA pgshift TO {role}")
    weak = make_settings(db_url.__class__(db_url.host, db_url.port, db_url.dbname, role),
                         embedded_dir=embedded_folder)
    status = api.status(weak, drift=True)
    assert status.drift is not None
    assert status.drift.shadow.startswith("the embedded PostgreSQL 18 (the target's user may not create")
    assert status.drift.items == []


def test_status_cli_has_a_drift_field_and_exit_code(migrated: Any, db_url: DatabaseUrl, tmp_path: Path) -> None:
    by_hand(db_url, "ALTER TABLE posts ADD COLUMN draft boolean")
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrated.migrations_dir))
    plain = subprocess.run([INV, "dev.status", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=60)
    assert plain.returncode == 0 and json.loads(plain.stdout)["drift"] is None
    checked = subprocess.run([INV, "dev.status", "--json", "--drift"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 1, checked.stderr
    assert json.loads(checked.stdout)["drift"]["differences"] == [
        {"kind": "column", "name": "public.posts.draft", "change": "unexpected", "detail": "boolean"}]
    shown = subprocess.run([INV, "dev.status", "--drift"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=60)
    assert "+ column public.posts.draft: exists, but no migration made it (boolean)" in shown.stdout


def test_a_shadow_left_by_a_killed_process_is_dropped_by_the_next(migrated: Any, server: DatabaseUrl) -> None:
    dead, live = f"pgshift_shadow_{throwaway.HOST}_{dead_pid()}_0a0b0c", throwaway.name("shadow")
    with Database.connect(server) as admin:
        for name in (dead, live):
            throwaway.create(admin, name)
    try:
        api.status(migrated, drift=True)
        with Database.connect(server) as admin:
            left = set(throwaway.leftovers(admin))
        assert dead not in left and live in left
        assert dead in api.cleaned_up()
    finally:
        with Database.connect(server) as admin:
            for name in (dead, live):
                throwaway.drop(admin, name)
