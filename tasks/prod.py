"""prod: production work. Every task here needs ENVIRONMENT=production and a DATABASE_URL."""

from invoke import Context, task

from tasks import _backup, _status
from tasks._cli import boundary, emit_json, out, settings


@task(help={"json": "print one JSON object instead of a table"})
@boundary
def status(c: Context, json: bool = False) -> None:
    """Show production's migration status (exit 0 ok, 3 pending, 1 wrong)."""
    _status.show(settings(c, require="production"), json)


@task
@boundary
def backup(c: Context) -> None:
    """Back up the production database into backups/."""
    _backup.take(settings(c, require="production"))


@task(help={"dry_run": "only list what would be removed", "json": "print one JSON object instead of text"})
@boundary
def cleanup(c: Context, dry_run: bool = False, json: bool = False) -> None:
    """Remove old backups under the retention policy."""
    from pgshift import retention

    config = settings(c, require="production")
    plan = retention.cleanup(config, dry_run=dry_run)
    if json:
        emit_json(plan.as_json())
        return
    verb = "would remove" if dry_run else "removed"
    for removal in plan.remove:
        out(f"{verb} {removal.backup.path.name} ({_backup.size(removal.backup.size)}): {removal.reason}")
    for path in plan.leftovers:
        out(f"{verb} {path.name}: left by an interrupted backup")
    out(f"{verb} {len(plan.remove)} backup(s), {_backup.size(plan.freed)}; kept {len(plan.keep)} "
        f"(newest {config.backup_keep_count} per environment, the last {config.backup_keep_days:g} days, "
        "the newest verified)")
