"""dev.mark / prod.mark / dev.repair: the record repaired by hand, under the lock, logged with a reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pgshift import api
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from tests.commands import cli_env, inv_here
from tests.conftest import write_migration


def _env(url: DatabaseUrl, folder: Path, **extra: str) -> dict[str, str]:
    return cli_env(url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(folder), **extra)


def test_mark_applied_and_reverted_write_the_repair_log(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);")
    env = _env(task_db_url, migrations_dir)
    with Database.connect(task_db_url) as db:
        db.execute("CREATE TABLE a (id int)")  # run by hand
    done = inv_here("dev.mark", "20250101000000_a", "--applied", "--reason", "ran it by hand", env=env)
    assert done.returncode == 0 and "marked 20250101000000_a applied" in done.stdout, done.stderr
    status = json.loads(inv_here("dev.status", "--json", env=env).stdout)
    assert status["summary"] == "up to date: 1 applied"
    assert inv_here("dev.mark", "20250101000000_a", env=env).returncode == 2  # neither flag
    reverted = inv_here("dev.mark", "20250101000000_a", "--reverted", "--reason", "undone", env=env)
    assert reverted.returncode == 0, reverted.stderr
    with Database.connect(task_db_url) as db:
        assert db.rows("SELECT action, migration, reason FROM pgshift.audit ORDER BY n") == [
            ("mark", "20250101000000_a", "ran it by hand"), ("mark", "20250101000000_a", "undone")]
        who, host = db.one("SELECT who, host FROM pgshift.audit LIMIT 1") or ("", "")
        assert who and host
        assert db.one("SELECT count(*) FROM pgshift.migrations") == (0,)


def test_prod_mark_needs_a_confirmation(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);")
    env = _env(task_db_url, migrations_dir, ENVIRONMENT="production")
    refused = inv_here("prod.mark", "20250101000000_a", "--applied", env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert inv_here("prod.mark", "20250101000000_a", "--applied", "--yes", env=env).returncode == 0


def test_repair_clears_only_records_whose_effect_is_absent(task_db_url: DatabaseUrl, migrations_dir: Path,
                                                           make_settings: Any) -> None:
    settings = make_settings(task_db_url)
    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int, v int);")
    api.migrate(settings)
    with Database.connect(task_db_url) as db:
        db.execute("INSERT INTO pgshift.migrations (id, checksum, state, error) "
                   "VALUES ('20250102000000_failed', 'x', 'failed', 'boom')")
        db.execute("INSERT INTO pgshift.migrations (id, checksum, state, transactional, statements_total, "
                   "statements_done, error) VALUES ('20250103000000_half', 'x', 'failed', false, 2, 1, 'killed')")
    write_migration(migrations_dir, "20250102000000_failed", "CREATE TABLE f (id int);")
    write_migration(migrations_dir, "20250103000000_half",
                    "CREATE INDEX CONCURRENTLY a_id ON a (id);\nCREATE INDEX CONCURRENTLY a_v ON a (v);")
    (migrations_dir / "20250101000000_a.sql").write_text("CREATE TABLE a (id int, v int); -- reviewed\n")
    env = _env(task_db_url, migrations_dir)
    done = inv_here("dev.repair", "--accept-edit", "20250101000000_a", "--reason", "cleanup", env=env)
    assert done.returncode == 0, done.stderr
    assert "cleared 20250102000000_failed" in done.stdout
    assert "kept 20250103000000_half: stopped after statement 1 of 2" in done.stdout
    assert "accepted the edited file of 20250101000000_a" in done.stdout
    with Database.connect(task_db_url) as db:
        assert {r[0] for r in db.rows("SELECT id FROM pgshift.migrations")} == {"20250101000000_a",
                                                                                "20250103000000_half"}
        assert {r[0] for r in db.rows("SELECT action FROM pgshift.audit")} == {"repair", "accept edit"}
    status = json.loads(inv_here("dev.status", "--json", env=env).stdout)
    states = {m["id"]: m["state"] for m in status["migrations"]}
    assert states == {"20250101000000_a": "applied", "20250102000000_failed": "pending",
                      "20250103000000_half": "failed"}
