"""The deploy steps that run under the migration lock: recovery from a dead deploy, backup,
maintenance on and off, apply and verify, and what happens after a failure."""

from __future__ import annotations

import time
from contextlib import suppress

from pgshift.backups import files
from pgshift.databases.db import Database
from pgshift.deploy import deploys, maintenance
from pgshift.deploy.run import DeployFailed, Run, failpoint
from pgshift.errors import PgShiftError
from pgshift.migrations import apply, backfill, drift, history, source
from pgshift.migrations.status import states


def recover(run: Run, db: Database) -> maintenance.Maintenance:
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


def backup(run: Run, db: Database) -> None:
    """Back up the target before the deploy writes its history row (the caller records the file)."""
    run.say("backup", "backing up the target (pg_dump, verified)")
    taken = files.take(run.settings, reason="pre-deploy", session=db)
    run.report.backup = taken.path
    run.say("backup", f"backup: {taken.path} ({taken.size} bytes, verified)")
    failpoint("deploy:backed-up")


def maintenance_on(run: Run, db: Database) -> None:
    assert run.report.deploy_id is not None
    maintenance.switch(db, True, set_by=run.who, reason=f"deploy #{run.report.deploy_id}",
                       deploy_id=run.report.deploy_id)
    deploys.step(db, run.report.deploy_id, "maintenance on")
    run.report.maintenance = "on"
    run.say("maintenance", f"maintenance on ({maintenance.query(db)} is true)")
    run.event("maintenance on", detail=f"for deploy #{run.report.deploy_id}")
    failpoint("deploy:maintenance-on")
    said = maintenance.run_hook(run.settings.maintenance_on_hook, True, run.settings.environment,
                                run.settings.hook_timeout, run.redact)
    if said is not None:
        run.say("maintenance", f"on-hook done: {said or 'no output'}")


def maintenance_off(run: Run, db: Database) -> None:
    maintenance.switch(db, False, set_by=run.who)
    run.report.maintenance = "off"
    run.say("maintenance", "maintenance off")
    try:
        said = maintenance.run_hook(run.settings.maintenance_off_hook, False, run.settings.environment,
                                    run.settings.hook_timeout, run.redact)
    except PgShiftError as error:
        run.warn("maintenance", f"the flag is off, but {error}")
    else:
        if said is not None:
            run.say("maintenance", f"off-hook done: {said or 'no output'}")
    run.event("maintenance off", detail=f"after deploy #{run.report.deploy_id}")


def cleanup_maintenance(run: Run, db: Database, needed: bool) -> None:
    """Maintenance off, whatever happened; a failure here is loud but does not hide the first error."""
    if not needed:
        return
    try:
        maintenance_off(run, db)
    except PgShiftError as error:
        run.report.maintenance = "LEFT ON"
        run.warn("maintenance", f"could not turn maintenance off: {error}; run inv prod.maintenance off")


def apply_pending(run: Run, db: Database, migrations: list[source.Migration]) -> None:
    assert run.report.deploy_id is not None
    deploy_id = run.report.deploy_id
    files = {m.id: m for m in migrations}

    def progress(message: str) -> None:
        run.say("apply", message)
        verb, _, ident = message.partition(" ")
        if verb == "applying" and ident in files:
            run.log.sql(files[ident].path.name, files[ident].sql)

    # A backfill tells the team at its start, every backfill_notify_seconds and at its end (Slack is
    # slow and rate-limited: never a message per batch), and a progress bar each batch.
    every = run.settings.backfill_notify_seconds
    slack = backfill.Paced(lambda tick: run.event("backfill", detail=tick.line()), every)

    def watch(tick: backfill.Tick) -> None:
        slack(tick)
        if run.watch is not None:
            run.watch(tick)

    deploys.step(db, deploy_id, "applying")
    with drift.kept(db, migrations):  # the reference status measures drift against
        result = apply.apply(db, migrations, apply.Limits.of(run.settings), progress=progress, watch=watch)
    run.report.applied = result.applied
    deploys.step(db, deploy_id, "applied", durations={a.id: a.duration_ms for a in result.applied})
    failpoint("deploy:applied")
    found = states(migrations, history.records(db))
    wrong = [s for s in found if s.id in set(run.report.plan.ids) and s.state != "applied"]
    if wrong:
        raise DeployFailed(f"verify: {wrong[0].id} is {wrong[0].state} after the apply")
    deploys.step(db, deploy_id, "verified")
    run.say("verify", "verified: every planned migration is applied, none failed or modified")
    failpoint("deploy:verified")


def _reason(error: BaseException) -> str:
    if isinstance(error, PgShiftError):
        return str(error)
    if isinstance(error, KeyboardInterrupt):
        return "interrupted (Ctrl-C or SIGTERM)"
    return f"{type(error).__name__}: {error}"


def undo(run: Run, db: Database, migrations: list[source.Migration], error: BaseException) -> None:
    """After a failure, while maintenance is still on: note what this run applied before failing, and
    with ``--on-failure=rollback`` run their rollback files, newest first."""
    report = run.report
    before = list(getattr(error, "applied_before", ()))
    run.say("apply", f"failed: {_reason(error)}")
    if not report.applied and before:
        with suppress(PgShiftError):
            records = history.records(db)
            report.applied = [apply.Applied(i, records[i].duration_ms or 0, records[i].transactional)
                              for i in before if i in records]
    if report.plan.on_failure == "rollback" and before and isinstance(error, PgShiftError):
        report.outcome = _roll_back(run, db, migrations, before)


def fail(run: Run, db: Database, error: BaseException) -> None:
    """After a failure and maintenance off: the history row, the message naming the backup, Slack."""
    report = run.report
    assert report.deploy_id is not None
    reason = _reason(error)
    before = list(getattr(error, "applied_before", ()))
    outcome = "rolled back" if report.outcome == "rolled back" else "failed"
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
    message = run.redact(" ".join(parts))
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


def _roll_back(run: Run, db: Database, migrations: list[source.Migration], ids: list[str]) -> str:
    files = {m.id: m for m in migrations}
    for ident in reversed(ids):
        try:
            ms = apply.rollback(db, files[ident], apply.Limits.of(run.settings))
        except PgShiftError as problem:
            run.warn("rollback", f"rolling back {ident} failed: {problem}; restore the backup instead")
            return "failed"
        run.report.rolled_back.append(ident)
        run.say("rollback", f"rolled back {ident} in {ms} ms")
    return "rolled back"
