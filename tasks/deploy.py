"""deploy: rehearse on a clone of the target, then deploy; the plan (--dry-run); deploy history."""

from invoke.context import Context
from invoke.tasks import task

from tasks import _deploy, _status
from tasks._cli import boundary, settings

_HELP = {
    "dry_run": "print the plan (pending SQL, steps, backup) and exit 0 if a deploy would proceed; changes nothing",
    "yes": "do not ask for the database name (production otherwise asks for it)",
    "on_failure": "stop (earlier migrations of the deploy stay) or rollback (run their rollback files)",
    "json": "print one JSON object instead of text",
}


@task(default=True, help=_HELP)
@boundary
def deploy(c: Context, dry_run: bool = False, yes: bool = False, on_failure: str = "stop",
           json: bool = False) -> None:
    """Rehearse on a clone, then deploy pending migrations."""
    _deploy.run(settings(c), rehearse=True, dry_run=dry_run, yes=yes, on_failure=on_failure, json=json)


@task(help={"json": "print one JSON object instead of a table", "limit": "how many deploys to list (default 10)",
            "drift": _status.DRIFT_HELP})
@boundary
def status(c: Context, json: bool = False, limit: int = 10, drift: bool = True) -> None:
    """Recent deploys, what is pending, maintenance mode, drift (exit 1 when the schema drifted)."""
    from pgshift import api

    _deploy.show_state(api.deploy_status(settings(c), limit, drift=drift), json)
