"""Maintenance mode by hand (``inv prod.maintenance on|off|status``): the same flag, hooks, log and
Slack messages as a deploy, under the migration lock so it never races a running deploy."""

from __future__ import annotations

from collections.abc import Callable

from pgshift.databases import target
from pgshift.deploy import maintenance
from pgshift.deploy.events import Event, Notify
from pgshift.deploy.redaction import Redactor
from pgshift.deploy.run import who
from pgshift.deploy.runlog import RunLog
from pgshift.errors import PgShiftError
from pgshift.migrations import lock
from pgshift.settings import Settings

HAND_LOCK_WAIT = 5.0  # seconds: a running deploy holds the lock far longer; say so rather than wait


def state(settings: Settings) -> tuple[maintenance.Maintenance, bool]:
    """The flag, and whether a deploy that died left it on."""
    with target.connect(settings) as db:
        flag = maintenance.state(db)
        return flag, flag.left_on_by_crash(deploy_running=not lock.is_free(db))


def switch(settings: Settings, on: bool, *, reason: str | None = None, notify: Notify | None = None,
           progress: Callable[[str], None] | None = None) -> tuple[maintenance.Maintenance, list[str]]:
    """Turn maintenance on or off by hand; returns the new state and any warnings (hook, Slack)."""
    say = progress or (lambda _m: None)
    redactor = Redactor.for_settings(settings)
    log = RunLog(settings.logs_dir, settings.environment, redactor)
    warnings: list[str] = []
    by = who()
    word = "on" if on else "off"
    try:
        log.write("maintenance", f"maintenance {word} by hand on {settings.describe_target()} by {by}"
                  + (f": {reason}" if reason else ""))
        with target.connect(settings) as db, lock.migration_lock(db, min(settings.lock_wait, HAND_LOCK_WAIT)):
            flag = maintenance.switch(db, on, set_by=by, reason=reason or "by hand")
            log.write("maintenance", flag.describe())
            say(flag.describe())
            hook = settings.maintenance_on_hook if on else settings.maintenance_off_hook
            try:
                said = maintenance.run_hook(hook, on, settings.environment, settings.hook_timeout, redactor)
            except PgShiftError as error:
                if on:  # the application was not told: undo, and fail
                    maintenance.switch(db, False, set_by=by)
                    log.write("maintenance", f"on-hook failed, flag turned off again: {error}")
                    raise
                warnings.append(f"the flag is off, but {error}")
            else:
                if said is not None:
                    log.write("maintenance", f"{word}-hook done: {said or 'no output'}")
        if notify is not None:
            event = Event(kind=f"maintenance {word}", environment=settings.environment, database=db.url.dbname,
                          who=by, detail=f"by hand: {reason}" if reason else "by hand")
            problem = notify(event)
            if problem:
                warnings.append(problem)
        for w in warnings:
            log.write("maintenance", f"warning: {w}")
        return flag, warnings
    except BaseException as error:
        log.write("outcome", f"{type(error).__name__}: {error}")
        raise
    finally:
        log.close()
