"""``inv test`` and ``deploy --dry-run`` on histories written the way real teams write them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pgshift.dburl import DatabaseUrl
from tests import histories
from tests.commands import cli_env, inv_here

CHECKS = {"forward", "backward", "constraints", "lint", "performance", "order", "schema"}


def _inv(url: DatabaseUrl, migrations: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = cli_env(url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations), INVOKE_PGSHIFT_QUICK_ROWS="500",
                  INVOKE_PGSHIFT_PREFLIGHT_DRIFT="0")
    return inv_here(*args, env=env)


def _finished(done: subprocess.CompletedProcess[str]) -> None:
    """The command ran to its end: exit 0 or 1, a summary row per check, no traceback."""
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr
    assert "Traceback" not in done.stderr
    summary = done.stdout.split("== summary")[1]
    for check in CHECKS:
        assert f"\n{check} " in summary, summary


@pytest.mark.slow
def test_inv_test_passes_and_a_dry_run_proceeds_on_a_300_migration_history(
        db_url: DatabaseUrl, migrations_dir: Path) -> None:
    history = histories.write(migrations_dir, 300, forward_only_header=True)
    assert len(history.ids) >= 300 and history.up_only and history.placeholders
    text = _inv(db_url, migrations_dir, "test")
    _finished(text)
    assert text.returncode == 0, text.stdout.split("== summary")[1]
    assert "skipped: forward-only: " in text.stdout
    dry = _inv(db_url, migrations_dir, "deploy", "--dry-run")
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr
    assert f"a deploy would proceed: {len(history.ids)} migration(s)" in dry.stdout  # placeholders too, as no-ops


@pytest.mark.slow
def test_inv_test_json_on_an_up_only_history_names_each_file_without_a_rollback(
        task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    history = histories.write(migrations_dir, 300)
    done = _inv(task_db_url, migrations_dir, "test", "--json")
    assert done.returncode == 1, done.stderr
    checks = json.loads(done.stdout)["checks"]
    assert set(checks) == CHECKS
    assert {name for name, check in checks.items() if not check["ok"]} == {"backward"}
    applied = [s for s in checks["forward"]["steps"] if s["state"] == "applied"]
    assert len(applied) == len(history.ids)  # the comment-only placeholders are applied as no-ops
    failed = {t["id"] for t in checks["backward"]["trips"] if t["state"] == "failed"}
    assert failed == set(history.up_only)  # only the files with no rollback: every written rollback round-trips
    untested = [t["id"] for t in checks["backward"]["trips"] if t["state"] == "not tested"]
    assert untested == []


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_mysql_habits_postgresql_rejects_are_reported_not_crashes(
        task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    histories.write_mysql(migrations_dir)
    text = _inv(task_db_url, migrations_dir, "test")
    _finished(text)
    assert text.returncode == 1
    report = json.loads(_inv(task_db_url, migrations_dir, "test", "--json").stdout)
    assert set(report["checks"]) == CHECKS and report["ok"] is False
    forward = report["checks"]["forward"]["summary"]
    assert forward.startswith("20190301110000_orders.sql fails") and 'syntax error at or near "`"' in forward
    lint = {f["file"]: f["rule"] for f in report["checks"]["lint"]["findings"]}
    assert lint["20190301110000_orders.sql"] == "syntax"
    dry = _inv(task_db_url, migrations_dir, "deploy", "--dry-run")
    assert dry.returncode == 1 and "Traceback" not in dry.stderr
    assert "a deploy would NOT proceed: 20190301120000_backfill.sql, line 1: START is not allowed" in dry.stdout


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_rehearsed_deploy_of_a_real_style_history_applies_it(
        task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    history = histories.write(migrations_dir, 60, forward_only_header=True)
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir), INVOKE_PGSHIFT_PREFLIGHT_DRIFT="0",
                  SKIP_BACKUP="1")
    done = inv_here("deploy", "--yes", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    status = inv_here("status", env=env)
    assert status.returncode == 0, status.stdout
    assert history.up_only[0] in done.stderr + done.stdout  # named as not rolled back in the rehearsal
