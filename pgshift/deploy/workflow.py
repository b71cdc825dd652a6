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

import os
import time
from contextlib import suppress

from pgshift.checks.performance import Thresholds
from pgshift.databases import target
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.deploy import deploys, maintenance, rehearsal, steps
from pgshift.deploy.events import Notify
from pgshift.deploy.plan import ON_FAILURE, Plan, build
from pgshift.deploy.redaction import Redactor
from pgshift.deploy.run import (  # the names callers use, re-exported
    DeployFailed,
    DeployReport,
    PreflightFailed,
    Progress,
    RehearsalFailed,
    Run,
    failpoint,
    who,
)
from pgshift.deploy.runlog import RunLog
from pgshift.errors import Aborted, ConfigError, ConnectionFailed, PgShiftError, Refused
from pgshift.interrupt import terminate_as_interrupt
from pgshift.migrations import apply, history, source
from pgshift.migrations.backfill import Watch
from pgshift.migrations.lock import migration_lock
from pgshift.questions import Confirm, Question
from pgshift.settings import Settings

__all__ = ["DeployFailed", "DeployReport", "PreflightFailed", "RehearsalFailed", "deploy", "plan", "who"]

def _drift_warnings(settings: Settings, db: Database, migrations: list[source.Migration]) -> list[str]:
    """Drift (``pgshift.schema.drift``): a warning per difference, never blocking."""
    if not history.exists(db):
        return []
    from pgshift.schema import drift

    try:
        found = drift.check(settings, db, migrations, apply.Limits.of(settings))
    except PgShiftError as error:
        return [f"drift not checked: {error}"]
    lines = [f"drift: {item.describe()}" for item in found.items[:5]]
    if len(found.items) > 5:
        lines.append(f"drift: {len(found.items) - 5} more difference(s); see inv status --drift")
    return lines


def plan(settings: Settings, *, rehearse: bool, on_failure: str = "stop", dry_run: bool = True) -> Plan:
    """The plan, built over a read-only session: the server itself refuses any write."""
    if on_failure not in ON_FAILURE:
        raise ConfigError(f"--on-failure={on_failure} is not one of: {', '.join(ON_FAILURE)}")
    migrations = source.of(settings)
    with target.connect(settings) as db:  # one session: drift first (its shadow is made through it), then
        warnings = _drift_warnings(settings, db, migrations) if settings.preflight_drift else []
        db.execute("SET default_transaction_read_only = on")  # the plan, which the server keeps read-only
        return build(settings, db, migrations, rehearse=rehearse, on_failure=on_failure, dry_run=dry_run,
                     extra_warnings=warnings)


def deploy(settings: Settings, *, rehearse: bool, on_failure: str = "stop", confirm: Confirm | None = None,
           notify: Notify | None = None, progress: Progress | None = None,
           watch: Watch | None = None) -> DeployReport:
    """Deploy every pending migration to the target. Raises on failure (after cleaning up)."""
    with terminate_as_interrupt():
        return _deploy(settings, rehearse=rehearse, on_failure=on_failure, confirm=confirm, notify=notify,
                       progress=progress, watch=watch)


def _deploy(settings: Settings, *, rehearse: bool, on_failure: str, confirm: Confirm | None,
            notify: Notify | None, progress: Progress | None, watch: Watch | None = None) -> DeployReport:
    redactor = Redactor.for_settings(settings)
    log = RunLog(settings.logs_dir, settings.environment, redactor)
    try:
        log.write("start", f"pgshift deploy to {settings.describe_target()} ({settings.environment}) by {who()}, "
                  f"pid {os.getpid()}; rehearse={rehearse}, on_failure={on_failure}, "
                  f"lock_timeout={settings.lock_timeout:g}s, statement_timeout={settings.statement_timeout:g}s, "
                  f"lock_wait={settings.lock_wait:g}s, lock_retries={settings.lock_retries}")
        try:
            planned = plan(settings, rehearse=rehearse, on_failure=on_failure, dry_run=False)
        except PgShiftError as error:
            log.write("preflight", f"failed: {error}")
            raise
        run = Run(settings, planned, log, notify, progress)
        run.watch = watch
        _log_plan(run, planned, show=confirm is None)  # a confirmation shows the plan itself
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


def _log_plan(run: Run, planned: Plan, show: bool) -> None:
    say = run.say if show else run.log.write
    say("preflight", f"{planned.applied} applied, {len(planned.pending)} pending on {planned.target}")
    for m in planned.pending:
        run.log.write("plan", f"{m.id}: {m.mode}" + (", no rollback file" if m.rollback_file is None else ""))
    for s in planned.steps:
        run.log.write("plan", f"{'run ' if s.runs else 'skip'} {s.name}: {s.note}")
    for w in planned.warnings:
        say("preflight", f"warning: {w}")
    for p in planned.problems:
        say("preflight", f"problem: {p}")


def _confirm(run: Run, planned: Plan, confirm: Confirm | None) -> None:
    if confirm is None:
        if run.settings.is_production:
            raise Refused("deploying to production needs a confirmation: run it at a terminal, or pass --yes")
        return
    question = Question(f"deploying to PRODUCTION: type the database name ({planned.database}) to go ahead",
                        expected=planned.database, about=planned)
    if not confirm(question):
        run.log.write("confirm", "declined; nothing was done")
        raise Aborted("deploy cancelled; nothing was done")
    run.log.write("confirm", "confirmed")


def _rehearse(run: Run, planned: Plan) -> rehearsal.Rehearsal:
    run.say("rehearse", f"rehearsing {len(planned.pending)} migration(s) on a clone of {planned.database}")
    settings = run.settings
    try:
        found = rehearsal.run(target.url(settings), planned.migrations, planned.ids,
                              apply.Limits.of(settings), Thresholds.of(settings),
                              sequence_limit=settings.sequence_limit,
                              connect_timeout=settings.connect_timeout, progress=lambda m: run.say("rehearse", m),
                              elsewhere=lambda: _embedded_admin(settings), accept=settings.accept,
                              sample_rows=settings.rehearsal_sample_rows, record_schema=settings.record_schema)
    except ConnectionFailed as error:
        instead = ("Deploy without a rehearsal (inv prod.deploy) only if you accept that" if settings.is_production
                   else "Let the role connect to the postgres database and create databases, then deploy again")
        raise RehearsalFailed(f"cannot rehearse: {error}; the target was not touched. {instead}. "
                              f"Log: {run.log.path}") from None
    for t in found.timings:
        run.log.write("rehearse", f"{t.id}: apply {t.apply_ms} ms, rollback {_ms(t.rollback_ms)}, "
                      f"re-apply {_ms(t.reapply_ms)}; locks: {'; '.join(t.locks) or 'none on existing tables'}; "
                      f"rewrote: {', '.join(t.rewrote) or 'nothing'}")
    for line in found.checks:
        run.say("rehearse", line)
    run.say("rehearse", found.summary())
    if not found.ok:
        run.event("failure", migrations=planned.ids, detail=f"{found.summary()[:500]}; the target was not touched")
        raise RehearsalFailed(f"{found.summary()}; the target was not touched. Log: {run.log.path}")
    return found


def _embedded_admin(settings: Settings) -> DatabaseUrl:
    """The embedded server, where a rehearsal goes when the target's server will not take one."""
    from pgshift.databases import embedded

    return embedded.ensure_running(settings.embedded_dir).url("postgres")


def _ms(value: int | None) -> str:
    return "not run" if value is None else f"{value} ms"


def _execute(run: Run, planned: Plan, rehearsed: bool) -> None:
    settings, report = run.settings, run.report
    migrations = planned.migrations  # what was confirmed and rehearsed runs, whatever the disk says now
    with target.connect(settings) as db, migration_lock(db, settings.lock_wait):
        failpoint("deploy:locked")
        run.log.write("lock", f"migration lock taken (session pid {db.pid})")
        history.ensure(db)
        deploys.ensure(db)
        maintenance.ensure(db)
        flag = steps.recover(run, db)
        now = [p.migration for p in apply.verify(migrations, history.records(db)) if not p.migration.empty]
        if [m.id for m in now] != planned.ids:
            raise Refused(f"the target changed since the plan (pending now: {', '.join(m.id for m in now) or 'none'}; "
                          f"planned: {', '.join(planned.ids) or 'none'}); another deploy ran? Run the deploy again")
        if not planned.ids:
            if flag.left_on_by_crash(deploy_running=False):
                steps.maintenance_off(run, db)
            run.say("apply", "nothing to deploy: up to date")
            return
        # The backup comes before this deploy's history row: restoring it must give back the database
        # as it was, not one that remembers a deploy "running" (which would read as a deploy that died).
        backup_error: BaseException | None = None
        try:
            if not settings.skip_backup:
                steps.backup(run, db)
            else:
                run.say("backup", "skipped: SKIP_BACKUP is set")
        except BaseException as error:
            backup_error = error
        report.deploy_id = deploys.start(db, environment=settings.environment, who=run.who.split("@")[0],
                                         host=run.who.split("@")[-1], pid=os.getpid(), migrations=planned.ids,
                                         rehearsed=rehearsed, log=str(run.log.path))
        failpoint("deploy:started")
        run.say("start", f"deploy #{report.deploy_id}: {len(planned.ids)} migration(s): {', '.join(planned.ids)}")
        run.event("start", migrations=planned.ids)
        dead_flag = flag.left_on_by_crash(deploy_running=False)
        turned_on = False
        try:
            if backup_error is not None:
                raise backup_error
            if report.backup is not None:
                deploys.step(db, report.deploy_id, "backed up", backup=report.backup.name)
            if flag.enabled and flag.deploy_id is None:
                run.say("maintenance", "maintenance is on already (by hand): left as it is")
            elif not settings.skip_maintenance:
                turned_on = True
                steps.maintenance_on(run, db)
            else:
                run.say("maintenance", "skipped: SKIP_MAINTENANCE is set")
            steps.apply_pending(run, db, migrations)
        except BaseException as error:
            if not db.conn.closed and db.in_transaction:  # interrupted inside a migration's transaction
                with suppress(PgShiftError):
                    db.execute("ROLLBACK")
            steps.undo(run, db, migrations, error)
            steps.cleanup_maintenance(run, db, turned_on or dead_flag)
            steps.fail(run, db, error)
            raise
        steps.cleanup_maintenance(run, db, turned_on or dead_flag)
        failpoint("deploy:maintenance-off")
        durations = {a.id: a.duration_ms for a in report.applied}
        deploys.finish(db, report.deploy_id, "succeeded", migrations=[a.id for a in report.applied],
                       durations=durations)
        report.outcome = "succeeded"
        run.event("success", migrations=[a.id for a in report.applied], durations=durations,
                  backup=report.backup.name if report.backup else None,
                  total_s=time.monotonic() - run.started)
