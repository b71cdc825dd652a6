"""The rehearsal: the pending migrations run on a scratch clone of the target before the real deploy.

On the clone (``pgshift.databases.throwaway.clone_or_sample``: a template copy when nobody is connected to the
target; when the application is, its schema plus ``sample_rows`` rows of each table, the migration history
whole, and the result says so; none writes to the target) each pending migration is applied
one by one over the target's real data, timed with the locks it took and the tables it rewrote
(``pgshift.checks.performance.measure``: too slow, or a blocking lock held too long, fails); then,
newest first, each is rolled back, applied and rolled back again, the schema compared each time
(``pgshift.checks.backward.round_trip``; a phased one first expand then abort, and contract then its
rollback file, ``backward.phase_trips``); then all are applied again, checked to give the same schema
as the first time. ``pgshift.checks.constraints`` inspects the clone before and after: a smell the
migrations introduce fails, one already there is reported. Only a rehearsal that passes lets the
deploy touch the target; the clone is always dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

from pgshift.checks import backward, constraints, performance
from pgshift.checks.forward import apply_one
from pgshift.databases import snapshot, throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import CreateRefused, MigrationError
from pgshift.migrations import apply, history, phases
from pgshift.migrations.source import Migration


@dataclass(frozen=True)
class Timing:
    id: str
    apply_ms: int
    rollback_ms: int | None = None
    reapply_ms: int | None = None
    locks: list[str] = field(default_factory=list)    # "ACCESS EXCLUSIVE on public.items for 3 ms (blocks ...)"
    rewrote: list[str] = field(default_factory=list)  # tables rewritten


@dataclass(frozen=True)
class Rehearsal:
    database: str            # the target database that was cloned
    clone_s: float
    timings: list[Timing] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)    # findings worth knowing that do not fail it
    sample_rows: int = 0     # >0: the clone held at most this many rows of each table (the target was in use)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.problems:
            return f"rehearsal failed: {self.problems[0]}" + (
                f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else "")
        total = sum(t.apply_ms for t in self.timings)
        what = (f"a sample of {self.database} (schema, at most {self.sample_rows} rows per table: the application "
                "is connected)" if self.sample_rows else f"a clone of {self.database}")
        return (f"rehearsal passed on {what} (cloned in {self.clone_s:.1f} s): "
                f"{len(self.timings)} migration(s) applied in {total} ms, rolled back and re-applied exactly")

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "summary": self.summary(), "database": self.database,
                "clone_s": round(self.clone_s, 3), "sample_rows": self.sample_rows,
                "timings": [asdict(t) for t in self.timings], "problems": self.problems, "checks": self.checks}


def run(url: DatabaseUrl, migrations: list[Migration], pending: list[str], limits: apply.Limits,
        thresholds: performance.Thresholds, *, sequence_limit: float = 0.75, connect_timeout: int = 10,
        progress: Callable[[str], None] | None = None,
        elsewhere: Callable[[], DatabaseUrl] | None = None, accept: tuple[str, ...] = (),
        sample_rows: int = 0) -> Rehearsal:
    """Rehearse applying ``pending`` (ids, in order) to a clone of ``url``'s database.

    Where the target's role may not create databases, the clone goes to the server ``elsewhere()``
    gives (the embedded one), copied by dump; the result says so. Where the application is connected
    to the target (no template copy), the clone holds its schema and ``sample_rows`` rows of each table
    (0: all of them, by a whole dump); the result says so too."""
    say = progress or (lambda _m: None)
    admin = throwaway.admin_url(url, connect_timeout)
    with Database.connect(admin, connect_timeout) as server:
        swept = throwaway.sweep(server)  # what killed runs of this machine left
        others = throwaway.leftovers(server)  # before ours exists: other runs, or other machines' killed ones
    todo = [m for m in migrations if m.id in set(pending)]
    started = time.monotonic()
    say(f"cloning {url.dbname} into a scratch database")
    notes: list[str] = []
    with ExitStack() as stack:
        sampled = 0
        try:
            made = stack.enter_context(throwaway.clone_or_sample(
                admin, url.dbname, sample_rows=sample_rows, whole=(history.SCHEMA,), connect_timeout=connect_timeout))
            copy, sampled = made.url, made.sample_rows
            if sampled:
                say(f"{url.dbname} is in use (sessions connected), so no template copy: rehearsing on its schema "
                    f"and at most {sampled} rows per table ({made.sampled} table(s) cut to that)")
                notes.append(f"rehearsed on a sample: the application is connected to {url.dbname}, so the clone "
                             f"holds its schema and at most {sampled} rows of each table ({made.sampled} cut); "
                             "timings there understate a table's full size (config rehearsal_sample_rows, 0 for all)")
        except CreateRefused:
            if elsewhere is None:
                raise
            other = elsewhere()
            say(f"the target's role may not create databases: cloning {url.dbname} onto {other.host}:{other.port}")
            copy = stack.enter_context(throwaway.copy_of(url, other, connect_timeout=connect_timeout))
            notes.append(f"rehearsed on a copy on {other.host}:{other.port} (the target's role may not create "
                         "databases on its server): timings and locks there only approximate the target's")
        db = stack.enter_context(Database.connect(copy, connect_timeout))
        clone_s = time.monotonic() - started
        problems: list[str] = []
        smells_before = {(f.kind, f.table, f.problem) for f in constraints.inspect(db, sequence_limit).findings}
        timings = _walk(db, migrations, todo, limits, thresholds, problems, say)
        if not problems:
            for f in constraints.inspect(db, sequence_limit).findings:
                if (f.kind, f.table, f.problem) in smells_before:
                    notes.append(f"constraints (already there): {f.table}: {f.problem}")
                elif (by := constraints.accepted_by(f, todo, accept)) is not None:
                    notes.append(f"constraints (accepted in {by}): {f.id}: {f.problem}")
                else:
                    problems.append(f"constraints: the migrations leave {f.table}: {f.problem}; fix: {f.fix}")
    if swept:
        notes.append(f"dropped {len(swept)} throwaway database(s) that killed runs left: {', '.join(swept)}")
    if others:
        notes.append(f"throwaway databases on the server that another run is using, or that a killed run on "
                     f"another machine left: {', '.join(others)}; drop those no run is using "
                     "(DROP DATABASE ... WITH (FORCE))")
    return Rehearsal(url.dbname, clone_s, timings, problems, notes, sampled)


def _walk(db: Database, migrations: list[Migration], todo: list[Migration], limits: apply.Limits,
          thresholds: performance.Thresholds, problems: list[str], say: Callable[[str], None]) -> list[Timing]:
    """Up (measured), down (each checked), up again (checked); records problems, returns the timings."""
    before: list[snapshot.Snapshot] = []
    after: list[snapshot.Snapshot] = []
    first: list[performance.Measured] = []
    for m in todo:
        before.append(backward.take(db))
        measured = performance.measure(db, migrations, [m], limits, thresholds)[0]
        if measured.state == "not measured":
            problems.append(f"on a copy of the target, {_bare(measured.problems[0].removeprefix('does not apply: '))}")
            return [_timing(x) for x in first]
        first.append(measured)
        problems.extend(f"{m.path.name} on a copy of the target {p}" for p in measured.problems)
        after.append(backward.take(db))
        locks = ", ".join(f"{lock.mode} on {lock.table}" for lock in measured.locks)
        say(f"rehearsed {m.id}: {measured.duration_ms} ms; {locks or 'no lock on a table that existed before'}")
    if problems:
        return [_timing(x) for x in first]
    down: dict[str, int] = {}
    up: dict[str, int] = {}
    reached = 0  # todo[:reached] stay applied: a forward-only migration cannot be rolled back
    for k in reversed(range(len(todo))):  # newest first: down, compare, up, compare, down again
        if phases.has_phases(todo[k].sql) and not todo[k].forward_only:  # abort, rollback, contract + rollback
            trips = backward.phase_trips(db, migrations, todo[k], limits, before[k], after[k])
            bad = [t for t in trips if t.state != "ok"]
            if bad:
                shown = f": {'; '.join(bad[0].diff[:3])}" if bad[0].diff else ""
                problems.append(f"on a copy of the target, {bad[0].file} ({bad[0].phase}): "
                                f"{_bare(bad[0].problem or 'failed')}{shown}")
                break
            say(f"rehearsed the phases of {todo[k].id}: " + ", ".join(f"{t.phase} ok" for t in trips))
        trip = backward.round_trip(db, migrations, todo[k], limits, before[k], after[k])
        if trip.state == "skipped":
            say(f"not rolled back: {todo[k].id} ({trip.problem}), nor what is older")
            reached = k + 1
            break
        if trip.state != "ok":
            shown = f": {'; '.join(trip.diff[:3])}" if trip.diff else ""
            problems.append(f"on a copy of the target, {trip.file}: {_bare(trip.problem or 'failed')}{shown}")
            break
        down[trip.id], up[trip.id] = trip.rollback_ms or 0, trip.reapply_ms or 0
    if not problems:
        for k, m in enumerate(todo[reached:], start=reached):  # all of them again, in order, as the deploy will
            try:
                apply_one(db, migrations, m, limits)
            except MigrationError as error:
                problems.append(f"on a copy of the target, {m.path.name} does not apply again after the "
                                f"rollbacks: {_bare(str(error))}")
                break
            changed = snapshot.diff(backward.by_name(after[k]), backward.by_name(backward.take(db)))
            if changed:
                problems.append(f"{m.path.name} applied again gives a different schema: {'; '.join(changed[:3])}")
                break
    return [_timing(x, down.get(x.id), up.get(x.id)) for x in first]


def _bare(error: str) -> str:
    """An apply error without its advice for a real target: the clone is thrown away anyway."""
    return error.split("; nothing of it was applied")[0].split("; nothing of the rollback was applied")[0]


def _timing(m: performance.Measured, down: int | None = None, up: int | None = None) -> Timing:
    locks = [f"{lock.mode} on {lock.table} for {lock.ms} ms (blocks {lock.blocks})" for lock in m.locks]
    return Timing(m.id, m.duration_ms or 0, down, up, locks, list(m.rewrote))
