"""NOT NULL and foreign keys the safe way in phased migrations, and a table rename behind a view."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.checks import lint
from pgshift.databases.db import Database, SqlFailure
from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError
from pgshift.migrations import phases, rename, source
from tests.commands import cli_env, inv_here
from tests.conftest import write_migration

TABLE = "20250101000000_users"
CHECK = "20250102000000_email_check"
PHASED = "20250103000000_email_not_null"
ROWS = 60_000

NOT_NULL = """-- pgshift: expand
-- pgshift: validate
ALTER TABLE users VALIDATE CONSTRAINT users_email_not_null;
-- pgshift: contract
ALTER TABLE users ALTER COLUMN email SET NOT NULL;
ALTER TABLE users DROP CONSTRAINT users_email_not_null;
-- pgshift: abort
SELECT 1;
"""


def _users(folder: Path) -> None:
    write_migration(folder, TABLE, "CREATE TABLE users (id bigint PRIMARY KEY, email text);\n"
                    f"INSERT INTO users SELECT g, 'u' || g || '@example.com' FROM generate_series(1, {ROWS}) g;\n",
                    "DROP TABLE users;\n")
    write_migration(folder, CHECK, "ALTER TABLE users ADD CONSTRAINT users_email_not_null "
                    "CHECK (email IS NOT NULL) NOT VALID;\n",
                    "ALTER TABLE users DROP CONSTRAINT users_email_not_null;\n")


def _waiting(admin: Database, table: str) -> list[tuple[Any, ...]]:
    return admin.rows("SELECT l.pid, l.mode FROM pg_locks l WHERE l.relation = to_regclass(%s) AND NOT l.granted",
                      [table])


def test_validate_runs_alone_under_share_update_exclusive_and_never_queues_the_application(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    settings = make_settings(db_url, lock_timeout=60.0)
    _users(migrations_dir)
    api.migrate(settings)
    write_migration(migrations_dir, PHASED, NOT_NULL, "SELECT 1;\n")
    failed: list[BaseException] = []

    def migrate() -> None:
        try:
            api.migrate(settings)
        except BaseException as error:  # handed to the test's own thread
            failed.append(error)

    with Database.connect(db_url) as holder, Database.connect(db_url) as admin, Database.connect(db_url) as app:
        # A session that conflicts with SHARE UPDATE EXCLUSIVE (another VALIDATE, a VACUUM) makes the
        # validation queue, so the lock it asks for can be read; an ACCESS EXCLUSIVE request in that
        # queue would make every later reader and writer wait behind it.
        holder.execute("BEGIN; LOCK TABLE users IN SHARE UPDATE EXCLUSIVE MODE")
        worker = threading.Thread(target=migrate)
        worker.start()
        try:
            for _ in range(600):
                waiting = _waiting(admin, "users")
                if waiting or not worker.is_alive():
                    break
                time.sleep(0.05)
            assert [mode for _pid, mode in waiting] == ["ShareUpdateExclusiveLock"], (waiting, failed)
            app.execute("SET lock_timeout = '200ms'")
            assert app.one("SELECT count(*) FROM users") == (ROWS,)
            app.execute("INSERT INTO users VALUES (0, 'while validating')")
            app.execute("UPDATE users SET email = 'changed' WHERE id = 1")
        finally:
            holder.execute("COMMIT")
            worker.join(120)
    assert not failed, failed
    with Database.connect(db_url) as db:
        assert db.one("SELECT convalidated FROM pg_constraint WHERE conname = 'users_email_not_null'") == (True,)
        assert db.one("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass "
                      "AND attname = 'email'") == (False,)
    assert api.deploy_complete(settings) == [PHASED]
    with Database.connect(db_url) as db:
        assert db.one("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass "
                      "AND attname = 'email'") == (True,)
        assert db.one("SELECT count(*) FROM pg_constraint WHERE conrelid = 'users'::regclass "
                      "AND contype = 'c'") == (0,)


def test_set_not_null_after_the_validated_check_skips_its_scan(db_url: DatabaseUrl, migrations_dir: Path,
                                                               make_settings: Any) -> None:
    settings = make_settings(db_url)
    _users(migrations_dir)
    write_migration(migrations_dir, PHASED, NOT_NULL, "SELECT 1;\n")
    api.migrate(settings)
    parsed = phases.parse(NOT_NULL, "m.sql")
    assert parsed is not None and parsed.contract is not None
    with Database.connect(db_url) as db:
        # The server says at DEBUG1 when a validated check proves the column holds no NULL (no scan).
        notices: list[str] = []
        db.conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
        db.execute("BEGIN; SET LOCAL client_min_messages = debug1; "
                   "ALTER TABLE users ALTER COLUMN email SET NOT NULL; ROLLBACK")
    assert any("sufficient to prove that it does not contain nulls" in n for n in notices), notices


def test_a_validation_that_fails_names_the_rows_and_the_way_out(db_url: DatabaseUrl, migrations_dir: Path,
                                                                make_settings: Any) -> None:
    settings = make_settings(db_url)
    write_migration(migrations_dir, TABLE, "CREATE TABLE teams (id int PRIMARY KEY);\n"
                    "CREATE TABLE users (id int PRIMARY KEY, team_id int);\n"
                    "INSERT INTO teams VALUES (1); INSERT INTO users VALUES (1, 1), (2, 7);\n")
    ident = "20250102000000_users_team_fk"
    write_migration(migrations_dir, ident, "-- pgshift: expand\nALTER TABLE users ADD CONSTRAINT users_team_fk "
                    "FOREIGN KEY (team_id) REFERENCES teams (id) NOT VALID;\n"
                    "-- pgshift: validate\nALTER TABLE users VALIDATE CONSTRAINT users_team_fk;\n"
                    "-- pgshift: abort\nALTER TABLE users DROP CONSTRAINT users_team_fk;\n")
    with pytest.raises(MigrationError, match=rf"{ident}\.sql, line 4: .*a row refers to a key its table does "
                                             r"not have: fix those rows .*deploy\.complete again, or inv deploy.abort"):
        api.migrate(settings)
    with Database.connect(db_url) as db:
        assert db.one("SELECT convalidated FROM pg_constraint WHERE conname = 'users_team_fk'") == (False,)
        db.execute("UPDATE users SET team_id = 1 WHERE id = 2")
    assert api.deploy_complete(settings) == [ident]  # validates first, then the (empty) contract
    with Database.connect(db_url) as db:
        assert db.one("SELECT convalidated FROM pg_constraint WHERE conname = 'users_team_fk'") == (True,)


def test_a_not_null_rename_written_from_schema_sql_ends_not_null_without_the_check(
        task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, TABLE, "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);\n"
                    "INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 500) g;\n", "DROP TABLE users;\n")
    (migrations_dir.parent / "schema.sql").write_text(
        "CREATE TABLE users (\n    id bigint PRIMARY KEY,\n    full_name text NOT NULL -- renamed from name\n);\n")
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    made = inv_here("dev.migrate", "rename_user_name", "--expand-contract", env=env)
    assert made.returncode == 0, made.stderr
    [written] = migrations_dir.glob("*_rename_user_name.sql")
    text = written.read_text()
    assert "CHECK (full_name IS NOT NULL) NOT VALID" in text and "-- pgshift: validate" in text
    assert "SET NOT NULL" in text.split("-- pgshift: contract")[1]
    assert "ALTER COLUMN name SET NOT NULL" in written.with_name(written.name.replace(".sql", ".rollback.sql")) \
        .read_text()
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT convalidated FROM pg_constraint WHERE conname = 'users_full_name_not_null'") == (True,)
        with pytest.raises(SqlFailure, match="violates"):  # a write that would leave it NULL fails
            db.execute("UPDATE users SET full_name = NULL, name = name WHERE id = 1")
    linted = lint.lint(source.read(migrations_dir))
    assert [f.rule for f in linted.findings if f.rule in ("setting-not-null", "constraint-missing-not-valid")] == []
    assert inv_here("deploy.complete", env=env).returncode == 0
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'users'::regclass "
                      "AND attname = 'full_name'") == (True,)
        assert db.one("SELECT count(*) FROM pg_constraint WHERE conrelid = 'users'::regclass "
                      "AND contype = 'c'") == (0,)


def test_lint_suggests_the_sequence_for_a_plain_set_not_null_or_foreign_key(migrations_dir: Path) -> None:
    write_migration(migrations_dir, TABLE, "CREATE TABLE teams (id int PRIMARY KEY);\n"
                    "CREATE TABLE users (id int PRIMARY KEY, email text, team_id int);\n")
    write_migration(migrations_dir, CHECK, "ALTER TABLE users ALTER COLUMN email SET NOT NULL;\n"
                    "ALTER TABLE users ADD CONSTRAINT users_team_fk FOREIGN KEY (team_id) REFERENCES teams (id);\n")
    write_migration(migrations_dir, PHASED, "ALTER TABLE users ADD CONSTRAINT c CHECK (team_id IS NOT NULL) "
                    "NOT VALID;\nALTER TABLE users VALIDATE CONSTRAINT c;\n"
                    "ALTER TABLE users ALTER COLUMN team_id SET NOT NULL;\n")
    found = lint.lint(source.read(migrations_dir), only={CHECK, PHASED})
    by_rule = {(f.migration, f.rule): f.message for f in found.findings}
    assert set(by_rule) == {(CHECK, "setting-not-null"), (CHECK, "constraint-missing-not-valid")}
    assert "VALIDATE CONSTRAINT c in a transaction of its own" in by_rule[(CHECK, "setting-not-null")]
    assert "skips the scan" in by_rule[(CHECK, "setting-not-null")]
    assert "'-- pgshift: validate' section" in by_rule[(CHECK, "constraint-missing-not-valid")]


ROLE = "pgshift_view_reader"


@pytest.fixture
def reader(db_url: DatabaseUrl) -> Any:
    """A login-less role of this test's own (roles are server-wide), dropped after it."""
    name = f"{ROLE}_{db_url.dbname[-8:]}".lower()
    with Database.connect(db_url) as db:
        db.execute(f"DROP ROLE IF EXISTS {name}; CREATE ROLE {name}")
    yield name
    with Database.connect(db_url) as db:
        db.execute(f"DROP OWNED BY {name}; DROP ROLE {name}")


def test_a_table_rename_keeps_the_old_name_as_a_security_invoker_view(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any, reader: str) -> None:
    settings = make_settings(db_url)
    write_migration(migrations_dir, TABLE, "CREATE TABLE clients (id serial PRIMARY KEY, owner text NOT NULL, "
                    "secret text);\nINSERT INTO clients (owner, secret) VALUES ('a', 'x'), ('b', 'y');\n"
                    "ALTER TABLE clients ENABLE ROW LEVEL SECURITY;\n"
                    "CREATE POLICY mine ON clients USING (owner = current_user) WITH CHECK (owner = current_user);\n",
                    "DROP TABLE clients;\n")
    api.migrate(settings)
    with Database.connect(db_url) as db:
        db.execute(f"GRANT SELECT, INSERT ON clients TO {reader}; "
                   f"GRANT USAGE ON SEQUENCE clients_id_seq TO {reader}; "
                   f"INSERT INTO clients (owner) VALUES ('{reader}')")
    (migrations_dir.parent / "schema.sql").write_text(
        "CREATE TABLE customers ( -- renamed from clients\n    id serial PRIMARY KEY,\n    owner text NOT NULL\n);\n")
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    made = inv_here("dev.migrate", "rename_clients", "--expand-contract", env=env)
    assert made.returncode == 0, made.stderr
    with Database.connect(db_url) as db:
        assert db.one("SELECT relkind, reloptions FROM pg_class WHERE oid = 'clients'::regclass") == (
            "v", ["security_invoker=true"])
        db.execute(f"SET ROLE {reader}")
        # the old name works as it did: reads and writes, with the role's own grants and row security
        assert db.rows("SELECT owner FROM clients") == [(reader,)]
        db.execute(f"INSERT INTO clients (owner) VALUES ('{reader}')")
        assert db.one("SELECT count(*) FROM customers") == (2,)
        assert db.rows("SELECT owner, secret FROM clients WHERE owner <> current_user") == []
        for denied in (f"UPDATE clients SET owner = '{reader}'", "DELETE FROM clients",
                       "INSERT INTO clients (owner) VALUES ('a')"):
            with pytest.raises(SqlFailure, match=r"permission denied|row-level security"):
                db.execute(denied)
            db.execute("RESET ROLE")
            db.execute(f"SET ROLE {reader}")
        db.execute("RESET ROLE")
    assert api.deploy_complete(settings) != []
    with Database.connect(db_url) as db:
        assert db.one("SELECT to_regclass('clients')") == (None,)
        assert db.one("SELECT count(*) FROM customers") == (4,)


def test_a_table_rename_aborts_to_the_table_under_its_old_name(task_db_url: DatabaseUrl, migrations_dir: Path,
                                                               make_settings: Any) -> None:
    settings = make_settings(task_db_url)
    write_migration(migrations_dir, TABLE, "CREATE TABLE clients (id int PRIMARY KEY);\n", "DROP TABLE clients;\n")
    ident = "20250102000000_rename_clients"
    forward, rollback = rename.render_table(ident, rename.TableRename("clients", "customers"))
    write_migration(migrations_dir, ident, forward, rollback)
    api.migrate(replace(settings))
    with Database.connect(task_db_url) as db:
        db.execute("INSERT INTO clients VALUES (1)")  # through the view
    assert api.deploy_abort(settings) == [ident]
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT relkind FROM pg_class WHERE oid = 'clients'::regclass") == ("r",)
        assert db.one("SELECT to_regclass('customers')") == (None,)
        assert db.one("SELECT count(*) FROM clients") == (1,)


def test_a_file_that_validates_what_it_adds_not_valid_runs_statement_by_statement() -> None:
    from pgshift.migrations import txmode

    sql = ('ALTER TABLE users ADD CONSTRAINT "Users_fk" FOREIGN KEY (team_id) REFERENCES teams (id) NOT VALID;\n'
           "ALTER TABLE users ADD CONSTRAINT c CHECK (email IS NOT NULL) NOT VALID;\n"
           'ALTER TABLE users VALIDATE CONSTRAINT "Users_fk";\n')
    mode = txmode.of(sql, "m.sql")
    assert not mode.transactional and mode.why.startswith("line 3 validates the constraint line 1 adds NOT VALID")
    assert txmode.of("ALTER TABLE users VALIDATE CONSTRAINT c;\n", "m.sql").transactional  # added earlier: alone
    assert txmode.of(sql.replace('"Users_fk";', "users_fk;"), "m.sql").transactional  # another name


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_new_not_null_column_computed_from_others_is_filled_for_both_releases(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, TABLE, "CREATE TABLE people (id bigint PRIMARY KEY, first_name text NOT NULL, "
                    "last_name text NOT NULL);\nINSERT INTO people SELECT g, 'first' || g, 'last' || g "
                    "FROM generate_series(1, 2000) g;\n", "DROP TABLE people;\n")
    (migrations_dir.parent / "schema.sql").write_text(
        "CREATE TABLE people (\n    id bigint PRIMARY KEY,\n    first_name text NOT NULL,\n"
        "    last_name text NOT NULL,\n"
        "    full_name text NOT NULL -- computed from first_name || ' ' || last_name\n);\n")
    assert rename.computed_hints((migrations_dir.parent / "schema.sql").read_text()) == [
        rename.Computed("people", "full_name", "text", "first_name || ' ' || last_name")]
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    made = inv_here("dev.migrate", "full_name", "--expand-contract", env=env)
    assert made.returncode == 0, made.stderr
    with Database.connect(db_url) as db:
        assert db.one("SELECT count(*) FROM people WHERE full_name IS DISTINCT FROM first_name || ' ' || "
                      "last_name") == (0,)
        assert db.one("SELECT convalidated FROM pg_constraint WHERE conname = 'people_full_name_not_null'") == (True,)
        db.execute("INSERT INTO people (id, first_name, last_name) VALUES (9001, 'Ada', 'Lovelace')")  # the old app
        db.execute("INSERT INTO people VALUES (9002, 'Grace', 'Hopper', 'Rear Admiral Hopper')")       # the new one
        assert db.rows("SELECT full_name FROM people WHERE id > 9000 ORDER BY id") == [
            ("Ada Lovelace",), ("Rear Admiral Hopper",)]
    report = api.backward(make_settings(db_url))
    assert report.ok and [t.phase for t in report.trips if t.phase] == [
        "abort", "rollback after expand", "rollback after contract"], report.as_json()
    assert inv_here("deploy.complete", env=env).returncode == 0
    with Database.connect(db_url) as db:
        assert db.one("SELECT attnotnull FROM pg_attribute WHERE attrelid = 'people'::regclass "
                      "AND attname = 'full_name'") == (True,)
        assert db.one("SELECT count(*) FROM pg_constraint WHERE conrelid = 'people'::regclass "
                      "AND contype = 'c'") == (0,)
        assert db.one("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'people'::regclass") == (0,)


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_column_split_into_two_keeps_both_releases_working_and_ends_with_the_parts(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, TABLE, "CREATE TABLE people (id bigint PRIMARY KEY, name text NOT NULL);\n"
                    "INSERT INTO people SELECT g, 'first' || g || ' last' || g FROM generate_series(1, 2000) g;\n",
                    "DROP TABLE people;\n")
    (migrations_dir.parent / "schema.sql").write_text(
        "CREATE TABLE people (\n    id bigint PRIMARY KEY,\n"
        "    first_name text NOT NULL, -- split from name: split_part(name, ' ', 1)\n"
        "    last_name text NOT NULL -- split from name: split_part(name, ' ', 2)\n"
        "    -- name joined from first_name || ' ' || last_name\n);\n")
    hints = rename.split_hints((migrations_dir.parent / "schema.sql").read_text())
    assert [(h.old, [p.column for p in h.parts], h.joined) for h in hints] == [
        ("name", ["first_name", "last_name"], "first_name || ' ' || last_name")]
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    made = inv_here("dev.migrate", "split_name", "--expand-contract", env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    with Database.connect(db_url) as db:  # expanded and backfilled: both shapes agree on every row
        assert db.one("SELECT count(*) FROM people WHERE first_name || ' ' || last_name IS DISTINCT FROM name") == (0,)
        db.execute("INSERT INTO people (id, name) VALUES (9001, 'Ada Lovelace')")                # the old release
        db.execute("INSERT INTO people (id, first_name, last_name) VALUES (9002, 'Grace', 'Hopper')")  # the new one
        db.execute("UPDATE people SET name = 'Alan Turing' WHERE id = 1")                         # the old release
        db.execute("UPDATE people SET last_name = 'Murray' WHERE id = 2")                          # the new one
        assert db.rows("SELECT id, name, first_name, last_name FROM people WHERE id IN (1, 2, 9001, 9002) "
                       "ORDER BY id") == [(1, "Alan Turing", "Alan", "Turing"),
                                          (2, "first2 Murray", "first2", "Murray"),
                                          (9001, "Ada Lovelace", "Ada", "Lovelace"),
                                          (9002, "Grace Hopper", "Grace", "Hopper")]
    report = api.backward(make_settings(db_url))
    assert report.ok and [t.phase for t in report.trips if t.phase] == [
        "abort", "rollback after expand", "rollback after contract"], report.as_json()
    assert inv_here("deploy.complete", env=env).returncode == 0
    with Database.connect(db_url) as db:
        assert db.rows("SELECT attname, attnotnull FROM pg_attribute WHERE attrelid = 'people'::regclass "
                       "AND attnum > 0 AND NOT attisdropped ORDER BY attnum") == [
            ("id", True), ("first_name", True), ("last_name", True)]
        assert db.one("SELECT count(*) FROM pg_constraint WHERE conrelid = 'people'::regclass "
                      "AND contype = 'c'") == (0,)
        assert db.one("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'people'::regclass") == (0,)
        assert db.one("SELECT first_name, last_name FROM people WHERE id = 9001") == ("Ada", "Lovelace")
