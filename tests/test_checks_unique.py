"""Data generation honours every unique index, and ``inv test`` reports a check that cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgshift.checks import datagen, suite
from pgshift.databases import snapshot
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError
from tests.commands import cli_env, inv_here
from tests.conftest import write_migration

UNIQUE_INDEXES = """
CREATE TABLE flags (id bigint PRIMARY KEY, flag boolean NOT NULL);
CREATE UNIQUE INDEX ON flags (flag);
CREATE TABLE parents (id bigserial PRIMARY KEY, name text NOT NULL);
CREATE TABLE children (
    id bigserial PRIMARY KEY, parent_id bigint NOT NULL REFERENCES parents, code varchar(8) NOT NULL,
    tenant smallint NOT NULL, email text, is_primary boolean NOT NULL DEFAULT false, deleted_at timestamp);
CREATE UNIQUE INDEX children_tenant_code ON children (tenant, code);
CREATE UNIQUE INDEX children_one_primary ON children (parent_id) WHERE is_primary;
CREATE UNIQUE INDEX children_email ON children (lower(email));
CREATE UNIQUE INDEX children_live_code ON children (code) INCLUDE (tenant) WHERE deleted_at IS NULL;
"""


def test_generated_rows_honour_standalone_partial_and_expression_unique_indexes(db_url: DatabaseUrl) -> None:
    with Database.connect(db_url) as db:
        db.execute(UNIQUE_INDEXES)
        before = snapshot.take(db)
        report = datagen.fill(db, 2000, workers=2)
        assert snapshot.diff(before, snapshot.take(db)) == []
        made = {t.table: t for t in report.tables}
        assert made["public.flags"].rows == 2  # a unique boolean holds two rows, and the fill says so
        children = made["public.children"]
        assert children.rows > 0 and children.note is not None and "unique index" in children.note
        assert db.one("SELECT count(*) FROM children") == (children.rows,)
        primaries = db.one("SELECT count(*), count(DISTINCT parent_id) FROM children WHERE is_primary")
        assert primaries is not None and primaries[0] > 0 and primaries[0] == primaries[1]
        valid = db.rows("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'children'::regclass "
                        "AND indisvalid AND indisunique")
        assert len(valid) == 5  # the key and the four unique indexes, every one rebuilt and valid


def test_a_check_that_raises_is_a_failed_check_with_its_message() -> None:
    def broken() -> None:
        raise MigrationError("the scratch server went away; start it and run again")

    report = suite.guarded("performance", broken)
    assert isinstance(report, suite.NotRun) and not report.ok
    assert report.summary() == "could not run: the scratch server went away; start it and run again"
    assert report.as_json()["ok"] is False
    assert suite.guarded("forward", lambda: 42) == 42


@pytest.fixture
def task_url(task_db_url: DatabaseUrl) -> DatabaseUrl:
    return task_db_url


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_inv_test_over_a_unique_index_data_cannot_fill_prints_the_summary_and_json(
        task_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20240101000000_tables", UNIQUE_INDEXES,
                    "DROP TABLE children, parents, flags;")
    write_migration(migrations_dir, "20240102000000_more", "ALTER TABLE children ADD COLUMN note text;",
                    "ALTER TABLE children DROP COLUMN note;")
    env = cli_env(task_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir), INVOKE_PGSHIFT_QUICK_ROWS="3000")
    done = inv_here("test", env=env)
    assert "== summary" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "error:" not in done.stderr
    performance = done.stdout.split("== performance")[1].split("== order")[0]
    assert "ok: 1 migration(s) measured over" in performance
    assert "public.children: " in performance and "unique index and were left out" in performance
    as_json = inv_here("test", "--json", env=env)
    report = json.loads(as_json.stdout)
    assert set(report["checks"]) == {"forward", "backward", "constraints", "lint", "performance", "order", "schema"}
    assert report["checks"]["performance"]["ok"] is True
    filled = {t["table"]: t["rows"] for t in report["checks"]["performance"]["fill"]["tables"]}
    assert filled["public.flags"] == 2
