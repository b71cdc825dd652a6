"""dev: everyday work on the development database (the embedded server unless DATABASE_URL is set)."""

from invoke import Context, task
from invoke.exceptions import Exit

from tasks import _backup, _status
from tasks._cli import boundary, out, settings
from tasks._optional import OptionalPositionals


@task(
    klass=OptionalPositionals,
    positional=["name"],
    optional_positional=("name",),
    help={
        "name": "create migrations/<timestamp>_NAME.sql (+ .rollback.sql) first; lowercase, digits, _",
        "create_only": "write the new migration files but apply nothing",
        "to": "apply pending migrations up to and including this id only",
    },
)
@boundary
def migrate(c: Context, name: str | None = None, create_only: bool = False, to: str = "") -> None:
    """Create a migration (when NAME is given) and apply every pending migration."""
    from pgshift import core

    if name in ("-h", "--help"):
        raise Exit("usage: inv dev.migrate [NAME] [--create-only] [--to ID]; details: inv --help dev.migrate", code=2)
    result = core.migrate(settings(c, require="development"), name or None, create_only=create_only,
                          upto=to or None, progress=out)
    if result.created is not None:
        out(f"created {result.created.path.relative_to(result.created.path.parent.parent)} "
            f"and {result.created.id}.rollback.sql")
    for ident in result.result.empty:
        out(f"skipped {ident}: no statements yet (write it, then run inv dev.migrate)")
    if not create_only:
        applied = result.result.applied
        out(f"applied {len(applied)} migration(s)" if applied else "nothing to apply: up to date")


@task(help={"json": "print one JSON object instead of a table",
            "drift": "also compare the live schema with what the applied migrations make (replayed "
                     "into a shadow database; about a second)"})
@boundary
def status(c: Context, json: bool = False, drift: bool = False) -> None:
    """Show the development database's migration status (exit 0 ok, 3 pending, 1 wrong)."""
    _status.show(settings(c, require="development"), json, drift)


@task
@boundary
def stop(c: Context) -> None:
    """Stop the embedded development PostgreSQL server (it keeps running between commands)."""
    from pgshift import embedded

    folder = settings(c, require="development").embedded_dir
    stopped = embedded.stop(folder)
    out("stopped the embedded PostgreSQL" if stopped else "the embedded PostgreSQL was not running")


@task
@boundary
def backup(c: Context) -> None:
    """Back up the development database into backups/."""
    _backup.take(settings(c, require="development"))
