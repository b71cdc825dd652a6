"""Branch-safe order: late migrations refused on a database, and caught in the repository."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError
from pgshift.migrations import order, source
from tests.commands import cli_env, inv_here
from tests.conftest import write_migration


def test_a_pending_migration_older_than_the_newest_applied_is_refused(task_db_url: DatabaseUrl,
                                                                       migrations_dir: Path) -> None:
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);")
    write_migration(migrations_dir, "20250103000000_c", "CREATE TABLE c (id int);")
    assert inv_here("dev.migrate", env=env).returncode == 0
    write_migration(migrations_dir, "20250102000000_b", "CREATE TABLE b (id int);", "DROP TABLE b;")
    refused = inv_here("dev.migrate", env=env)
    assert refused.returncode == 1
    assert "20250102000000_b is pending but sorts before 20250103000000_c" in refused.stderr
    assert "inv dev.rebase 20250102000000_b" in refused.stderr and "--allow-out-of-order" in refused.stderr
    allowed = inv_here("dev.migrate", "--allow-out-of-order", env=env)
    assert allowed.returncode == 0, allowed.stderr
    with Database.connect(task_db_url) as db:
        assert db.has_relation("public.b")
        assert db.one("SELECT action, migration FROM pgshift.audit") == ("out of order", "20250102000000_b")


def test_rebase_moves_a_late_migration_after_the_newest(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);")
    write_migration(migrations_dir, "20250103000000_c", "CREATE TABLE c (id int);")
    assert inv_here("dev.migrate", env=env).returncode == 0
    write_migration(migrations_dir, "20250102000000_b", "CREATE TABLE b (id int);", "DROP TABLE b;")
    (migrations_dir / order.HEAD_FILE).write_text("20250103000000_c\n")
    done = inv_here("dev.rebase", "20250102000000_b", env=env)
    assert done.returncode == 0, done.stderr
    ids = [m.id for m in source.read(migrations_dir)]
    assert ids[:2] == ["20250101000000_a", "20250103000000_c"] and ids[2].endswith("_b") and ids[2] > ids[1]
    assert (migrations_dir / f"{ids[2]}.rollback.sql").read_text() == "DROP TABLE b;"
    assert (migrations_dir / order.HEAD_FILE).read_text() == ids[2] + "\n"
    assert inv_here("dev.migrate", env=env).returncode == 0


def test_a_deploy_refuses_a_late_migration_in_preflight(task_db_url: DatabaseUrl, make_settings: Any) -> None:
    settings = make_settings(task_db_url)
    write_migration(settings.migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);")
    write_migration(settings.migrations_dir, "20250103000000_c", "CREATE TABLE c (id int);")
    api.migrate(settings)
    write_migration(settings.migrations_dir, "20250102000000_b", "CREATE TABLE b (id int);")
    with pytest.raises(MigrationError, match="sorts before"):
        api.migrate(settings)
    planned = api.plan(settings, rehearse=False)
    assert not planned.proceed and any("inv dev.rebase 20250102000000_b" in p for p in planned.problems)


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          capture_output=True, text=True, check=False)


def _commit_migration(repo: Path, ident: str) -> None:
    folder = repo / "migrations"
    write_migration(folder, ident, f"CREATE TABLE t_{ident[-1]} (id int);", f"DROP TABLE t_{ident[-1]};")
    order.write_head(folder, source.read(folder)[-1].id)
    assert _git(repo, "add", "-A").returncode == 0
    assert _git(repo, "commit", "-qm", f"add {ident}").returncode == 0


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = tmp_path / "app"
    (repo / "migrations").mkdir(parents=True)
    assert _git(repo, "init", "-q", "-b", "main").returncode == 0
    (repo / "migrations" / order.HEAD_FILE).write_text("")
    _commit_migration(repo, "20250101000000_base")
    return repo


def _check(repo: Path) -> order.OrderReport:
    folder = repo / "migrations"
    return order.check(folder, source.read(folder), "main")


def test_two_branches_each_adding_a_migration_conflict_on_the_second_merge(repo: Path) -> None:
    _git(repo, "checkout", "-qb", "feature-a", "main")
    _commit_migration(repo, "20250102000000_a")
    _git(repo, "checkout", "-qb", "feature-b", "main")
    _commit_migration(repo, "20250103000000_b")
    assert _check(repo).ok  # each branch passes on its own
    _git(repo, "checkout", "-q", "main")
    assert _git(repo, "merge", "-q", "--no-edit", "feature-a").returncode == 0
    second = _git(repo, "merge", "-q", "--no-edit", "feature-b")
    assert second.returncode != 0 and f"migrations/{order.HEAD_FILE}" in second.stdout + second.stderr
    report = _check(repo)  # merged with the conflict left in: inv test fails too
    assert not report.ok and order.HEAD_FILE in report.problems[0]


def test_a_branch_whose_migration_sorts_before_main_fails_inv_test_until_rebased(repo: Path, tmp_path: Path,
                                                                                 task_db_url: DatabaseUrl) -> None:
    _git(repo, "checkout", "-qb", "feature-b", "main")
    _commit_migration(repo, "20250102000000_b")  # written first...
    _git(repo, "checkout", "-qb", "feature-a", "main")
    _commit_migration(repo, "20250103000000_a")
    _git(repo, "checkout", "-q", "main")
    assert _git(repo, "merge", "-q", "--no-edit", "feature-a").returncode == 0  # ...merged second
    _git(repo, "checkout", "-q", "feature-b")
    report = _check(repo)
    assert not report.ok
    assert report.problems[0].startswith("20250102000000_b is added by this branch but sorts before "
                                         "20250103000000_a, already on main")
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(repo / "migrations"))
    failed = inv_here("test.order", "--json", env=env)
    assert failed.returncode == 1 and not json.loads(failed.stdout)["ok"]
    assert inv_here("dev.rebase", "20250102000000_b", env=env).returncode == 0
    merged = _git(repo, "merge", "-q", "--no-edit", "main")  # bring main in: the head line conflicts
    assert merged.returncode != 0
    folder = repo / "migrations"
    (folder / order.HEAD_FILE).write_text(source.read(folder)[-1].id + "\n")  # the resolution
    _git(repo, "add", "-A")
    assert _git(repo, "commit", "-qm", "merge main").returncode == 0
    assert _check(repo).ok, _check(repo).problems
    assert inv_here("test.order", env=env).returncode == 0
