"""test.schema: schema.sql and the migrations must produce the same schema (a CI gate, part of inv test)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.dburl import DatabaseUrl
from tests.commands import cli_env, inv_here
from tests.conftest import write_migration

SCHEMA = """
create schema if not exists app;
create type app.plan as enum ('free', 'paid');
create table app.accounts (
    id bigint generated always as identity primary key,
    email text not null,
    plan app.plan not null default 'free'
);
create unique index accounts_email_key on app.accounts (lower(email));
create view app.paid_accounts as select id, email from app.accounts where plan = 'paid';
"""


def _history(folder: Path) -> None:
    write_migration(folder, "20250101000000_app", "create schema if not exists app;\n"
                    "create type app.plan as enum ('free', 'paid');\n", "drop type app.plan;\ndrop schema app;\n")
    write_migration(folder, "20250102000000_accounts",
                    "create table if not exists app.accounts (id bigint generated always as identity primary key, "
                    "email text not null, plan app.plan not null default 'free');\n"
                    "create unique index if not exists accounts_email_key on app.accounts (lower(email));\n",
                    "drop table app.accounts;\n")
    write_migration(folder, "20250103000000_paid_accounts",
                    "create or replace view app.paid_accounts as select id, email from app.accounts "
                    "where plan = 'paid';\n", "drop view app.paid_accounts;\n")


def _env(url: DatabaseUrl, folder: Path) -> dict[str, str]:
    return cli_env(url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(folder))


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_equal_schemas_pass_and_a_differing_column_is_named(db_url: DatabaseUrl, migrations_dir: Path,
                                                             make_settings: Any) -> None:
    _history(migrations_dir)
    declared = migrations_dir.parent / "schema.sql"
    declared.write_text(SCHEMA)
    settings = make_settings(db_url)
    same = api.schema(settings)
    assert same.ok and not same.skipped and same.migrations == 3, same.summary()
    declared.write_text(SCHEMA.replace("email text not null", "email varchar(200) not null"))
    differs = api.schema(settings)
    assert not differs.ok
    named = [d.describe() for d in differs.differences]
    assert named[0] == "column app.accounts.email: differs: type character varying(200) -> text", named
    assert "view app.paid_accounts: differs: definition differs" in named  # what depends on it, too


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_task_exits_1_naming_each_difference_and_0_when_equal(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    _history(migrations_dir)
    declared = migrations_dir.parent / "schema.sql"
    declared.write_text(SCHEMA.replace("email text not null,", "email text not null,\n    nickname text,"))
    env = _env(task_db_url, migrations_dir)
    failed = inv_here("test.schema", env=env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "  column app.accounts.nickname: declared in schema.sql, no migration makes it" in failed.stdout
    assert failed.stdout.rstrip().splitlines()[-1].startswith("FAILED: schema.sql and the migrations differ in 1")
    declared.write_text(SCHEMA)
    passed = inv_here("test.schema", env=env)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "ok: schema.sql and the 3 migration(s) produce the same schema" in passed.stdout


def test_without_schema_sql_it_is_skipped_and_says_so(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    _history(migrations_dir)
    done = inv_here("test.schema", env=_env(task_db_url, migrations_dir))
    assert done.returncode == 0, done.stderr
    assert "ok: skipped: no schema.sql beside the migrations folder" in done.stdout


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_inv_test_includes_it(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    _history(migrations_dir)
    (migrations_dir.parent / "schema.sql").write_text(SCHEMA.replace("'free', 'paid'", "'free', 'paid', 'team'"))
    env = _env(task_db_url, migrations_dir)
    done = inv_here("test", "--json", "--rows", "0", env=env)
    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["ok"] is False
    assert {n: c["ok"] for n, c in report["checks"].items()} == {
        "forward": True, "backward": True, "constraints": True, "lint": True, "order": True, "schema": False}
    enum = {"kind": "enum", "name": "app.plan", "change": "changed",
            "detail": "values ['free', 'paid', 'team'] -> ['free', 'paid']"}
    assert enum in report["checks"]["schema"]["differences"]
    (migrations_dir.parent / "schema.sql").unlink()
    text = inv_here("test", "--rows", "0", env=env)
    assert text.returncode == 0, text.stdout
    summary = text.stdout.split("== summary", 1)[1]
    assert [line.split(None, 2) for line in summary.splitlines() if line.startswith("schema ")] == [
        ["schema", "ok", "skipped: no schema.sql beside the migrations folder"]]
