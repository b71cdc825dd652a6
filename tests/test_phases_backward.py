"""test.backward and the deploy rehearsal round-trip a phased migration phase by phase."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.dburl import DatabaseUrl
from pgshift.migrations import rename
from tests.commands import cli_env, inv_here
from tests.conftest import write_migration

TABLE = "20250101000000_users"
RENAME = "20250102000000_rename_user_name"
TABLE_RENAME = "20250103000000_rename_teams"
PHASES = ["abort", "rollback after expand", "rollback after contract"]


def _setup(folder: Path) -> None:
    write_migration(folder, TABLE, "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);\n"
                    "CREATE TABLE teams (id int PRIMARY KEY);\n"
                    "INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 300) g;\n",
                    "DROP TABLE users; DROP TABLE teams;\n")
    forward, rollback = rename.render(RENAME, rename.Rename("users", "name", "full_name", "text", not_null=True,
                                                            old_not_null=True))
    write_migration(folder, RENAME, forward, rollback)
    forward, rollback = rename.render_table(TABLE_RENAME, rename.TableRename("teams", "squads"))
    write_migration(folder, TABLE_RENAME, forward, rollback)


def test_backward_round_trips_each_phase_of_a_phased_migration(db_url: DatabaseUrl, migrations_dir: Path,
                                                               make_settings: Any) -> None:
    _setup(migrations_dir)
    report = api.backward(make_settings(db_url))
    assert report.ok, report.as_json()
    for ident in (RENAME, TABLE_RENAME):
        assert [(t.phase, t.state) for t in report.trips if t.id == ident] == [(p, "ok") for p in PHASES]
    assert [t.state for t in report.trips if t.id == TABLE] == ["ok"]
    assert report.summary().startswith("3 migration(s) round-trip (up, down, up) exactly, 2 phased one(s) by phase")


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_broken_abort_section_fails_its_phase_with_the_difference(db_url: DatabaseUrl, migrations_dir: Path,
                                                                    make_settings: Any) -> None:
    _setup(migrations_dir)
    path = migrations_dir / f"{RENAME}.sql"
    path.write_text(path.read_text().replace("ALTER TABLE users DROP COLUMN IF EXISTS full_name;\n", ""))
    report = api.backward(make_settings(db_url))
    assert not report.ok
    [failed] = [t for t in report.trips if t.state == "failed"]
    assert (failed.id, failed.phase, failed.file) == (RENAME, "abort", f"{RENAME}.sql (abort)")
    assert "after the expand then deploy.abort the schema differs" in (failed.problem or "")
    assert any("full_name" in line for line in failed.diff), failed.diff
    assert [t.state for t in report.trips if t.id == TABLE_RENAME] == ["ok"] * 3  # the walk went on


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_broken_rollback_after_contract_fails_that_phase(task_db_url: DatabaseUrl, migrations_dir: Path,
                                                           make_settings: Any) -> None:
    _setup(migrations_dir)
    path = migrations_dir / f"{RENAME}.rollback.sql"
    path.write_text(path.read_text().replace("ALTER TABLE users ALTER COLUMN name SET NOT NULL;\n", ""))
    report = api.backward(make_settings(task_db_url))
    [failed] = [t for t in report.trips if t.state == "failed"]
    assert (failed.id, failed.phase) == (RENAME, "rollback after contract")
    assert "after the expand, backfill, contract then the rollback file the schema differs" in (failed.problem or "")
    assert "(rollback after contract)" in report.summary()


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_the_tasks_show_each_phase(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    _setup(migrations_dir)
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    shown = inv_here("test.backward", env=env)
    assert shown.returncode == 0, shown.stderr + shown.stdout
    for phase in PHASES:
        assert f"{RENAME} ({phase})" in shown.stdout, shown.stdout
    deployed = inv_here("deploy", env={**env, "SKIP_BACKUP": "1", "SKIP_MAINTENANCE": "1", "ENVIRONMENT": "staging"})
    assert deployed.returncode == 0, deployed.stderr + deployed.stdout
    assert (f"rehearsed the phases of {RENAME}: abort ok, rollback after expand ok, rollback after contract ok"
            in deployed.stdout), deployed.stdout
