"""prod: production work. Every task here needs ENVIRONMENT=production and a DATABASE_URL."""

from invoke import Context, task

from tasks import _status
from tasks._cli import boundary, settings


@task(help={"json": "print one JSON object instead of a table"})
@boundary
def status(c: Context, json: bool = False) -> None:
    """Show production's migration status (exit 0 ok, 3 pending, 1 wrong)."""
    _status.show(settings(c, require="production"), json)
