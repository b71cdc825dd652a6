"""inv dev.migrate NAME with a schema.sql, as a person runs it: what it prints, what it writes, exit codes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pgshift.dburl import DatabaseUrl
from tests.commands import cli_env, inv_here
from tests.conftest import write_migration


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return inv_here("dev.migrate", *args, env=env)


@pytest.fixture
def db_url(task_db_url: DatabaseUrl) -> DatabaseUrl:
    """The task layer does not care which server: its tests run on one."""
    return task_db_url


def test_migrate_name_writes_applies_then_reports_in_sync(db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20250101000000_t", "CREATE TABLE t (id int PRIMARY KEY, x text);")
    (migrations_dir.parent / "schema.sql").write_text(
        "CREATE TABLE t (id int PRIMARY KEY, x text);\n"
        "CREATE TABLE tags (id int PRIMARY KEY, t_id int REFERENCES t);\n")
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    first = run(env, "add_tags")
    assert first.returncode == 0, first.stderr
    assert "_add_tags.sql and " in first.stdout and "from schema.sql (" in first.stdout
    assert "0 marked DATA LOSS" in first.stdout and "applied 2 migration(s)" in first.stdout
    assert len(list(migrations_dir.glob("*_add_tags*.sql"))) == 2
    again = run(env, "add_more")
    assert again.returncode == 0, again.stderr
    assert "the database matches schema.sql: no migration written" in again.stdout
    assert not list(migrations_dir.glob("*_add_more*"))


def test_data_loss_without_a_terminal_is_refused_until_allowed(db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20250101000000_t", "CREATE TABLE t (id int PRIMARY KEY, x text);")
    (migrations_dir.parent / "schema.sql").write_text("CREATE TABLE t (id int PRIMARY KEY);\n")
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    refused = run(env, "drop_x")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: the change to schema.sql loses data (drops column public.t.x and its values); nothing was "
        "written. Check that this is meant, then run again with --allow-data-loss"]
    assert not list(migrations_dir.glob("*_drop_x*"))
    allowed = run(env, "drop_x", "--allow-data-loss")
    assert allowed.returncode == 0, allowed.stderr
    assert "1 marked DATA LOSS" in allowed.stdout
    written = next(migrations_dir.glob("*_drop_x.sql")).read_text()
    assert '-- DATA LOSS: drops column public.t.x and its values\nalter table "public"."t" drop column "x";' in written


def test_empty_flag_writes_the_template_even_with_a_schema_file(db_url: DatabaseUrl, migrations_dir: Path) -> None:
    (migrations_dir.parent / "schema.sql").write_text("CREATE TABLE t (id int);\n")
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    done = run(env, "by_hand", "--empty")
    assert done.returncode == 0, done.stderr
    assert "from the template" in done.stdout and "skipped" in done.stdout
    assert next(migrations_dir.glob("*_by_hand.sql")).read_text().startswith("-- ")
