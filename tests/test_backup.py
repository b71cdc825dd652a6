"""Taking backups on real servers: round trips, the files and manifests, and backups that fail or die."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.backups import files as backups
from pgshift.backups import restore, retention
from pgshift.databases import dump, pgbin
from pgshift.databases.children import env_for
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import PgShiftError, ToolError
from tests.backups import (
    HEAD,
    fingerprint,
    fresh_database,
    populate,
    scratch_databases,
    table_locked,
)
from tests.conftest import ROOT, write_migration
from tests.helpers import wait_for

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


@pytest.mark.slow  # a second or more: left out of the fast tier
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


@pytest.mark.slow  # a second or more: left out of the fast tier
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


@pytest.mark.slow  # a second or more: left out of the fast tier
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


@pytest.mark.slow  # a second or more: left out of the fast tier
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


@pytest.mark.slow  # a second or more: left out of the fast tier
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
