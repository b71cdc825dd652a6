"""rollback: list the backups and restore one over the current ENVIRONMENT's database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from invoke.context import Context
from invoke.tasks import task

from pgshift import api
from pgshift.errors import Aborted
from tasks import _backup, _prompts
from tasks._cli import boundary, emit_json, out, settings, table

if TYPE_CHECKING:
    from pgshift.api import RestorePlan
    from pgshift.questions import Confirm, Question


def _confirmation(yes: bool, always: bool) -> Confirm | None:
    """Production: the database name typed (or --yes). Elsewhere a yes/no, only when ``always``."""

    def ask(question: Question[RestorePlan]) -> bool:
        if question.about is not None:
            out(question.about.describe())
        return _prompts.ask(question, yes=yes)

    return ask if always or yes else None


def _restore(c: Context, path: str, confirm_always: bool, yes: bool, force: bool = False) -> None:
    config = settings(c)
    confirm = _confirmation(yes, confirm_always or config.is_production)
    meter = _backup.Meter()

    def restored(result: api.RestoreResult) -> None:  # reported before the replaced copy is dropped
        meter.close()
        _backup.show_restore(result, config)

    try:
        api.restore(config, path, confirm=confirm, progress=meter, force=force, on_restored=restored)
    finally:
        meter.close()


@task(name="list", help={"json": "print a JSON array instead of a table"})
@boundary
def list_(c: Context, json: bool = False) -> None:
    """List the backups, newest first."""
    config = settings(c)
    found = api.backups(config)
    if json:
        emit_json([b.as_json() for b in found])
    elif not found:
        out(f"no backups in {config.backups_dir}; make one with inv backup")
    else:
        out(table(_backup.COLUMNS, [_backup.row(b, config) for b in found]))


@task(help={"yes": "pick the newest verified backup and restore it without asking"})
@boundary
def interactive(c: Context, yes: bool = False) -> None:
    """Pick a backup from a list and restore it."""
    config = settings(c)
    found = api.backups(config)
    if not found:
        out(f"no backups in {config.backups_dir}; make one with inv backup")
        return
    header, _, *lines = table(_backup.COLUMNS, [_backup.row(b, config) for b in found]).splitlines()
    choices = [(line, b.path) for line, b in zip(lines, found, strict=True)]
    default = next((b.path for b in found if b.verified), None)
    if yes and default is None:
        raise Aborted("--yes restores the newest verified backup and there is none; name one with "
                      "inv rollback.restore FILE")
    picked = _prompts.select("backup to restore (newest first)", choices, default, yes=yes,
                             header="  " + header)
    if picked is None:
        raise Aborted("no backup picked; nothing was changed")
    _restore(c, str(picked), confirm_always=True, yes=yes)


@task(positional=["file"], help={
    "file": "the backup: a file name in backups/ or a path into it (inv rollback.list shows them)",
    "yes": "do not ask for confirmation (production otherwise asks for the database name)",
    "force": "restore an archive with no manifest that was dumped from another database",
})
@boundary
def restore(c: Context, file: str, yes: bool = False, force: bool = False) -> None:
    """Restore a backup over the current ENVIRONMENT's database."""
    _restore(c, file, confirm_always=False, yes=yes, force=force)


@task(positional=["id_"], help={
    "id_": "the migration to roll back to: every applied migration after it is rolled back, newest first",
    "dry_run": "print the plan and exit; nothing is changed",
    "yes": "do not ask for the database name (production asks otherwise)",
    "reason": "why (written to the repair log and the run log)",
    "json": "print one JSON object instead of text",
})
@boundary
def to(c: Context, id_: str, dry_run: bool = False, yes: bool = False, reason: str = "", json: bool = False) -> None:
    """Roll back every migration applied after ID, newest first (rollback files, under the lock)."""
    config = settings(c)

    def ask(question: Question[Any]) -> bool:
        if question.about is not None and not json:
            for line in question.about.describe():
                out(line)
        return _prompts.ask(question, yes=yes)

    confirm = ask if (yes or config.environment != "development") else None
    report = api.rollback_to(config, id_, dry_run=dry_run, confirm=confirm, progress=None if json else out,
                             reason=reason or None)
    if json:
        emit_json(report.as_json())
        return
    if dry_run:
        for line in report.plan.describe():
            out(line)
        out("dry run: nothing was changed")
        return
    if not report.plan.steps:
        out(f"nothing to roll back: {id_} is the newest applied migration")
        return
    out(f"rolled back {len(report.rolled_back)} migration(s); {id_} is now the newest applied"
        + (f"; backup {report.backup.name}" if report.backup else ""))
    for warning in report.warnings:
        out(f"warning: {warning}")
