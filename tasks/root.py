"""Root-level tasks: status and backup for the current ENVIRONMENT."""

from invoke.context import Context
from invoke.tasks import task

from tasks import _backup, _status
from tasks._cli import boundary, settings


@task(help={"json": "print one JSON object instead of a table", "drift": _status.DRIFT_HELP})
@boundary
def status(c: Context, json: bool = False, drift: bool = True) -> None:
    """Migration status of the current ENVIRONMENT's database.

    Exit codes: 0 up to date, 3 pending migrations only, 1 anything wrong (drift too), 2 usage error.
    """
    _status.show(settings(c), json, drift)


@task
@boundary
def backup(c: Context) -> None:
    """Back up the current ENVIRONMENT's database into backups/."""
    _backup.take(settings(c))
