"""deploy: rehearse on a clone of the target, then deploy; the plan (--dry-run); deploy history."""

from invoke.context import Context
from invoke.tasks import task

from tasks import _deploy, _status
from tasks._cli import boundary, out, settings

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


@task
@boundary
def pause(c: Context) -> None:
    """Pause a running backfill (it stops before its next batch); deploy.resume lets it go on."""
    from pgshift import api

    count = api.deploy_pause(settings(c))
    out(f"paused {count} backfill(s)" if count else "no unfinished backfill to pause")


@task
@boundary
def resume(c: Context) -> None:
    """Let a paused backfill go on."""
    from pgshift import api

    count = api.deploy_pause(settings(c), resume=True)
    out(f"resumed {count} backfill(s)" if count else "no unfinished backfill to resume")


@task(help={"migration": "complete this expanded migration only (default: every one)",
            "force": "complete although the gate sees the old release (its sessions, its statements in "
                     "pg_stat_statements, the models mapping an old name); needs --reason",
            "reason": "why --force is right; recorded with the phase"})
@boundary
def complete(c: Context, migration: str = "", force: bool = False, reason: str = "") -> None:
    """Run the contract phase of expanded migrations, once the old release is gone."""
    from pgshift import api

    done = api.deploy_complete(settings(c), migration=migration or None, force=force, reason=reason or None,
                               progress=out)
    out(f"completed: {', '.join(done)}" if done else "nothing to complete: no expanded migration")


@task(help={"migration": "abort this expanded migration only (default: every one not completed)"})
@boundary
def abort(c: Context, migration: str = "") -> None:
    """Undo an expand that was not completed: its abort section (or rollback file) and its record."""
    from pgshift import api

    done = api.deploy_abort(settings(c), migration=migration or None, progress=out)
    out(f"aborted: {', '.join(done)}" if done else "nothing to abort: no expanded migration")
