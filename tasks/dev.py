"""dev: everyday work on the development database (the embedded server unless DATABASE_URL is set)."""

from invoke.context import Context
from invoke.tasks import task

from pgshift import api
from tasks import _adopt, _backup, _status
from tasks._adopt import REASON_HELP
from tasks._cli import boundary, out, progress_out, settings, tty
from tasks._progress import BackfillBar


@task(
    positional=["name"],
    optional=["name"],
    help={
        "name": "new migration migrations/<timestamp>_NAME.sql (+ .rollback.sql): generated from schema.sql "
                "when it exists, else the template; lowercase, digits, _",
        "create_only": "write the new migration but do not apply it (pending ones are applied first when it "
                       "is generated, since it is the difference from the migrated database)",
        "to": "apply pending migrations up to and including this id only",
        "empty": "with schema.sql present, write the template for a hand-written migration instead",
        "allow_data_loss": "allow a generated migration that drops tables or columns or narrows types "
                           "(else asked, or refused without a terminal)",
        "allow_out_of_order": "apply a pending migration that sorts before the newest applied one (recorded in "
                              "the repair log); else refused, see inv dev.rebase",
        "expand_contract": "write NAME as a zero-downtime rename (expand, backfill, contract) for the column "
                           "(or table) schema.sql marks '-- renamed from OLD', or a new NOT NULL column it marks "
                           "'-- computed from EXPR'",
    },
)
@boundary
def migrate(c: Context, name: str | None = None, create_only: bool = False, to: str = "", empty: bool = False,
            allow_data_loss: bool = False, allow_out_of_order: bool = False, expand_contract: bool = False) -> None:
    """Create a migration (given NAME), then apply all pending ones."""
    from tasks import _prompts

    confirm = _prompts.ask if tty() else None
    bar = BackfillBar()
    try:
        result = api.migrate(settings(c, require="development"), name or None, create_only=create_only,
                             upto=to or None, progress=bar.lines(progress_out()), empty=empty,
                             allow_data_loss=allow_data_loss, confirm=confirm, allow_out_of_order=allow_out_of_order,
                             expand_contract=expand_contract, watch=bar)
    finally:
        bar.clear()
    generated = result.generated
    if generated is not None and generated.in_sync:
        out("the database matches schema.sql: no migration written")
    elif result.created is not None:
        how = f"from schema.sql ({len(generated.forward.changes)} statement(s), " \
              f"{len(generated.forward.data_loss)} marked DATA LOSS)" if generated is not None else "from the template"
        out(f"created {result.created.path.relative_to(result.created.path.parent.parent)} "
            f"and {result.created.id}.rollback.sql {how}")
        if generated is not None and generated.shadow != "the target's server":
            out(f"note: schema.sql was loaded on {generated.shadow}")
    for warning in generated.not_compared if generated is not None else ():
        out(f"warning: {warning}")
    for ident in result.result.empty:
        out(f"skipped {ident}: no statements yet (write it, then run inv dev.migrate)")
    if not create_only:
        applied = result.result.applied
        out(f"applied {len(applied)} migration(s)" if applied else "nothing to apply: up to date")
    if result.remaining:
        out(f"warning: the database still differs from schema.sql by {len(result.remaining)} statement(s), "
            f"first: {result.remaining[0].splitlines()[0]}; edit the new migration (and its rollback) to cover it")
    if result.models is not None:
        out(f"refreshed {result.models.name} (SQLAlchemy models)")
    for finding in result.findings:
        out(f"warning: {finding}")
    if result.findings:
        out("the new migration is applied here: add what it lacks to schema.sql and run inv dev.migrate with a "
            "new NAME, or accept the finding (see inv test.constraints), before it is deployed")


@task(help={"json": "print one JSON object instead of a table", "drift": _status.DRIFT_HELP})
@boundary
def status(c: Context, json: bool = False, drift: bool = True) -> None:
    """Migration status of the development database.

    Exit codes: 0 up to date, 3 pending migrations only, 1 anything wrong (drift too), 2 usage error.
    """
    _status.show(settings(c, require="development"), json, drift)


@task
@boundary
def stop(c: Context) -> None:
    """Stop the embedded development server.

    It starts on first use and keeps running between commands, so each command pays no start-up.
    """
    stopped = api.stop_server(settings(c, require="development"))
    out("stopped the embedded PostgreSQL" if stopped else "the embedded PostgreSQL was not running")


@task
@boundary
def backup(c: Context) -> None:
    """Back up the development database into backups/."""
    _backup.take(settings(c, require="development"))


@task(help={"yes": "do not ask for confirmation (needed without a terminal)"})
@boundary
def reset(c: Context, yes: bool = False) -> None:
    """Rebuild the development database and seed it."""
    from tasks import _prompts

    loaded = settings(c, require="development")
    api.reset_allowed(loaded)  # refuse before asking anything
    result = api.reset(loaded, confirm=lambda question: _prompts.ask(question, yes=yes))
    out(f"rebuilt {result.database}: applied {len(result.applied.applied)} migration(s)"
        + (f", seeded from {result.seed.name}" if result.seed else ", no seed file (migrations/seed.sql)"))


@task(help={"output": "where to write the models module (default: models.py beside schema.sql)"})
@boundary
def generate(c: Context, output: str = "") -> None:
    """Write typed SQLAlchemy models of the schema."""
    from pathlib import Path

    result = api.generate_models(settings(c, require="development"), Path(output).resolve() if output else None)
    out(f"wrote {result.path}: {result.models} model(s) in {result.seconds * 1000:.0f} ms; "
        f"it imports cleanly ({result.check_seconds * 1000:.0f} ms to import and configure)")


# -- adopting and repairing ---------------------------------------------------------------------------


@task(name="import", positional=["folder"], help={
    "folder": "the other tool's migrations folder (prisma/migrations for Prisma)",
    "from_": "the tool: prisma or yoyo",
    "reason": REASON_HELP,
    "json": "print one JSON object instead of text",
})
@boundary
def import_(c: Context, folder: str, from_: str = "prisma", reason: str = "", json: bool = False) -> None:
    """Convert another tool's migrations and adopt its records (--from prisma|yoyo)."""
    from pathlib import Path

    from tasks._cli import emit_json

    found = api.import_migrations(settings(c, require="development"), from_, Path(folder).resolve(),
                                  reason=reason or None)
    if json:
        emit_json(found.as_json())
        return
    out(f"wrote {len(found.written)} migration(s) from {from_}" +
        (f", kept {len(found.kept)} already there" if found.kept else "") +
        f"; generated {len(found.rollbacks)} rollback file(s); recorded {len(found.adopted)} as applied")
    for label, lines in (("no rollback", found.no_rollback), ("not applied", found.not_applied),
                         ("failed", found.failed), ("not converted", found.not_converted),
                         ("warning", found.warnings)):
        for line in lines:
            out(f"{label}: {line}")


@task(help={"reason": REASON_HELP})
@boundary
def baseline(c: Context, reason: str = "") -> None:
    """Adopt the database as it is: write its schema as the first migration, record it applied."""
    _adopt.show_baseline(api.baseline(settings(c, require="development"), reason=reason or None))


@task(positional=["id_"], help={"id_": "the migration to move after every other one", "reason": REASON_HELP})
@boundary
def rebase(c: Context, id_: str, reason: str = "") -> None:
    """Give a migration merged out of order the next timestamp (files and dev record)."""
    new = api.rebase(settings(c, require="development"), id_, reason=reason or None)
    out(f"renamed {id_} to {new} (its .sql and .rollback.sql; the development record too if it had one)")


@task(positional=["id_"], help=_adopt.MARK_HELP)
@boundary
def mark(c: Context, id_: str, applied: bool = False, reverted: bool = False, reason: str = "") -> None:
    """Set a migration's record by hand (--applied or --reverted), logged."""
    out(api.mark(settings(c, require="development"), id_, applied=_adopt.mark_flags(applied, reverted),
                 reason=reason or None))


@task(iterable=["accept_edit"], help={
    "accept_edit": "an applied migration whose file was edited on purpose: take the file as it is (repeatable)",
    "reason": REASON_HELP,
})
@boundary
def repair(c: Context, accept_edit: list[str] | None = None, reason: str = "") -> None:
    """Clear failed or interrupted records whose effect is absent; accept edited files."""
    _adopt.show_repair(api.repair(settings(c, require="development"), accept_edit=accept_edit,
                                  reason=reason or None))


@task(help={
    "upto": "the newest migration to fold in: it and every one before it become one migration",
    "force": "squash even though the migrations change data (INSERT, UPDATE, ...) or make what the differ "
             "does not carry: those are left out and named in the squash's header",
    "reason": REASON_HELP,
})
@boundary
def squash(c: Context, upto: str = "", force: bool = False, reason: str = "") -> None:
    """Replace the migrations up to --upto ID with one equivalent migration."""
    from pgshift.errors import ConfigError

    if not upto:
        raise ConfigError("give the newest migration to fold in: inv dev.squash --upto ID (see inv dev.status)")
    done = api.squash(settings(c, require="development"), upto, force=force, reason=reason or None)
    out(f"wrote {done.migration.path.name} and its rollback in place of {len(done.replaced)} migration(s) "
        f"({done.replaced[0]} .. {done.replaced[-1]}, files deleted; version control keeps them): "
        f"{done.statements} statement(s), the same {done.objects} catalog object(s), rollback to empty proved")
    out("the development database now records it in their place" if done.settled else
        "the development database had not applied every one of them: its record was left as it was")
    for line in done.left_out:
        out(f"left out: {line}")
    for line in done.not_compared:
        out(f"not carried: {line}")
