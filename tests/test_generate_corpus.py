"""dev.generate on a schema corpus with every index form PostgreSQL has and the types and objects real
schemas use: the module is written, imports, and its metadata agrees with the database, on both servers.
A module that would not match is never written, and says which table (and column) is wrong."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError
from pgshift.schema import catalog, generate, orm
from tests.commands import cli_env, inv_here

CORPUS = """
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE SCHEMA inventory;
CREATE SCHEMA "Sales";
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TYPE inventory.state AS ENUM ('in', 'out');
CREATE DOMAIN positive_int AS integer CHECK (VALUE > 0);
CREATE DOMAIN "Email" AS text CHECK (VALUE LIKE '%@%');
CREATE TYPE address AS (street text, city text);

CREATE TABLE people (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    email "Email",
    age positive_int,
    home address,
    moods mood[],
    feeling mood NOT NULL DEFAULT 'ok',
    nicknames text[] NOT NULL DEFAULT '{}',
    scores integer[],
    flags bit(3),
    code character(2),
    name_length integer GENERATED ALWAYS AS (length(name)) STORED,
    created timestamp(3) with time zone NOT NULL DEFAULT now()
);
-- several indexes after one with DESC: each not-modelled note once broke the comma after it
CREATE INDEX people_name_desc ON people (name DESC, id);
CREATE INDEX people_created_nulls ON people (created DESC NULLS LAST);
CREATE INDEX people_age_nulls_first ON people (age NULLS FIRST);
CREATE INDEX people_name_pattern ON people (name text_pattern_ops);
CREATE INDEX people_name_collated ON people (name COLLATE "C");
CREATE INDEX people_adults ON people (age) WHERE age >= 18;
CREATE INDEX people_lower_name ON people (lower(name));
CREATE INDEX people_name_include ON people (name) INCLUDE (age, feeling);
CREATE UNIQUE INDEX people_name_code ON people (name, code);
CREATE UNIQUE INDEX people_email_lower ON people (lower(email)) WHERE email IS NOT NULL;
CREATE INDEX people_moods ON people USING gin (moods);
CREATE INDEX people_hash ON people USING hash (code);
CREATE INDEX people_brin ON people USING brin (created);

CREATE TABLE rooms (
    id integer PRIMARY KEY,
    booked tstzrange NOT NULL,
    EXCLUDE USING gist (id WITH =, booked WITH &&)
);

CREATE TABLE events (
    id bigint NOT NULL,
    happened date NOT NULL,
    person_id bigint REFERENCES people (id),
    PRIMARY KEY (id, happened)
) PARTITION BY RANGE (happened);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE INDEX events_person ON events (person_id, happened DESC);

CREATE TABLE audit_log (at timestamptz NOT NULL DEFAULT now(), message text);
CREATE INDEX audit_log_at ON audit_log (at DESC);

CREATE TABLE inventory.items (
    sku text PRIMARY KEY,
    state inventory.state NOT NULL,
    states inventory.state[],
    quantity integer NOT NULL,
    UNIQUE (sku, quantity)
);
CREATE INDEX items_state_quantity ON inventory.items (state, quantity DESC) INCLUDE (sku);

CREATE TABLE "Sales"."OrderLines" (
    "OrderId" integer NOT NULL,
    "LineNo" integer NOT NULL,
    "order" text,
    "select" integer,
    "from" date,
    "user" text,
    class text,
    PRIMARY KEY ("OrderId", "LineNo")
);
CREATE INDEX "OrderLines_Order_Desc" ON "Sales"."OrderLines" ("order" DESC, "select");
CREATE UNIQUE INDEX "OrderLines_user" ON "Sales"."OrderLines" ("user", "from") INCLUDE ("class");

CREATE VIEW adults AS SELECT id, name FROM people WHERE age >= 18;
CREATE MATERIALIZED VIEW mood_counts AS SELECT feeling, count(*) FROM people GROUP BY feeling;
"""

GENERATED = "CREATE TABLE measures (v numeric, doubled numeric GENERATED ALWAYS AS (v * 2){kind});"


def corpus(db: Database) -> None:
    db.execute(CORPUS)
    # PostgreSQL 18 adds virtual generated columns; 15 has stored ones only
    db.execute(GENERATED.format(kind=" VIRTUAL" if db.server_version >= 180000 else " STORED"))


def test_the_corpus_generates_a_module_that_imports_and_round_trips(db_url: DatabaseUrl, tmp_path: Path) -> None:
    path = tmp_path / "models.py"
    with Database.connect(db_url) as db:
        corpus(db)
        result = generate.write(db, path)
        found = catalog.read(db)
    assert result.models == len(found.tables) == 7  # views and partitions are not models
    module = orm.load(path)
    assert generate.mismatch(found, orm.describe(module)) == ""
    text = path.read_text()
    compile(text, str(path), "exec")
    assert "# people_name_desc: opclass, ordering or collation not modelled\n" in text
    tables = {(t.schema, t.name): t for t in orm.describe(module)}
    lines = tables[("Sales", "OrderLines")]
    assert lines.primary_key == ("OrderId", "LineNo")
    assert {i.name: i.elements for i in lines.indexes}["OrderLines_Order_Desc"] == ("order", "select")
    assert tables[("public", "audit_log")].primary_key == ()  # mapped on all its columns, none invented
    people = {c.name: c for c in tables[("public", "people")].columns}
    assert people["flags"].type == "bit(3)" and people["email"].type == '"Email"'
    assert people["moods"].is_array and people["moods"].enum == (None, "mood")
    assert not people["feeling"].nullable and people["age"].nullable
    assert {i.name for i in tables[("public", "events")].indexes} == {"events_person"}


def test_inv_dev_generate_writes_the_corpus_module_with_a_source_files_mode(
        db_url: DatabaseUrl, migrations_dir: Path, tmp_path: Path) -> None:
    with Database.connect(db_url) as db:
        corpus(db)
    models = tmp_path / "models.py"
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    previous = os.umask(0o022)
    try:
        done = inv_here("dev.generate", "--output", str(models), env=env)
    finally:
        os.umask(previous)
    assert done.returncode == 0, done.stderr
    assert "7 model(s)" in done.stdout and "imports cleanly" in done.stdout
    assert stat.S_IMODE(models.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".models.py")] == []
    assert orm.table_count(orm.load(models)) == 7


def test_a_module_that_would_not_round_trip_leaves_the_old_one_and_names_the_column(
        db_url: DatabaseUrl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "models.py"
    with Database.connect(db_url) as db:
        corpus(db)
        generate.write(db, path)
        before = path.read_bytes()
        # a renderer that maps integer to BIGINT: the module imports but does not match the database
        wrong = dict(generate._SIMPLE, integer=("sa.BigInteger()", "int"))
        monkeypatch.setattr(generate, "_SIMPLE", wrong)
        with pytest.raises(MigrationError) as raised:
            generate.write(db, path)
    message = str(raised.value)
    assert "\n" not in message
    assert "table events, column" not in message  # the first wrong table is named, only it
    assert "does not match the database: table" in message and "column " in message
    assert "type integer in the database but bigint in the module" in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.py"]


def test_a_module_that_does_not_import_is_not_written(db_url: DatabaseUrl, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "models.py"
    with Database.connect(db_url) as db:
        db.execute("CREATE TABLE t (id int PRIMARY KEY)")
        generate.write(db, path)
        before = path.read_bytes()
        real = generate.render
        monkeypatch.setattr(generate, "render", lambda found: real(found) + "\nraise ValueError('boom')\n")
        with pytest.raises(MigrationError, match=r"models\.py does not import cleanly: ValueError: boom"):
            generate.write(db, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.py"]


def test_a_module_that_does_not_parse_names_the_table_and_is_not_written(
        db_url: DatabaseUrl, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "models.py"
    with Database.connect(db_url) as db:
        corpus(db)
        generate.write(db, path)
        before = path.read_bytes()
        real = generate._table_args

        def old_comma_bug(table: catalog.Table) -> list[str]:  # the note after the index, as it once was
            args = real(table)
            if table.name != "OrderLines":
                return args
            return ["  ".join(reversed(a.split("\n        "))) if a.startswith("#") else a for a in args]

        monkeypatch.setattr(generate, "_table_args", old_comma_bug)
        with pytest.raises(MigrationError) as raised:
            generate.write(db, path)
    message = str(raised.value)
    assert "\n" not in message
    assert "models.py does not parse" in message and "in table Sales.OrderLines)" in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.py"]
