"""Taking backups on real servers: round trips, the files and manifests, and backups that fail or die."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.backups import files as backups
from pgshift.backups import restore, retention
from pgshift.databases import dump, pgbin, target, throwaway
from pgshift.databases.children import env_for
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import PgShiftError, ToolError
from tests.conftest import ROOT, write_migration

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
TAKE = """
import sys
from dataclasses import replace
from pathlib import Path
from pgshift.backups import files as backups
from pgshift import settings
from pgshift.dburl import DatabaseUrl
loaded = settings.load(Path(sys.argv[2]), {"backups_dir": sys.argv[3]}, env={})
backups.take(replace(loaded, url=DatabaseUrl.parse(sys.argv[1])))
"""


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


def wait_for(condition: Any, what: str, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_round_trip_restores_data_schema_and_records(db_url: DatabaseUrl, migrations_dir: Path,
                                                     make_settings: Any) -> None:
    settings = make_settings(db_url)
    populate(db_url, migrations_dir, settings)
    before = fingerprint(db_url)
    backup = backups.take(settings)
    assert backup.verified and backup.migration_head == HEAD

    write_migration(migrations_dir, "20250103000000_c", "CREATE TABLE extra (id int);")
    api.migrate(settings)
    with Database.connect(db_url) as db:
        db.execute("DELETE FROM shop.orders WHERE id % 2 = 0; UPDATE person SET name = 'x'; "
                   "DROP VIEW shop.big_orders; SELECT setval('person_id_seq', 99999)")
    assert fingerprint(db_url) != before
    bystander = Database.connect(db_url)  # an application session: the restore ends it

    result = restore.restore(settings, backup.path.name)

    assert fingerprint(db_url) == before
    assert result.migration_head == HEAD
    assert result.safety_backup is not None and result.safety_backup.migration_head == "20250103000000_c"
    assert [b.path for b in backups.list_backups(settings)] == [result.safety_backup.path, backup.path]
    assert scratch_databases(db_url) == []
    with pytest.raises(PgShiftError, match=r"terminat|connection"):
        bystander.rows("SELECT 1")
    bystander.close()


def test_plain_sql_round_trip(db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    settings = make_settings(db_url, backup_format="plain")
    populate(db_url, migrations_dir, settings)
    before = fingerprint(db_url)
    backup = backups.take(settings)
    assert backup.path.suffix == ".sql" and backup.verified and backup.manifest is not None
    assert backup.manifest.objects > 10  # the object headers pg_dump wrote
    with Database.connect(db_url) as db:
        db.execute("TRUNCATE shop.orders; CREATE TABLE stray (x int)")
    result = restore.restore(settings, backup.path, progress=lambda p: None)
    assert fingerprint(db_url) == before
    assert result.migration_head == HEAD


def test_old_bare_sql_file_lists_unverified_and_restores(db_url: DatabaseUrl, migrations_dir: Path,
                                                         make_settings: Any) -> None:
    settings = make_settings(db_url, skip_backup=True)
    populate(db_url, migrations_dir, settings)
    before = fingerprint(db_url, schema=False)
    settings.backups_dir.mkdir()
    old = settings.backups_dir / "backup_development_20250708_120000.sql"
    subprocess.run([str(pgbin.program("pg_dump")), "--no-password", f"--file={old}"], env=env_for(db_url),
                   check=True, timeout=60)
    [listed] = backups.list_backups(settings)
    assert (listed.path, listed.state, listed.verified, listed.manifest) == (old, "unverified", False, None)
    with Database.connect(db_url) as db:
        db.execute("DELETE FROM person WHERE id > 10 AND id NOT IN (SELECT person_id FROM shop.orders)")
    assert restore.restore(settings, old.name).migration_head == HEAD
    assert fingerprint(db_url, schema=False) == before


def test_backup_file_and_manifest(pg18: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    with fresh_database(pg18) as url:
        settings = make_settings(url)
        populate(url, migrations_dir, settings)
        backup = backups.take(settings, reason="pre-deploy")
    path = backup.path
    assert path.parent == settings.backups_dir
    assert backup.restore_command == f"inv rollback.restore {path.name}"
    assert path.name.startswith("backup_development_") and path.suffix == ".dump"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads((path.parent / (path.name + ".json")).read_text())
    assert stat.S_IMODE((path.parent / (path.name + ".json")).stat().st_mode) == 0o600
    import hashlib
    assert data["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data["size"] == path.stat().st_size
    assert (data["database"], data["environment"], data["migration_head"], data["reason"], data["format"]) == (
        url.dbname, "development", HEAD, "pre-deploy", "custom")
    assert data["server_version"].startswith("18.") and data["pg_dump_version"].startswith("18")
    assert data["duration_s"] > 0 and data["objects"] == len(dump.contents(path))
    assert any("TABLE DATA shop orders" in line for line in dump.contents(path))
    assert [p for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temporary files left


def test_progress_reports_bytes_while_pg_dump_runs(pg18: DatabaseUrl, migrations_dir: Path,
                                                   make_settings: Any) -> None:
    with fresh_database(pg18) as url:
        settings = make_settings(url, lock_wait=30)
        populate(url, migrations_dir, settings)
        seen: list[dump.DumpProgress] = []
        with table_locked(url, "shop.orders"):  # the dump cannot finish while this is held
            worker = threading.Thread(target=lambda: backups.take(settings, progress=seen.append))
            worker.start()
            wait_for(lambda: len(seen) >= 2, "two progress reports")
        worker.join(60)
    assert {(p.phase, p.unit) for p in seen} == {("dump", "bytes")}
    assert seen[0].total is not None and seen[0].total > 0  # the estimate from the catalog
    assert seen[1].elapsed > seen[0].elapsed >= 0.4
    assert len(backups.list_backups(settings)) == 1


def test_backups_started_together_get_their_own_files(pg18: DatabaseUrl, migrations_dir: Path,
                                                      make_settings: Any) -> None:
    with fresh_database(pg18) as url:
        settings = make_settings(url)
        populate(url, migrations_dir, settings)
        with ThreadPoolExecutor(4) as pool:
            taken = list(pool.map(lambda _: backups.take(settings), range(4)))
    assert len({b.path for b in taken}) == 4 and all(b.verified for b in taken)
    assert sorted(b.path for b in backups.list_backups(settings)) == sorted(b.path for b in taken)
    for backup in taken:
        backups.verify(backup.path)  # each file matches its own manifest


def test_failed_backup_leaves_nothing_and_quotes_pg_dump(db_url: DatabaseUrl, migrations_dir: Path,
                                                         make_settings: Any) -> None:
    settings = make_settings(db_url, lock_wait=0.5)
    populate(db_url, migrations_dir, settings)
    with table_locked(db_url, "shop.orders"), pytest.raises(ToolError) as caught:
        backups.take(settings)
    message = str(caught.value)
    assert message.startswith(f"backing up {db_url.dbname} failed: pg_dump: error: ")
    assert "a table stayed locked by another session for more than 0.5s" in message
    assert "\n" not in message
    assert list(settings.backups_dir.iterdir()) == []


def test_killed_backup_leaves_nothing_valid(pg18: DatabaseUrl, migrations_dir: Path, make_settings: Any,
                                            tmp_path: Path) -> None:
    with fresh_database(pg18) as url:
        settings = make_settings(url, lock_wait=60)
        populate(url, migrations_dir, settings)
        with table_locked(url, "shop.orders"):
            child = subprocess.Popen([sys.executable, "-c", TAKE, str(url), str(tmp_path), str(settings.backups_dir)],
                                     cwd=ROOT)
            wait_for(lambda: any(p.name.endswith(".partial") for p in settings.backups_dir.glob(".*")),
                     "the partial backup file")
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            [partial] = list(settings.backups_dir.iterdir())
            # pg_dump dies with its parent (it would otherwise wait for the lock, then write on).
            wait_for(lambda: partial.name not in subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True,
                                                                text=True, check=True).stdout, "pg_dump to end")
        assert backups.list_backups(settings) == []
        plan = retention.cleanup(settings)
        assert plan.leftovers == [partial] and not partial.exists()


def test_out_of_disk_space_is_a_clear_error(pg18: DatabaseUrl, migrations_dir: Path, make_settings: Any,
                                            tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must allow mounting a small tmpfs for the disk-full test")
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with fresh_database(pg18) as url:
            settings = make_settings(url, backups_dir=small / "backups")
            populate(url, migrations_dir, settings)
            with pytest.raises(ToolError, match=r"^out of disk space in .*small/backups while backing up; "
                                                r"the partial file was removed"):
                backups.take(settings)
            assert list(settings.backups_dir.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)
