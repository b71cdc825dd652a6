"""Expand and contract: a phased migration file applied in its expand phase, completed, aborted, gated."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import ConfigError, MigrationError, Refused
from pgshift.migrations import phases, rename
from tests.commands import cli_env, inv_here
from tests.conftest import write_migration

TABLE = "20250101000000_users"
RENAME = "20250102000000_rename_user_name"
ROWS = 3000


def _setup(folder: Path) -> None:
    write_migration(folder, TABLE, "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);\n"
                    f"INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, {ROWS}) g;\n",
                    "DROP TABLE users;\n")
    # name is NOT NULL: the rollback puts that back (the rehearsal's contract-then-rollback trip checks it)
    forward, rollback = rename.render(RENAME, rename.Rename("users", "name", "full_name", "text", old_not_null=True))
    write_migration(folder, RENAME, forward, rollback)


def _columns(db: Database) -> list[str]:
    return [r[0] for r in db.rows("SELECT column_name FROM information_schema.columns WHERE table_name = 'users' "
                                  "ORDER BY ordinal_position")]


def test_the_sections_parse_with_the_file_lines_kept() -> None:
    sql = ("-- header\n-- pgshift: expand\nALTER TABLE users ADD COLUMN b int;\n"
           "-- pgshift: backfill users SET b = a * 2 WHERE b IS NULL\n"
           "-- pgshift: contract\nALTER TABLE users DROP COLUMN a;\n"
           "-- pgshift: abort\nALTER TABLE users DROP COLUMN b;\n")
    found = phases.parse(sql, "m.sql")
    assert found is not None
    assert len(found.expand) == len(sql) + 0 and "ADD COLUMN b" in found.expand and "DROP" not in found.expand
    assert found.backfills == [phases.Backfill(1, "users", "b = a * 2", "b IS NULL", 4)]
    assert found.contract is not None and found.contract.split("\n")[5] == "ALTER TABLE users DROP COLUMN a;"
    assert found.abort is not None and "DROP COLUMN b" in found.abort and "DROP COLUMN a" not in found.abort
    assert found.columns == ("users.a", "users.b")
    assert phases.parse("CREATE TABLE t (id int);", "m.sql") is None
    with pytest.raises(MigrationError, match="line 2: '-- pgshift: expand' is out of place"):
        phases.parse("-- pgshift: contract\n-- pgshift: expand\n", "m.sql")
    with pytest.raises(MigrationError, match="line 2: a backfill line reads"):
        phases.parse("-- pgshift: expand\n-- pgshift: backfill users\n", "m.sql")


def test_rename_round_trip_keeps_both_names_working(db_url: DatabaseUrl, migrations_dir: Path,
                                                     make_settings: Any) -> None:
    settings = make_settings(db_url)
    _setup(migrations_dir)
    said: list[str] = []
    api.migrate(settings, progress=said.append)
    assert any("backfill" in line and "done" in line for line in said), said
    with Database.connect(db_url) as db:
        assert _columns(db) == ["id", "name", "full_name"]
        assert db.one("SELECT count(*) FROM users WHERE full_name IS DISTINCT FROM name") == (0,)
        # the old application writes through the old name, the new one through the new name
        db.execute("INSERT INTO users (id, name) VALUES (100001, 'old app')")
        db.execute("UPDATE users SET name = 'renamed by the old app' WHERE id = 1")
        db.execute("INSERT INTO users (id, full_name) VALUES (100002, 'new app')")
        db.execute("UPDATE users SET full_name = 'renamed by the new app' WHERE id = 2")
        assert db.one("SELECT count(*) FROM users WHERE full_name IS DISTINCT FROM name") == (0,)
        assert db.one("SELECT name FROM users WHERE id = 100002") == ("new app",)
        assert db.one("SELECT full_name FROM users WHERE id = 1") == ("renamed by the old app",)
    status = api.status(settings, drift=False)
    assert [m.detail for m in status.migrations if m.id == RENAME] == [phases_detail()]
    state = api.deploy_status(settings, drift=False)
    [window] = state.windows
    assert window.phase == "expanded" and window.backfills[0].state == "done"
    assert window.backfills[0].rows_done == ROWS
    # a later migration that touches a column of the open window is refused until it is completed
    later = write_migration(migrations_dir, "20250103000000_name_check",
                            "ALTER TABLE users ADD CONSTRAINT name_short CHECK (length(name) < 200);")
    with pytest.raises(MigrationError, match=r"touches users\.name, which 20250102000000_rename_user_name expands"):
        api.migrate(settings)
    later.unlink()
    assert api.deploy_complete(settings) == [RENAME]
    with Database.connect(db_url) as db:
        assert _columns(db) == ["id", "full_name"]
        assert db.one("SELECT full_name FROM users WHERE id = 100001") == ("old app",)
        assert db.one("SELECT count(*) FROM users WHERE full_name IS NULL") == (0,)
        assert db.one("SELECT count(*) FROM pg_proc WHERE proname LIKE 'pgshift_sync%'") == (0,)
    assert api.deploy_status(settings, drift=False).windows[0].phase == "completed"
    assert api.deploy_complete(settings) == []


def phases_detail() -> str:
    from pgshift.migrations.status import EXPANDED

    return EXPANDED


def test_abort_undoes_the_expand_and_it_can_expand_again(db_url: DatabaseUrl, migrations_dir: Path,
                                                          make_settings: Any) -> None:
    settings = make_settings(db_url)
    _setup(migrations_dir)
    api.migrate(settings)
    assert api.deploy_abort(settings) == [RENAME]
    with Database.connect(db_url) as db:
        assert _columns(db) == ["id", "name"]
        assert db.one("SELECT count(*) FROM pgshift.migrations WHERE id = %s", [RENAME]) == (0,)
        assert db.one("SELECT count(*) FROM pgshift.backfills") == (0,)
        db.execute("INSERT INTO users (id, name) VALUES (100001, 'after the abort')")
    assert [m.state for m in api.status(settings, drift=False).migrations] == ["applied", "pending"]
    api.migrate(settings)
    with Database.connect(db_url) as db:
        assert db.one("SELECT count(*) FROM users WHERE full_name IS DISTINCT FROM name") == (0,)
    assert api.deploy_status(settings, drift=False).windows[0].backfills[0].rows_done == ROWS + 1


def test_complete_is_gated_on_old_release_sessions(task_db_url: DatabaseUrl, migrations_dir: Path,
                                                   make_settings: Any) -> None:
    settings = make_settings(task_db_url, old_release="shop-v41%")
    _setup(migrations_dir)
    api.migrate(settings)
    old_app = replace(task_db_url, params=(*task_db_url.params, ("application_name", "shop-v41-web")))
    with Database.connect(old_app):
        with pytest.raises(Refused, match=r"1 session\(s\) of the old release \(shop-v41%\) still connected"):
            api.deploy_complete(settings)
        with pytest.raises(ConfigError, match="--force needs --reason"):
            api.deploy_complete(settings, force=True)
        assert api.deploy_status(settings, drift=False).windows[0].phase == "expanded"
        assert api.deploy_complete(settings, force=True, reason="v41 workers are draining") == [RENAME]
    [window] = api.deploy_status(settings, drift=False).windows
    assert window.phase == "completed"
    assert window.forced_reason is not None and window.forced_reason.startswith("v41 workers are draining")
    assert "shop-v41-web" in window.forced_reason


def test_tasks_show_the_window_and_complete_it(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    _setup(migrations_dir)
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    migrated = inv_here("dev.migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr
    shown = inv_here("deploy.status", "--no-drift", env=env)
    assert f"phase {RENAME}: expanded" in shown.stdout, shown.stdout
    assert "backfill 1 (users): done, 3,000 of" in shown.stdout, shown.stdout
    assert inv_here("deploy.pause", env=env).stdout.strip() == "no unfinished backfill to pause"
    done = inv_here("deploy.complete", env=env)
    assert done.returncode == 0 and f"completed: {RENAME}" in done.stdout, done.stderr
    assert "nothing to abort" in inv_here("deploy.abort", env=env).stdout


def test_rename_hints_in_schema_sql_write_the_expand_contract_migration(task_db_url: DatabaseUrl,
                                                                        migrations_dir: Path) -> None:
    assert rename.hints("CREATE TABLE users (\n    id bigint PRIMARY KEY,\n"
                        "    full_name text NOT NULL, -- renamed from name\n    age int\n);\n") == [
        rename.Rename("users", "name", "full_name", "text", not_null=True)]
    write_migration(migrations_dir, TABLE, "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);\n"
                    "INSERT INTO users VALUES (1, 'ada'), (2, 'grace');\n", "DROP TABLE users;\n")
    (migrations_dir.parent / "schema.sql").write_text(
        "CREATE TABLE users (\n    id bigint PRIMARY KEY,\n    full_name text NOT NULL -- renamed from name\n);\n")
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    made = inv_here("dev.migrate", "rename_user_name", "--expand-contract", env=env)
    assert made.returncode == 0, made.stderr
    [written] = [p for p in migrations_dir.glob("*_rename_user_name.sql")]
    assert "-- pgshift: expand" in written.read_text() and "DROP COLUMN name;" in written.read_text()
    with Database.connect(task_db_url) as db:
        assert db.rows("SELECT name, full_name FROM users ORDER BY id") == [("ada", "ada"), ("grace", "grace")]
    again = inv_here("dev.migrate", "rename_again", "--expand-contract", env=env)
    assert again.returncode == 2 and "declares no rename the database still needs" in again.stderr
    assert inv_here("deploy.complete", env=env).returncode == 0
    with Database.connect(task_db_url) as db:
        assert _columns(db) == ["id", "full_name"]


def test_progress_lines_say_rows_rate_and_eta() -> None:
    from pgshift.migrations.backfill import progress_line

    assert progress_line("m step 1 (users)", 250_000, 1_000_000, 200_000, 2.0) == (
        "backfill m step 1 (users): 250,000 of ~1,000,000 rows (25%), 100,000 rows/s, ETA 8 s")


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_deploy_rehearses_and_runs_the_expand_and_backfill(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    _setup(migrations_dir)
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir), SKIP_BACKUP="1",
                  SKIP_MAINTENANCE="1", ENVIRONMENT="staging")
    deployed = inv_here("deploy", env=env)
    assert deployed.returncode == 0, deployed.stderr + deployed.stdout
    assert f"backfill {RENAME} step 1 (users): done" in deployed.stdout, deployed.stdout
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT count(*) FROM users WHERE full_name IS DISTINCT FROM name") == (0,)
        assert db.one("SELECT phase FROM pgshift.phases") == ("expanded",)
    assert inv_here("deploy.abort", env=env).returncode == 0
    with Database.connect(task_db_url) as db:
        assert _columns(db) == ["id", "name"]


def test_rollback_to_before_a_rename_puts_the_old_column_back(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    _setup(migrations_dir)
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    assert inv_here("dev.migrate", env=env).returncode == 0
    assert inv_here("deploy.complete", env=env).returncode == 0
    with Database.connect(task_db_url) as db:
        db.execute("UPDATE users SET full_name = 'changed' WHERE id = 7")
    done = inv_here("rollback.to", TABLE, env=env)
    assert done.returncode == 0, done.stderr
    with Database.connect(task_db_url) as db:
        assert _columns(db) == ["id", "name"]
        assert db.one("SELECT name FROM users WHERE id = 7") == ("changed",)
        assert db.one("SELECT count(*) FROM pgshift.phases") == (0,)
    assert inv_here("dev.migrate", env=env).returncode == 0  # and it expands again from the start
    assert api_windows(task_db_url, migrations_dir)[0].backfills[0].rows_done == ROWS


def api_windows(url: DatabaseUrl, folder: Path) -> list[Any]:
    from pgshift import settings as settings_module

    loaded = replace(settings_module.load(folder.parent, {"migrations_dir": str(folder)}, env={}), url=url)
    return api.deploy_status(loaded, drift=False).windows


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_no_drift_after_complete_or_abort_stored_or_replayed(task_db_url: DatabaseUrl, migrations_dir: Path,
                                                             make_settings: Any) -> None:
    settings = make_settings(task_db_url)
    _setup(migrations_dir)
    api.migrate(settings)
    api.deploy_complete(settings)
    found = api.status(settings).drift
    assert found is not None and found.items == [] and found.method == "snapshot"
    with Database.connect(task_db_url) as db:
        db.execute("DELETE FROM pgshift.schema_snapshots")  # as if migrated before references were kept
    replayed = api.status(settings).drift
    assert replayed is not None and replayed.items == [] and replayed.method == "replay"
    later = "20250103000000_rename_again"
    forward, rollback = rename.render(later, rename.Rename("users", "full_name", "display_name", "text"))
    write_migration(migrations_dir, later, forward, rollback)
    api.migrate(settings)
    api.deploy_abort(settings)
    after_abort = api.status(settings).drift
    assert after_abort is not None and after_abort.items == []


def test_a_failing_backfill_names_its_line_and_the_way_out(task_db_url: DatabaseUrl, migrations_dir: Path,
                                                           make_settings: Any) -> None:
    settings = make_settings(task_db_url)
    write_migration(migrations_dir, TABLE, "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);\n"
                    "INSERT INTO users VALUES (1, 'ada');\n")
    ident = "20250102000000_add_score"
    path = write_migration(migrations_dir, ident, "-- pgshift: expand\nALTER TABLE users ADD COLUMN score int;\n"
                           "-- pgshift: backfill users SET score = nosuch + 1\n"
                           "-- pgshift: abort\nALTER TABLE users DROP COLUMN score;\n")
    with pytest.raises(MigrationError, match=rf"{ident}\.sql, line 3: the backfill failed: column \"nosuch\" "
                                             r"does not exist; .*run inv deploy\.abort"):
        api.migrate(settings)
    assert api.deploy_abort(settings) == [ident]
    path.write_text(path.read_text().replace("nosuch + 1", "length(name)"))
    api.migrate(settings)
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT score FROM users") == (3,)


def test_a_migration_after_a_phased_one_in_the_same_run_may_not_touch_its_columns(
        task_db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    settings = make_settings(task_db_url)
    _setup(migrations_dir)
    write_migration(migrations_dir, "20250103000000_drop_name", "ALTER TABLE users DROP COLUMN name;")
    with pytest.raises(MigrationError, match=r"20250103000000_drop_name\.sql touches users\.name"):
        api.migrate(settings)
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT count(*) FROM pgshift.migrations") == (0,)  # refused before anything ran


def test_a_backfill_walks_a_composite_key(db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    settings = make_settings(db_url, backfill_batch_seconds=0.0001)  # the smallest batches: many of them
    write_migration(migrations_dir, TABLE,
                    "CREATE TABLE events (tenant int, code text, n int, PRIMARY KEY (tenant, code));\n"
                    "INSERT INTO events SELECT t, 'e' || g, g FROM generate_series(1, 7) t, "
                    "generate_series(1, 300) g;\n")
    ident = "20250102000000_fill_double"
    write_migration(migrations_dir, ident, "-- pgshift: expand\nALTER TABLE events ADD COLUMN doubled int;\n"
                    "-- pgshift: backfill events SET doubled = n * 2 WHERE n % 5 <> 0\n")
    api.migrate(settings)
    with Database.connect(db_url) as db:
        assert db.one("SELECT count(*) FROM events WHERE doubled IS DISTINCT FROM "
                      "CASE WHEN n % 5 <> 0 THEN n * 2 END") == (0,)
    [fill] = api.deploy_status(settings, drift=False).windows[0].backfills
    assert (fill.state, fill.rows_done, fill.rows_scanned) == ("done", 7 * 240, 7 * 300)


def test_a_backfill_of_a_table_without_a_primary_key_is_refused(task_db_url: DatabaseUrl, migrations_dir: Path,
                                                                make_settings: Any) -> None:
    settings = make_settings(task_db_url)
    write_migration(migrations_dir, TABLE, "CREATE TABLE logs (line text);\nINSERT INTO logs VALUES ('a');\n")
    write_migration(migrations_dir, "20250102000000_fill", "-- pgshift: expand\nALTER TABLE logs ADD COLUMN n int;\n"
                    "-- pgshift: backfill logs SET n = length(line)\n")
    with pytest.raises(MigrationError, match="backfill of logs: the table has no primary key"):
        api.migrate(settings)
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT count(*) FROM pgshift.backfills") == (0,)


def test_an_expand_with_a_concurrent_index_runs_statement_by_statement(
        task_db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    settings = make_settings(task_db_url)
    write_migration(migrations_dir, TABLE, "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);\n"
                    "INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 500) g;\n")
    ident = "20250102000000_lower_name"
    write_migration(migrations_dir, ident, "-- pgshift: expand\nALTER TABLE users ADD COLUMN lower_name text;\n"
                    "CREATE INDEX CONCURRENTLY users_lower_name ON users (lower_name);\n"
                    "-- pgshift: backfill users SET lower_name = lower(name)\n"
                    "-- pgshift: contract\nALTER TABLE users ALTER COLUMN lower_name SET DEFAULT '';\n")
    api.migrate(settings)
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT indisvalid FROM pg_index WHERE indexrelid = 'users_lower_name'::regclass") == (True,)
        assert db.one("SELECT count(*) FROM users WHERE lower_name IS DISTINCT FROM lower(name)") == (0,)
        assert db.one("SELECT state, transactional FROM pgshift.migrations WHERE id = %s", [ident]) == (
            "applied", False)
    assert api.deploy_complete(settings) == [ident]


def test_a_rename_with_a_new_type_casts_both_ways(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, TABLE, "CREATE TABLE orders (id bigint PRIMARY KEY, code text NOT NULL);\n"
                    "INSERT INTO orders SELECT g, (g * 10)::text FROM generate_series(1, 50) g;\n")
    (migrations_dir.parent / "schema.sql").write_text(
        "CREATE TABLE orders (\n    id bigint PRIMARY KEY,\n    code_num integer NOT NULL -- renamed from code\n);\n")
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir))
    made = inv_here("dev.migrate", "code_to_number", "--expand-contract", env=env)
    assert made.returncode == 0, made.stderr
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT count(*) FROM orders WHERE code_num IS DISTINCT FROM code::integer") == (0,)
        db.execute("INSERT INTO orders (id, code) VALUES (1001, '42')")        # the old application
        db.execute("INSERT INTO orders (id, code_num) VALUES (1002, 7)")       # the new one
        db.execute("UPDATE orders SET code_num = 99 WHERE id = 1")
        assert db.rows("SELECT id, code, code_num FROM orders WHERE id IN (1, 1001, 1002) ORDER BY id") == [
            (1, "99", 99), (1001, "42", 42), (1002, "7", 7)]
    assert inv_here("deploy.complete", env=env).returncode == 0
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'orders'::regclass "
                      "AND attname = 'code_num'") == ("integer",)
