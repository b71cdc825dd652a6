"""Big databases' backups: the directory format with parallel jobs, checksummed per file, complete or absent.

A tiny ``backup_parallel_bytes`` makes every test database "big", so each backup here is a ``.dir``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pgshift.backups import directory, restore, retention
from pgshift.backups import files as backups
from pgshift.backups.files import BackupInvalid
from pgshift.databases import dump
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from tests.backups import HEAD, fingerprint, fresh_database, populate, scratch_databases, table_locked
from tests.conftest import ROOT
from tests.helpers import dead_pid, wait_for

TAKE = """
import sys
from dataclasses import replace
from pathlib import Path
from pgshift.backups import files as backups
from pgshift import settings
from pgshift.dburl import DatabaseUrl
loaded = settings.load(Path(sys.argv[2]), {"backups_dir": sys.argv[3], "backup_parallel_bytes": 1}, env={})
backups.take(replace(loaded, url=DatabaseUrl.parse(sys.argv[1])))
"""


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_big_database_round_trips_through_a_directory_backup(db_url: DatabaseUrl, migrations_dir: Path,
                                                              make_settings: Any) -> None:
    settings = make_settings(db_url, backup_parallel_bytes=1)
    populate(db_url, migrations_dir, settings)
    before = fingerprint(db_url)

    backup = backups.take(settings)

    assert backup.format == "directory" and backup.path.is_dir() and backup.path.suffix == ".dir"
    assert backup.verified and backup.migration_head == HEAD
    assert backup.size == dump.size_of(backup.path) > 0
    sums = (backup.path / directory.SUMS).read_text().splitlines()
    listed = {line.split("  ")[1] for line in sums}
    assert "toc.dat" in listed and listed == {p.name for p in backup.path.iterdir()} - {directory.SUMS}
    assert [b.path for b in backups.list_backups(settings)] == [backup.path]
    assert [p.name for p in settings.backups_dir.iterdir() if p.name.startswith(".")] == []

    with Database.connect(db_url) as db:
        db.execute("DELETE FROM shop.orders WHERE id % 2 = 0; UPDATE person SET name = 'x'")
    result = restore.restore(settings, backup.path.name)

    assert fingerprint(db_url) == before
    assert result.migration_head == HEAD
    assert result.safety_backup is not None and result.safety_backup.format == "directory"
    assert scratch_databases(db_url) == []


def test_parallel_jobs_are_used_for_dump_and_restore() -> None:
    assert 2 <= dump.jobs() <= dump.MAX_JOBS


def test_small_database_stays_one_file(task_db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    settings = make_settings(task_db_url)  # the default threshold, 1 GB
    populate(task_db_url, migrations_dir, settings)
    backup = backups.take(settings)
    assert backup.format == "custom" and backup.path.is_file()


def test_a_changed_file_in_a_directory_backup_is_refused(task_db_url: DatabaseUrl, migrations_dir: Path,
                                                         make_settings: Any) -> None:
    settings = make_settings(task_db_url, backup_parallel_bytes=1)
    populate(task_db_url, migrations_dir, settings)
    backup = backups.take(settings)
    data = sorted(p for p in backup.path.iterdir() if p.name.endswith(".dat") and p.name != "toc.dat"
                  and p.stat().st_size > 0)[0]
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0xFF  # same size: the listing cannot tell, only the checksum can
    data.write_bytes(bytes(raw))
    with pytest.raises(BackupInvalid, match=rf"{data.name} does not match its checksum in SHA256SUMS"):
        backups.verify(backup.path)
    data.unlink()
    assert backups.list_backups(settings)[0].state == "damaged"  # the size no longer agrees
    with pytest.raises(BackupInvalid, match="damaged"):
        restore.restore(settings, backup.path.name)


def test_a_file_added_to_a_directory_backup_is_refused(task_db_url: DatabaseUrl, migrations_dir: Path,
                                                       make_settings: Any) -> None:
    settings = make_settings(task_db_url, backup_parallel_bytes=1)
    populate(task_db_url, migrations_dir, settings)
    backup = backups.take(settings)
    (backup.path / "9999.dat").write_bytes(b"")  # empty: the size still agrees
    with pytest.raises(BackupInvalid, match=r"9999.dat is in it but not in SHA256SUMS"):
        backups.verify(backup.path)


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_killed_directory_backup_leaves_a_hidden_partial_folder_the_cleanup_removes(
        pg18: DatabaseUrl, migrations_dir: Path, make_settings: Any, tmp_path: Path) -> None:
    with fresh_database(pg18) as url:
        settings = make_settings(url, lock_wait=60, backup_parallel_bytes=1)
        populate(url, migrations_dir, settings)
        with table_locked(url, "shop.orders"):
            child = subprocess.Popen([sys.executable, "-c", TAKE, str(url), str(tmp_path), str(settings.backups_dir)],
                                     cwd=ROOT)
            wait_for(lambda: any(p.name.endswith(".partial") for p in settings.backups_dir.glob(".*")),
                     "the partial backup folder")
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
            [partial] = list(settings.backups_dir.iterdir())
            wait_for(lambda: partial.name not in subprocess.run(["ps", "-ww", "-eo", "args"], capture_output=True,
                                                                text=True, check=True).stdout, "pg_dump to end")
        assert partial.is_dir() and partial.name.startswith(".backup_") and ".dir." in partial.name
        assert backups.list_backups(settings) == []
        plan = retention.cleanup(settings)
        assert plan.leftovers == [partial] and not partial.exists()


def test_cleanup_removes_an_old_directory_backup_whole(task_db_url: DatabaseUrl, migrations_dir: Path,
                                                       make_settings: Any) -> None:
    settings = make_settings(task_db_url, backup_parallel_bytes=1, backup_keep_count=0, backup_keep_days=0)
    populate(task_db_url, migrations_dir, settings)
    first = backups.take(settings)
    second = backups.take(settings)
    plan = retention.cleanup(settings)
    assert [r.backup.path for r in plan.remove] == [first.path]
    assert not first.path.exists() and not (first.path.parent / (first.path.name + ".json")).exists()
    assert second.path.is_dir()


def test_the_next_backup_sweeps_a_killed_directory_backups_folder(task_db_url: DatabaseUrl, migrations_dir: Path,
                                                                  make_settings: Any) -> None:
    settings = make_settings(task_db_url, backup_parallel_bytes=1)
    populate(task_db_url, migrations_dir, settings)
    settings.backups_dir.mkdir(parents=True)
    left = settings.backups_dir / f".backup_development_20250101_000000.dir.{dead_pid()}.0a0b0c0d.partial"
    left.mkdir()
    (left / "toc.dat").write_bytes(b"PGDMP" + b"\0" * 1000)
    backup = backups.take(settings)
    assert left in backup.swept and backup.swept_bytes == 1005 and not left.exists()
    assert backup.format == "directory" and backup.verified
