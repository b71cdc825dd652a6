"""The GitHub Actions workflow: actionlint clean, pinned, least privilege, calling tasks that exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from invoke.vendor import yaml

from tests.invocations import commands, problems

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "migration.yml"


def workflow() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def test_actionlint_is_clean() -> None:
    done = subprocess.run([str(Path(sys.executable).with_name("actionlint")), str(WORKFLOW)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_action_is_pinned_to_a_commit_and_permissions_are_read_only() -> None:
    text = WORKFLOW.read_text()
    uses = re.findall(r"uses:\s*(\S+)", text)
    assert uses, "the workflow uses actions"
    assert all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in uses), uses
    assert workflow()["permissions"] == {"contents": "read"}


def test_deploy_jobs_never_overlap_and_production_is_gated() -> None:
    jobs = workflow()["jobs"]
    assert jobs["staging"]["concurrency"]["group"] == "deploy-staging"
    assert jobs["production"]["concurrency"]["group"] == "deploy-production"
    assert jobs["production"]["environment"] == "production"
    assert "workflow_dispatch" in jobs["production"]["if"]
    assert all(not j["concurrency"]["cancel-in-progress"] for j in (jobs["staging"], jobs["production"]))


def test_secrets_come_only_from_the_secrets_context() -> None:
    for name, job in workflow()["jobs"].items():
        for step in job["steps"]:
            for key, value in step.get("env", {}).items():
                if key in ("DATABASE_URL", "SLACK_WEBHOOK_URL") and "localhost" not in str(value):
                    assert re.fullmatch(r"\$\{\{ secrets\.[A-Z_]+ \}\}", str(value)), (name, key, value)


def test_every_job_calls_tasks_that_exist() -> None:
    found = [cmd for job in workflow()["jobs"].values() for step in job["steps"]
             for cmd in commands(step.get("run", ""))]
    assert {"test", "deploy --dry-run", "deploy --yes"} <= set(found), found
    assert [p for cmd in found for p in problems(cmd)] == []
