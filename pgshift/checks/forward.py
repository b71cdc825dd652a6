"""forward: every migration applies to an empty database, in order, each one timed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pgshift.databases import throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError
from pgshift.migrations import apply
from pgshift.migrations.source import Migration


@dataclass(frozen=True)
class Step:
    id: str
    file: str
    state: str                   # applied | failed | not run | empty
    duration_ms: int | None = None
    transactional: bool | None = None
    error: str | None = None     # failed: file, line, statement and the server's message


@dataclass(frozen=True)
class ForwardReport:
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(s.state == "failed" for s in self.steps)

    @property
    def failure(self) -> Step | None:
        return next((s for s in self.steps if s.state == "failed"), None)

    @property
    def applied(self) -> list[str]:
        return [s.id for s in self.steps if s.state == "applied"]

    def summary(self) -> str:
        failed = self.failure
        total = sum(s.duration_ms or 0 for s in self.steps)
        if failed is not None:
            return f"{failed.file} fails: {failed.error}"
        return f"{len(self.applied)} migration(s) applied from empty in {total} ms"

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "summary": self.summary(), "steps": [asdict(s) for s in self.steps]}


def apply_one(db: Database, migrations: list[Migration], migration: Migration, limits: apply.Limits) -> apply.Applied:
    """Apply exactly ``migration`` (everything before it must be applied already), the way deploys do."""
    result = apply.apply(db, migrations, limits, upto=migration.id)
    done = [a for a in result.applied if a.id == migration.id]
    if len(result.applied) != 1 or not done:
        raise MigrationError(f"expected to apply {migration.id} alone, applied "
                             f"{[a.id for a in result.applied]}; is the scratch database shared?")
    return done[0]


def run(db: Database, migrations: list[Migration], limits: apply.Limits) -> ForwardReport:
    """Apply the migrations one by one on ``db``; stop at the first failure."""
    steps: list[Step] = []
    failed = False
    for m in migrations:
        if m.empty:
            steps.append(Step(m.id, m.path.name, "empty"))
        elif failed:
            steps.append(Step(m.id, m.path.name, "not run"))
        else:
            try:
                done = apply_one(db, migrations, m, limits)
            except MigrationError as error:
                steps.append(Step(m.id, m.path.name, "failed", error=str(error)))
                failed = True
            else:
                steps.append(Step(m.id, m.path.name, "applied", done.duration_ms, done.transactional))
    return ForwardReport(steps)


def forward(admin: DatabaseUrl, migrations: list[Migration], limits: apply.Limits) -> ForwardReport:
    """Apply every migration to a new empty scratch database on ``admin``'s server."""
    with throwaway.empty(admin) as url, Database.connect(url) as db:
        return run(db, migrations, limits)
