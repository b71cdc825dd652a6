"""dev.import --from yoyo: a database yoyo migrated keeps its history, read through yoyo itself."""

from __future__ import annotations

import json
from pathlib import Path

from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from tests.commands import cli_env, full_url, inv_here
from tests.conftest import write_migration


def _yoyo_apply(url: DatabaseUrl, folder: Path) -> None:
    from yoyo import get_backend, read_migrations

    backend = get_backend(full_url(url).replace("postgresql://", "postgresql+psycopg://", 1))
    with backend.lock():
        backend.apply_migrations(backend.to_apply(read_migrations(str(folder))))
    backend.connection.close()


def test_a_yoyo_database_is_adopted(db_url: DatabaseUrl, tmp_path: Path, migrations_dir: Path) -> None:
    theirs = tmp_path / "yoyo"
    theirs.mkdir()
    write_migration(theirs, "20250101000000_a", "CREATE TABLE a (id int PRIMARY KEY);", "DROP TABLE a;")
    write_migration(theirs, "20250102000000_b", "CREATE TABLE b (id int PRIMARY KEY);", "DROP TABLE b;")
    _yoyo_apply(db_url, theirs)
    write_migration(theirs, "20250103000000_c", "CREATE TABLE c (id int PRIMARY KEY);")
    (theirs / "0004.legacy.py").write_text("steps = []\n")
    env = cli_env(db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    done = inv_here("dev.import", "--from", "yoyo", str(theirs), "--json", env=env)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["adopted"] == ["20250101000000_a", "20250102000000_b"]
    assert found["not_applied"] == ["20250103000000_c: no _yoyo_migration row: pending"]
    assert any("0004.legacy.py" in line and "Python" in line for line in found["not_converted"])
    assert (migrations_dir / "20250101000000_a.rollback.sql").read_text() == "DROP TABLE a;"
    status = json.loads(inv_here("dev.status", "--json", "--drift", env=env).stdout)
    assert status["summary"] == "pending migrations: 2 applied, 1 pending", status["summary"]
    assert status["drift"]["clean"], status["drift"]
    assert inv_here("dev.migrate", env=env).returncode == 0
    with Database.connect(db_url) as db:
        assert db.has_relation("public.c")
        assert db.one("SELECT count(*) FROM _yoyo_migration") == (2,)  # yoyo's own table untouched
