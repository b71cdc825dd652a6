"""The command line as people and pipelines use it: task list, exit codes, one-line errors, no secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pgshift.databases import target, throwaway
from pgshift.databases.db import _connect_error
from pgshift.dburl import DatabaseUrl
from tests.commands import ROOT, cli_env, inv_here, inv_process
from tests.conftest import write_migration

HEAVY = ("psycopg", "sqlalchemy", "questionary", "requests", "pglast", "yoyo")


inv = inv_here  # the task layer in this process; inv_process where only a real process shows it


def assert_one_line_error(done: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert fragment in done.stderr


def test_list_shows_every_namespace_without_heavy_imports() -> None:
    code = (
        "import sys; from invoke.main import program\n"
        "program.run(['inv', '--list'], exit=False)\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True, capture_output=True, timeout=60)
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr
    for name in ("status", "dev.migrate", "dev.status", "prod.status"):
        assert f"  {name} " in done.stdout


@pytest.mark.parametrize(("told_not_to", "writes"), [(False, True), (True, False)])
def test_the_task_modules_keep_their_bytecode_unless_python_is_told_not_to(told_not_to: bool,
                                                                            writes: bool) -> None:
    # Invoke turns bytecode writing off before loading tasks.py; tasks.py turns it back on, so a
    # command does not compile every module again, except where the user said not to write it.
    code = ("import sys; from invoke.main import program\n"
            "program.run(['inv', '--list'], exit=False)\n"
            "print('WRITES', not sys.dont_write_bytecode)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if told_not_to:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, text=True, capture_output=True, timeout=60,
                          env=env)
    assert f"WRITES {writes}" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize(("env", "code", "fragment"), [
    ({"ENVIRONMENT": "qa"}, 2, "ENVIRONMENT='qa' is not known"),
    ({"ENVIRONMENT": "production"}, 2, "needs DATABASE_URL"),
    ({"DATABASE_URL": "mysql://root@h/x"}, 2, "must start with postgresql://"),
    ({"DATABASE_URL": "postgresql://u:topsecret@127.0.0.1:1/x"}, 1, "cannot reach PostgreSQL at 127.0.0.1:1"),
    ({"DATABASE_URL": "postgresql://postgres:topsecret@127.0.0.1:5432/no_such_db_x"}, 1,
     "database 'no_such_db_x' does not exist"),
])
def test_bad_settings_exit_with_one_line(env: dict[str, str], code: int, fragment: str) -> None:
    done = inv("status", env=cli_env(**env))
    assert_one_line_error(done, code, fragment)
    assert "topsecret" not in done.stdout + done.stderr


def test_prod_tasks_need_production(task_db_url: DatabaseUrl) -> None:
    assert_one_line_error(inv("prod.status", env=cli_env(task_db_url)), 2, "need ENVIRONMENT=production")


@pytest.mark.process
@pytest.mark.parametrize("run", [inv_here, inv_process], ids=["in-process", "process"])
def test_status_json_and_exit_codes(run: Any, task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    # The real process too: its exit status is what a pipeline sees.
    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);")
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    pending = run("dev.status", "--json", env=env)
    assert pending.returncode == 3
    data = json.loads(pending.stdout)
    assert [(m["id"], m["state"]) for m in data["migrations"]] == [("20250101000000_a", "pending")]
    assert run("dev.migrate", "--frobnicate", env=env).returncode == 2
    assert run("dev.migrate", env=env).returncode == 0
    done = run("status", env=env)
    assert done.returncode == 0 and "up to date: 1 applied" in done.stdout


def test_syntax_error_names_file_and_line(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);\n\nALTER TABLE a ADD COLUMN;\n")
    done = inv("dev.migrate", env=cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir)))
    assert_one_line_error(done, 1, "20250101000000_a.sql, line 3: syntax error")


def test_bad_migration_name(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    done = inv("dev.migrate", "../evil", env=cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir)))
    assert_one_line_error(done, 2, "migration name '../evil' is not valid")
    assert list(migrations_dir.iterdir()) == []


def test_embedded_default_runs_the_shipped_migrations(embedded_folder: Path, pg18: DatabaseUrl) -> None:
    name = throwaway.name("test")
    env = cli_env(INVOKE_PGSHIFT_EMBEDDED_DIR=str(embedded_folder), INVOKE_PGSHIFT_EMBEDDED_DATABASE=name)
    try:
        first = inv("dev.migrate", env=env)
        assert first.returncode == 0, first.stderr
        assert "applied 3 migration(s)" in first.stdout
        status = inv("status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["head"] == "20250201000000_index_api_keys_user"
    finally:
        target.drop_database(pg18, name)


def test_connection_messages_name_the_fix() -> None:
    url = DatabaseUrl.parse("postgresql://app:pw@db.internal:5432/imaginarium")
    assert "rejected the password for user 'app'; fix DATABASE_URL" in str(
        _connect_error(url, 'FATAL:  password authentication failed for user "app"'))
    assert "host 'db.internal' is unknown" in str(
        _connect_error(url, 'could not translate host name "db.internal" to address'))


def _task_names() -> list[str]:
    import copy

    import tasks

    # A copy: Invoke hands each argument's help over to the first parser context built from a task (it pops
    # it), and the in-process commands of later tests build theirs from copies of this very collection.
    return sorted(context.name for context in copy.deepcopy(tasks.ns).to_contexts())


@pytest.mark.parametrize("name", _task_names())
def test_help_works_for_every_task_both_ways(name: str) -> None:
    for args in (("--help", name), (name, "--help")):
        done = inv(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert f"Usage: inv[oke] [--core-opts] {name}" in done.stdout and done.stderr == ""


def test_an_optional_positional_is_the_word_after_the_task_and_nothing_else(task_db_url: DatabaseUrl,
                                                                              migrations_dir: Path) -> None:
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    made = inv("dev.migrate", "add_things", "--create-only", env=env)
    assert made.returncode == 0, made.stderr
    assert [p.name.split("_", 1)[1] for p in sorted(migrations_dir.iterdir())] == [
        "add_things.rollback.sql", "add_things.sql"]
    unknown = inv("dev.migrate", "--frobnicate", env=env)
    assert (unknown.returncode, unknown.stderr.strip()) == (
        2, "No idea what '--frobnicate' is! (inv --help dev.migrate shows its options)")
    late = inv("dev.migrate", "--create-only", "other_things", env=env)  # a flag first: the name is not taken
    assert late.returncode == 2 and "No idea what 'other_things' is!" in late.stderr
    two = inv("dev.migrate", "status", env=env)  # a task name is never eaten as a NAME: two tasks run
    assert two.returncode == 3 and "nothing to apply" in two.stdout and "pending" in two.stdout, two.stderr
    assert len(list(migrations_dir.iterdir())) == 2
