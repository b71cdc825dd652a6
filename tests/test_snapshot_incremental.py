"""The incremental snapshot (``tracker.Tracker``) equals a whole one (``snapshot.take``) after every change:
through a long generated history, its rollbacks and re-applies, and renames of everything that other
definitions print the name of; inside transactions that are then rolled back too."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgshift.checks.forward import apply_one
from pgshift.databases import snapshot, tracker
from pgshift.databases.db import Database, SqlFailure
from pgshift.dburl import DatabaseUrl
from pgshift.migrations import apply, source
from tests import histories


def same(db: Database, track: tracker.Tracker, where: str) -> snapshot.Snapshot:
    """The tracker's snapshot, checked against a whole one."""
    incremental = track.take(db)
    whole = snapshot.take(db)
    assert snapshot.diff(whole, incremental) == [], where
    assert incremental == whole, where
    return incremental


@pytest.mark.slow
def test_a_generated_history_up_down_and_up_again(db_url: DatabaseUrl, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    histories.write(folder, 300)
    migrations = [m for m in source.read(folder) if not m.empty]
    limits = apply.Limits()
    track = tracker.Tracker()
    printed = owners = 0
    with Database.connect(db_url) as db:
        same(db, track, "empty")
        for n, m in enumerate(migrations):
            apply_one(db, migrations, m, limits)
            after = same(db, track, f"after {m.id}")
            if m.rollback_path is None:
                continue
            down = m.rollback_sql() or ""
            # the round trip inside a transaction that is rolled back, as the backward check runs it
            db.execute(f"BEGIN; {down}")
            same(db, track, f"after the rollback of {m.id}, in a transaction")
            printed, owners = printed + track.printed, owners + track.owners
            db.execute(m.sql)
            assert same(db, track, f"after {m.id} again, in the transaction") == after
            db.execute("ROLLBACK")
            assert same(db, track, f"after the transaction of {m.id} is rolled back") == after
            if n % 3:
                continue
            # and committed (every third: the rest is the same path again)
            apply.rollback(db, m, limits)
            same(db, track, f"after the rollback of {m.id}")
            apply_one(db, migrations, m, limits)
            assert same(db, track, f"after {m.id} again") == after
    assert len(migrations) > 250 and len(after) > 500
    assert printed < owners / 20, "a rollback prints again what it changed and what depends on it, not the schema"


BASE = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE SCHEMA app;
CREATE TYPE app.mood AS ENUM ('happy', 'sad');
CREATE DOMAIN app.positive AS integer CONSTRAINT positive_check CHECK (VALUE > 0);
CREATE DOMAIN app.small AS app.positive CHECK (VALUE < 100);
CREATE TYPE app.pair AS (a integer, m app.mood);
CREATE SEQUENCE app.tickets START 100;
CREATE TABLE app.people (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email citext NOT NULL UNIQUE,
                         mood app.mood NOT NULL DEFAULT 'happy', age app.positive,
                         ticket integer DEFAULT nextval('app.tickets'), nick text,
                         CONSTRAINT email_check CHECK (email <> ''));
ALTER SEQUENCE app.tickets OWNED BY app.people.ticket;
CREATE INDEX people_nick ON app.people (lower(nick)) WHERE mood = 'happy';
CREATE TABLE app.pets (id serial PRIMARY KEY, owner_id bigint REFERENCES app.people ON DELETE CASCADE,
                       name text, tags app.mood[], pair app.pair);
CREATE INDEX pets_owner ON app.pets (owner_id);
CREATE VIEW app.owners AS SELECT p.id, p.mood, count(*) AS pets FROM app.people p
    JOIN app.pets ON pets.owner_id = p.id WHERE p.mood <> 'sad' GROUP BY p.id;
CREATE VIEW app.owner_count AS SELECT count(*) AS n, max(pets) AS most FROM app.owners;
CREATE MATERIALIZED VIEW app.moods AS SELECT mood, count(*) AS n FROM app.people GROUP BY mood;
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER people_touch BEFORE UPDATE OF nick ON app.people FOR EACH ROW
    WHEN (OLD.nick IS DISTINCT FROM NEW.nick) EXECUTE FUNCTION app.touch();
CREATE FUNCTION app.age_of(p app.people) RETURNS app.positive LANGUAGE sql AS $$ SELECT p.age $$;
CREATE FUNCTION app.happy() RETURNS bigint LANGUAGE sql
    BEGIN ATOMIC SELECT count(*) FROM app.people WHERE mood = 'happy'; END;
CREATE TABLE app.events (id int, at date NOT NULL, kind app.mood) PARTITION BY RANGE (at);
CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE INDEX events_at ON app.events (at);
CREATE TABLE app.scored (id int, score int CHECK (score > 0), doubled int GENERATED ALWAYS AS (score * 2) STORED);
CREATE TABLE app.parent (id int);
CREATE TABLE app.child (extra text) INHERITS (app.parent);
CREATE TABLE plain (id int PRIMARY KEY, p app.pair, d app.small DEFAULT 5, e citext);
CREATE VIEW plain_view AS SELECT id, (p).a, e FROM plain;
CREATE FUNCTION twice(x int) RETURNS int LANGUAGE sql IMMUTABLE AS $$ SELECT x * 2 $$;
CREATE VIEW twice_view AS SELECT twice(id) AS t FROM plain;
"""

# (change, undo): each is applied inside a transaction that is rolled back, then committed and undone
CHANGES: list[tuple[str, str | None]] = [
    ("ALTER TABLE app.people RENAME COLUMN mood TO feeling", "ALTER TABLE app.people RENAME COLUMN feeling TO mood"),
    ("ALTER TABLE app.people RENAME COLUMN nick TO nickname", "ALTER TABLE app.people RENAME COLUMN nickname TO nick"),
    ("ALTER TABLE app.people RENAME COLUMN id TO pid", "ALTER TABLE app.people RENAME COLUMN pid TO id"),
    ("ALTER TABLE app.people RENAME COLUMN ticket TO ticket_no",
     "ALTER TABLE app.people RENAME COLUMN ticket_no TO ticket"),
    ("ALTER TABLE app.people RENAME TO persons", "ALTER TABLE app.persons RENAME TO people"),
    ("ALTER TABLE app.people RENAME CONSTRAINT email_check TO email_present",
     "ALTER TABLE app.people RENAME CONSTRAINT email_present TO email_check"),
    ("ALTER SEQUENCE app.tickets RENAME TO numbers", "ALTER SEQUENCE app.numbers RENAME TO tickets"),
    ("ALTER SEQUENCE app.tickets OWNED BY NONE", "ALTER SEQUENCE app.tickets OWNED BY app.people.ticket"),
    ("ALTER TYPE app.mood RENAME TO feeling", "ALTER TYPE app.feeling RENAME TO mood"),
    ("ALTER TYPE app.mood RENAME VALUE 'sad' TO 'blue'", "ALTER TYPE app.mood RENAME VALUE 'blue' TO 'sad'"),
    ("ALTER DOMAIN app.positive RENAME TO pos", "ALTER DOMAIN app.pos RENAME TO positive"),
    ("ALTER DOMAIN app.positive RENAME CONSTRAINT positive_check TO above_zero",
     "ALTER DOMAIN app.positive RENAME CONSTRAINT above_zero TO positive_check"),
    ("ALTER TYPE app.pair RENAME ATTRIBUTE a TO b", "ALTER TYPE app.pair RENAME ATTRIBUTE b TO a"),
    ("ALTER TYPE app.pair RENAME TO couple", "ALTER TYPE app.couple RENAME TO pair"),
    ("ALTER SCHEMA app RENAME TO core", "ALTER SCHEMA core RENAME TO app"),
    ("ALTER FUNCTION app.touch() RENAME TO touched", "ALTER FUNCTION app.touched() RENAME TO touch"),
    ("ALTER FUNCTION app.age_of(app.people) RENAME TO years", "ALTER FUNCTION app.years(app.people) RENAME TO age_of"),
    ("ALTER FUNCTION twice(int) RENAME TO double", "ALTER FUNCTION double(int) RENAME TO twice"),
    ("CREATE FUNCTION twice(x bigint) RETURNS bigint LANGUAGE sql AS $$ SELECT x * 2 $$",
     "DROP FUNCTION twice(bigint)"),
    ("ALTER TABLE app.events RENAME TO happenings", "ALTER TABLE app.happenings RENAME TO events"),
    ("ALTER TABLE app.events RENAME COLUMN at TO happened_on",
     "ALTER TABLE app.events RENAME COLUMN happened_on TO at"),
    ("ALTER TABLE app.events DETACH PARTITION app.events_2024",
     "ALTER TABLE app.events ATTACH PARTITION app.events_2024 FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')"),
    ("ALTER TABLE app.parent RENAME TO base", "ALTER TABLE app.base RENAME TO parent"),
    ("ALTER TABLE app.scored RENAME COLUMN score TO points", "ALTER TABLE app.scored RENAME COLUMN points TO score"),
    ("ALTER INDEX app.people_nick RENAME TO people_nick_idx", "ALTER INDEX app.people_nick_idx RENAME TO people_nick"),
    ("ALTER TABLE app.pets RENAME COLUMN owner_id TO person_id",
     "ALTER TABLE app.pets RENAME COLUMN person_id TO owner_id"),
    ("ALTER TABLE app.pets SET SCHEMA public", "ALTER TABLE public.pets SET SCHEMA app"),
    ("ALTER TABLE plain RENAME TO simple", "ALTER TABLE simple RENAME TO plain"),
    ("ALTER TYPE citext RENAME TO ci_text", "ALTER TYPE ci_text RENAME TO citext"),
    ("ALTER EXTENSION citext SET SCHEMA app", "ALTER EXTENSION citext SET SCHEMA public"),
    ("CREATE TABLE app.plain (id int)", "DROP TABLE app.plain"),
    ("CREATE TEMP TABLE plain (id int)", "DROP TABLE pg_temp.plain"),
    ("CREATE SCHEMA extra; SET search_path = extra, public; CREATE TABLE extra.plain (id int, p app.pair)",
     "DROP SCHEMA extra CASCADE; RESET search_path"),
    ("SET search_path = app, public", "RESET search_path"),
    ("SET DateStyle = 'SQL, DMY'; CREATE TABLE app.dated (d date DEFAULT '2024-02-01')",
     "DROP TABLE app.dated; RESET DateStyle"),
    ("CREATE COLLATION app.binary (locale = 'C'); ALTER TABLE app.pets ALTER COLUMN name TYPE text COLLATE app.binary",
     "ALTER TABLE app.pets ALTER COLUMN name TYPE text COLLATE \"default\"; DROP COLLATION app.binary"),
    ("CREATE OR REPLACE VIEW app.owners AS SELECT p.id, p.mood, count(*) AS pets, 1 AS one FROM app.people p "
     "JOIN app.pets ON pets.owner_id = p.id GROUP BY p.id", None),
    ("ALTER VIEW app.owners RENAME COLUMN pets TO pet_count", "ALTER VIEW app.owners RENAME COLUMN pet_count TO pets"),
    ("ALTER TABLE app.people ALTER COLUMN nick SET DEFAULT 'x', ALTER COLUMN nick SET NOT NULL, "
     "ADD COLUMN born date, DROP COLUMN age CASCADE", None),
    ("ALTER TABLE app.pets ALTER COLUMN name TYPE varchar(40)", "ALTER TABLE app.pets ALTER COLUMN name TYPE text"),
    ("ALTER TABLE app.people CLUSTER ON people_pkey", "ALTER TABLE app.people SET WITHOUT CLUSTER"),
    ("ALTER TABLE app.people DISABLE TRIGGER people_touch", "ALTER TABLE app.people ENABLE TRIGGER people_touch"),
    ("ALTER TABLE app.people ENABLE ROW LEVEL SECURITY", "ALTER TABLE app.people DISABLE ROW LEVEL SECURITY"),
    ("ALTER TABLE app.scored SET (fillfactor = 70)", "ALTER TABLE app.scored RESET (fillfactor)"),
    ("DROP VIEW app.owner_count; DROP VIEW app.owners", None),
    ("DROP TYPE app.mood CASCADE", None),
    ("DROP EXTENSION citext CASCADE", None),
]


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_renames_of_what_other_definitions_print(db_url: DatabaseUrl) -> None:
    track = tracker.Tracker()
    with Database.connect(db_url) as db:
        db.execute(BASE)
        base = same(db, track, "the base schema")
        db.execute("ALTER TABLE app.scored ADD COLUMN note text")
        same(db, track, "a column added")
        assert 0 < track.printed < 5, "the table and what depends on it, not the schema"
        db.execute("ALTER TABLE app.scored DROP COLUMN note")
        for change, undo in CHANGES:
            db.execute(f"BEGIN; {change}")
            changed = same(db, track, f"{change}, in a transaction")
            assert changed != base, change
            if undo is not None:
                db.execute(undo)
                same(db, track, f"{undo}, in the transaction")
            db.execute("ROLLBACK")
            db.execute("RESET ALL")
            assert same(db, track, f"{change}, rolled back") == base
            if undo is not None:
                db.execute(change)
                same(db, track, change)
                db.execute(undo)
                db.execute("RESET ALL")
                assert snapshot.diff(base, same(db, track, f"{change}, undone")) == [], change
        for change in [change for change, undo in CHANGES if undo is None]:  # for good
            db.execute(change)
            same(db, track, change)


def test_objects_that_hide_others_on_the_search_path(db_url: DatabaseUrl) -> None:
    track = tracker.Tracker()
    with Database.connect(db_url) as db:
        db.execute(BASE)
        db.execute("CREATE TEMP TABLE warm (id int); CREATE SCHEMA extra; SET search_path = extra, pg_catalog, public")
        same(db, track, "the base schema, another schema first on the search path")
        for change in ["CREATE FUNCTION extra.twice(x int) RETURNS int LANGUAGE sql AS $$ SELECT x * 3 $$",
                       "CREATE TABLE extra.plain (id int)",
                       "CREATE DOMAIN extra.citext AS text",
                       "CREATE FUNCTION extra.lower(x text) RETURNS text LANGUAGE sql AS $$ SELECT x $$",
                       "ALTER TABLE extra.plain RENAME TO simple",
                       "DROP FUNCTION extra.twice(int)",
                       "CREATE TEMP TABLE simple (id int)",
                       "CREATE TEMP TABLE plain (id int)"]:
            db.execute(f"BEGIN; {change}")
            same(db, track, f"{change}, in a transaction")
            db.execute("ROLLBACK")
            same(db, track, f"{change}, rolled back")
            db.execute(change)
            same(db, track, change)
        found = snapshot.take(db).objects
        assert "public.plain" in found["view public.plain_view"], "the view names the table it no longer finds first"
        assert "pg_catalog.lower" in found["index app.people_nick"]


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_many_versions_of_one_row_committed_and_in_a_transaction(db_url: DatabaseUrl) -> None:
    track = tracker.Tracker()
    with Database.connect(db_url) as db:
        db.execute("CREATE TABLE t (id int, n int DEFAULT 0)")
        same(db, track, "a table")
        for k in range(1, 17):
            db.execute(f"ALTER TABLE t ALTER COLUMN n SET DEFAULT {k}")
            same(db, track, f"default {k}, committed")
            db.execute("BEGIN")
            for j in range(k):  # each command replaces the row again: the same xmin, another cmin
                db.execute(f"ALTER TABLE t ALTER COLUMN n SET DEFAULT {1000 * k + j}")
                found = same(db, track, f"default {1000 * k + j}").objects["column public.t.n"]
                assert f"DEFAULT {1000 * k + j}" in found
            db.execute("ROLLBACK")
            assert f"DEFAULT {k}" in same(db, track, f"default {k}, rolled back to").objects["column public.t.n"]


def test_a_new_session_a_copy_and_a_concurrent_index(db_url: DatabaseUrl) -> None:
    track = tracker.Tracker()
    with Database.connect(db_url) as db:
        db.execute(BASE)
        same(db, track, "the base schema")
        db.execute("CREATE INDEX CONCURRENTLY pets_name ON app.pets (name)")
        same(db, track, "a concurrent index")
        db.execute("ALTER TYPE app.mood ADD VALUE 'calm' BEFORE 'sad'")
        same(db, track, "an enum value added")
        db.execute("CREATE TEMP TABLE scratch (id int)")
        same(db, track, "a temporary table")
    with Database.connect(db_url) as db:  # the temporary table is gone with its session
        same(db, track, "another session")
        db.execute("DROP INDEX CONCURRENTLY app.pets_name")
        same(db, track, "a concurrent drop")
        db.execute("DISCARD ALL")  # prepared statements gone
        same(db, track, "after DISCARD ALL")
        with pytest.raises(SqlFailure):
            db.execute("BEGIN; ALTER TABLE app.pets RENAME COLUMN name TO title; SELECT 1/0")
        same(db, track, "after a failed transaction")
    track.reset()
    with Database.connect(db_url) as db:
        same(db, track, "after a reset")
        assert track.printed == track.owners, "taken whole"
