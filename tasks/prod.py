"""prod: production work. Every task here needs ENVIRONMENT=production and a DATABASE_URL."""

from invoke.context import Context
from invoke.tasks import task

from pgshift import api
from pgshift.errors import Aborted, ConfigError
from tasks import _adopt, _backup, _deploy, _prompts, _status
from tasks._cli import boundary, emit_json, out, settings


@task(help={"json": "print one JSON object instead of a table", "drift": _status.DRIFT_HELP})
@boundary
def status(c: Context, json: bool = False, drift: bool = True) -> None:
    """Migration status of production.

    Exit codes: 0 up to date, 3 pending migrations only, 1 anything wrong (drift too), 2 usage error.
    """
    _status.show(settings(c, require="production"), json, drift)


@task
@boundary
def backup(c: Context) -> None:
    """Back up the production database into backups/."""
    _backup.take(settings(c, require="production"))


@task(help={"dry_run": "only list what would be removed", "json": "print one JSON object instead of text"})
@boundary
def cleanup(c: Context, dry_run: bool = False, json: bool = False) -> None:
    """Remove old backups under the retention policy."""
    config = settings(c, require="production")
    plan = api.cleanup(config, dry_run=dry_run)
    if json:
        emit_json(plan.as_json())
        return
    verb = "would remove" if dry_run else "removed"
    for removal in plan.remove:
        out(f"{verb} {removal.backup.path.name} ({_backup.size(removal.backup.size)}): {removal.reason}")
    for path, size in zip(plan.leftovers, plan.leftover_sizes, strict=True):
        out(f"{verb} {path.name} ({_backup.size(size)}): left by an interrupted backup")
    if plan.leftovers:
        out(f"{verb} {len(plan.leftovers)} file(s) that interrupted backups left, {_backup.size(plan.leftover_bytes)}")
    out(f"{verb} {len(plan.remove)} backup(s), {_backup.size(plan.freed)}; kept {len(plan.keep)} "
        f"(newest {config.backup_keep_count} per environment, the last {config.backup_keep_days:g} days, "
        "the newest verified)")


@task(help={
    "dry_run": "print the plan (pending SQL, steps, backup) and exit 0 if a deploy would proceed; changes nothing",
    "yes": "do not ask for the database name",
    "on_failure": "stop (earlier migrations of the deploy stay) or rollback (run their rollback files)",
    "json": "print one JSON object instead of text",
})
@boundary
def deploy(c: Context, dry_run: bool = False, yes: bool = False, on_failure: str = "stop",
           json: bool = False) -> None:
    """Back up, then apply pending migrations to production."""
    _deploy.run(settings(c, require="production"), rehearse=False, dry_run=dry_run, yes=yes,
                on_failure=on_failure, json=json)


@task(positional=["action"], optional=["action"], help={
    "action": "on, off or status (default)",
    "reason": "why (shown to whoever reads the flag, and on Slack)",
    "yes": "do not ask before switching",
    "json": "status as one JSON object",
})
@boundary
def maintenance(c: Context, action: str | None = None, reason: str = "", yes: bool = False,
                json: bool = False) -> None:
    """Turn maintenance mode on or off, or show it."""
    config = settings(c, require="production")
    action = action or "status"
    if action not in ("on", "off", "status"):
        raise ConfigError(f"unknown action {action!r}; use inv prod.maintenance on, off or status")
    if action == "status":
        flag, crashed = api.maintenance(config)
        if json:
            emit_json({**flag.as_json(), "left_by_crash": crashed})
        else:
            out(flag.describe() + (" -- LEFT ON by a deploy that died" if crashed else ""))
        return
    if not _prompts.confirm(f"turn maintenance {action} for {config.describe_target()}?", yes=yes):
        raise Aborted(f"maintenance not switched {action}")
    _, warnings = api.switch_maintenance(config, action == "on", reason=reason or None, progress=out)
    for line in warnings:
        out(f"warning: {line}")


@task(help={"yes": "do not ask for the database name", "reason": "why (written to the repair log)"})
@boundary
def baseline(c: Context, yes: bool = False, reason: str = "") -> None:
    """Adopt production as it is: write its schema as the first migration, record it applied."""
    made = api.baseline(settings(c, require="production"), confirm=lambda q: _prompts.ask(q, yes=yes),
                        reason=reason or None)
    _adopt.show_baseline(made)


@task(positional=["id_"], help={**_adopt.MARK_HELP, "yes": "do not ask for the database name"})
@boundary
def mark(c: Context, id_: str, applied: bool = False, reverted: bool = False, reason: str = "",
         yes: bool = False) -> None:
    """Set a production migration's record by hand (--applied or --reverted), logged."""
    out(api.mark(settings(c, require="production"), id_, applied=_adopt.mark_flags(applied, reverted),
                 confirm=lambda q: _prompts.ask(q, yes=yes), reason=reason or None))


@task(iterable=["accept_edit"], help={
    "accept_edit": "an applied migration whose file was edited on purpose: take the file as it is (repeatable)",
    "reason": "why (written to the repair log)",
    "yes": "do not ask for the database name",
})
@boundary
def repair(c: Context, accept_edit: list[str] | None = None, reason: str = "", yes: bool = False) -> None:
    """Clear failed or interrupted production records whose effect is absent; accept edited files."""
    _adopt.show_repair(api.repair(settings(c, require="production"), accept_edit=accept_edit,
                                  confirm=lambda q: _prompts.ask(q, yes=yes), reason=reason or None))
