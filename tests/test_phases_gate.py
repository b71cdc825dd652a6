"""The contract gate's evidence besides sessions: pg_stat_statements and the generated models module."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases import throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import Refused
from pgshift.migrations import gate, rename
from tests import statements_server
from tests.conftest import write_migration

TABLE = "20250101000000_users"
RENAME = "20250102000000_rename_user_name"


def _setup(folder: Path) -> None:
    write_migration(folder, TABLE, "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);\n"
                    "INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, 200) g;\n",
                    "DROP TABLE users;\n")
    forward, rollback = rename.render(RENAME, rename.Rename("users", "name", "full_name", "text"))
    write_migration(folder, RENAME, forward, rollback)


@pytest.fixture(scope="module")
def statements_admin() -> Iterator[DatabaseUrl]:
    why = statements_server.available()
    if why is not None:  # on a machine without the binaries; under CI that is a failure, as for the servers
        if os.environ.get("CI") == "true":
            pytest.fail(f"a PostgreSQL 15 with pg_stat_statements is needed under CI: {why}")
        pytest.skip(why)
    with statements_server.cluster() as url:
        yield url


@pytest.fixture
def statements_db(statements_admin: DatabaseUrl) -> Iterator[DatabaseUrl]:
    name = throwaway.name("test")
    with Database.connect(statements_admin) as admin:
        throwaway.create(admin, name)
    url = statements_admin.with_dbname(name)
    with Database.connect(url) as db:
        db.execute("CREATE EXTENSION pg_stat_statements")
    yield url
    with Database.connect(statements_admin) as admin:
        throwaway.drop(admin, name)


def test_the_old_names_are_what_the_contract_drops() -> None:
    assert gate.old_names("ALTER TABLE users ALTER COLUMN full_name SET NOT NULL;\n"
                          "ALTER TABLE users DROP CONSTRAINT users_full_name_not_null;\n"
                          "ALTER TABLE public.users DROP COLUMN IF EXISTS name, DROP COLUMN nick;\n"
                          "DROP VIEW clients;\nDROP TRIGGER t ON users;\n") == [
        gate.OldName("users", "name"), gate.OldName("users", "nick"), gate.OldName("clients")]


@pytest.mark.process
def test_complete_refuses_while_pg_stat_statements_shows_the_old_column_in_use(
        statements_db: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    settings = make_settings(statements_db)
    _setup(migrations_dir)
    api.migrate(settings)  # the expand, its backfill, and the first look
    with Database.connect(statements_db) as new_app:
        for _ in range(5):
            new_app.one("SELECT full_name FROM users WHERE id = %s", [1])
    with Database.connect(statements_db) as old_app:
        for key in (1, 2, 3):
            old_app.one("SELECT name FROM users WHERE id = %s", [key])
    with pytest.raises(Refused) as refused:
        api.deploy_complete(settings)
    message = str(refused.value)
    assert "pg_stat_statements shows 3 call(s) since" in message, message
    assert "naming users.name" in message and "SELECT name FROM users WHERE id = $1" in message, message
    assert "run inv deploy.complete again" in message and "--force --reason" in message
    assert api.deploy_status(settings, drift=False).windows[0].phase == "expanded"
    # nothing ran them since that look: the old release is gone
    assert api.deploy_complete(settings) == [RENAME]


@pytest.mark.process
def test_forcing_past_the_statements_records_them(statements_db: DatabaseUrl, migrations_dir: Path,
                                                  make_settings: Any) -> None:
    settings = make_settings(statements_db)
    _setup(migrations_dir)
    api.migrate(settings)
    with Database.connect(statements_db) as old_app:
        old_app.execute("UPDATE users SET name = 'still here' WHERE id = 4")
    assert api.deploy_complete(settings, force=True, reason="a one-off script, not the app") == [RENAME]
    [window] = api.deploy_status(settings, drift=False).windows
    assert window.forced_reason is not None and window.forced_reason.startswith("a one-off script, not the app")
    assert "UPDATE users SET name = $1" in window.forced_reason, window.forced_reason


def test_complete_refuses_while_the_generated_models_map_the_old_column(
        task_db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    settings = make_settings(task_db_url)
    _setup(migrations_dir)
    api.migrate(settings)
    models = api.generate_models(settings).path  # during the window: both columns
    assert models == migrations_dir.parent / "models.py"
    with pytest.raises(Refused, match=r"the models module still maps what 20250102000000_rename_user_name drops: "
                                      r"models\.py:\d+ maps users\.name; remove those .*inv deploy\.complete again"):
        api.deploy_complete(settings)
    kept = [line for line in models.read_text().splitlines() if not line.startswith("    name: Mapped")]
    models.write_text("\n".join(kept) + "\n")
    assert gate.models_mapping(models, [gate.OldName("users", "name")]) == []
    assert api.deploy_complete(settings) == [RENAME]
