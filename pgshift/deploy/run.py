"""One deploy in progress: its report, its log and its messages; who runs it; the crash-test hook."""

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

from pgshift.deploy.events import Event, Notify
from pgshift.deploy.plan import Plan
from pgshift.deploy.redaction import Redactor
from pgshift.deploy.rehearsal import Rehearsal
from pgshift.deploy.runlog import RunLog
from pgshift.errors import ExitCode, MigrationError, PgShiftError
from pgshift.migrations import apply
from pgshift.migrations.backfill import Watch
from pgshift.settings import Settings

Progress = Callable[[str], None]


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
    rehearsal: Rehearsal | None = None
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


def failpoint(name: str) -> None:
    """Crash-test hook (as in ``pgshift.migrations.apply``): PGSHIFT_FAILPOINT=<name> dies by SIGKILL here.

    Deploy boundaries: ``deploy:locked``, ``deploy:started``, ``deploy:backed-up``,
    ``deploy:maintenance-on``, ``deploy:applied``, ``deploy:verified``, ``deploy:maintenance-off``."""
    if os.environ.get("PGSHIFT_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


class Run:
    """One deploy in progress: its log, its messages, its report."""

    def __init__(self, settings: Settings, plan_: Plan, log: RunLog, notify: Notify | None,
                 progress: Progress | None) -> None:
        self.settings, self.log, self._notify = settings, log, notify
        self._say = progress or (lambda _m: None)
        self.redact = Redactor.for_settings(settings)
        self.who = who()
        self.report = DeployReport(plan=plan_, log=log.path)
        self.started = time.monotonic()
        self.watch: Watch | None = None  # a backfill's batches, for a progress bar

    def say(self, step: str, text: str) -> None:
        self.log.write(step, text)
        self._say(self.redact(text))

    def warn(self, step: str, text: str) -> None:
        self.report.warnings.append(self.redact(text))
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
