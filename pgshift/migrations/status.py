"""Where every migration stands on the target: applied, pending, modified, missing or failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from pgshift.databases.db import Database
from pgshift.errors import ExitCode, MigrationError
from pgshift.migrations import history, phases, squashed
from pgshift.migrations.source import Migration

if TYPE_CHECKING:
    from pgshift.migrations.drift import Drift

STATES = ("applied", "pending", "modified", "missing", "failed")


class MigrationState(NamedTuple):
    """One row of the status table. A named tuple: status builds one per migration on every call."""

    id: str
    state: str
    applied_at: datetime | None = None
    duration_ms: int | None = None
    empty: bool = False
    detail: str | None = None  # failed: the error and where it stopped

    def as_json(self) -> dict[str, Any]:
        data = self._asdict()
        data["applied_at"] = self.applied_at.isoformat() if self.applied_at else None
        return data


@dataclass(frozen=True)
class Status:
    target: str
    environment: str
    migrations: list[MigrationState]
    extra: dict[str, Any] = field(default_factory=dict)  # other reports (deploys, maintenance) add here
    drift: Drift | None = None  # None: not checked (status --no-drift)

    def count(self, state: str) -> int:
        return sum(1 for m in self.migrations if m.state == state)

    @property
    def exit_code(self) -> ExitCode:
        if any(m.state in ("modified", "missing", "failed") for m in self.migrations):
            return ExitCode.FAILED
        if self.drift is not None and self.drift.items:
            return ExitCode.FAILED
        if self.count("pending"):
            return ExitCode.PENDING
        return ExitCode.OK

    @property
    def head(self) -> str | None:
        applied = [m.id for m in self.migrations if m.state in ("applied", "modified")]
        return applied[-1] if applied else None

    def summary(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in STATES if self.count(s)]
        if self.drift is not None and self.drift.items:
            parts.append(f"drift: {len(self.drift.items)} difference(s)")
        verdict = {ExitCode.OK: "up to date", ExitCode.PENDING: "pending migrations",
                   ExitCode.FAILED: "needs attention"}[self.exit_code]
        return f"{verdict}: " + (", ".join(parts) if parts else "no migrations")

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "environment": self.environment, "head": self.head,
                "summary": self.summary(), "exit_code": int(self.exit_code),
                "migrations": [m.as_json() for m in self.migrations],
                "drift": self.drift.as_json() if self.drift is not None else None, **self.extra}


def states(migrations: list[Migration], records: dict[str, history.Record]) -> list[MigrationState]:
    found: list[MigrationState] = []
    files = {m.id for m in migrations}
    records = squashed.mapped(migrations, records)
    for m in migrations:
        rec = records.get(m.id)
        if rec is None:
            found.append(MigrationState(m.id, "pending", empty=m.empty, detail=_how(m)))
        elif rec.state == "applied":
            state = "applied" if rec.checksum == m.checksum else "modified"
            found.append(MigrationState(m.id, state, rec.applied_at, rec.duration_ms))
        else:
            where = (f"stopped after statement {rec.statements_done} of {rec.statements_total}; "
                     if not rec.transactional else "")
            found.append(MigrationState(m.id, "failed", rec.applied_at, None, m.empty,
                                        f"{where}{rec.error or 'interrupted'}"))
    for rec in records.values():
        if rec.id not in files:
            half = rec.state != "applied" and not rec.transactional and rec.statements_done
            found.append(MigrationState(rec.id, "missing", rec.applied_at, rec.duration_ms,
                                        detail=history.stopped_without_file(rec) if half else
                                        squashed.stranded(migrations, rec.id)
                                        or "recorded, but the file is gone"))
    return sorted(found, key=lambda s: s.id)


def _how(m: Migration) -> str | None:
    """For a pending migration that will not run in one transaction: how it will run, and why (or why
    it cannot run at all: it does not parse). Parsed only when the quick scan says it may be needed."""
    if not m.may_need_parse:
        return None
    from pgshift.migrations import txmode

    try:
        mode = txmode.of(m.sql, m.path.name, may_need_parse=True)
    except MigrationError as error:
        return str(error)
    return None if mode.transactional else f"runs statement by statement: {mode.why}"


def collect(db: Database, migrations: list[Migration], target: str, environment: str,
            records: dict[str, history.Record] | None = None) -> Status:
    records = history.records(db) if records is None else records
    found = states(migrations, records)
    if any(phases.has_phases(m.sql) for m in migrations):  # an expanded one says so, until deploy.complete
        opened = {p.id for p in phases.recorded(db).values() if p.phase == "expanded"}
        found = [s._replace(detail=EXPANDED) if s.id in opened and s.state == "applied" else s for s in found]
    return Status(target=target, environment=environment, migrations=found)


EXPANDED = "expanded: inv deploy.complete runs its contract phase, inv deploy.abort undoes it"
