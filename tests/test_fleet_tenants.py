"""Schema-per-tenant fleets: several targets in ONE database, each with ``schema = "tN"``, each keeping its
own record (``pgshift_tN``) and its own migration lock, so tenants are at their own versions and deploy
without waiting on one another. The plain single-database path keeps its record in ``pgshift``.

Every migration writes its id into the tenant's ``ledger`` table, so what was applied where is read from
the database itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import ConfigError
from pgshift.fleet import targets as fleet_targets
from pgshift.migrations import lock
from tests.commands import cli_env, full_url, inv_here
from tests.conftest import write_migration

TENANTS = ("t1", "t2", "t3")


@dataclass
class Tenants:
    url: DatabaseUrl
    file: Path
    ids: list[str]
    env: dict[str, str]

    def inv(self, *args: str) -> tuple[int, str]:
        done = inv_here(*args, "--fleet", str(self.file), env=self.env)
        return done.returncode, done.stdout + done.stderr

    def ledger(self, tenant: str) -> list[str]:
        with Database.connect(self.url) as db:
            if not db.has_relation(f"{tenant}.ledger"):
                return []
            return [row[0] for row in db.rows(f"SELECT m FROM {tenant}.ledger ORDER BY m")]

    def recorded(self, schema: str) -> list[str]:
        with Database.connect(self.url) as db:
            if not db.has_relation(f"{schema}.migrations"):
                return []
            return [row[0] for row in db.rows(f"SELECT id FROM {schema}.migrations WHERE state = 'applied' "
                                              "ORDER BY id")]


def _migrations(folder: Path, count: int) -> list[str]:
    ids = []
    for n in range(1, count + 1):
        ident = f"202502{n:02d}000000_tenant_{n}"
        first = "CREATE TABLE ledger (m text PRIMARY KEY);\n" if n == 1 else ""
        write_migration(folder, ident, f"{first}CREATE TABLE t_{n} (id int PRIMARY KEY);\n"
                        f"INSERT INTO ledger (m) VALUES ('{ident}');\n",
                        f"DROP TABLE t_{n};\n" + ("DROP TABLE ledger;\n" if n == 1 else
                                                  f"DELETE FROM ledger WHERE m = '{ident}';\n"))
        ids.append(ident)
    return ids


@pytest.fixture
def tenants(tmp_path: Path, task_db_url: DatabaseUrl) -> Iterator[Tenants]:
    """One database, three tenant schemas, three targets in fleet.toml (no canaries, up to 3 at once)."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    ids = _migrations(folder, 3)
    with Database.connect(task_db_url) as db:
        for tenant in TENANTS:
            db.execute(f"CREATE SCHEMA {tenant}")
    url = full_url(task_db_url).replace(task_db_url.password or "\x00", "${TENANT_PASSWORD}")
    lines = ["[fleet]\nwave_size = 10\nmax_failures = 2\nparallel = 3\n"]
    lines += [f'[[targets]]\nname = "{t}"\nurl = "{url}"\nschema = "{t}"\n' for t in TENANTS]
    file = tmp_path / "fleet.toml"
    file.write_text("\n".join(lines))
    env = cli_env(ENVIRONMENT="production", TENANT_PASSWORD=task_db_url.password or "",
                  INVOKE_PGSHIFT_MIGRATIONS_DIR=str(folder), INVOKE_PGSHIFT_BACKUPS_DIR=str(tmp_path / "backups"),
                  INVOKE_PGSHIFT_LOGS_DIR=str(tmp_path / "logs"), INVOKE_PGSHIFT_PREFLIGHT_DRIFT="false",
                  INVOKE_PGSHIFT_LOCK_WAIT="1")
    yield Tenants(task_db_url, file, ids, env)


def test_a_tenant_target_keeps_its_record_in_its_own_schema(tmp_path: Path) -> None:
    file = tmp_path / "fleet.toml"
    file.write_text('[[targets]]\nname = "a"\nurl = "postgresql://u@h/db"\nschema = "t1"\n'
                    '[[targets]]\nname = "b"\nurl = "postgresql://u@h/db"\n'
                    '[[targets]]\nname = "c"\nurl = "postgresql://u@h/other"\nschema = "t3"\n'
                    'record_schema = "pgshift"\n')
    a, b, c = fleet_targets.load(file, env={}).targets
    assert (a.record_schema, b.record_schema, c.record_schema) == ("pgshift_t1", "pgshift", "pgshift")
    file.write_text('[[targets]]\nname = "a"\nurl = "postgresql://u@h/db"\nschema = "t1"\n'
                    'record_schema = "pgshift_x; DROP TABLE y"\n')
    with pytest.raises(ConfigError, match="must be pgshift or pgshift_"):
        fleet_targets.load(file, env={})


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_fleet_deploy_gives_each_tenant_of_one_database_its_own_record(tenants: Tenants) -> None:
    code, out = tenants.inv("fleet.deploy", "--yes")  # the first target rehearses on a clone
    assert code == 0, out
    assert "3 succeeded" in out
    for tenant in TENANTS:
        assert tenants.ledger(tenant) == tenants.ids  # each migration once, in the tenant's schema
        assert tenants.recorded(f"pgshift_{tenant}") == tenants.ids
    assert tenants.recorded("pgshift") == []
    with Database.connect(tenants.url) as db:
        assert not db.has_relation("pgshift.migrations")
        assert db.has_relation("pgshift_t2.deploys") and db.has_relation("pgshift_t2.maintenance")
    code, out = tenants.inv("fleet.status", "--json")
    assert code == 0, out
    assert json.loads(out)["heads"] == {tenants.ids[-1]: 3}


def test_a_poisoned_tenant_fails_alone_and_status_shows_each_tenants_head(tenants: Tenants) -> None:
    with Database.connect(tenants.url) as db:
        db.execute("CREATE TABLE t2.t_3 (id int)")  # the third migration cannot apply in t2
    code, out = tenants.inv("fleet.deploy", "--yes", "--no-rehearse")
    assert code != 0
    assert "t2: FAILED" in out and "t1: succeeded" in out and "t3: succeeded" in out, out
    assert tenants.ledger("t1") == tenants.ledger("t3") == tenants.ids
    assert tenants.ledger("t2") == tenants.ids[:2]
    assert tenants.recorded("pgshift_t2") == tenants.ids[:2]
    code, out = tenants.inv("fleet.status", "--json")
    status = json.loads(out)
    assert status["heads"] == {tenants.ids[-1]: 2, tenants.ids[1]: 1}
    by_name = {t["name"]: t for t in status["targets"]}
    assert by_name["t2"]["head"] == tenants.ids[1] and by_name["t1"]["head"] == tenants.ids[-1]
    assert any("failed" in p for p in by_name["t2"]["problems"]) and by_name["t1"]["problems"] == []


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_tenants_deploy_while_another_tenant_holds_its_lock(tenants: Tenants) -> None:
    """t3's lock is held (as by a deploy of t3 in progress), and so is the single-database one: t1 and t2
    deploy all the same, and only t3 waits (lock_wait 1 s) and gives up naming the holder."""
    with Database.connect(tenants.url) as t3, Database.connect(tenants.url) as plain:
        t3.record_schema = "pgshift_t3"
        assert lock.lock_id(t3) != lock.lock_id(plain)
        with lock.migration_lock(t3, 1), lock.migration_lock(plain, 1):
            code, out = tenants.inv("fleet.deploy", "--yes", "--no-rehearse")
    assert code != 0
    assert "t1: succeeded" in out and "t2: succeeded" in out, out
    assert "t3: FAILED" in out and "another migration holds the lock" in out, out
    assert tenants.ledger("t1") == tenants.ledger("t2") == tenants.ids
    assert tenants.ledger("t3") == []
    code, out = tenants.inv("fleet.deploy", "--yes", "--no-rehearse")  # the lock gone, t3 catches up
    assert code == 0, out
    assert tenants.ledger("t3") == tenants.ids and tenants.recorded("pgshift_t3") == tenants.ids


def test_the_single_database_path_still_records_in_pgshift(task_db_url: DatabaseUrl, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    ids = _migrations(folder, 2)
    done = inv_here("dev.migrate", env=cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(folder)))
    assert done.returncode == 0, done.stdout + done.stderr
    with Database.connect(task_db_url) as db:
        assert [r[0] for r in db.rows("SELECT id FROM pgshift.migrations ORDER BY id")] == ids
        assert db.rows("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'pgshift%' ORDER BY 1") == [("pgshift",)]
        assert lock.lock_id(db) == lock.LOCK_ID


@pytest.mark.parametrize(("threshold", "extension"), [("1", ".dir"), ("1000000000000", ".dump")])
def test_the_dry_run_names_the_backup_with_the_extension_it_will_have(task_db_url: DatabaseUrl, tmp_path: Path,
                                                                      threshold: str, extension: str) -> None:
    """From backup_parallel_bytes up a backup is a directory (.dir): the plan says so, as the deploy does."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    _migrations(folder, 1)
    env = cli_env(task_db_url, ENVIRONMENT="production", INVOKE_PGSHIFT_MIGRATIONS_DIR=str(folder),
                  INVOKE_PGSHIFT_BACKUPS_DIR=str(tmp_path / "backups"), INVOKE_PGSHIFT_LOGS_DIR=str(tmp_path / "logs"),
                  INVOKE_PGSHIFT_BACKUP_PARALLEL_BYTES=threshold, INVOKE_PGSHIFT_PREFLIGHT_DRIFT="false")
    done = inv_here("prod.deploy", "--dry-run", "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    backup = json.loads(done.stdout)["backup"]
    assert backup.endswith(f"<UTC YYYYMMDD_HHMMSS>{extension}"), backup


def test_a_tenant_is_refused_where_the_shared_record_of_older_deploys_is(tenants: Tenants) -> None:
    """Deployed before tenants had a record each, the database holds pgshift.migrations: a tenant without
    its own record would apply every migration again, so its deploy stops before touching anything."""
    plain = inv_here("dev.migrate", env=cli_env(tenants.url, INVOKE_PGSHIFT_MIGRATIONS_DIR=tenants.env[
        "INVOKE_PGSHIFT_MIGRATIONS_DIR"]))
    assert plain.returncode == 0, plain.stdout + plain.stderr
    code, out = tenants.inv("fleet.deploy", "--yes", "--no-rehearse")
    assert code != 0
    assert 'belongs in "pgshift_t1"' in out and "ALTER TABLE pgshift.migrations SET SCHEMA" in out, out
    assert all(tenants.ledger(t) == [] for t in TENANTS)
    assert tenants.recorded("pgshift") == tenants.ids  # the shared record as it was
