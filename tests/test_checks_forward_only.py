"""Forward-only migrations ('-- forward_only: true'): no rollback expected, none crossed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.checks import backward
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.migrations import source
from pgshift.migrations.apply import Limits
from tests.commands import cli_env, inv_here
from tests.conftest import write_migration


def _enum_history(folder: Path) -> None:
    write_migration(folder, "20240101000000_tickets", "CREATE TYPE state AS ENUM ('new', 'open');\n"
                    "CREATE TABLE tickets (id int PRIMARY KEY, state state NOT NULL DEFAULT 'new');",
                    "DROP TABLE tickets; DROP TYPE state;")
    write_migration(folder, "20240102000000_closed", "-- forward_only: true\n"
                    "ALTER TYPE state ADD VALUE 'closed';")
    write_migration(folder, "20240103000000_use_closed", "ALTER TABLE tickets ALTER COLUMN state SET DEFAULT "
                    "'closed';", "ALTER TABLE tickets ALTER COLUMN state SET DEFAULT 'new';")
    write_migration(folder, "20240104000000_notes", "ALTER TABLE tickets ADD COLUMN note text;",
                    "ALTER TABLE tickets DROP COLUMN note;")


def test_backward_skips_a_forward_only_migration_by_name_and_tests_the_ones_below(
        db_url: DatabaseUrl, migrations_dir: Path) -> None:
    _enum_history(migrations_dir)
    migrations = source.read(migrations_dir)
    assert [m.forward_only for m in migrations] == [False, True, False, False]
    report = backward.run(db_url, migrations, Limits())
    assert report.ok, report.summary()
    assert {t.id: t.state for t in report.trips} == {
        "20240104000000_notes": "ok", "20240103000000_use_closed": "ok", "20240102000000_closed": "skipped",
        "20240101000000_tickets": "ok"}
    assert "skipped: forward-only: 1 migration(s), newest 20240102000000_closed" in report.summary()
    assert report.summary().startswith("3 migration(s) round-trip")


def test_a_rollback_that_fails_below_a_forward_only_one_is_still_found(
        db_url: DatabaseUrl, migrations_dir: Path) -> None:
    _enum_history(migrations_dir)
    (migrations_dir / "20240101000000_tickets.rollback.sql").write_text("DROP TABLE tickets;")  # leaves the type
    report = backward.run(db_url, source.read(migrations_dir), Limits())
    failed = [t for t in report.trips if t.state == "failed"]
    assert [t.id for t in failed] == ["20240101000000_tickets"] and "+ type public.state" in " ".join(failed[0].diff)


def test_rollback_to_refuses_to_cross_a_forward_only_migration(
        task_db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    _enum_history(migrations_dir)
    api.migrate(make_settings(task_db_url))
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    done = inv_here("rollback.to", "20240101000000_tickets", env=env)
    assert done.returncode == 1
    assert "20240102000000_closed is forward-only" in done.stderr and "restore a backup" in done.stderr
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT count(*) FROM pgshift.migrations") == (4,)  # nothing was rolled back
        assert db.has_relation("public.tickets")
    above = inv_here("rollback.to", "20240102000000_closed", env=env)  # what is above it still rolls back
    assert above.returncode == 0, above.stderr


def test_deploy_on_failure_rollback_is_refused_over_a_forward_only_migration(
        task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    _enum_history(migrations_dir)
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir), INVOKE_PGSHIFT_PREFLIGHT_DRIFT="0")
    done = inv_here("deploy", "--dry-run", "--on-failure=rollback", env=env)
    assert done.returncode == 1
    assert "--on-failure=rollback cannot undo 20240102000000_closed: it is forward-only" in done.stdout


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_forward_only_history_by_config_needs_no_rollback_files(
        task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20240101000000_accounts", "create table accounts (id bigint primary key);")
    write_migration(migrations_dir, "20240102000000_email", "alter table accounts add column email text;")
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir), INVOKE_PGSHIFT_PREFLIGHT_DRIFT="0")
    without = inv_here("test.backward", env=env)
    assert without.returncode == 1 and "no rollback file" in without.stdout  # rollbacks are expected by default

    env["INVOKE_PGSHIFT_FORWARD_ONLY"] = "true"
    done = inv_here("test.backward", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipped: forward-only: 2 migration(s)" in done.stdout
    everything = inv_here("test", env=env)
    assert everything.returncode == 0, everything.stdout + everything.stderr
    refused = inv_here("deploy", "--dry-run", "--on-failure=rollback", env=env)
    assert refused.returncode == 1
    assert ("--on-failure=rollback cannot undo 20240101000000_accounts: it is forward-only (the history is "
            "forward-only (config pgshift.forward_only: true))") in refused.stdout
