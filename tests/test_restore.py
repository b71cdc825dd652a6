"""Restoring on real servers: bad backups refused with the target untouched, failures and kills midway
leaving the target as it was, the production guards, and an 18 backup restored into 15."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pgshift.backups import files as backups
from pgshift.backups import restore
from pgshift.databases import dump
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import Aborted, LockTimeout, PgShiftError, Refused
from pgshift.migrations import lock
from pgshift.settings import Settings
from tests.backups import HEAD, fingerprint, fresh_database, populate, scratch_databases
from tests.conftest import ROOT
from tests.helpers import wait_for

RESTORE = """
import sys
from dataclasses import replace
from pathlib import Path
from pgshift.backups import restore
from pgshift import settings
from pgshift.dburl import DatabaseUrl
loaded = settings.load(Path(sys.argv[2]), {"backups_dir": sys.argv[3]}, env={"SKIP_BACKUP": "1"})
restore.restore(replace(loaded, url=DatabaseUrl.parse(sys.argv[1])), sys.argv[4])
"""


def prepared(url: DatabaseUrl, migrations_dir: Path, make_settings: Any, **overrides: Any) -> tuple[Settings, Path]:
    """A populated database, a backup of it, and then a change, so a restore would be visible."""
    settings = make_settings(url, **overrides)
    populate(url, migrations_dir, settings)
    backup = backups.take(settings)
    with Database.connect(url) as db:
        db.execute("INSERT INTO person (name) VALUES ('added after the backup')")
    return settings, backup.path


def truncated(path: Path) -> str:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path.name


def checksum_differs(path: Path) -> str:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path.name


def corrupt_without_manifest(path: Path) -> str:
    bad = path.with_name("backup_development_20240101_000000.dump")
    bad.write_bytes(os.urandom(4096))
    return bad.name


def plain_cut_short(path: Path) -> str:
    bad = path.with_name("backup_development_20240101_000000.sql")
    bad.write_text("--\n-- PostgreSQL database dump\n--\n\nCREATE TABLE half (\n")
    return bad.name


def plain_with_create(path: Path) -> str:
    bad = path.with_name("backup_development_20240101_000000.sql")
    bad.write_text("--\n-- PostgreSQL database dump\n--\n\nCREATE DATABASE other;\n\\connect other\n\n"
                   "CREATE TABLE t (id int);\n\n--\n-- PostgreSQL database dump complete\n--\n")
    return bad.name


def manifest_unreadable(path: Path) -> str:
    path.with_name(path.name + ".json").write_text("{ not json")
    return path.name


def missing(path: Path) -> str:
    return "backup_development_20990101_000000.dump"


def outside(path: Path) -> str:
    elsewhere = path.parent.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / path.name).write_bytes(path.read_bytes())
    (elsewhere / (path.name + ".json")).write_bytes(path.with_name(path.name + ".json").read_bytes())
    return str(elsewhere / path.name)


def dot_dot(path: Path) -> str:
    return str(Path(outside(path)).relative_to(path.parent.parent).parent / ".." / "backups" / ".." / "elsewhere"
               / path.name)


def symlink_out(path: Path) -> str:
    target = Path(outside(path))
    link = path.with_name("backup_development_20240101_000000.dump")
    link.symlink_to(target)
    return link.name


BAD: dict[str, tuple[Callable[[Path], str], str]] = {
    "truncated": (truncated, "is damaged (size is "),
    "checksum": (checksum_differs, "does not match its manifest's checksum"),
    "corrupt": (corrupt_without_manifest, "is not a readable backup archive"),
    "plain-cut-short": (plain_cut_short, "is cut short"),
    "plain-with-create": (plain_with_create, "was made with pg_dump --create"),
    "manifest-unreadable": (manifest_unreadable, ".json is unreadable"),
    "missing": (missing, "does not exist"),
    "outside": (outside, "is outside the backups folder"),
    "dot-dot": (dot_dot, "is outside the backups folder"),
    "symlink-out": (symlink_out, "is outside the backups folder"),
}


@pytest.mark.parametrize("kind", list(BAD))
@pytest.mark.slow  # a second or more: left out of the fast tier
def test_bad_backup_is_refused_and_target_untouched(kind: str, db_url: DatabaseUrl, migrations_dir: Path,
                                                    make_settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, path = prepared(db_url, migrations_dir, make_settings)
    monkeypatch.chdir(settings.root)
    damage, fragment = BAD[kind]
    name = damage(path)
    before = fingerprint(db_url)
    listed = [b.path for b in backups.list_backups(settings)]
    with pytest.raises(PgShiftError) as caught:
        restore.restore(settings, name)
    message = str(caught.value)
    assert fragment in message and "\n" not in message, message
    assert fingerprint(db_url) == before
    assert [b.path for b in backups.list_backups(settings)] == listed  # not even a safety backup
    assert scratch_databases(db_url) == []


def test_failure_midway_leaves_target_as_before(db_url: DatabaseUrl, migrations_dir: Path,
                                                make_settings: Any) -> None:
    role = f"pgshift_t_owner_{uuid.uuid4().hex[:8]}"
    settings = make_settings(db_url)
    populate(db_url, migrations_dir, settings)
    with Database.connect(db_url) as db:
        db.execute(f"CREATE ROLE {role} NOLOGIN; ALTER TABLE shop.orders OWNER TO {role}")
    backup = backups.take(settings)
    with Database.connect(db_url) as db:  # the role the backup needs is gone: the restore fails midway
        db.execute(f"REASSIGN OWNED BY {role} TO CURRENT_USER; DROP ROLE {role}; DELETE FROM shop.orders")
    before = fingerprint(db_url)
    with pytest.raises(PgShiftError) as caught:
        restore.restore(settings, backup.path.name)
    message = str(caught.value)
    assert message.startswith(f"restoring {backup.path.name} into pgshift_new_")
    assert f'role "{role}" does not exist' in message and "\n" not in message
    assert fingerprint(db_url) == before
    assert scratch_databases(db_url) == []


@pytest.mark.process
def test_killed_restore_leaves_target_as_before(db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any,
                                                tmp_path: Path) -> None:
    settings, path = prepared(db_url, migrations_dir, make_settings)
    with Database.connect(db_url) as db:  # a table whose rows take a while to load: room to kill mid-restore
        db.execute("CREATE FUNCTION public.slowly(int) RETURNS boolean LANGUAGE plpgsql AS "
                   "$$ BEGIN PERFORM pg_catalog.pg_sleep(0.01); RETURN true; END $$; "
                   "CREATE TABLE public.slow (n int CHECK (public.slowly(n))); "
                   "INSERT INTO public.slow SELECT generate_series(1, 150)")
    path = backups.take(settings).path
    with Database.connect(db_url) as db:
        db.execute("DROP TABLE public.slow; UPDATE person SET name = upper(name)")
    before = fingerprint(db_url)

    child = subprocess.Popen([sys.executable, "-c", RESTORE, str(db_url), str(tmp_path),
                              str(settings.backups_dir), path.name], cwd=ROOT)

    def loading() -> bool:
        names = scratch_databases(db_url)
        if not names:
            return False
        with Database.connect(db_url.with_dbname(names[0])) as db:
            return db.one("SELECT to_regclass('public.slow') IS NOT NULL") == (True,)

    wait_for(loading, "the restore to start loading rows")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert fingerprint(db_url) == before
    [leftover] = scratch_databases(db_url)
    with Database.connect(db_url.with_dbname("postgres")) as db:
        wait_for(lambda: db.one("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [leftover]) == (0,),
                 "the killed restore's children to go")

    seen: list[dump.DumpProgress] = []
    assert restore.restore(settings, path.name, progress=seen.append).migration_head == HEAD  # next one works...
    assert scratch_databases(db_url) == []                               # ...and clears the leftover
    with Database.connect(db_url) as db:
        assert db.one("SELECT count(*) FROM public.slow") == (150,)
    restoring = [p for p in seen if p.phase == "restore"]  # loading the slow rows takes over a second
    assert restoring and {p.unit for p in restoring} == {"objects"}
    assert 0 < restoring[-1].done <= (restoring[-1].total or 0)


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_restore_waits_for_the_migration_lock(pg18: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    with fresh_database(pg18) as url:
        settings, path = prepared(url, migrations_dir, make_settings, lock_wait=0.3)
        before = fingerprint(url)
        with Database.connect(url) as holder, lock.migration_lock(holder, 1), pytest.raises(LockTimeout):
            restore.restore(settings, path.name)
        assert fingerprint(url) == before


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_production_guards(pg18: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    with fresh_database(pg18) as url:
        settings, dev_backup = prepared(url, migrations_dir, make_settings)
        production = replace(settings, environment="production")
        prod_backup = backups.take(production).path
        before = fingerprint(url, schema=False)
        asked: list[restore.RestorePlan] = []

        with pytest.raises(Refused, match=r"needs a confirmation: run it at a terminal, or pass --yes$"):
            restore.restore(production, prod_backup.name)
        with pytest.raises(Aborted, match="restore cancelled; nothing was changed"):
            restore.restore(production, prod_backup.name,
                            confirm=lambda question: asked.append(question.about) is not None)
        with pytest.raises(Refused, match="was taken from development; production restores only production"):
            restore.restore(production, dev_backup.name, confirm=lambda plan: True)
        with pytest.raises(Refused, match="is a production backup and ENVIRONMENT is development"):
            restore.restore(settings, prod_backup.name, confirm=lambda plan: True)
        assert fingerprint(url, schema=False) == before
        [plan] = asked
        assert (plan.database, plan.environment, plan.backup.path) == (url.dbname, "production", prod_backup)
        assert f"over database {url.dbname}" in plan.describe()

        result = restore.restore(production, prod_backup.name, confirm=lambda plan: True)
        assert result.migration_head == HEAD and result.safety_backup is not None


def test_backup_of_18_restores_into_15(pg18: DatabaseUrl, pg15: DatabaseUrl, migrations_dir: Path,
                                       make_settings: Any) -> None:
    with fresh_database(pg18) as source, fresh_database(pg15) as destination:
        settings = make_settings(source)
        populate(source, migrations_dir, settings)
        backup = backups.take(settings)
        assert json.loads(backup.path.with_name(backup.path.name + ".json").read_text())["server_version"][:3] == "18."
        into_15 = replace(settings, url=destination)
        result = restore.restore(into_15, backup.path.name)
        assert result.migration_head == HEAD
        assert fingerprint(destination, schema=False)["data"] == fingerprint(source, schema=False)["data"]
