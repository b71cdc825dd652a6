"""Staging where the role may not create databases: the rehearsal goes to the embedded server (a copy by
dump) and says so, instead of failing with advice staging cannot follow."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pgshift.databases import throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.migrations import history
from tests.commands import cli_env, inv_here
from tests.deploys import M1, M2, write_set


@pytest.fixture
def staging_url(pg15: DatabaseUrl) -> Iterator[DatabaseUrl]:
    """A database on the local 15 owned by a role without CREATEDB, as a staging role often is."""
    role = f"stager_{secrets.token_hex(3)}"
    name = throwaway.name("test", "staging")
    with Database.connect(pg15) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB")
        throwaway.create(admin, name)
        admin.execute(f"ALTER DATABASE {name} OWNER TO {role}")
    yield replace(pg15.with_dbname(name), user=role)
    with Database.connect(pg15) as admin:
        throwaway.drop(admin, name)
        admin.execute(f"DROP ROLE {role}")


def test_a_role_that_may_not_create_databases_rehearses_on_the_embedded_server(
        staging_url: DatabaseUrl, embedded_folder: Path, tmp_path: Path, migrations_dir: Path) -> None:
    write_set(migrations_dir)
    env = cli_env(staging_url, ENVIRONMENT="staging", INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir),
                  INVOKE_PGSHIFT_BACKUPS_DIR=str(tmp_path / "backups"), INVOKE_PGSHIFT_LOGS_DIR=str(tmp_path / "logs"),
                  INVOKE_PGSHIFT_EMBEDDED_DIR=str(embedded_folder), INVOKE_PGSHIFT_PREFLIGHT_DRIFT="0",
                  SKIP_MAINTENANCE="1")
    done = inv_here("deploy", "--yes", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "may not create databases" in done.stdout
    assert "prod.deploy" not in done.stdout + done.stderr
    with Database.connect(staging_url) as db:
        assert list(history.records(db)) == [M1, M2]
