"""Generated data respects the schema; performance reports time, locks and rewrites per migration."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgshift.checks import datagen, performance
from pgshift.databases import snapshot
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.migrations import apply, source
from tests.conftest import write_migration

RICH = """
CREATE TYPE plan AS ENUM ('free', 'team', 'enterprise');
CREATE TABLE orgs (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name varchar(60) NOT NULL UNIQUE,
    code char(3) NOT NULL UNIQUE,
    plan plan NOT NULL DEFAULT 'free',
    price numeric(6, 2) CHECK (price > 0),
    starts date NOT NULL, ends date, CHECK (ends > starts));
CREATE TABLE accounts (id serial PRIMARY KEY, email text NOT NULL UNIQUE, settings jsonb NOT NULL DEFAULT '{}',
                       ip inet, token uuid NOT NULL UNIQUE, active boolean NOT NULL DEFAULT true);
CREATE TABLE roles (id smallint PRIMARY KEY, name text NOT NULL);
INSERT INTO roles VALUES (1, 'owner'), (2, 'member');
CREATE TABLE memberships (
    org_id integer NOT NULL REFERENCES orgs, account_id integer NOT NULL REFERENCES accounts,
    role_id smallint NOT NULL REFERENCES roles, kind varchar(10) NOT NULL CHECK (kind IN ('human', 'robot')),
    joined_at timestamptz NOT NULL, left_at timestamptz, CHECK (left_at > joined_at),
    PRIMARY KEY (org_id, account_id));
CREATE INDEX memberships_account_idx ON memberships (account_id);
CREATE TABLE profiles (account_id integer PRIMARY KEY REFERENCES accounts, bio text);
CREATE TABLE folders (id bigint PRIMARY KEY, parent_id bigint REFERENCES folders, org_id integer REFERENCES orgs);
CREATE TABLE events (id bigserial PRIMARY KEY, org_id integer NOT NULL, account_id integer NOT NULL,
                     at timestamptz NOT NULL DEFAULT now(), payload bytea,
                     FOREIGN KEY (org_id, account_id) REFERENCES memberships);
CREATE SCHEMA "Audit";
CREATE TABLE "Audit"."Log" (id bigint PRIMARY KEY, at timestamptz NOT NULL, "Who" integer REFERENCES accounts);
CREATE INDEX "Log_at_idx" ON "Audit"."Log" (at DESC);
"""

ORPHANS = """
SELECT format('SELECT count(*) FROM %s c WHERE (%s) IS NOT NULL AND NOT EXISTS (SELECT 1 FROM %s p WHERE (%s) = (%s))',
       conrelid::regclass,
       (SELECT string_agg('c.' || quote_ident(attname), ', ') FROM pg_attribute WHERE attrelid = conrelid
        AND attnum = ANY(conkey)),
       confrelid::regclass,
       (SELECT string_agg('p.' || quote_ident(a.attname), ', ' ORDER BY k.i)
        FROM unnest(confkey) WITH ORDINALITY k(n, i)
        JOIN pg_attribute a ON a.attrelid = confrelid AND a.attnum = k.n),
       (SELECT string_agg('c.' || quote_ident(a.attname), ', ' ORDER BY k.i) FROM unnest(conkey) WITH ORDINALITY k(n, i)
        JOIN pg_attribute a ON a.attrelid = conrelid AND a.attnum = k.n))
FROM pg_constraint WHERE contype = 'f'"""


def test_generated_rows_respect_types_keys_uniques_and_checks(db_url: DatabaseUrl) -> None:
    with Database.connect(db_url) as db:
        db.execute(RICH)
        before = snapshot.take(db)
        report = datagen.fill(db, 3000)
        rows = {t.table: t for t in report.tables}
        assert {name: t.rows for name, t in rows.items()} == {
            '"Audit"."Log"': 3000,
            "public.accounts": 300,        # referenced: a tenth
            "public.events": 3000,         # nothing references it: the full count
            "public.folders": 3000,
            "public.memberships": 300,
            "public.orgs": 300,
            "public.profiles": 300,        # its key is a reference to accounts: at most one row each
            "public.roles": 2,             # a seed: kept as it was
        }
        assert rows["public.roles"].note and "had rows already" in rows["public.roles"].note
        assert snapshot.diff(before, snapshot.take(db)) == [], "indexes and keys are back, exactly"
        for (query,) in db.rows(ORPHANS):
            assert db.one(query) == (0,), query
        assert db.one("SELECT count(DISTINCT kind), bool_and(ends IS NULL OR ends > starts) "
                      "FROM memberships, orgs WHERE orgs.id = memberships.org_id") == (2, True)
        # sequences were moved past the generated keys: the application can insert again
        db.execute("INSERT INTO accounts (email, token) VALUES ('new@example.test', gen_random_uuid())")
        db.execute("INSERT INTO orgs (name, code, starts) VALUES ('new', 'zzz', '2025-01-01')")
        assert report.rows == sum(t.rows for t in report.tables) and report.rows_per_second > 0


def test_rows_that_cannot_be_made_are_left_out_and_the_report_says_why(db_url: DatabaseUrl) -> None:
    with Database.connect(db_url) as db:
        db.execute("CREATE TABLE odd (id int PRIMARY KEY, n int NOT NULL CHECK (n % 7 = 3));"
                   "CREATE TABLE chain (id int PRIMARY KEY, next_id int NOT NULL REFERENCES chain)")
        report = datagen.fill(db, 700)
        chain, odd = report.tables
        assert odd.rows == 100 and odd.note == "600 generated row(s) broke a CHECK and were left out"
        assert db.one("SELECT count(*) FROM odd WHERE n % 7 <> 3") == (0,)
        assert chain.rows == 0 and chain.note == ("skipped: NOT NULL column next_id references its own table or one "
                                                  "in a cycle of references, not filled yet")


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_performance_reports_lock_rewrite_and_fails_over_the_limit(
        db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20250101000000_items",
                    "CREATE TABLE items (id bigint PRIMARY KEY, qty integer NOT NULL, note text);",
                    "DROP TABLE items;")
    write_migration(migrations_dir, "20250102000000_index_note",
                    "CREATE INDEX CONCURRENTLY items_note_idx ON items (note);",
                    "DROP INDEX CONCURRENTLY items_note_idx;")
    write_migration(migrations_dir, "20250103000000_widen",
                    "ALTER TABLE items ALTER COLUMN qty TYPE bigint;\nSELECT pg_sleep(0.4);\n",
                    "ALTER TABLE items ALTER COLUMN qty TYPE integer;")
    migrations = source.read(migrations_dir)
    admin = db_url.with_dbname("postgres")
    report = performance.run(admin, migrations, apply.Limits(), 2000,
                             performance.Thresholds(max_lock_seconds=0.2), {"20250101000000_items"})
    assert report.base == "20250101000000_items" and report.fill is not None and report.fill.rows == 2000
    concurrent, widen = report.measured
    assert concurrent.state == "ok" and concurrent.rewrote == []
    assert all(lock.blocks == "schema changes" for lock in concurrent.locks)  # too quick to be seen, maybe
    assert widen.state == "too slow" and widen.rewrote == ["public.items"]
    assert widen.locks[0].mode == "AccessExclusiveLock" and widen.locks[0].ms > 200
    assert widen.problems[0].startswith("held AccessExclusiveLock on public.items for 0.")
    assert "(blocks reads and writes), over the 0.2s limit" in widen.problems[0]
    assert not report.ok and report.summary().startswith("1 migration(s) too slow over 2,000 generated rows; "
                                                         "first: 20250103000000_widen.sql: held AccessExclusiveLock")
