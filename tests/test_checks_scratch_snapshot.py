"""Scratch databases (always dropped, never colliding, clones by template or by dump) and snapshots."""

from __future__ import annotations

import os

import pytest

from pgshift.databases import snapshot, throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from tests.helpers import dead_pid

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS citext;
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE SEQUENCE tickets START 100;
CREATE TABLE people (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, email citext NOT NULL UNIQUE,
                     mood mood NOT NULL DEFAULT 'happy', age positive, CHECK (email <> ''));
CREATE TABLE pets (id serial PRIMARY KEY, owner_id bigint REFERENCES people ON DELETE CASCADE, name text);
CREATE INDEX pets_owner_idx ON pets (owner_id);
CREATE VIEW owners AS SELECT p.id, count(*) AS pets FROM people p JOIN pets ON pets.owner_id = p.id GROUP BY p.id;
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER people_touch BEFORE UPDATE ON people FOR EACH ROW EXECUTE FUNCTION touch();
"""

# One change per kind of object; each must show in the diff under that key.
CHANGES = [
    ("ALTER TABLE pets ADD COLUMN born date", "+ column public.pets.born: date"),
    ("ALTER TABLE pets ALTER COLUMN name TYPE varchar(40)", "~ column public.pets.name: text -> character varying(40)"),
    ("ALTER TABLE pets ALTER COLUMN name SET DEFAULT 'rex'",
     "~ column public.pets.name: text -> text DEFAULT 'rex'::text"),
    ("ALTER TABLE pets ALTER COLUMN name SET NOT NULL", "~ column public.pets.name: text -> text NOT NULL"),
    ("ALTER TABLE people DROP CONSTRAINT people_email_check", "- constraint public.people.people_email_check"),
    ("DROP INDEX pets_owner_idx", "- index public.pets_owner_idx"),
    ("ALTER SEQUENCE tickets INCREMENT 5", "~ sequence public.tickets"),
    ("CREATE OR REPLACE VIEW owners AS SELECT p.id, count(*) AS pets, 1 AS one FROM people p "
     "JOIN pets ON pets.owner_id = p.id GROUP BY p.id", "~ view public.owners"),
    ("CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$",
     "~ function public.touch()"),
    ("DROP TRIGGER people_touch ON people", "- trigger public.people.people_touch"),
    ("ALTER TYPE mood ADD VALUE 'calm'", "~ type public.mood: enum ('happy', 'sad') -> enum ('happy', 'sad', 'calm')"),
    ("DROP EXTENSION citext CASCADE", "- extension citext"),
    ("CREATE SCHEMA audit", "+ schema audit"),
    ("DROP VIEW owners; ALTER TABLE pets DROP COLUMN owner_id, ADD COLUMN owner_id bigint",
     "~ table public.pets: columns (id, owner_id, name) -> columns (id, name, owner_id)"),
]


def test_snapshot_sees_every_kind_of_change(db_url: DatabaseUrl) -> None:
    with Database.connect(db_url) as db:
        db.execute(SCHEMA)
        base = snapshot.take(db)
        assert snapshot.diff(base, snapshot.take(db)) == []
        for change, expected in CHANGES:
            db.execute(f"BEGIN; {change}")
            lines = snapshot.diff(base, snapshot.take(db))
            db.execute("ROLLBACK")
            assert any(line.startswith(expected) for line in lines), (change, lines)
        db.execute("BEGIN; CREATE TABLE zoo (id int PRIMARY KEY, keeper_id bigint REFERENCES people)")
        lines = snapshot.diff(base, snapshot.take(db))
        db.execute("ROLLBACK")
        assert [line.split(":")[0] for line in lines] == [  # the table first, then its parts
            "+ table public.zoo", "+ column public.zoo.id", "+ column public.zoo.keeper_id",
            "+ constraint public.zoo.zoo_keeper_id_fkey", "+ constraint public.zoo.zoo_pkey", "+ index public.zoo_pkey"]
        db.execute("CREATE SCHEMA pgshift; CREATE TABLE pgshift.migrations (id text)")
        assert snapshot.diff(base, snapshot.take(db)) == [], "the tool's own schema is not part of the snapshot"


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_same_statements_give_equal_snapshots_and_a_clone_equals_its_source(server: DatabaseUrl) -> None:
    with throwaway.empty(server) as first, throwaway.empty(server) as second:
        snaps = []
        for url in (first, second):
            with Database.connect(url) as db:
                db.execute(SCHEMA)
                db.execute("INSERT INTO people (email) VALUES ('a@b.c')")
                snaps.append(snapshot.take(db))
        assert snaps[0] == snaps[1] and len(snaps[0]) > 30
        with throwaway.clone(server, first.dbname) as copy, Database.connect(copy) as db:
            assert snapshot.diff(snaps[0], snapshot.take(db)) == []
            assert db.one("SELECT email::text FROM people") == ("a@b.c",)


def test_clone_falls_back_to_dump_and_restore_when_the_source_is_in_use(server: DatabaseUrl) -> None:
    with throwaway.empty(server) as source, Database.connect(source) as busy:
        busy.execute(SCHEMA)
        busy.execute("INSERT INTO people (email) VALUES ('x@y.z')")
        before = snapshot.take(busy)
        with throwaway.clone(server, source.dbname) as copy, Database.connect(copy) as db:
            assert snapshot.diff(before, snapshot.take(db)) == []
            assert db.one("SELECT email::text FROM people") == ("x@y.z",)
        assert busy.one("SELECT count(*) FROM people") == (1,)  # the source was only read


def test_scratch_databases_are_dropped_even_on_error_and_names_never_collide(server: DatabaseUrl) -> None:
    names = {throwaway.name("scratch") for _ in range(200)}
    assert len(names) == 200 and all(len(n) <= 63 and throwaway.owner(n) is not None for n in names)
    seen = ""
    with pytest.raises(RuntimeError), throwaway.empty(server) as url, Database.connect(server) as admin:
        seen = url.dbname
        assert seen in throwaway.leftovers(admin)
        raise RuntimeError("check blew up")
    with Database.connect(server) as admin:
        assert seen and seen not in throwaway.leftovers(admin)
        with pytest.raises(ValueError, match="not a throwaway database"):
            throwaway.drop(admin, "postgres")


def test_names_carry_kind_host_pid_and_a_label_cut_to_fit() -> None:
    made = throwaway.name("new", label="x" * 80)
    found = throwaway.owner(made)
    assert found is not None and len(made.encode()) <= 63
    assert (found.kind, found.host, found.pid) == ("new", throwaway.HOST, os.getpid())
    assert found.label and set(found.label) == {"x"} and not found.gone  # this process is alive
    assert throwaway.owner("pgshift_scratch_12_ab") is None and throwaway.owner("app_production") is None


def test_a_sweep_drops_what_dead_processes_of_this_machine_left_and_nothing_else(
        server: DatabaseUrl, own_machine: str) -> None:
    dead = dead_pid()
    killed = f"pgshift_scratch_{throwaway.HOST}_{dead}_0a0b0c"       # a killed run of this machine
    running = throwaway.name("scratch")                               # a run still going (this one)
    elsewhere = f"pgshift_clone_{'f' * 6 if throwaway.HOST != 'f' * 6 else 'e' * 6}_{dead}_0a0b0c"  # another machine
    with Database.connect(server) as admin:
        for name in (killed, running, elsewhere):
            throwaway.create(admin, name)
        try:
            with Database.connect(server.with_dbname(killed)):  # a session of the dead run still open
                assert throwaway.sweep(admin) == [killed]
            assert {running, elsewhere} <= set(throwaway.leftovers(admin))
            assert killed not in throwaway.leftovers(admin)
        finally:
            for name in (killed, running, elsewhere):
                throwaway.drop(admin, name)

