"""A restore reports the restored database before it drops the one it replaced, and a kill at either
side of that report leaves the target restored and the old copy under a name the next command drops."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgshift.databases import throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from tests.backups import HEAD, fingerprint, fresh_database, populate, scratch_databases
from tests.commands import cli_env, inv_process

pytestmark = pytest.mark.process


@pytest.fixture
def db18(pg18: DatabaseUrl) -> Iterator[DatabaseUrl]:
    with fresh_database(pg18) as url:
        yield url


def old_copies(url: DatabaseUrl) -> list[str]:
    return [n for n in scratch_databases(url) if (o := throwaway.owner(n)) is not None and o.kind == "old"]


def test_restore_reports_before_dropping_the_replaced_copy(db18: DatabaseUrl, tmp_path: Path, migrations_dir: Path,
                                                           make_settings: Any) -> None:
    populate(db18, migrations_dir, make_settings(db18))
    env = cli_env(db18, INVOKE_PGSHIFT_BACKUPS_DIR=str(tmp_path / "b"), INVOKE_PGSHIFT_BACKUP_PARALLEL_BYTES="1",
                  SKIP_BACKUP="1")
    assert inv_process("backup", env=env).returncode == 0
    [listed] = json.loads(inv_process("rollback.list", "--json", env=env).stdout)
    assert listed["format"] == "directory" and listed["verified"]
    before = fingerprint(db18)
    with Database.connect(db18) as db:
        db.execute("DELETE FROM shop.orders")

    killed = inv_process("rollback.restore", Path(listed["file"]).name,
                         env={**env, "PGSHIFT_FAILPOINT": "restore:reported"})

    assert killed.returncode == -signal.SIGKILL
    assert f"restored {Path(listed['file']).name} into {db18.dbname}" in killed.stdout
    assert f"migration head now in place: {HEAD}" in killed.stdout
    assert fingerprint(db18) == before
    [old] = old_copies(db18)  # named: recognisable as the copy a restore replaced
    with Database.connect(db18.with_dbname(old)) as db:
        assert db.one("SELECT count(*) FROM shop.orders") == (0,)

    again = inv_process("rollback.restore", Path(listed["file"]).name, env=env)
    assert again.returncode == 0, again.stderr
    assert fingerprint(db18) == before
    assert old_copies(db18) == []  # the killed run's old copy swept, this run's dropped


def test_kill_right_after_the_swap_leaves_the_target_restored(db18: DatabaseUrl, tmp_path: Path,
                                                              migrations_dir: Path, make_settings: Any) -> None:
    populate(db18, migrations_dir, make_settings(db18))
    env = cli_env(db18, INVOKE_PGSHIFT_BACKUPS_DIR=str(tmp_path / "b"), SKIP_BACKUP="1")
    assert inv_process("backup", env=env).returncode == 0
    [listed] = json.loads(inv_process("rollback.list", "--json", env=env).stdout)
    before = fingerprint(db18)
    with Database.connect(db18) as db:
        db.execute("UPDATE person SET name = 'changed'")

    killed = inv_process("rollback.restore", Path(listed["file"]).name,
                         env={**env, "PGSHIFT_FAILPOINT": "restore:swapped"})

    assert killed.returncode == -signal.SIGKILL and "restored" not in killed.stdout
    assert fingerprint(db18) == before
    [old] = old_copies(db18)
    with Database.connect(db18.with_dbname(old)) as db:
        assert db.one("SELECT count(*) FROM person WHERE name <> 'changed'") == (0,)
