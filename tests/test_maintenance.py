"""Maintenance mode: the one query the application reads, NOTIFY, hooks, by hand and during deploys."""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.deploy import deploys, maintenance, workflow
from pgshift.errors import ToolError
from pgshift.migrations import history
from tests.commands import cli_env, inv_here
from tests.deploys import M2, PASSWORD, apply_first, production, run_deploy, write_set
from tests.slack import TOKEN, SlackStub


def hook(record: Path, code: int = 0) -> tuple[str, ...]:
    """A hook that appends PGSHIFT_MAINTENANCE to ``record``, then exits with ``code``."""
    script = (f"import os, sys; open({str(record)!r}, 'a').write(os.environ['PGSHIFT_MAINTENANCE'] + '\\n'); "
              f"sys.stderr.write('cannot drain postgresql://app:{PASSWORD}@db1/app as {PASSWORD}\\n'); "
              f"sys.exit({code})")
    return (sys.executable, "-c", script)


def inv(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return inv_here(*args, env=env)


def test_by_hand_the_application_sees_one_row_hooks_run_slack_and_the_log_hear_of_it(
        db_url: DatabaseUrl, tmp_path: Path, migrations_dir: Path, stub: SlackStub) -> None:
    record = tmp_path / "hook.txt"
    env = cli_env(replace(db_url, password=PASSWORD), ENVIRONMENT="production", SLACK_WEBHOOK_URL=stub.url,
                  INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir), INVOKE_PGSHIFT_LOGS_DIR=str(tmp_path / "logs"),
                  INVOKE_PGSHIFT_MAINTENANCE_ON_HOOK=shlex.join(hook(record)),
                  INVOKE_PGSHIFT_MAINTENANCE_OFF_HOOK=shlex.join(hook(record)))
    assert inv(env, "prod.maintenance").stdout == "maintenance off\n"
    refused = inv(env, "prod.maintenance", "on")
    assert refused.returncode == 2 and "pass --yes" in refused.stderr

    with Database.connect(db_url) as app:
        app.execute(f"LISTEN {maintenance.CHANNEL}")
        on = inv(env, "prod.maintenance", "on", "--yes", "--reason", "moving the disks")
        assert on.returncode == 0, on.stderr
        assert app.one(maintenance.QUERY) == (True,)  # the query the application runs
        assert [n.payload for n in app.conn.notifies(timeout=5, stop_after=1)] == ["on"]

    shown = inv(env, "prod.status").stdout
    assert "maintenance ON since" in shown and "set by hand" in shown and "moving the disks" in shown
    assert "LEFT ON" not in shown
    off = inv(env, "prod.maintenance", "off", "--yes")
    assert off.returncode == 0, off.stderr
    with Database.connect(db_url) as app:
        assert app.one(maintenance.QUERY) == (False,)
    assert record.read_text() == "on\noff\n"
    assert [m["text"] for m in stub.received] == [f"maintenance mode ON for production ({db_url.dbname})",
                                                  f"maintenance mode off for production ({db_url.dbname})"]
    assert "by hand: moving the disks" in stub.received[0]["attachments"][0]["text"]
    logs = sorted((tmp_path / "logs").iterdir())
    assert len(logs) == 2 and "maintenance on by hand" in logs[0].read_text()
    for text in (on.stdout, on.stderr, off.stdout, *[p.read_text() for p in logs], *stub.raw):
        assert PASSWORD not in text and TOKEN not in text


def test_a_failing_on_hook_by_hand_turns_the_flag_back_off(db_url: DatabaseUrl, tmp_path: Path,
                                                          migrations_dir: Path) -> None:
    record = tmp_path / "hook.txt"
    env = cli_env(replace(db_url, password=PASSWORD), ENVIRONMENT="production",
                  INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir), INVOKE_PGSHIFT_LOGS_DIR=str(tmp_path / "logs"),
                  INVOKE_PGSHIFT_MAINTENANCE_ON_HOOK=shlex.join(hook(record, code=3)))
    done = inv(env, "prod.maintenance", "on", "--yes")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "exited with 3: cannot drain postgresql://app:***@db1/app as ***" in done.stderr
    assert PASSWORD not in done.stderr
    with Database.connect(db_url) as app:
        assert app.one(maintenance.QUERY) == (False,)


def test_a_deploy_whose_on_hook_fails_applies_nothing_and_ends_with_maintenance_off(
        db_url: DatabaseUrl, make_settings: Any, migrations_dir: Path, tmp_path: Path, stub: SlackStub) -> None:
    write_set(migrations_dir)
    record = tmp_path / "hook.txt"
    settings = production(db_url, make_settings, stub, skip_backup=True, maintenance_on_hook=hook(record, code=1),
                          maintenance_off_hook=hook(record))
    apply_first(settings)
    with pytest.raises(ToolError) as caught:
        run_deploy(settings, [], rehearse=False)
    assert "maintenance hook" in str(caught.value) and "Maintenance: off" in str(caught.value)
    assert record.read_text() == "on\noff\n"
    with Database.connect(db_url) as db:
        assert M2 not in history.records(db) and maintenance.state(db).enabled is False
        assert deploys.recent(db)[0].outcome == "failed"


def test_a_deploy_leaves_maintenance_set_by_hand_on(
        db_url: DatabaseUrl, make_settings: Any, migrations_dir: Path, stub: SlackStub) -> None:
    write_set(migrations_dir)
    settings = production(db_url, make_settings, stub, skip_backup=True)
    apply_first(settings)
    with Database.connect(db_url) as db:
        maintenance.switch(db, True, set_by="ops@bastion", reason="planned downtime")
    report = run_deploy(settings, [], rehearse=False)
    assert report.outcome == "succeeded"
    assert any("turned on by hand, so it stays on" in w for w in report.warnings)
    with Database.connect(db_url) as db:
        flag = maintenance.state(db)
    assert flag.enabled and flag.reason == "planned downtime" and flag.deploy_id is None
    assert not flag.left_on_by_crash(deploy_running=False)
    assert isinstance(workflow.who(), str)
