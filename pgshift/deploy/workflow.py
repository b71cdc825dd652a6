"""The deploy workflow: preflight, (rehearsal), lock, backup, maintenance on, apply, verify,
maintenance off, notify, log.

* Nothing before the lock writes to the target; the plan is re-checked under the lock, so a deploy
  executes exactly what was confirmed (and rehearsed).
* The migration lock is held from the first write to the last, so a ``running`` history row or a
  maintenance flag set by a deploy while nobody holds the lock means that deploy died. The next run
  reports it, marks it interrupted, and turns the flag off.
* A failing migration is undone by its own transaction; earlier ones of the run stay unless
  ``on_failure="rollback"``. Maintenance is switched off in every case; the error names the backup and
  the exact restore command.
* Slack (the ``notify`` callback), prompts (``confirm``) and printing (``progress``) come from the
  caller; a failed notification is a warning in the log and the report, never a failed deploy.
"""

from __future__ import annotations

import getpass
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgshift import apply, backups, history, source, target
from pgshift.checks import suite
from pgshift.core import limits
from pgshift.db import Database
from pgshift.deploy import history as deploys
from pgshift.deploy import maintenance, rehearsal
from pgshift.deploy.events import Event, Notify
from pgshift.deploy.plan import Plan, build
from pgshift.deploy.redaction import Redactor
from pgshift.deploy.runlog import RunLog
from pgshift.errors import Aborted, ExitCode, MigrationError, PgShiftError, Refused
from pgshift.lock import migration_lock
from pgshift.settings import Settings
from pgshift.status import states

Progress = Callable[[str], None]
Confirm = Callable[[Plan], bool]


class PreflightFailed(PgShiftError):
    """The plan says a deploy would not proceed; nothing was done."""


class RehearsalFailed(MigrationError):
    """The migrations failed on the clone; the target was not touched."""


class DeployFailed(MigrationError):
    """A migration failed (or a step after the first write did); the message says what is left."""


@dataclass
class DeployReport:
    plan: Plan
    log: Path
    outcome: str = "up to date"  # up to date | succeeded | failed | rolled back
    deploy_id: int | None = None
    applied: list[apply.Applied] = field(default_factory=list)
    rolled_back: list[str] = field(default_factory=list)
    backup: Path | None = None
    rehearsal: rehearsal.Rehearsal | None = None
    recovered: list[str] = field(default_factory=list)  # what an earlier, dead deploy left and we fixed
    warnings: list[str] = field(default_factory=list)
    maintenance: str = "not used"
    error: str | None = None
    total_s: float = 0.0

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.outcome in ("up to date", "succeeded") else ExitCode.FAILED

    def as_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "exit_code": int(self.exit_code), "deploy_id": self.deploy_id,
                "environment": self.plan.environment, "target": self.plan.target,
                "applied": [{"id": a.id, "duration_ms": a.duration_ms, "transactional": a.transactional,
                             "attempts": a.attempts} for a in self.applied],
                "rolled_back": self.rolled_back, "backup": str(self.backup) if self.backup else None,
                "rehearsal": self.rehearsal.as_json() if self.rehearsal else None, "recovered": self.recovered,
                "warnings": self.warnings, "maintenance": self.maintenance, "log": str(self.log),
                "error": self.error, "total_s": round(self.total_s, 3)}


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _failpoint(name: str) -> None:
    """Crash-test hook (as in ``pgshift.apply``): PGSHIFT_FAILPOINT=<name> dies by SIGKILL here.

    Deploy boundaries: ``deploy:locked``, ``deploy:started``, ``deploy:backed-up``,
    ``deploy:maintenance-on``, ``deploy:applied``, ``deploy:verified``, ``deploy:maintenance-off``."""
    if os.environ.get("PGSHIFT_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _drift_warnings(settings: Settings, db: Database, migrations: list[source.Migration]) -> list[str]:
    """Drift (``pgshift.schema.drift``): a warning per difference, never blocking."""
    if not history.exists(db):
        return []
    from pgshift.schema import drift

    try:
        found = drift.check(settings, db, migrations, limits(settings))
    except PgShiftError as error:
        return [f"drift not checked: {error}"]
    lines = [f"drift: {item.describe()}" for item in found.items[:5]]
    if len(found.items) > 5:
        lines.append(f"drift: {len(found.items) - 5} more difference(s); see inv status --drift")
    return lines


def plan(settings: Settings, *, rehearse: bool, on_failure: str = "stop") -> Plan:
    """The plan, built over a read-only session: the server itself refuses any write."""
    migrations = source.read(settings.migrations_dir)
    warnings: list[str] = []
    if settings.preflight_drift:
        with target.connect(settings) as db:  # drift makes its shadow database through this session
            warnings = _drift_warnings(settings, db, migrations)
    with target.connect(settings) as db:
        db.execute("SET default_transaction_read_only = on")
        return build(settings, db, migrations, rehearse=rehearse, on_failure=on_failure,
                     extra_warnings=warnings)


class _Run:
    """One deploy in progress: its log, its messages, its report."""

    def __init__(self, settings: Settings, plan_: Plan, log: RunLog, notify: Notify | None,
                 progress: Progress | None) -> None:
        self.settings, self.log, self._notify = settings, log, notify
        self._say = progress or (lambda _m: None)
        self._redact = Redactor.for_settings(settings)
        self.who = who()
        self.report = DeployReport(plan=plan_, log=log.path)
        self.started = time.monotonic()

    def say(self, step: str, text: str) -> None:
        self.log.write(step, text)
        self._say(self._redact(text))

    def warn(self, step: str, text: str) -> None:
        self.report.warnings.append(self._redact(text))
        self.say(step, f"warning: {text}")

    def event(self, kind: str, **values: Any) -> None:
        event = Event(kind=kind, environment=self.settings.environment, database=self.report.plan.database,
                      who=self.who, deploy_id=self.report.deploy_id, **values)
        self.log.write("notify", f"{kind}: " + " | ".join(event.lines()))
        if self._notify is None:
            return
        problem = self._notify(event)
        if problem:
            self.warn("notify", problem)


def deploy(settings: Settings, *, rehearse: bool, on_failure: str = "stop", confirm: Confirm | None = None,
           notify: Notify | None = None, progress: Progress | None = None) -> DeployReport:
    """Deploy every pending migration to the target. Raises on failure (after cleaning up)."""
    redactor = Redactor.for_settings(settings)
    log = RunLog(settings.logs_dir, settings.environment, redactor)
    try:
        log.write("start", f"pgshift deploy to {settings.describe_target()} ({settings.environment}) by {who()}, "
                  f"pid {os.getpid()}; rehearse={rehearse}, on_failure={on_failure}, "
                  f"lock_timeout={settings.lock_timeout:g}s, statement_timeout={settings.statement_timeout:g}s, "
                  f"lock_wait={settings.lock_wait:g}s, lock_retries={settings.lock_retries}")
        try:
            planned = plan(settings, rehearse=rehearse, on_failure=on_failure)
        except PgShiftError as error:
            log.write("preflight", f"failed: {error}")
            raise
        run = _Run(settings, planned, log, notify, progress)
        _log_plan(run, planned)
        if not planned.proceed:
            more = f" (+{len(planned.problems) - 1} more)" if len(planned.problems) > 1 else ""
            log.write("outcome", "refused by preflight; nothing was done")
            raise PreflightFailed(f"preflight: {planned.problems[0]}{more}; nothing was done. Log: {log.path}")
        if planned.pending:
            _confirm(run, planned, confirm)
            if rehearse:
                run.report.rehearsal = _rehearse(run, planned)
        _execute(run, planned, rehearse)
        run.report.total_s = time.monotonic() - run.started
        run.say("outcome", f"{run.report.outcome} in {run.report.total_s:.1f} s")
        return run.report
    except BaseException as error:
        log.write("outcome", f"{type(error).__name__}: {error}")
        raise
    finally:
        log.close()


def _log_plan(run: _Run, planned: Plan) -> None:
    run.say("preflight", f"{planned.applied} applied, {len(planned.pending)} pending on {planned.target}")
    for m in planned.pending:
        run.log.write("plan", f"{m.id}: {m.mode}" + (", no rollback file" if m.rollback_file is None else ""))
    for s in planned.steps:
        run.log.write("plan", f"{'run ' if s.runs else 'skip'} {s.name}: {s.note}")
    for w in planned.warnings:
        run.say("preflight", f"warning: {w}")
    for p in planned.problems:
        run.say("preflight", f"problem: {p}")


def _confirm(run: _Run, planned: Plan, confirm: Confirm | None) -> None:
    if confirm is None:
        if run.settings.is_production:
            raise Refused("deploying to production needs a confirmation: run it at a terminal, or pass --yes")
        return
    if not confirm(planned):
        run.log.write("confirm", "declined; nothing was done")
        raise Aborted("deploy cancelled; nothing was done")
    run.log.write("confirm", "confirmed")


def _rehearse(run: _Run, planned: Plan) -> rehearsal.Rehearsal:
    run.say("rehearse", f"rehearsing {len(planned.pending)} migration(s) on a clone of {planned.database}")
    settings = run.settings
    found = rehearsal.run(target.url(settings), source.read(settings.migrations_dir), planned.ids, limits(settings),
                          suite.thresholds(settings), sequence_limit=settings.sequence_limit,
                          connect_timeout=settings.connect_timeout, progress=lambda m: run.say("rehearse", m))
    for t in found.timings:
        run.log.write("rehearse", f"{t.id}: apply {t.apply_ms} ms, rollback {t.rollback_ms} ms, "
                      f"re-apply {t.reapply_ms} ms; locks: {'; '.join(t.locks) or 'none on existing tables'}; "
                      f"rewrote: {', '.join(t.rewrote) or 'nothing'}")
    for line in found.checks:
        run.say("rehearse", line)
    run.say("rehearse", found.summary())
    if not found.ok:
        raise RehearsalFailed(f"{found.summary()}; the target was not touched. Log: {run.log.path}")
    return found


def _execute(run: _Run, planned: Plan, rehearsed: bool) -> None:
    settings, report = run.settings, run.report
    migrations = source.read(settings.migrations_dir)
    with target.connect(settings) as db, migration_lock(db, settings.lock_wait):
        _failpoint("deploy:locked")
        run.log.write("lock", f"migration lock taken (session pid {db.pid})")
        history.ensure(db)
        deploys.ensure(db)
        maintenance.ensure(db)
        flag = _recover(run, db)
        now = [p.migration.id for p in apply.verify(migrations, history.records(db)) if not p.migration.empty]
        if now != planned.ids:
            raise Refused(f"the target changed since the plan (pending now: {', '.join(now) or 'none'}; planned: "
                          f"{', '.join(planned.ids) or 'none'}); another deploy ran? Run the deploy again")
        if not planned.ids:
            if flag.left_on_by_crash(deploy_running=False):
                _maintenance_off(run, db)
            run.say("apply", "nothing to deploy: up to date")
            return
        report.deploy_id = deploys.start(db, environment=settings.environment, who=run.who.split("@")[0],
                                         host=run.who.split("@")[-1], pid=os.getpid(), migrations=planned.ids,
                                         rehearsed=rehearsed, log=str(run.log.path))
        _failpoint("deploy:started")
        run.say("start", f"deploy #{report.deploy_id}: {len(planned.ids)} migration(s): {', '.join(planned.ids)}")
        run.event("start", migrations=planned.ids)
        dead_flag = flag.left_on_by_crash(deploy_running=False)
        turned_on = False
        try:
            if not settings.skip_backup:
                _backup(run, db)
            else:
                run.say("backup", "skipped: SKIP_BACKUP is set")
            if flag.enabled and flag.deploy_id is None:
                run.say("maintenance", "maintenance is on already (by hand): left as it is")
            elif not settings.skip_maintenance:
                turned_on = True
                _maintenance_on(run, db)
            else:
                run.say("maintenance", "skipped: SKIP_MAINTENANCE is set")
            _apply(run, db, migrations)
        except BaseException as error:
            _cleanup_maintenance(run, db, turned_on or dead_flag)
            _fail(run, db, migrations, error)
            raise
        _cleanup_maintenance(run, db, turned_on or dead_flag)
        _failpoint("deploy:maintenance-off")
        durations = {a.id: a.duration_ms for a in report.applied}
        deploys.finish(db, report.deploy_id, "succeeded", migrations=[a.id for a in report.applied],
                       durations=durations)
        report.outcome = "succeeded"
        run.event("success", migrations=[a.id for a in report.applied], durations=durations,
                  backup=report.backup.name if report.backup else None,
                  total_s=time.monotonic() - run.started)


def _recover(run: _Run, db: Database) -> maintenance.Maintenance:
    """Under the lock: report (and mark) what deploys that died left behind; return the flag."""
    dead = deploys.unfinished(db)
    if dead:
        deploys.mark_interrupted(db, dead)
        for d in dead:
            note = f"{d.describe().replace(' running', ' interrupted', 1)}; its process died, marked interrupted"
            run.report.recovered.append(note)
            run.say("recover", note)
    flag = maintenance.state(db)
    if flag.left_on_by_crash(deploy_running=False):
        note = f"{flag.describe()}, left on by a deploy that died; this deploy turns it off"
        run.report.recovered.append(note)
        run.say("recover", note)
    elif flag.enabled:
        run.warn("recover", f"{flag.describe()}; it was turned on by hand, so it stays on after this deploy")
    return flag


def _backup(run: _Run, db: Database) -> None:
    assert run.report.deploy_id is not None
    run.say("backup", "backing up the target (pg_dump, verified)")
    taken = backups.take(run.settings, reason=f"pre-deploy #{run.report.deploy_id}")
    run.report.backup = taken.path
    deploys.step(db, run.report.deploy_id, "backed up", backup=taken.path.name)
    run.say("backup", f"backup: {taken.path} ({taken.size} bytes, verified)")
    _failpoint("deploy:backed-up")


def _maintenance_on(run: _Run, db: Database) -> None:
    assert run.report.deploy_id is not None
    maintenance.switch(db, True, set_by=run.who, reason=f"deploy #{run.report.deploy_id}",
                       deploy_id=run.report.deploy_id)
    deploys.step(db, run.report.deploy_id, "maintenance on")
    run.report.maintenance = "on"
    run.say("maintenance", f"maintenance on ({maintenance.QUERY} is true)")
    run.event("maintenance on", detail=f"for deploy #{run.report.deploy_id}")
    _failpoint("deploy:maintenance-on")
    said = maintenance.run_hook(run.settings.maintenance_on_hook, True, run.settings.environment,
                                run.settings.hook_timeout)
    if said is not None:
        run.say("maintenance", f"on-hook done: {said or 'no output'}")


def _maintenance_off(run: _Run, db: Database) -> None:
    maintenance.switch(db, False, set_by=run.who)
    run.report.maintenance = "off"
    run.say("maintenance", "maintenance off")
    try:
        said = maintenance.run_hook(run.settings.maintenance_off_hook, False, run.settings.environment,
                                    run.settings.hook_timeout)
    except PgShiftError as error:
        run.warn("maintenance", f"the flag is off, but {error}")
    else:
        if said is not None:
            run.say("maintenance", f"off-hook done: {said or 'no output'}")
    run.event("maintenance off", detail=f"after deploy #{run.report.deploy_id}")


def _cleanup_maintenance(run: _Run, db: Database, needed: bool) -> None:
    """Maintenance off, whatever happened; a failure here is loud but does not hide the first error."""
    if not needed:
        return
    try:
        _maintenance_off(run, db)
    except PgShiftError as error:
        run.report.maintenance = "LEFT ON"
        run.warn("maintenance", f"could not turn maintenance off: {error}; run inv prod.maintenance off")


def _apply(run: _Run, db: Database, migrations: list[source.Migration]) -> None:
    assert run.report.deploy_id is not None
    deploy_id = run.report.deploy_id
    files = {m.id: m for m in migrations}

    def progress(message: str) -> None:
        run.say("apply", message)
        verb, _, ident = message.partition(" ")
        if verb == "applying" and ident in files:
            run.log.sql(files[ident].path.name, files[ident].sql)

    deploys.step(db, deploy_id, "applying")
    result = apply.apply(db, migrations, limits(run.settings), progress=progress)
    run.report.applied = result.applied
    deploys.step(db, deploy_id, "applied", durations={a.id: a.duration_ms for a in result.applied})
    _failpoint("deploy:applied")
    found = states(migrations, history.records(db))
    wrong = [s for s in found if s.id in set(run.report.plan.ids) and s.state != "applied"]
    if wrong:
        raise DeployFailed(f"verify: {wrong[0].id} is {wrong[0].state} after the apply")
    deploys.step(db, deploy_id, "verified")
    run.say("verify", "verified: every planned migration is applied, none failed or modified")
    _failpoint("deploy:verified")


def _fail(run: _Run, db: Database, migrations: list[source.Migration], error: BaseException) -> None:
    """After a failure: optional rollback, the history row, the message naming the backup, Slack."""
    report = run.report
    assert report.deploy_id is not None
    before = list(getattr(error, "applied_before", ()))
    if not report.applied and before:
        report.applied = [apply.Applied(i, 0, True) for i in before]
    reason = str(error) if isinstance(error, PgShiftError) else ("interrupted (Ctrl-C)" if isinstance(
        error, KeyboardInterrupt) else f"{type(error).__name__}: {error}")
    run.say("apply", f"failed: {reason}")
    outcome = "failed"
    if run.report.plan.on_failure == "rollback" and before and isinstance(error, PgShiftError):
        outcome = _roll_back(run, db, migrations, before)
    stay = [i for i in before if i not in report.rolled_back]
    parts = [f"deploy #{report.deploy_id} failed: {reason}."]
    if report.rolled_back:
        parts.append(f"Rolled back (their rollback files, newest first): {', '.join(report.rolled_back)}.")
    if stay:
        parts.append(f"Applied earlier in this deploy and still in place: {', '.join(stay)}.")
    if report.backup is not None:
        parts.append(f"Backup taken before the deploy: {report.backup}; to return to it: "
                     f"inv rollback.restore {report.backup.name}.")
    else:
        parts.append("No backup was taken (SKIP_BACKUP, or the backup itself failed).")
    parts.append(f"Maintenance: {report.maintenance}. Log: {run.log.path}")
    message = " ".join(parts)
    report.outcome, report.error = outcome, message
    report.total_s = time.monotonic() - run.started
    try:
        deploys.finish(db, report.deploy_id, outcome, migrations=stay,
                       durations={a.id: a.duration_ms for a in report.applied}, error=reason)
    except PgShiftError as problem:
        run.warn("history", f"could not record the outcome: {problem}")
    run.log.write("outcome", message)
    run.event("rollback" if outcome == "rolled back" else "failure", migrations=stay,
              backup=report.backup.name if report.backup else None, detail=reason[:500], total_s=report.total_s)
    if isinstance(error, PgShiftError):
        error.args = (message,)


def _roll_back(run: _Run, db: Database, migrations: list[source.Migration], ids: list[str]) -> str:
    files = {m.id: m for m in migrations}
    for ident in reversed(ids):
        try:
            ms = apply.rollback(db, files[ident], limits(run.settings))
        except PgShiftError as problem:
            run.warn("rollback", f"rolling back {ident} failed: {problem}; restore the backup instead")
            return "failed"
        run.report.rolled_back.append(ident)
        run.say("rollback", f"rolled back {ident} in {ms} ms")
    return "rolled back"
