"""kill -9 of ``inv prod.deploy`` at every step boundary, then a plain re-run.

After each kill: no lock is left; a maintenance flag the dead deploy set is still on (the application
must keep seeing it) but reported as left on by a dead deploy, by ``status`` and ``deploy.status``;
the re-run reports what it recovered, finishes the job and turns maintenance off; no data is lost and
every backup listed is complete.
"""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pgshift import settings
from pgshift.backups import files as backups
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.deploy import deploys, maintenance, state
from pgshift.migrations import apply, history, source
from tests.conftest import INV, ROOT, cli_env, write_migration
from tests.deploys import M1, M2, PASSWORD, write_set
from tests.slack import SlackStub

pytestmark = pytest.mark.process  # each test runs inv as a real process, to kill it

M3 = "20250105000000_create_audits"

# (failpoint, maintenance left on by the kill, history row written before the kill)
STEPS = [
    ("deploy:locked", False, False),
    ("deploy:backed-up", False, False),
    ("deploy:started", False, True),
    ("deploy:maintenance-on", True, True),
    (f"committed:{M2}", True, True),
    ("deploy:applied", True, True),
    ("deploy:verified", True, True),
    ("deploy:maintenance-off", False, True),
]


def inv(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INV, *args], cwd=ROOT, env=env, text=True, capture_output=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize(("failpoint", "left_on", "recorded"), STEPS, ids=[s[0] for s in STEPS])
def test_kill_at_each_step_then_rerun_recovers(db_url: DatabaseUrl, tmp_path: Path, migrations_dir: Path,
                                                failpoint: str, left_on: bool, recorded: bool) -> None:
    write_set(migrations_dir)
    # The header sends M3 on its own (consecutive plain migrations share one message), so there is a
    # moment when M2 is committed and M3 is not, for the committed:M2 failpoint to fall on.
    write_migration(migrations_dir, M3, "-- transactional: true\nCREATE TABLE audits (id int PRIMARY KEY);\n",
                    "DROP TABLE audits;\n")
    env = cli_env(replace(db_url, password=PASSWORD), ENVIRONMENT="production",
                  INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir), INVOKE_PGSHIFT_BACKUPS_DIR=str(tmp_path / "b"),
                  INVOKE_PGSHIFT_LOGS_DIR=str(tmp_path / "logs"), INVOKE_PGSHIFT_PREFLIGHT_DRIFT="0")
    config = settings.load(tmp_path, {"migrations_dir": str(migrations_dir), "backups_dir": str(tmp_path / "b")},
                           env={"DATABASE_URL": str(db_url)})
    config = replace(config, url=db_url)
    with Database.connect(db_url) as db:
        apply.apply(db, source.read(migrations_dir), apply.Limits.of(config), upto=M1)

    killed = inv({**env, "PGSHIFT_FAILPOINT": failpoint}, "prod.deploy", "--yes")
    assert killed.returncode == -9, killed.stdout + killed.stderr

    with Database.connect(db_url) as db:
        # The server ends the dead client's session (and its lock) as soon as it notices: wait for that.
        deadline = time.monotonic() + 20
        while db.one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                     ""
                     " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())") != (0,):
            assert time.monotonic() < deadline, "the dead deploy's session kept the migration lock"
            time.sleep(0.02)
        assert maintenance.state(db).enabled is left_on
        assert len(deploys.recent(db)) == (1 if recorded else 0)
    found = state.collect(config)  # what deploy.status shows
    assert found.maintenance_left_by_crash is left_on and found.interrupted == ([1] if recorded else [])
    shown = inv(env, "prod.status").stdout
    assert ("LEFT ON by a deploy that died" in shown) is left_on
    assert ("(its process died: the next deploy finishes the job)" in shown) is recorded
    if left_on:
        plan = inv(env, "prod.deploy", "--dry-run").stdout
        assert "left on by a deploy that died; the next deploy turns it off" in plan

    rerun = inv(env, "prod.deploy", "--yes")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert ("recovered: deploy #1 interrupted" in rerun.stdout) is recorded
    assert ("recovered: maintenance ON" in rerun.stdout) is left_on

    with Database.connect(db_url) as db:
        records = history.records(db)
        assert [r.id for r in records.values() if r.state == "applied"] == [M1, M2, M3]
        assert db.one("SELECT count(*) FROM items") == (3,)  # nothing lost
        assert db.one(maintenance.QUERY) == (False,)
        rows = {d.id: d.outcome for d in deploys.recent(db)}
    if recorded:
        assert rows[1] == "interrupted"
    assert set(rows.values()) <= {"interrupted", "succeeded"} and ("succeeded" in rows.values()) is (
        failpoint not in ("deploy:applied", "deploy:verified", "deploy:maintenance-off"))
    assert all(b.state == "verified" for b in backups.list_backups(config))


def test_sigterm_mid_migration_cancels_it_and_cleans_up(db_url: DatabaseUrl, tmp_path: Path,
                                                         migrations_dir: Path) -> None:
    """A cancelled CI job sends SIGTERM: the deploy ends like Ctrl-C, not like kill -9."""
    stub = SlackStub()
    write_set(migrations_dir)
    gated = "20250106000000_gated"
    write_migration(migrations_dir, gated, "ALTER TABLE items ADD COLUMN gated int;\n"
                    "SELECT pg_advisory_xact_lock_shared(7777, 1);\n", "ALTER TABLE items DROP COLUMN gated;\n")
    env = cli_env(replace(db_url, password=PASSWORD), ENVIRONMENT="production", SKIP_BACKUP="1",
                  SLACK_WEBHOOK_URL=stub.url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir),
                  INVOKE_PGSHIFT_LOGS_DIR=str(tmp_path / "logs"), INVOKE_PGSHIFT_PREFLIGHT_DRIFT="0")
    try:
        with Database.connect(db_url) as gate:
            gate.execute("SELECT pg_advisory_lock(7777, 1)")
            process = subprocess.Popen([INV, "prod.deploy", "--yes"], cwd=ROOT, env=env, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + 30
            while gate.one("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 1 "
                           "AND classid = 7777 AND NOT granted"
                     " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())") == (0,):
                assert process.poll() is None and time.monotonic() < deadline, "the deploy never reached the gate"
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=60)
    finally:
        stub.close()
    assert process.returncode == 130 and stderr == "aborted\n", stdout + stderr
    with Database.connect(db_url) as db:
        records = history.records(db)
        (row,) = deploys.recent(db)
        assert maintenance.state(db).enabled is False
        gated_column = db.one("SELECT count(*) FROM pg_attribute WHERE attrelid = 'items'::regclass "
                              "AND attname = 'gated'")
    assert records[M2].state == "applied" and gated not in records and gated_column == (0,)
    assert row.outcome == "failed" and row.error == "interrupted (Ctrl-C or SIGTERM)"
    texts = [m["text"] for m in stub.received]
    assert texts[-2].startswith("maintenance mode off") and texts[-1].endswith("FAILED")
    assert "interrupted (Ctrl-C or SIGTERM)" in stub.received[-1]["attachments"][0]["text"]
