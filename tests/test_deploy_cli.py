"""The deploy tasks from the command line: --dry-run changes nothing and its exit code tells a pipeline
whether to go on; production needs ENVIRONMENT=production and the typed name or --yes; no secret in
the output, the log, Slack or the process list; deploy.status and prod.status show the history."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pgshift.databases import pgbin, snapshot
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.deploy import deploys, maintenance
from pgshift.migrations import history
from tests.commands import INV, ROOT, cli_env, inv_here
from tests.conftest import write_migration
from tests.deploys import M1, M2, PASSWORD, write_set
from tests.slack import TOKEN, SlackStub


@pytest.fixture
def db_url(task_db_url: DatabaseUrl) -> DatabaseUrl:
    """The task layer does not care which server: its tests run on one."""
    return task_db_url




def env_for(url: DatabaseUrl, tmp_path: Path, migrations_dir: Path, **extra: str) -> dict[str, str]:
    return cli_env(replace(url, password=PASSWORD), INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir),
                   INVOKE_PGSHIFT_BACKUPS_DIR=str(tmp_path / "backups"), INVOKE_PGSHIFT_LOGS_DIR=str(tmp_path / "logs"),
                   INVOKE_PGSHIFT_LOCK_WAIT="1", **{"INVOKE_PGSHIFT_PREFLIGHT_DRIFT": "0", **extra})


def inv(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return inv_here(*args, env=env)


def dump(url: DatabaseUrl) -> str:
    """Schema and data as pg_dump prints them (a plain SQL dump; its random per-run \\restrict key left out)."""
    done = subprocess.run([str(pgbin.program("pg_dump")), "--no-owner"], env={**os.environ, **url.env()},
                          capture_output=True, text=True, check=True)
    return "\n".join(line for line in done.stdout.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def state(url: DatabaseUrl) -> tuple[Any, ...]:
    with Database.connect(url) as db:
        return (dump(url), snapshot.take(db), history.records(db),
                db.rows("SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = 'pgshift' ORDER BY 1"))


def test_dry_run_prints_the_plan_changes_nothing_and_its_exit_code_says_go(
        db_url: DatabaseUrl, tmp_path: Path, migrations_dir: Path, stub: SlackStub) -> None:
    write_set(migrations_dir)
    env = env_for(db_url, tmp_path, migrations_dir, SLACK_WEBHOOK_URL=stub.url, INVOKE_PGSHIFT_PREFLIGHT_DRIFT="1")
    assert inv(env, "dev.migrate", "--to", M1).returncode == 0  # the target has M1 and its rows
    with Database.connect(db_url) as db:
        db.execute("CREATE TABLE handmade (id int PRIMARY KEY)")  # drift: no migration made it
    write_migration(migrations_dir, "20250104000000_index_name", "CREATE INDEX items_name ON items (name);\n",
                    "DROP INDEX items_name;\n")
    before = state(db_url)

    plain = inv({**env, "INVOKE_PGSHIFT_PREFLIGHT_DRIFT": "0"}, "deploy", "--dry-run")
    assert plain.returncode == 1, plain.stdout + plain.stderr  # the unindexed CREATE INDEX is unsafe: lint blocks
    assert "a deploy would NOT proceed: lint: 1 unsafe statement(s)" in plain.stdout
    assert "require-concurrent-index-creation" in plain.stdout
    lenient = inv({**env, "ENVIRONMENT": "production"}, "prod.deploy", "--dry-run")
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr  # prod.deploy shows lint, does not block
    out = lenient.stdout
    assert "deploy to postgresql://postgres:***@" in out and "(production)" in out
    assert f"{M2}.sql  (in one transaction; rollback: {M2}.rollback.sql)" in out
    assert "      ALTER TABLE items ADD COLUMN price int;" in out
    assert "backup_production_<UTC YYYYMMDD_HHMMSS>.dump" in out and "lint: 20250104000000_index_name.sql:1" in out
    assert "a deploy would proceed: 2 migration(s)" in out
    assert "warning: drift: table public.handmade: added by hand (no migration made it)" in out
    env["INVOKE_PGSHIFT_PREFLIGHT_DRIFT"] = "0"
    as_json = json.loads(inv({**env, "ENVIRONMENT": "production"}, "prod.deploy", "--dry-run", "--json").stdout)
    assert as_json["proceed"] is True and [m["id"] for m in as_json["pending"]] == [M2, "20250104000000_index_name"]
    assert {s["name"]: s["runs"] for s in as_json["steps"]}["rehearse"] is False
    skipped = inv({**env, "SKIP_BACKUP": "1", "SKIP_MAINTENANCE": "1"}, "deploy", "--dry-run", "--json")
    steps = {s["name"]: (s["runs"], s["note"]) for s in json.loads(skipped.stdout)["steps"]}
    assert steps["backup"] == (False, "SKIP_BACKUP is set") and steps["maintenance on"][0] is False

    assert state(db_url) == before  # schema, data, records, and no table of ours was created
    assert stub.received == [] and not (tmp_path / "logs").exists() and not (tmp_path / "backups").exists()
    for done in (plain, lenient):
        assert PASSWORD not in done.stdout + done.stderr and TOKEN not in done.stdout + done.stderr


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_dry_run_refuses_an_edited_migration_and_a_held_lock(
        db_url: DatabaseUrl, tmp_path: Path, migrations_dir: Path) -> None:
    write_set(migrations_dir)
    env = env_for(db_url, tmp_path, migrations_dir)
    assert inv(env, "dev.migrate", "--to", M1).returncode == 0
    assert inv(env, "deploy", "--dry-run").returncode == 0

    with Database.connect(db_url) as holder:
        holder.execute("SELECT pg_advisory_lock(x'70677368'::int, 1)")
        held = inv(env, "deploy", "--dry-run")
        assert held.returncode == 1
        assert f"a deploy would NOT proceed: another migration holds the lock: pid {holder.pid}" in held.stdout
        real = inv({**env, "ENVIRONMENT": "production"}, "prod.deploy", "--yes")  # waits lock_wait (1s), gives up
        assert real.returncode == 1 and "Traceback" not in real.stderr
        assert f"another migration holds the lock: pid {holder.pid}" in real.stderr and "waited 1s" in real.stderr

    path = migrations_dir / f"{M1}.sql"
    path.write_text(path.read_text() + "-- edited\n")
    edited = inv(env, "deploy", "--dry-run")
    assert edited.returncode == 1
    assert f"a deploy would NOT proceed: {M1}.sql was edited after it was applied" in edited.stdout
    real = inv(env, "deploy")
    assert real.returncode == 1 and real.stderr.startswith("error: preflight: ") and real.stderr.count("\n") == 1
    with Database.connect(db_url) as db:
        assert list(history.records(db)) == [M1] and not deploys.exists(db)


def test_production_needs_the_environment_and_a_confirmation(
        db_url: DatabaseUrl, tmp_path: Path, migrations_dir: Path) -> None:
    write_set(migrations_dir)
    env = env_for(db_url, tmp_path, migrations_dir)
    wrong = inv(env, "prod.deploy", "--yes")
    assert wrong.returncode == 2 and "need ENVIRONMENT=production" in wrong.stderr
    usage = inv(env, "deploy", "--dry-run", "--on-failure", "maybe")
    assert usage.returncode == 2 and usage.stderr == "error: --on-failure=maybe is not one of: stop, rollback\n"
    for task in ("prod.deploy", "deploy"):
        refused = inv({**env, "ENVIRONMENT": "production"}, task)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith("error: ") and refused.stderr.count("\n") == 1
        assert "no terminal to ask at; pass --yes" in refused.stderr
    with Database.connect(db_url) as db:
        assert history.records(db) == {} and not deploys.exists(db) and not maintenance.exists(db)


@pytest.mark.process
def test_a_deploy_keeps_secrets_out_of_output_log_slack_and_process_list(
        db_url: DatabaseUrl, tmp_path: Path, migrations_dir: Path, stub: SlackStub) -> None:
    write_set(migrations_dir)
    hook = shlex.join([sys.executable, "-c", "import time; time.sleep(0.3); print('drained')"])
    env = env_for(db_url, tmp_path, migrations_dir, ENVIRONMENT="production", SLACK_WEBHOOK_URL=stub.url,
                  INVOKE_PGSHIFT_MAINTENANCE_ON_HOOK=hook)
    seen: set[str] = set()
    process = subprocess.Popen([INV, "prod.deploy", "--yes"], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)

    def watch() -> None:
        while process.poll() is None:
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    with contextlib.suppress(OSError):
                        seen.add(Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))

    watcher = threading.Thread(target=watch)
    watcher.start()
    stdout, stderr = process.communicate(timeout=120)
    watcher.join()
    assert process.returncode == 0, stdout + stderr
    assert any(" prod.deploy --yes" in cmd for cmd in seen)  # the watch did see the deploy running
    logs = [p.read_text() for p in (tmp_path / "logs").iterdir()]
    assert len(logs) == 1 and "on-hook done: drained" in logs[0]
    for text in (stdout, stderr, *logs, *stub.raw, *seen):
        assert PASSWORD not in text and TOKEN not in text, text[:300]
    assert [m["text"].split(" ")[0] for m in stub.received] == ["deploy", "maintenance", "maintenance", "deploy"]

    status = json.loads(inv(env, "deploy.status", "--json").stdout)
    assert status["pending"] == [] and status["maintenance"]["enabled"] is False
    (row,) = status["deploys"]
    assert row["outcome"] == "succeeded" and row["migrations"] == [M1, M2] and row["backup"].endswith(".dump")
    shown = inv(env, "prod.status")
    assert shown.returncode == 0 and f"last deploy #{row['id']} succeeded: 2 migration(s)" in shown.stdout
    table = inv(env, "deploy.status")
    assert "succeeded" in table.stdout and "pending: none" in table.stdout


def test_restoring_the_pre_deploy_backup_gives_back_the_database_before_the_deploy(
        db_url: DatabaseUrl, tmp_path: Path, migrations_dir: Path) -> None:
    write_set(migrations_dir)
    env = env_for(db_url, tmp_path, migrations_dir, ENVIRONMENT="production")
    before = dump(db_url)
    deployed = inv(env, "prod.deploy", "--yes")
    assert deployed.returncode == 0, deployed.stderr
    backup = next((tmp_path / "backups").glob("backup_production_*.dump"))
    restored = inv(env, "rollback.restore", backup.name, "--yes")
    assert restored.returncode == 0, restored.stderr
    shown = inv(env, "deploy.status", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["interrupted"] == [] and all(d["outcome"] != "running" for d in data["deploys"])
    assert dump(db_url).count("CREATE TABLE public.items") == before.count("CREATE TABLE public.items") == 0
