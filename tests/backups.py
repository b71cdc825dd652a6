"""What the backup and restore tests share: a populated database, its fingerprint, waiting for a state."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pgshift import api
from pgshift.databases import pgbin, target, throwaway
from pgshift.databases.children import env_for
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from tests.conftest import write_migration

SCHEMA_1 = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE person (id bigserial PRIMARY KEY, name text NOT NULL, mood mood, born date, data jsonb, photo bytea);
CREATE INDEX person_name ON person (name);
CREATE SCHEMA shop;
CREATE TABLE shop.orders (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, person_id bigint REFERENCES person,
                          total numeric(10, 2) CHECK (total >= 0), note text);
CREATE VIEW shop.big_orders AS SELECT * FROM shop.orders WHERE total > 100;
CREATE FUNCTION shop.total_of(p bigint) RETURNS numeric LANGUAGE sql STABLE
    AS $$ SELECT coalesce(sum(total), 0) FROM shop.orders WHERE person_id = p $$;
"""


SCHEMA_2 = "ALTER TABLE person ADD COLUMN email text;"


DATA = """
INSERT INTO person (name, mood, born, data, photo, email)
SELECT 'person ' || g || CASE WHEN g % 7 = 0 THEN ' ünïcødé ✓' ELSE '' END,
       (ARRAY['sad', 'ok', 'happy', NULL])[1 + g % 4]::mood, DATE '1970-01-01' + g,
       CASE WHEN g % 3 = 0 THEN NULL ELSE jsonb_build_object('n', g, 'tags', jsonb_build_array(g, 'x')) END,
       CASE WHEN g % 5 = 0 THEN decode(md5(g::text), 'hex') END, 'p' || g || '@example.org'
FROM generate_series(1, 2000) g;
INSERT INTO shop.orders (person_id, total, note)
SELECT 1 + g % 2000, (g % 500) + 0.25, CASE WHEN g % 2 = 0 THEN E'tab\\there, quote '' and newline\\n' END
FROM generate_series(1, 5000) g;
ALTER DATABASE CURRENT_DATABASE_NAME SET work_mem = '8MB';
COMMENT ON DATABASE CURRENT_DATABASE_NAME IS 'the shop';
"""


HEAD = "20250102000000_b"


def populate(url: DatabaseUrl, migrations_dir: Path, settings: Any) -> None:
    """Two migrations (types, schemas, identity, FK, check, view, function) and some awkward data."""
    write_migration(migrations_dir, "20250101000000_a", SCHEMA_1)
    write_migration(migrations_dir, HEAD, SCHEMA_2)
    api.migrate(settings)
    with Database.connect(url) as db:
        db.execute(DATA.replace("CURRENT_DATABASE_NAME", db.identifier(url.dbname)))


def schema_text(url: DatabaseUrl) -> str:
    done = subprocess.run([str(pgbin.program("pg_dump")), "--schema-only", "--no-password"],
                          env=env_for(url), capture_output=True, text=True, timeout=60, check=True)
    skip = ("\\restrict", "\\unrestrict", "-- Dumped")
    text = "\n".join(ln for ln in done.stdout.splitlines() if not ln.startswith(skip))
    # The local 15 stamps each column with a creation-time attribute option; its value is not schema.
    return re.sub(r"pg_attver=\d+", "pg_attver=N", text)


def fingerprint(url: DatabaseUrl, schema: bool = True) -> dict[str, Any]:
    """Everything a restore must bring back: per-table row count and content checksum, sequences,
    migration records, database-level settings and comment, and (optionally) the schema as text."""
    with Database.connect(url) as db:
        tables = [r[0] for r in db.rows(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1")]
        data = {name: db.one(f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) "
                             f"FROM {name} t") for name in tables}
        sequences = db.rows("SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2")
        migrations = (db.rows("SELECT m::text FROM pgshift.migrations m ORDER BY id")
                      if db.one("SELECT to_regclass('pgshift.migrations')") != (None,) else [])
        database = db.rows("SELECT s.setconfig, shobj_description(d.oid, 'pg_database') FROM pg_database d "
                           "LEFT JOIN pg_db_role_setting s ON s.setdatabase = d.oid "
                           "WHERE d.datname = current_database()")
    found = {"data": data, "sequences": sequences, "migrations": migrations, "database": database}
    if schema:
        found["schema"] = schema_text(url)
    return found


def scratch_databases(url: DatabaseUrl) -> list[str]:
    """The throwaway databases a restore of ``url``'s database made (labelled with its name)."""
    with Database.connect(url.with_dbname("postgres")) as db:
        return [n for n in throwaway.leftovers(db)
                if (o := throwaway.owner(n)) is not None and o.label and url.dbname.startswith(o.label)]


@contextmanager
def fresh_database(admin: DatabaseUrl) -> Iterator[DatabaseUrl]:
    name = f"pgshift_t_{uuid.uuid4().hex[:12]}"
    target.create_database(admin, name)
    try:
        yield admin.with_dbname(name)
    finally:
        target.drop_database(admin, name)


@contextmanager
def table_locked(url: DatabaseUrl, table: str) -> Iterator[None]:
    """Hold an ACCESS EXCLUSIVE lock on ``table``: pg_dump then waits for it, deterministically."""
    with Database.connect(url) as db:
        db.execute("BEGIN")
        db.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        yield
        db.execute("ROLLBACK")



