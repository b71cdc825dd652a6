"""The engine's API: the documented script works, and each command does its work once.

Counting connections and folder reads wraps the real functions (the database is still real): a
deploy may open at most three connections to its target (the plan's read-only session, the session
under the migration lock, pg_dump's), plus one watcher session for the concurrent index builds, and
read the migrations folder once.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pgshift
from pgshift.databases import dump
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.migrations import source
from tests.commands import ROOT, cli_env, full_url, inv_here


def test_the_version_is_the_packages() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert pgshift.__version__ == project["version"]


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_the_script_in_the_api_document_migrates_and_checks(task_db_url: DatabaseUrl, tmp_path: Path) -> None:
    script = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.DOTALL)
    assert script is not None
    shutil.copytree(ROOT / "migrations", tmp_path / "migrations")
    (tmp_path / "run.py").write_text(script.group(1))
    done = subprocess.run([sys.executable, str(tmp_path / "run.py")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**cli_env(), "DATABASE_URL": full_url(task_db_url),
                                            "PROJECT": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "applied 3 migration(s)" in done.stdout and "every check passed" in done.stdout
    assert "up to date: 3 applied" in done.stdout


class Counts:
    def __init__(self) -> None:
        self.connections: collections.Counter[str] = collections.Counter()
        self.dumps: collections.Counter[str] = collections.Counter()
        self.reads = 0


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counts]:
    counts = Counts()
    connect, run_dump, read = Database.connect.__func__, dump.dump, source.read  # type: ignore[attr-defined]

    def counting_connect(cls: type[Database], url: DatabaseUrl, *args: Any, **kwargs: Any) -> Database:
        counts.connections[url.dbname] += 1
        return connect(cls, url, *args, **kwargs)  # type: ignore[no-any-return]

    def counting_dump(url: DatabaseUrl, *args: Any, **kwargs: Any) -> None:
        counts.dumps[url.dbname] += 1
        run_dump(url, *args, **kwargs)

    def counting_read(folder: Path, *, forward_only: bool = False) -> list[source.Migration]:
        counts.reads += 1
        return read(folder, forward_only=forward_only)

    monkeypatch.setattr(Database, "connect", classmethod(counting_connect))
    monkeypatch.setattr(dump, "dump", counting_dump)
    monkeypatch.setattr(source, "read", counting_read)
    yield counts


@pytest.mark.parametrize("builds", [1, 3])
@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_deploy_opens_three_connections_and_one_watcher_for_its_concurrent_builds_and_reads_the_folder_once(
        task_db_url: DatabaseUrl, tmp_path: Path, counted: Counts, builds: int) -> None:
    shutil.copytree(ROOT / "migrations", tmp_path / "migrations")
    index = tmp_path / "migrations" / "20250201000000_index_api_keys_user.sql"
    undo = index.with_name(index.name.replace(".sql", ".rollback.sql"))
    for n, column in enumerate(("created_at", "last_used_at")[: builds - 1], 1):  # more builds: one watcher
        index.write_text(index.read_text() + f"CREATE INDEX CONCURRENTLY api_keys_extra_{n} ON api_keys ({column});\n")
        undo.write_text(undo.read_text() + f"DROP INDEX CONCURRENTLY api_keys_extra_{n};\n")
    env = cli_env(task_db_url, ENVIRONMENT="staging", INVOKE_PGSHIFT_MIGRATIONS_DIR=str(tmp_path / "migrations"),
                  INVOKE_PGSHIFT_BACKUPS_DIR=str(tmp_path / "backups"), INVOKE_PGSHIFT_LOGS_DIR=str(tmp_path / "logs"))
    done = inv_here("deploy", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deploy #1 succeeded: 3 migration(s)" in done.stdout
    sessions, dumps = counted.connections[task_db_url.dbname], counted.dumps[task_db_url.dbname]
    # the plan's, the lock's, the watcher of the concurrent index builds (one for all of them); pg_dump
    assert (sessions, dumps) == (3, 1), counted.connections
    assert counted.reads == 1


def test_migrate_name_reads_the_folder_once(task_db_url: DatabaseUrl, tmp_path: Path, counted: Counts) -> None:
    (tmp_path / "migrations").mkdir()
    (tmp_path / "schema.sql").write_text("CREATE TABLE notes (id bigint PRIMARY KEY, body text NOT NULL);\n")
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(tmp_path / "migrations"))
    done = inv_here("dev.migrate", "add_notes", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "applied 1 migration(s)" in done.stdout
    assert counted.reads == 1
    assert counted.connections[task_db_url.dbname] == 1
