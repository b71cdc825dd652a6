"""Rolling back to a version: every applied migration newer than ``ID``, newest first, under the lock.

The plan is a value (``--dry-run`` prints it; the run re-reads it under the lock and executes it). A
missing or refused rollback anywhere in it stops everything before a statement runs.

Each rollback keeps apply's guarantees (``apply.rollback``). A transactional one runs with its record's
removal in one transaction. One with statements that refuse a transaction (``DROP INDEX
CONCURRENTLY``), or with a ``-- transactional: false`` header, runs statement by statement, journaled
in ``pgshift.rollbacks`` (statements done, a hash of each): a crash leaves the migration's record in
place and the journal where it stopped, and the next ``rollback.to`` first settles the statement it was
in (an index half dropped or half built), then goes on. The record and the journal row go in one last
transaction.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import NamedTuple

from pgshift.databases.db import Database
from pgshift.errors import ConfigError, MigrationError
from pgshift.migrations import apply, audit, history, refusal, squashed, txmode
from pgshift.migrations.lock import migration_lock
from pgshift.migrations.source import Migration

Progress = Callable[[str], None]

class Step(NamedTuple):
    id: str
    file: str
    transactional: bool
    statements: int | None   # known for a statement-by-statement rollback
    resumes_at: int = 0      # > 0: a killed run stopped after this many statements


class RollbackPlan(NamedTuple):
    to: str
    steps: list[Step]        # newest first
    problems: list[str]      # any: nothing runs

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.steps]

    def describe(self) -> list[str]:
        lines = [f"roll back {len(self.steps)} migration(s), newest first, down to (not including) {self.to}:"]
        for s in self.steps:
            how = "in one transaction with its record" if s.transactional else (
                f"statement by statement ({s.statements}), journaled")
            resume = f"; resumes after statement {s.resumes_at}" if s.resumes_at else ""
            lines.append(f"  {s.id}: {s.file}, {how}{resume}")
        lines += [f"  problem: {p}" for p in self.problems]
        return lines


class RolledBack(NamedTuple):
    id: str
    duration_ms: int
    transactional: bool


def failpoint(name: str) -> None:
    """Crash-test hook, as in ``apply``: PGSHIFT_FAILPOINT=<name> dies by SIGKILL here. Boundaries:
    ``rollback:locked``, ``rolledback:<id>``, and inside a journaled rollback ``rollback-executed:<id>:<n>``
    and ``rollback-journaled:<id>:<n>``."""
    if os.environ.get("PGSHIFT_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def plan(db: Database, migrations: list[Migration], to: str) -> RollbackPlan:
    files = {m.id: m for m in migrations}
    records = squashed.mapped(migrations, history.records(db))
    if to not in records or records[to].state != "applied":
        known = [i for i, r in records.items() if r.state == "applied"]
        raise ConfigError(f"{to!r} is not an applied migration here; roll back to one of the applied ids "
                          f"(newest: {known[-1] if known else 'none'}; see inv status)")
    half = history.rollback_journal(db)
    steps: list[Step] = []
    problems: list[str] = []
    for ident in sorted((i for i in records if i > to), reverse=True):
        rec = records[ident]
        if rec.state != "applied":
            problems.append(f"{ident} is {rec.state} (not applied): settle it first (inv dev.repair)")
            continue
        m = files.get(ident)
        if m is None:
            problems.append(f"{ident} is applied but migrations/{ident}.sql is missing: restore it from version "
                            "control")
            continue
        if m.forward_only:
            problems.append(f"{ident} is forward-only ({m.forward_only_because}): it has no rollback "
                            "by design, so nothing older can be reached by rolling back; restore a backup instead "
                            "(inv rollback.interactive)")
            continue
        sql = m.rollback_sql()
        if sql is None:
            problems.append(f"{ident} has no rollback file: write migrations/{ident}.rollback.sql")
            continue
        why = refusal.refused(m)
        if why is not None:
            problems.append(f"{ident}'s rollback is refused ({why}): it cannot be rolled back; restore a backup "
                            "instead (inv rollback.interactive)")
            continue
        statements = txmode.of(sql, f"{ident}.rollback.sql").statements
        if statements is None:
            steps.append(Step(ident, f"{ident}.rollback.sql", True, None))
        else:
            done = half.get(ident, (0, 0, ()))[1]
            steps.append(Step(ident, f"{ident}.rollback.sql", False, len(statements), done))
    return RollbackPlan(to, steps, problems)


def run(db: Database, migrations: list[Migration], to: str, limits: apply.Limits, *,
        progress: Progress | None = None, reason: str | None = None,
        expected: list[str] | None = None) -> list[RolledBack]:
    """Execute the plan under the migration lock. ``expected``: the ids a confirmed plan named; if the
    database changed since, nothing runs."""
    say = progress or (lambda _m: None)
    with migration_lock(db, limits.lock_wait):
        failpoint("rollback:locked")
        squashed.settle(db, migrations)  # a squash's record in place of those it replaces, before any is removed
        found = plan(db, migrations, to)
        if found.problems:
            raise MigrationError(f"cannot roll back to {to}: {found.problems[0]}"
                                 + (f" (+{len(found.problems) - 1} more)" if len(found.problems) > 1 else "")
                                 + "; nothing was rolled back")
        if expected is not None and found.ids != expected:
            raise MigrationError(f"the database changed since the plan (now: {', '.join(found.ids) or 'nothing'}); "
                                 "nothing was rolled back: run it again")
        files = {m.id: m for m in migrations}
        if found.steps:  # written first: a run that is killed half-way is in the repair log too
            audit.write(db, "rollback to", to, reason, detail="rolling back " + ", ".join(found.ids))
        done: list[RolledBack] = []
        for step in found.steps:
            say(f"rolling back {step.id}")
            m = files[step.id]
            ms = apply.rollback(db, m, limits)
            failpoint(f"rolledback:{step.id}")
            done.append(RolledBack(step.id, ms, step.transactional))
            say(f"rolled back {step.id} in {ms} ms")
        return done
