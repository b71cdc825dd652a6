"""dev.baseline / prod.baseline: a database no tool manages is adopted as it is, its data untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pgshift.databases import dump
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from tests.commands import cli_env, inv_here
from tests.conftest import write_migration

SCHEMA = """
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE authors (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL UNIQUE,
                      mood mood NOT NULL DEFAULT 'happy');
CREATE TABLE books (id bigserial PRIMARY KEY, author_id bigint NOT NULL REFERENCES authors ON DELETE CASCADE,
                    title varchar(200) NOT NULL CHECK (title <> ''), pages int, token uuid DEFAULT gen_random_uuid());
CREATE INDEX books_author ON books (author_id) WHERE pages > 0;
CREATE VIEW long_books AS SELECT id, title FROM books WHERE pages > 300;
CREATE FUNCTION pages_of(a bigint) RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT sum(pages) FROM books
    WHERE author_id = a $$;
CREATE ROLE pgshift_test_reader;
GRANT SELECT ON books TO pgshift_test_reader;
"""


def _data_dump(url: DatabaseUrl, path: Path) -> str:
    """A plain dump without our own schema (and without pg_dump's per-run restrict key)."""
    with Database.connect(url) as db:
        dump.dump(url, path, "plain", db.server_version)
    blocks = path.read_text().split("\n--\n-- ")
    kept = [b for b in blocks if "Schema: pgshift" not in b and not b.startswith("Name: pgshift; Type: SCHEMA")]
    return "\n".join(line for line in "\n--\n-- ".join(kept).splitlines() if not line.startswith(("\\restrict",
                                                                                               "\\unrestrict")))


@pytest.fixture(autouse=True)
def _reader_role(server: DatabaseUrl) -> None:
    with Database.connect(server) as db:
        db.execute("DO $$ BEGIN CREATE ROLE pgshift_test_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$")


@pytest.mark.slow  # a million rows
def test_baseline_records_the_live_schema_and_changes_nothing(db_url: DatabaseUrl, migrations_dir: Path,
                                                              tmp_path: Path) -> None:
    rows = 1_000_000
    with Database.connect(db_url) as db:
        db.execute(SCHEMA.replace("CREATE ROLE pgshift_test_reader;", ""))
        db.execute("INSERT INTO authors (name) SELECT 'a' || g FROM generate_series(1, 1000) g;"
                   f"INSERT INTO books (author_id, title, pages) SELECT 1 + g % 1000, 't' || g, g % 500 "
                   f"FROM generate_series(1, {rows}) g")
    before = _data_dump(db_url, tmp_path / "before.sql")
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    done = inv_here("dev.baseline", "--reason", "adopting the legacy database", env=env)
    assert done.returncode == 0, done.stderr
    assert "recorded it as applied" in done.stdout
    assert "not carried: 1 grants on tables" in done.stdout
    after = _data_dump(db_url, tmp_path / "after.sql")
    assert after == before  # no row, no object changed
    made = next(migrations_dir.glob("*_baseline.sql"))
    assert "-- Not carried here" in made.read_text()
    assert made.with_name(made.name.replace(".sql", ".rollback.sql")).read_text().startswith(
        "-- pgshift: rollback refused")
    status = json.loads(inv_here("dev.status", "--json", "--drift", env=env).stdout)
    assert status["summary"] == "up to date: 1 applied", status["summary"]
    assert status["drift"]["clean"], status["drift"]
    with Database.connect(db_url) as db:
        assert db.one("SELECT action, migration FROM pgshift.audit") == ("baseline", made.stem)
        assert db.one("SELECT count(*) FROM books") == (rows,)
    # the next migration applies on top, and test.backward skips the baseline
    write_migration(migrations_dir, "29990101000000_add_isbn", "ALTER TABLE books ADD COLUMN isbn text;",
                    "ALTER TABLE books DROP COLUMN isbn;")
    applied = inv_here("dev.migrate", env=env)
    assert applied.returncode == 0 and "applied 1 migration(s)" in applied.stdout, applied.stdout + applied.stderr
    back = inv_here("test.backward", "--json", env=env)
    assert back.returncode == 0, back.stdout + back.stderr
    trips = {t["id"]: t["state"] for t in json.loads(back.stdout)["checks"]["backward"]["trips"]}
    assert trips == {made.stem: "skipped", "29990101000000_add_isbn": "ok"}


def test_a_folder_with_migrations_is_refused_before_connecting(migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);")
    env = cli_env(DatabaseUrl.parse("postgresql://nobody@127.0.0.1:1/nothing"),
                  INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    done = inv_here("dev.baseline", env=env)
    assert done.returncode == 2 and "has 1 migration(s) already" in done.stderr


def test_prod_baseline_needs_a_confirmation(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    with Database.connect(task_db_url) as db:
        db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    env = cli_env(task_db_url, ENVIRONMENT="production", INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    refused = inv_here("prod.baseline", env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert not list(migrations_dir.iterdir())
    done = inv_here("prod.baseline", "--yes", "--reason", "first adoption", env=env)
    assert done.returncode == 0, done.stderr
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT state FROM pgshift.migrations") == ("applied",)
