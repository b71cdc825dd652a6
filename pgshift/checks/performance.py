"""performance: apply the pending migrations over generated data; time, locks and rewrites of each.

The schema the data goes into is the one the target has (the migrations applied there); the
migrations still pending there are then measured one at a time. When the target has applied
everything (or nothing), the newest migration is the one measured: it is the one under review.

For each migration: its duration; every table that existed before it and that it locked, in which
mode and for how long; and the tables it rewrote (their file node changed). A transactional migration
runs here statement by statement in one transaction, the way the engine's script runs it, and the
migrating session reads its own ``pg_locks`` after each statement, before the commit: a lock is held
to the end of the transaction, so every one is seen however short, and held from the statement that
took it to the commit. A migration that must run outside a transaction is applied by the engine while
a second connection polls ``pg_locks`` for its session (its locks end with each statement). A lock
that blocks reads or writes of an existing table for longer than ``max_lock_seconds``, or a
migration longer than ``max_migration_seconds``, fails the check.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pgshift.checks import datagen
from pgshift.checks.forward import apply_one
from pgshift.databases import throwaway
from pgshift.databases.db import Database, SqlFailure
from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError, PgShiftError
from pgshift.migrations import apply, history, phases, sqltext, txmode
from pgshift.migrations.budget import retrying
from pgshift.migrations.source import Migration
from pgshift.settings import Settings

# What each table lock mode keeps other sessions from doing.
BLOCKS = {
    "AccessExclusiveLock": "reads and writes",
    "ExclusiveLock": "writes",
    "ShareRowExclusiveLock": "writes",
    "ShareLock": "writes",
    "ShareUpdateExclusiveLock": "schema changes",
    "RowExclusiveLock": "nothing",
    "RowShareLock": "nothing",
    "AccessShareLock": "nothing",
}
_STRENGTH = list(BLOCKS)

_TABLES = """
SELECT c.oid, format('%I.%I', n.nspname, c.relname), c.relfilenode
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift')
AND n.nspname NOT LIKE 'pgshift\\_%'
AND n.nspname NOT LIKE 'pg\\_%'"""


@dataclass(frozen=True)
class Thresholds:
    max_migration_seconds: float = 60.0
    max_lock_seconds: float = 2.0

    @classmethod
    def of(cls, settings: Settings) -> Thresholds:
        return cls(max_migration_seconds=settings.max_migration_seconds, max_lock_seconds=settings.max_lock_seconds)


@dataclass(frozen=True)
class LockHeld:
    table: str
    mode: str
    ms: int
    blocks: str   # what other sessions could not do meanwhile


@dataclass(frozen=True)
class Measured:
    id: str
    file: str
    state: str                          # ok | too slow | not measured
    duration_ms: int | None = None
    locks: list[LockHeld] = field(default_factory=list)
    rewrote: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class PerformanceReport:
    rows: int
    base: str | None                    # newest migration under the data; None: the empty schema
    measured: list[Measured]
    thresholds: Thresholds
    fill: datagen.FillReport | None = None
    note: str | None = None

    @property
    def ok(self) -> bool:
        return not any(m.state == "too slow" for m in self.measured)

    def summary(self) -> str:
        slow = [m for m in self.measured if m.state == "too slow"]
        data = f"over {self.fill.rows:,} generated rows" if self.fill else "without data"
        if slow:
            return f"{len(slow)} migration(s) too slow {data}; first: {slow[0].file}: {slow[0].problems[0]}"
        done = sum(1 for m in self.measured if m.state == "ok")
        text = f"{done} migration(s) measured {data}, within limits"
        return f"{text}; {self.note}" if self.note else text

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "summary": self.summary(), "rows": self.rows, "base": self.base,
                "note": self.note, "thresholds": asdict(self.thresholds),
                "fill": self.fill.as_json() if self.fill else None,
                "measured": [asdict(m) for m in self.measured]}


class LockWatch:
    """Polls ``pg_locks`` for one session from a second connection; remembers each table lock's span."""

    def __init__(self, url: DatabaseUrl, pid: int, interval: float = 0.002) -> None:
        self.interval = interval
        self.spans: dict[tuple[int, str], list[float]] = {}
        self._pid = pid
        self._stop = threading.Event()
        self._db = Database.connect(url)
        self._thread = threading.Thread(target=self._run, name="pgshift-lockwatch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rows = self._db.rows("SELECT relation::bigint, mode FROM pg_locks WHERE pid = %s "
                                     "AND locktype = 'relation' AND granted", [self._pid])
            except PgShiftError:
                return
            now = time.monotonic()
            for oid, mode in rows:
                span = self.spans.setdefault((int(oid), str(mode)), [now, now])
                span[1] = now
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._db.close()


_OWN_LOCKS = ("SELECT relation::bigint, mode FROM pg_locks WHERE pid = pg_backend_pid() "
              "AND locktype = 'relation' AND granted")

Spans = dict[tuple[int, str], list[float]]  # (table oid, mode) -> [first seen, last held], monotonic


def _apply_seeing_locks(db: Database, m: Migration, limits: apply.Limits) -> tuple[int, Spans]:
    """Apply the transactional ``m`` statement by statement in one transaction, with its record, reading
    the session's own locks after each statement; returns the duration and each lock's span. A lock
    timeout is retried as the engine retries it."""
    if not history.exists(db):
        history.ensure(db)
    statements = sqltext.statements(m.sql, m.path.name)

    def attempt() -> tuple[int, Spans]:
        spans: Spans = {}
        started = time.monotonic()
        try:
            db.execute(f"RESET ALL; BEGIN; {apply.settings_sql(limits, local=True)}")
            for statement in statements:
                began = time.monotonic()
                try:
                    db.execute(statement.text)
                except SqlFailure as failure:
                    if failure.lock_timeout:
                        raise
                    raise MigrationError(f"{m.path.name}, line {statement.line}: {failure}") from None
                for oid, mode in db.rows(_OWN_LOCKS):
                    spans.setdefault((int(oid), str(mode)), [began, began])
            elapsed = int((time.monotonic() - started) * 1000)
            db.execute(history.upsert_sql(db, id=m.id, checksum=m.checksum, state="applied",
                                          duration_ms=elapsed, transactional=True))
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
        ended = time.monotonic()
        for span in spans.values():
            span[1] = ended
        return int((ended - started) * 1000), spans

    return retrying(db, limits, m.path.name, attempt)[0]


def _tables(db: Database) -> dict[int, tuple[str, int]]:
    return {int(oid): (str(name), int(node)) for oid, name, node in db.rows(_TABLES)}


def measure(db: Database, migrations: list[Migration], pending: list[Migration], limits: apply.Limits,
            thresholds: Thresholds, progress: Callable[[str], None] | None = None) -> list[Measured]:
    """Apply ``pending`` one by one on ``db`` (on any database: a scratch one or a clone) and measure each."""
    found: list[Measured] = []
    stopped: str | None = None
    for m in pending:
        if stopped is not None:
            found.append(Measured(m.id, m.path.name, "not measured", problems=[stopped]))
            continue
        if progress is not None:
            progress(f"applying {m.path.name}")
        before = _tables(db)
        try:
            duration_ms, spans, interval = _apply_measured(db, migrations, m, limits)
        except MigrationError as error:
            stopped = f"{m.path.name} does not apply (see forward)"
            found.append(Measured(m.id, m.path.name, "not measured", problems=[f"does not apply: {error}"]))
            continue
        after = _tables(db)
        rewrote = sorted(before[oid][0] for oid in before if oid in after and after[oid][1] != before[oid][1]
                         and before[oid][1] != 0)
        locks = _locks(spans, interval, before)
        problems = []
        if duration_ms > thresholds.max_migration_seconds * 1000:
            problems.append(f"took {duration_ms / 1000:.1f}s, over the {thresholds.max_migration_seconds:g}s "
                            "limit; split it, or move the data change out of the migration")
        for lock in locks:
            if lock.blocks in ("reads and writes", "writes") and lock.ms > thresholds.max_lock_seconds * 1000:
                problems.append(f"held {lock.mode} on {lock.table} for {lock.ms / 1000:.1f}s (blocks {lock.blocks}), "
                                f"over the {thresholds.max_lock_seconds:g}s limit")
        found.append(Measured(m.id, m.path.name, "too slow" if problems else "ok", duration_ms, locks,
                              rewrote, problems))
    return found


def _apply_measured(db: Database, migrations: list[Migration], m: Migration,
                    limits: apply.Limits) -> tuple[int, Spans, float]:
    """Apply ``m`` and see its locks: (duration ms, lock spans, the spans' resolution in seconds)."""
    # A phased file applies its expand phase and backfill only, which the engine's apply knows.
    if txmode.of(m.sql, m.path.name).transactional and not phases.has_phases(m.sql):
        duration_ms, spans = _apply_seeing_locks(db, m, limits)
        return duration_ms, spans, 0.0
    watch = LockWatch(db.url, db.pid)
    try:
        done = apply_one(db, migrations, m, limits)
    finally:
        watch.stop()
    return done.duration_ms, watch.spans, watch.interval


def _locks(spans: Spans, interval: float, tables: dict[int, tuple[str, int]]) -> list[LockHeld]:
    """The strongest lock taken on each table that existed before, with how long it was held."""
    strongest: dict[int, LockHeld] = {}
    for (oid, mode), (first, last) in spans.items():
        if oid not in tables or mode not in BLOCKS:
            continue
        held = LockHeld(tables[oid][0], mode, int((last - first + interval) * 1000), BLOCKS[mode])
        current = strongest.get(oid)
        if current is None or _STRENGTH.index(mode) < _STRENGTH.index(current.mode):
            strongest[oid] = held
    return sorted(strongest.values(), key=lambda lock: (_STRENGTH.index(lock.mode), lock.table))


def split(migrations: list[Migration], applied: set[str]) -> tuple[Migration | None, list[Migration]]:
    """(newest migration under the data, migrations to measure): what the target still lacks, or the newest."""
    runnable = [m for m in migrations if not m.empty]
    pending = [m for m in runnable if m.id not in applied]
    base = [m for m in runnable if m.id in applied]
    if not pending or not base:
        pending, base = runnable[-1:], runnable[:-1]
    return (base[-1] if base else None), pending


def run(admin: DatabaseUrl, migrations: list[Migration], limits: apply.Limits, rows: int,
        thresholds: Thresholds, applied: set[str], progress: Callable[[str], None] | None = None) -> PerformanceReport:
    """Build the schema up to the base on a scratch database, fill it with ``rows``, measure the rest."""
    base, pending = split(migrations, applied)
    with throwaway.empty(admin, durable=True) as url, Database.connect(url) as db:
        if base is not None:
            try:
                apply.apply(db, migrations, limits, upto=base.id)
            except MigrationError as error:
                return PerformanceReport(rows, base.id, [], thresholds,
                                         note=f"nothing measured: the migrations up to {base.id} do not apply "
                                              f"(see forward): {error}")
        fill = datagen.fill(db, rows, progress=progress)
        measured = measure(db, migrations, pending, limits, thresholds, progress)
    return PerformanceReport(rows, base.id if base else None, measured, thresholds, fill)
