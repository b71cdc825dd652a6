"""The rehearsal: the pending migrations run on a scratch clone of the target before the real deploy.

On the clone (``pgshift.scratch.clone``: a template copy when nobody is connected to the target, a
``pg_dump | pg_restore`` otherwise; neither writes to the target) each pending migration is applied
one by one and timed, over the target's real data; then all are rolled back newest first, each checked
to restore the schema exactly (``pgshift.snapshot``); then all are applied again, checked to give the
same schema as the first time. The static checks (lint, constraints) run when they are installed.
Only a rehearsal that passes lets the deploy touch the target; the clone is always dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pgshift import apply, scratch, snapshot
from pgshift.checks.forward import apply_one
from pgshift.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError
from pgshift.source import Migration


@dataclass(frozen=True)
class Timing:
    id: str
    apply_ms: int
    transactional: bool
    rollback_ms: int | None = None
    reapply_ms: int | None = None


@dataclass(frozen=True)
class Rehearsal:
    database: str            # the target database that was cloned
    clone_s: float
    timings: list[Timing] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)    # one summary line per static check run

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.problems:
            return f"rehearsal failed: {self.problems[0]}" + (
                f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else "")
        total = sum(t.apply_ms for t in self.timings)
        return (f"rehearsal passed on a clone of {self.database} (cloned in {self.clone_s:.1f} s): "
                f"{len(self.timings)} migration(s) applied in {total} ms, rolled back and re-applied exactly")

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "summary": self.summary(), "database": self.database,
                "clone_s": round(self.clone_s, 3), "timings": [asdict(t) for t in self.timings],
                "problems": self.problems, "checks": self.checks}


Check = Callable[[DatabaseUrl, list[Migration], list[Migration]], "tuple[str, list[str]]"]


def run(url: DatabaseUrl, migrations: list[Migration], pending: list[str], limits: apply.Limits, *,
        connect_timeout: int = 10, checks: list[Check] | None = None,
        progress: Callable[[str], None] | None = None) -> Rehearsal:
    """Rehearse applying ``pending`` (ids, in order) to a clone of ``url``'s database."""
    say = progress or (lambda _m: None)
    admin = scratch.server_of(url, connect_timeout)
    todo = [m for m in migrations if m.id in set(pending)]
    started = time.monotonic()
    say(f"cloning {url.dbname} into a scratch database")
    with scratch.clone(admin, url.dbname, connect_timeout) as copy, Database.connect(copy, connect_timeout) as db:
        clone_s = time.monotonic() - started
        problems: list[str] = []
        timings = _walk(db, migrations, todo, limits, problems, say)
    found: list[str] = []
    for check in checks or []:
        line, trouble = check(admin, migrations, todo)
        found.append(line)
        problems.extend(trouble)
    return Rehearsal(url.dbname, clone_s, timings, problems, found)


def _walk(db: Database, migrations: list[Migration], todo: list[Migration], limits: apply.Limits,
          problems: list[str], say: Callable[[str], None]) -> list[Timing]:
    """Up (timed), down (each checked), up again (checked); records problems, returns the timings."""
    before: list[snapshot.Snapshot] = []
    after: list[snapshot.Snapshot] = []
    first: list[apply.Applied] = []
    for m in todo:
        before.append(snapshot.take(db))
        try:
            first.append(apply_one(db, migrations, m, limits))
        except MigrationError as error:
            problems.append(f"{m.path.name} fails on a copy of the target: {error}")
            return [Timing(a.id, a.duration_ms, a.transactional) for a in first]
        after.append(snapshot.take(db))
        say(f"rehearsed {m.id}: {first[-1].duration_ms} ms")
    down: dict[str, int] = {}
    for k in reversed(range(len(todo))):
        m = todo[k]
        if m.rollback_path is None:
            problems.append(f"{m.id} has no rollback file; write migrations/{m.id}.rollback.sql")
            break
        try:
            down[m.id] = apply.rollback(db, m, limits)
        except MigrationError as error:
            problems.append(f"the rollback of {m.id} fails on a copy of the target: {error}")
            break
        changed = snapshot.diff(before[k], snapshot.take(db))
        if changed:
            problems.append(f"{m.id}.rollback.sql does not restore the schema: {'; '.join(changed[:3])}")
            break
    up: dict[str, int] = {}
    if not problems:
        for k, m in enumerate(todo):
            try:
                up[m.id] = apply_one(db, migrations, m, limits).duration_ms
            except MigrationError as error:
                problems.append(f"{m.path.name} does not apply again after its rollback: {error}")
                break
            changed = snapshot.diff(after[k], snapshot.take(db))
            if changed:
                problems.append(f"{m.path.name} applied again gives a different schema: {'; '.join(changed[:3])}")
                break
    return [Timing(a.id, a.duration_ms, a.transactional, down.get(a.id), up.get(a.id)) for a in first]
