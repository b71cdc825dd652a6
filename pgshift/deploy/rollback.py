"""``rollback.to`` on a shared database: the plan shown and confirmed, a verified backup first (unless
``SKIP_BACKUP``), maintenance mode on for the run, Slack, the run log and a row in the deploy history
(outcome ``rolled back``), around ``pgshift.migrations.rollback_to``. Development runs it bare."""

from __future__ import annotations

import os
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgshift.backups import files
from pgshift.databases import target
from pgshift.deploy import deploys, maintenance
from pgshift.deploy.events import Event, Notify
from pgshift.deploy.redaction import Redactor
from pgshift.deploy.run import Progress, who
from pgshift.deploy.runlog import RunLog
from pgshift.errors import Aborted, MigrationError, PgShiftError, Refused
from pgshift.migrations import apply, rollback_to, source
from pgshift.migrations.lock import migration_lock
from pgshift.questions import Confirm, Question
from pgshift.settings import Settings


@dataclass
class RollbackReport:
    plan: rollback_to.RollbackPlan
    dry_run: bool
    rolled_back: list[rollback_to.RolledBack] = field(default_factory=list)
    backup: Path | None = None
    log: Path | None = None
    deploy_id: int | None = None
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"to": self.plan.to, "dry_run": self.dry_run, "plan": [s._asdict() for s in self.plan.steps],
                "problems": self.plan.problems, "rolled_back": [r._asdict() for r in self.rolled_back],
                "backup": str(self.backup) if self.backup else None, "log": str(self.log) if self.log else None,
                "deploy_id": self.deploy_id, "warnings": self.warnings}


def plan(settings: Settings, to: str) -> rollback_to.RollbackPlan:
    """What ``rollback.to`` would do, read over a read-only session."""
    migrations = source.of(settings)
    with target.connect(settings) as db:
        db.execute("SET default_transaction_read_only = on")
        return rollback_to.plan(db, migrations, to)


def run(settings: Settings, to: str, *, dry_run: bool = False, confirm: Confirm | None = None,
        notify: Notify | None = None, progress: Progress | None = None, reason: str | None = None) -> RollbackReport:
    found = plan(settings, to)
    report = RollbackReport(found, dry_run)
    if found.problems:
        raise MigrationError(f"cannot roll back to {to}: {found.problems[0]}"
                             + (f" (+{len(found.problems) - 1} more)" if len(found.problems) > 1 else "")
                             + "; nothing was rolled back")
    if dry_run or not found.steps:
        return report
    migrations = source.of(settings)
    limits = apply.Limits.of(settings)
    if not settings.is_production and settings.environment == "development":
        with target.connect(settings) as db:
            report.rolled_back = rollback_to.run(db, migrations, to, limits, progress=progress, reason=reason,
                                                 expected=found.ids)
        return report
    return _shared(settings, report, migrations, limits, confirm, notify, progress, reason)


def _shared(settings: Settings, report: RollbackReport, migrations: list[source.Migration], limits: apply.Limits,
            confirm: Confirm | None, notify: Notify | None, progress: Progress | None,
            reason: str | None) -> RollbackReport:
    found = report.plan
    redact = Redactor.for_settings(settings)
    log = RunLog(settings.logs_dir, settings.environment, redact)
    report.log = log.path
    by = who()
    said = progress or (lambda _m: None)

    def say(step: str, text: str) -> None:
        log.write(step, text)
        said(redact(text))

    def tell(kind: str, **values: Any) -> None:
        event = Event(kind=kind, environment=settings.environment, database=target.url(settings).dbname, who=by,
                      deploy_id=report.deploy_id, **values)
        log.write("notify", f"{kind}: " + " | ".join(event.lines()))
        problem = notify(event) if notify is not None else None
        if problem:
            report.warnings.append(problem)
            log.write("notify", f"warning: {problem}")

    try:
        log.write("start", f"pgshift rollback.to {found.to} on {settings.describe_target()} ({settings.environment}) "
                  f"by {by}, pid {os.getpid()}" + (f": {reason}" if reason else ""))
        for line in found.describe():
            log.write("plan", line)
        name = target.url(settings).dbname
        if confirm is None:
            if settings.is_production:
                raise Refused("rolling back production needs a confirmation: run it at a terminal, or pass --yes")
        elif not confirm(Question(f"rolling back {len(found.steps)} migration(s) on {settings.environment.upper()}: "
                                  f"type the database name ({name}) to go ahead", expected=name, about=found)):
            log.write("confirm", "declined; nothing was done")
            raise Aborted("rollback cancelled; nothing was done")
        started = time.monotonic()
        detail = f"rollback.to {found.to}: rolls back {', '.join(found.ids)}"
        with target.connect(settings) as db, migration_lock(db, settings.lock_wait):
            deploys.ensure(db)
            maintenance.ensure(db)
            if not settings.skip_backup:
                say("backup", "backing up the target (pg_dump, verified)")
                taken = files.take(settings, reason="pre-rollback", session=db)
                report.backup = taken.path
                say("backup", f"backup: {taken.path} ({taken.size} bytes, verified)")
            else:
                say("backup", "skipped: SKIP_BACKUP is set")
            report.deploy_id = deploys.start(db, environment=settings.environment, who=by.split("@")[0],
                                             host=by.split("@")[-1], pid=os.getpid(), migrations=found.ids,
                                             rehearsed=False, log=str(log.path))
            tell("start", migrations=found.ids, detail=detail,
                 backup=report.backup.name if report.backup else None)
            turned_on = False
            try:
                if not settings.skip_maintenance and not maintenance.state(db).enabled:
                    maintenance.switch(db, True, set_by=by, reason=f"rollback.to {found.to}",
                                       deploy_id=report.deploy_id)
                    turned_on = True
                    say("maintenance", "maintenance on")
                report.rolled_back = rollback_to.run(db, migrations, found.to, limits,
                                                     progress=lambda m: say("rollback", m), reason=reason,
                                                     expected=found.ids)
            except BaseException as error:
                if not db.conn.closed and db.in_transaction:
                    with suppress(PgShiftError):
                        db.execute("ROLLBACK")
                if turned_on:
                    with suppress(PgShiftError):
                        maintenance.switch(db, False, set_by=by)
                with suppress(PgShiftError):
                    deploys.finish(db, report.deploy_id, "failed", migrations=found.ids, durations={},
                                   error=str(error))
                tell("failure", migrations=found.ids, detail=f"{detail}; {error}")
                raise
            if turned_on:
                maintenance.switch(db, False, set_by=by)
                say("maintenance", "maintenance off")
            durations = {r.id: r.duration_ms for r in report.rolled_back}
            deploys.finish(db, report.deploy_id, "rolled back", migrations=[r.id for r in report.rolled_back],
                           durations=durations)
        tell("success", migrations=found.ids, durations=durations, detail=detail,
             total_s=time.monotonic() - started)
        say("outcome", f"rolled back {len(report.rolled_back)} migration(s) to {found.to}")
        return report
    except BaseException as error:
        log.write("outcome", f"{type(error).__name__}: {error}")
        raise
    finally:
        log.close()
