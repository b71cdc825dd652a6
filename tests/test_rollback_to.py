"""rollback.to ID: rollbacks newest first under the lock, each atomic or journaled; production wrapped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from tests import rollbacks
from tests.commands import cli_env, inv_here, inv_process
from tests.conftest import write_migration
from tests.slack import SlackStub

pytestmark = pytest.mark.timeout(300)


def _migrated(url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    rollbacks.write(migrations_dir)
    api.migrate(make_settings(url))


def _env(url: DatabaseUrl, migrations_dir: Path, **extra: str) -> dict[str, str]:
    return cli_env(url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir), **extra)


def test_rolls_back_newest_first_across_transactional_and_concurrent(db_url: DatabaseUrl, migrations_dir: Path,
                                                                     make_settings: Any) -> None:
    _migrated(db_url, migrations_dir, make_settings)
    env = _env(db_url, migrations_dir)
    dry = inv_here("rollback.to", rollbacks.BASE, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert [ln.split(":")[0].strip() for ln in lines[1:4]] == [rollbacks.MIXED, rollbacks.COLUMN, rollbacks.INDEXES]
    assert "statement by statement (2), journaled" in lines[1] and "in one transaction" in lines[2]
    with Database.connect(db_url) as db:
        rollbacks.check_consistent(db)
        assert db.one("SELECT count(*) FROM pgshift.migrations") == (4,)  # the dry run changed nothing
    done = inv_here("rollback.to", rollbacks.BASE, "--reason", "bad release", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.index(f"rolling back {rollbacks.MIXED}") < done.stdout.index(f"rolling back {rollbacks.INDEXES}")
    with Database.connect(db_url) as db:
        assert db.rows("SELECT id FROM pgshift.migrations") == [(rollbacks.BASE,)]
        assert db.one("SELECT count(*) FROM pgshift.rollbacks") == (0,)
        assert db.one("SELECT count(*) FROM t") == (1000,)
        assert not any(rollbacks.present(db, w) for ws in rollbacks.REMOVES.values() for w in ws)
        assert db.one("SELECT action, migration, reason FROM pgshift.audit") == ("rollback to", rollbacks.BASE,
                                                                                "bad release")
    again = inv_here("dev.migrate", env=env)  # and forward again
    assert again.returncode == 0 and "applied 3 migration(s)" in again.stdout, again.stdout + again.stderr


@pytest.mark.parametrize("problem", ["missing", "refused"])
def test_a_missing_or_refused_rollback_stops_before_anything_runs(problem: str, task_db_url: DatabaseUrl,
                                                                  migrations_dir: Path, make_settings: Any) -> None:
    _migrated(task_db_url, migrations_dir, make_settings)
    if problem == "missing":
        write_migration(migrations_dir, "20250105000000_late", "CREATE TABLE late (id int);")
    else:
        write_migration(migrations_dir, "20250105000000_late", "CREATE TABLE late (id int);",
                        "-- pgshift: rollback refused: a baseline\n")
    api.migrate(make_settings(task_db_url))
    done = inv_here("rollback.to", rollbacks.BASE, env=_env(task_db_url, migrations_dir))
    assert done.returncode == 1
    expected = "has no rollback file" if problem == "missing" else "rollback is refused"
    assert f"20250105000000_late{'' if problem == 'missing' else chr(39) + 's'}" in done.stderr
    assert expected in done.stderr and "nothing was rolled back" in done.stderr
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT count(*) FROM pgshift.migrations") == (5,)
        assert db.has_relation("public.t_d")


def test_an_unknown_target_is_named(task_db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    _migrated(task_db_url, migrations_dir, make_settings)
    done = inv_here("rollback.to", "20240101000000_nope", env=_env(task_db_url, migrations_dir))
    assert done.returncode == 2 and "is not an applied migration here" in done.stderr


def test_production_confirms_backs_up_and_tells(task_db_url: DatabaseUrl, migrations_dir: Path, tmp_path: Path,
                                                make_settings: Any, stub: SlackStub) -> None:
    _migrated(task_db_url, migrations_dir, make_settings)
    env = _env(task_db_url, migrations_dir, ENVIRONMENT="production", SLACK_WEBHOOK_URL=stub.url,
               INVOKE_PGSHIFT_BACKUPS_DIR=str(tmp_path / "backups"), INVOKE_PGSHIFT_LOGS_DIR=str(tmp_path / "logs"))
    refused = inv_here("rollback.to", rollbacks.COLUMN, env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    done = inv_here("rollback.to", rollbacks.COLUMN, "--yes", "--json", env=env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [r["id"] for r in report["rolled_back"]] == [rollbacks.MIXED]
    assert Path(report["backup"]).exists() and Path(report["log"]).exists()
    assert "pre-rollback" in Path(report["backup"]).name or Path(report["backup"]).stat().st_size > 0
    with Database.connect(task_db_url) as db:
        assert db.one("SELECT outcome, migrations FROM pgshift.deploys ORDER BY id DESC LIMIT 1") == (
            "rolled back", [rollbacks.MIXED])
        assert db.one("SELECT enabled FROM pgshift.maintenance") == (False,)
    assert any("started" in t for t in stub.texts()) and any("succeeded" in t for t in stub.texts())
    skipped = inv_here("rollback.to", rollbacks.INDEXES, "--yes", "--json",
                       env={**env, "SKIP_BACKUP": "1"})
    assert skipped.returncode == 0 and json.loads(skipped.stdout)["backup"] is None


FAILPOINTS = ["rollback:locked", f"rollback-executed:{rollbacks.MIXED}:1", f"rollback-journaled:{rollbacks.MIXED}:1",
              f"rollback-journaled:{rollbacks.MIXED}:2", f"rolledback:{rollbacks.MIXED}",
              f"rolledback:{rollbacks.COLUMN}", f"rollback-executed:{rollbacks.INDEXES}:1",
              f"rollback-journaled:{rollbacks.INDEXES}:1", f"rollback-executed:{rollbacks.INDEXES}:2",
              f"rollback-journaled:{rollbacks.INDEXES}:2", f"rolledback:{rollbacks.INDEXES}"]


@pytest.mark.process
@pytest.mark.slow
@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_killed_at_each_boundary_stays_consistent_and_a_rerun_finishes(failpoint: str, task_db_url: DatabaseUrl,
                                                                       migrations_dir: Path,
                                                                       make_settings: Any) -> None:
    _migrated(task_db_url, migrations_dir, make_settings)
    env = _env(task_db_url, migrations_dir)
    killed = inv_process("rollback.to", rollbacks.BASE, env={**env, "PGSHIFT_FAILPOINT": failpoint})
    assert killed.returncode == -9, killed.stdout + killed.stderr
    with Database.connect(task_db_url) as db:
        rollbacks.check_consistent(db)
    rerun = inv_process("rollback.to", rollbacks.BASE, env=env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    with Database.connect(task_db_url) as db:
        rollbacks.check_consistent(db)
        assert db.rows("SELECT id FROM pgshift.migrations") == [(rollbacks.BASE,)]
        assert db.one("SELECT count(*) FROM pgshift.rollbacks") == (0,)
        assert db.rows("SELECT 1 FROM pg_index WHERE NOT indisvalid") == []
