"""inv test from the command line: the developer's database is left byte-for-byte as it was."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from pgshift.databases import pgbin, throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from tests.commands import cli_env, inv_here
from tests.sets import good, rollback_leaves_column


def _dump(url: DatabaseUrl) -> bytes:
    done = subprocess.run([str(pgbin.program("pg_dump")), "--format=plain", "--restrict-key=pgshift"],
                          env={**os.environ, **url.env()}, capture_output=True, check=True, timeout=60)
    return done.stdout


def _inv(url: DatabaseUrl, migrations: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """The command's result and the pid that ran it (which names its scratch databases)."""
    env = cli_env(url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations), INVOKE_PGSHIFT_QUICK_ROWS="500")
    return inv_here(*args, env=env), os.getpid()


@pytest.fixture
def db_url(task_db_url: DatabaseUrl) -> DatabaseUrl:
    """The task layer does not care which server: its tests run on one."""
    return task_db_url


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_inv_test_passes_and_leaves_the_developer_database_untouched(
        db_url: DatabaseUrl, migrations_dir: Path) -> None:
    good(migrations_dir)
    with Database.connect(db_url) as db:  # a developer's database: two migrations applied, some data
        db.execute("CREATE TABLE notes (id serial PRIMARY KEY, body text); "
                   "INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 50) g")
    done, _ = _inv(db_url, migrations_dir, "dev.migrate", "--to", "20250102000000_posts")
    assert done.returncode == 0, done.stderr
    before = _dump(db_url)
    done, pid = _inv(db_url, migrations_dir, "test")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _dump(db_url) == before
    assert done.stderr == ""
    for check in ("forward", "backward", "constraints", "lint", "performance"):
        assert f"== {check}" in done.stdout
    assert "== summary (postgresql://postgres@" in done.stdout and "FAILED" not in done.stdout
    measured = done.stdout.split("== performance")[1].split("== summary")[0]
    assert "20250103000000_tracking  ok" in measured  # it measured what the database lacks, and only that
    assert "20250102000000_posts" not in measured.split("\n", 2)[2]
    with Database.connect(db_url.with_dbname("postgres")) as admin:
        assert not [n for n in throwaway.leftovers(admin)
                    if (o := throwaway.owner(n)) and o.pid == pid and o.kind != "test"]


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_inv_test_json_fails_with_exit_1_and_names_the_broken_rollback(
        db_url: DatabaseUrl, migrations_dir: Path) -> None:
    rollback_leaves_column(migrations_dir)
    before = _dump(db_url)
    with_password = replace(db_url, password="hunter2-not-printed")  # the test servers trust any password
    done, _ = _inv(with_password, migrations_dir, "test", "--json", "--rows", "0")
    assert done.returncode == 1, done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False
    assert {name: check["ok"] for name, check in report["checks"].items()} == {
        "forward": True, "backward": False, "constraints": True, "lint": True, "order": True, "schema": True}
    assert "+ column public.users.visits: integer" in report["checks"]["backward"]["trips"][0]["diff"]
    assert _dump(db_url) == before


def test_single_check_tasks_print_a_table_and_set_the_exit_code(db_url: DatabaseUrl, migrations_dir: Path) -> None:
    rollback_leaves_column(migrations_dir)
    done, _ = _inv(db_url, migrations_dir, "test.backward")
    assert done.returncode == 1
    assert "20250103000000_tracking.rollback.sql: after the rollback the schema differs" in done.stdout
    assert "      + column public.users.visits: integer" in done.stdout
    assert done.stdout.rstrip().splitlines()[-1].startswith("FAILED: 1 of 3 rollback(s) fail")
    done, _ = _inv(db_url, migrations_dir, "test.performance", "--rows=-5")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "error: --rows -5 is negative; give a number of rows, e.g. --rows 100000\n"
    done, _ = _inv(db_url, migrations_dir, "test.lint", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["checks"]["lint"]["linted"] == [
        "20250101000000_users", "20250102000000_posts", "20250103000000_tracking"]


def test_a_server_that_refuses_scratch_databases_gets_one_clear_line(
        db_url: DatabaseUrl, migrations_dir: Path) -> None:
    good(migrations_dir)
    role = f"pgshift_nocreate_{db_url.dbname[-6:]}"
    with Database.connect(db_url) as db:
        db.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")
    try:
        url = DatabaseUrl(db_url.host, db_url.port, db_url.dbname, role)
        done, _ = _inv(url, migrations_dir, "test.forward")
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.strip().splitlines() == [
            f"error: user {role} may not create databases on {url.with_dbname('postgres')}, so no scratch "
            "database can be made; grant it CREATEDB, or point DATABASE_URL at a server where it may"]
    finally:
        with Database.connect(db_url) as db:
            db.execute(f"DROP ROLE {role}")


def test_production_gets_no_scratch_databases_but_may_lint(db_url: DatabaseUrl, migrations_dir: Path) -> None:
    good(migrations_dir)
    env = cli_env(db_url, ENVIRONMENT="production", INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    done = inv_here("test", env=env)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("error: inv test makes scratch databases on the target's server")
    assert "point DATABASE_URL at a development or CI server" in done.stderr
    done = inv_here("test.lint", env=env)
    assert done.returncode == 0 and "3 migration(s) linted, no unsafe statements" in done.stdout
