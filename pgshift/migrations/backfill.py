"""The backfill engine: a phased migration's ``-- pgshift: backfill`` lines, run in short batches.

It walks the table in primary-key order (keyset: each batch starts after the last key done, so no
``OFFSET`` over rows already passed). Each batch is its own transaction under ``lock_timeout``, retried
by the lock budget, and the batch's journal step (last key done, rows done) commits in that same
transaction, in the record schema's ``backfills`` (``pgshift.backfills`` by default): after a ``kill -9``
the next run starts at the next batch, and no row is written twice or missed. The batch size follows a
target batch time. A batch is one statement (between its ``BEGIN`` and ``COMMIT``): its upper key, the
update of its range and the journal step.

Before each batch it reads its control row and the server's state: a pause asked for
(``deploy.pause``), replica replay lag over ``max_replay_lag`` (``pg_stat_replication``), another
transaction in this database open longer than ``max_xact_seconds`` (its xmin holds back vacuum; our own
sessions do not count), or ``max_active`` other active sessions. Any of them holds the backfill, says
which, and writes it in the journal for ``deploy.status``, until it clears. It looks every
``LOOK_EVERY`` seconds, not at each batch: the look costs a scan of ``pg_stat_activity``.

Progress goes two ways: lines to ``say`` (start, held, going again, every ``progress_seconds``, done)
and, when given, a ``Tick`` per event and per batch to ``watch`` (a progress bar, or ``Paced`` for a
message at intervals); the caller decides how to show them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from pgshift.databases.db import Database, SqlFailure
from pgshift.errors import LockTimeout, MigrationError
from pgshift.migrations import history, phases
from pgshift.migrations.budget import Limits, retrying, settings_sql
from pgshift.migrations.source import Migration
from pgshift.migrations.stepwise import failpoint

Say = Callable[[str], None]

FIRST_BATCH = 1_000
MIN_BATCH, MAX_BATCH = 100, 500_000
POLL = 0.5             # seconds between looks while held
LOOK_EVERY = 0.5       # seconds between looks while running
DEADLOCK = "40P01"


class Outcome(NamedTuple):
    id: str
    step: int
    table: str
    rows_done: int      # rows the backfill changed, over every run
    batches: int
    seconds: float      # this run
    resumed: bool       # an earlier run had done part of it


class Journal(NamedTuple):
    state: str
    last_key: list[str] | None
    rows_done: int
    rows_scanned: int
    rows_total: int
    batches: int
    batch_size: int | None


class Tick(NamedTuple):
    """Where one backfill line stands, for a progress bar or a message."""

    event: str              # start, batch, held, going (again), done
    label: str              # "<migration id> step <n> (<table>)"
    scanned: int            # rows passed, over every run
    total: int              # the estimate of the table's rows
    rows_done: int          # rows changed, over every run
    here: int               # rows passed in this run
    seconds: float          # this run so far
    held: str | None = None

    @property
    def rate(self) -> float:
        return self.here / self.seconds if self.seconds > 0 else 0.0

    @property
    def share(self) -> float | None:
        """Passed of the estimate, 0 to 1 (the estimate may be short: never over 1)."""
        return min(1.0, self.scanned / self.total) if self.total > 0 else None

    @property
    def eta_s(self) -> float | None:
        if self.event == "done":
            return 0.0
        rate = self.rate
        return max(self.total - self.scanned, 0) / rate if rate > 0 and self.total > 0 else None

    def line(self) -> str:
        if self.event == "start":
            return f"backfill {self.label}: " + (f"resuming after {self.scanned:,} rows" if self.scanned
                                                 else f"starting, ~{self.total:,} rows")
        if self.event == "going":
            return f"backfill {self.label}: going again"
        if self.event == "done":
            return (f"backfill {self.label}: done, {self.rows_done:,} rows changed in {self.seconds:.1f} s "
                    f"({self.rate:,.0f} rows/s)")
        if self.event == "held":
            return f"backfill {self.label}: held: {self.held}"
        return progress_line(self.label, self.scanned, self.total, self.here, self.seconds)


Watch = Callable[[Tick], None]
BackfillTick = Tick  # its name in pgshift.api


class Paced:
    """A ``watch`` that passes on every event but batches, and a batch at most every ``every`` seconds
    (none with ``every`` 0): a message at intervals, never one per batch."""

    def __init__(self, watch: Watch, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._watch, self._every, self._clock = watch, every, clock
        self._next: float | None = None

    def __call__(self, tick: Tick) -> None:
        now = self._clock()
        if tick.event != "batch":
            if tick.event == "start":
                self._next = now + self._every
            self._watch(tick)
            return
        if self._every <= 0:
            return
        if self._next is None:
            self._next = now + self._every
        elif now >= self._next:
            self._next = now + self._every
            self._watch(tick)


def run_open(db: Database, migrations: list[Migration], limits: Limits, say: Say,
             watch: Watch | None = None) -> list[Outcome]:
    """Run (or resume) the backfills of every expanded migration whose backfill is not done."""
    files = {m.id: m for m in migrations}
    outcomes: list[Outcome] = []
    for phase in phases.recorded(db).values():
        migration = files.get(phase.id)
        if phase.phase != "expanded" or migration is None:
            continue
        found = phases.parse(migration.sql, migration.path.name)
        for fill in found.backfills if found is not None else []:
            outcomes.append(run(db, migration.id, fill, limits, say, watch))
    return outcomes


def journal(db: Database, migration_id: str, step: int) -> Journal | None:
    row = db.one("SELECT state, last_key, rows_done, rows_scanned, coalesce(rows_total, 0), batches, batch_size "
                 f"FROM {history.rel(db, 'backfills')} WHERE id = %s AND step = %s", [migration_id, step])
    return None if row is None else Journal(row[0], list(row[1]) if row[1] is not None else None, *row[2:])


def run(db: Database, migration_id: str, fill: phases.Backfill, limits: Limits, say: Say,
        watch: Watch | None = None) -> Outcome:
    """Run one backfill line to the end, resuming where its journal stopped."""
    label = f"{migration_id} step {fill.step} ({fill.table})"
    started = time.monotonic()
    found = journal(db, migration_id, fill.step)
    if found is None:
        primary_key(db, fill.table)  # a table without one (or misnamed) is refused before anything is written
        db.execute(f"INSERT INTO {history.rel(db, 'backfills')} (id, step, target, rows_total) VALUES (%s, %s, %s, %s) "
                   "ON CONFLICT DO NOTHING", [migration_id, fill.step, fill.table, _estimate(db, fill.table)])
        found = journal(db, migration_id, fill.step)
        assert found is not None
    resumed = found.batches > 0
    if found.state == "done":
        return Outcome(migration_id, fill.step, fill.table, found.rows_done, found.batches, 0.0, resumed)
    batch_limits = limits.for_phases()  # a batch's row locks hold the application's writes of those rows
    walk = _Walk(db, migration_id, fill, primary_key(db, fill.table), batch_limits)
    last, size = found.last_key, found.batch_size or FIRST_BATCH
    scanned_here, done, batches = 0, found.rows_done, found.batches

    def tick(event: str, reason: str | None = None) -> Tick:
        return Tick(event, label, found.rows_scanned + scanned_here, found.rows_total, done, scanned_here,
                    time.monotonic() - started, reason)

    show = watch or (lambda _t: None)
    say(tick("start").line())
    show(tick("start"))
    next_line = started + limits.progress_seconds
    held: str | None = None
    look_at = 0.0
    while True:
        if held is not None or time.monotonic() >= look_at:
            reason = walk.held()
            look_at = time.monotonic() + LOOK_EVERY
            if reason != held:
                db.execute(f"UPDATE {history.rel(db, 'backfills')} SET throttled = %s, updated_at = now() "
                           "WHERE id = %s AND step = %s", [reason, migration_id, fill.step])
                change = tick("held" if reason else "going", reason)
                say(change.line())
                show(change)
                held = reason
            if reason is not None:
                time.sleep(POLL)
                continue
        began = time.monotonic()
        try:
            (last, scanned, done, final), _tries = retrying(
                db, batch_limits, f"backfill {label}", functools.partial(walk.batch, last, size))
        except LockTimeout as timeout:
            raise LockTimeout(f"{timeout}; the backfill stopped after {done:,} rows, journaled: the next "
                              "inv deploy (or inv dev.migrate) resumes it") from None
        except SqlFailure as failure:
            raise MigrationError(
                f"{migration_id}.sql, line {fill.line}: the backfill failed: {failure}; the expand phase stays "
                "applied: run inv deploy.abort, fix the backfill line, and apply it again") from None
        batches += 1
        failpoint(f"backfilled:{migration_id}:{fill.step}:{batches}")
        took = time.monotonic() - began
        scanned_here += scanned
        size = _next_size(size, took, limits.batch_seconds)
        now = time.monotonic()
        if final:
            seconds = now - started
            ended = tick("done")._replace(seconds=seconds)
            say(ended.line())
            show(ended)
            return Outcome(migration_id, fill.step, fill.table, done, batches, seconds, resumed)
        current = tick("batch")
        show(current)
        if now >= next_line:
            next_line = now + limits.progress_seconds
            say(current.line())


def progress_line(label: str, scanned: int, total: int, here: int, seconds: float) -> str:
    rate = here / seconds if seconds > 0 else 0.0
    share = f" ({min(100, 100 * scanned // total)}%)" if total > 0 else ""
    eta = f", ETA {max(total - scanned, 0) / rate:.0f} s" if rate > 0 and total > 0 else ""
    return f"backfill {label}: {scanned:,} of ~{total:,} rows{share}, {rate:,.0f} rows/s{eta}"


def _next_size(size: int, took: float, target: float) -> int:
    """Toward the target batch time: at most twice or half the last size a batch."""
    if took <= 0:
        return min(size * 2, MAX_BATCH)
    factor = max(0.5, min(2.0, target / took))
    return max(MIN_BATCH, min(MAX_BATCH, int(size * factor)))


def primary_key(db: Database, table: str) -> list[tuple[str, str]]:
    """The primary key's columns and their types, in key order. Raises MigrationError without one."""
    try:
        rows = db.rows(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = %s::regclass AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)", [table])
    except SqlFailure as failure:
        raise MigrationError(f"backfill of {table}: {failure}; fix the table name on the backfill line") from None
    if not rows:
        raise MigrationError(f"backfill of {table}: the table has no primary key, and a backfill walks it in key "
                             "order; add a primary key in an earlier migration")
    return [(str(r[0]), str(r[1])) for r in rows]


def _estimate(db: Database, table: str) -> int:
    row = db.one("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [table])
    if row is not None and row[0] is not None and row[0] > 0:
        return int(row[0])
    counted = db.one(f"SELECT count(*) FROM {table}")
    return int(counted[0]) if counted else 0


class _Walk:
    """The SQL of one backfill line, built once: the control look, and a batch."""

    def __init__(self, db: Database, migration_id: str, fill: phases.Backfill,
                 keys: list[tuple[str, str]], limits: Limits) -> None:
        self.db, self.id, self.step, self.limits = db, migration_id, fill.step, limits
        table = fill.table.replace("%", "%%")
        names = [db.identifier(k) for k, _ in keys]
        columns = ", ".join(names)
        self.row = f"({columns})"
        self.after = "(" + ", ".join(f"%s::{t}" for _, t in keys) + ")"
        self.order = f"ORDER BY {columns} OFFSET %s LIMIT 1"
        self.update = f"UPDATE {table} SET {fill.assignments.replace('%', '%%')}"
        self.where = f" AND ({fill.where.replace('%', '%%')})" if fill.where else ""
        # A batch but the last, in one statement: its upper key (the size-th after the last done, under
        # names of its own: the table's may be any), its range updated, its journal step. An empty bound
        # (fewer rows left than the size) updates nothing and journals nothing: the last batch follows.
        aliases = [f"pgshift_k{i}" for i in range(len(names))]
        bound = ", ".join(f"{n} AS {a}" for n, a in zip(names, aliases, strict=True))
        upto = ", ".join(f"(SELECT {a} FROM bound)" for a in aliases)
        self.steps = {first: (
            f"WITH bound AS MATERIALIZED (SELECT {bound} FROM {table} "
            f"{'' if first else f'WHERE {self.row} > {self.after} '}{self.order}), "
            f"done AS ({self.update} WHERE {'true' if first else f'{self.row} > {self.after}'} "
            f"AND {self.row} <= ({upto}){self.where} RETURNING 1) "
            f"UPDATE {history.rel(db, 'backfills')} SET "
            f"last_key = (SELECT ARRAY[{', '.join(f'{a}::text' for a in aliases)}] FROM bound), "
            "rows_done = rows_done + (SELECT count(*) FROM done), rows_scanned = rows_scanned + %s, "
            "batches = batches + 1, batch_size = %s, updated_at = now(), throttled = NULL "
            "WHERE id = %s AND step = %s AND EXISTS (SELECT FROM bound) RETURNING rows_done, last_key")
            for first in (True, False)}
        self.table = table
        # pgshift.backfill marks the batch's writes, for a trigger that has no need to see them (rename's).
        # The commit is asynchronous: a server crash may lose the last batches, but each with its own
        # journal step, so the resume redoes exactly those; no wait on the log flush per batch.
        self.begin = (f"BEGIN; {settings_sql(limits, local=True)} SET LOCAL pgshift.backfill = 'on'; "
                      "SET LOCAL synchronous_commit = off;")

    def held(self) -> str | None:
        """Why the backfill must wait now, or None."""
        limits = self.limits
        row = self.db.one(
            "SELECT b.paused, lag.name, lag.seconds, old.pid, old.app, old.age, act.n "
            f"FROM {history.rel(self.db, 'backfills')} b "
            "LEFT JOIN LATERAL (SELECT application_name AS name, extract(epoch FROM replay_lag)::float8 AS seconds "
            "  FROM pg_stat_replication WHERE %s > 0 ORDER BY replay_lag DESC NULLS LAST LIMIT 1) lag ON true "
            "LEFT JOIN LATERAL (SELECT pid, application_name AS app, "
            "  extract(epoch FROM clock_timestamp() - xact_start)::float8 AS age FROM pg_stat_activity "
            "  WHERE %s > 0 AND datname = current_database() AND backend_type = 'client backend' "
            "  AND pid <> pg_backend_pid() AND application_name <> current_setting('application_name') "
            "  AND xact_start < clock_timestamp() - make_interval(secs => %s) ORDER BY xact_start LIMIT 1) old ON true "
            "LEFT JOIN LATERAL (SELECT count(*) AS n FROM pg_stat_activity WHERE %s > 0 AND state = 'active' "
            "  AND datname = current_database() AND pid <> pg_backend_pid() "
            "  AND application_name <> current_setting('application_name')) act ON true "
            "WHERE b.id = %s AND b.step = %s",
            [limits.max_replay_lag, limits.max_xact_seconds, limits.max_xact_seconds, limits.max_active,
             self.id, self.step])
        if row is None:
            raise MigrationError(f"the backfill journal of {self.id} step {self.step} is gone (aborted elsewhere?); "
                                 "see inv deploy.status")
        paused, replica, lag, pid, app, age, active = row
        if paused:
            return "paused by inv deploy.pause; inv deploy.resume lets it go on"
        if lag is not None and lag > limits.max_replay_lag:
            return (f"replica lag: {replica or '?'} replays {lag:.1f} s behind, over the "
                    f"{limits.max_replay_lag:g} s limit")
        if pid is not None:
            return (f"a transaction open {age:.0f} s (pid {pid}, {app or 'no application name'}), over the "
                    f"{limits.max_xact_seconds:g} s limit: it holds back vacuum")
        if limits.max_active and active is not None and active >= limits.max_active:
            return f"{active} active sessions, at the ceiling of {limits.max_active}"
        return None

    def batch(self, last: list[str] | None, size: int) -> tuple[list[str] | None, int, int, bool]:
        """One batch in its own transaction with its journal step: the last key done, rows in its range
        (as far as known), rows changed in all, and whether it was the last batch."""
        db = self.db
        lower = f"{self.row} > {self.after}" if last is not None else "true"
        before: list[Any] = list(last) if last is not None else []
        db.execute(self.begin)
        try:
            row = db.one(self.steps[last is None], [*before, size - 1, *before, size, size, self.id, self.step])
            if row is not None:
                db.execute("COMMIT")
                return [str(v) for v in row[1]], size, int(row[0]), False
            final = self._last(lower, before, last, size)
            db.execute("COMMIT")
        except SqlFailure as failure:
            if failure.sqlstate == DEADLOCK:  # with the application's own updates: the budget retries it
                failure.sqlstate = "55P03"
            raise
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
        return final

    def _last(self, lower: str, before: list[Any], last: list[str] | None,
              size: int) -> tuple[list[str] | None, int, int, bool]:
        """The last batch: every row after the last key done (those inserted since the bound was read
        too), counted, and the journal marked done."""
        row = self.db.one(
            f"WITH done AS ({self.update} WHERE {lower}{self.where} RETURNING 1), "
            f"seen AS (SELECT count(*) AS n FROM {self.table} WHERE {lower}) "
            f"UPDATE {history.rel(self.db, 'backfills')} SET rows_done = rows_done + (SELECT count(*) FROM done), "
            "rows_scanned = rows_scanned + (SELECT n FROM seen), batches = batches + 1, batch_size = %s, "
            "updated_at = now(), throttled = NULL, state = 'done', finished_at = now() "
            "WHERE id = %s AND step = %s RETURNING rows_done, (SELECT n FROM seen)",
            [*before, *before, size, self.id, self.step])
        if row is None:
            raise MigrationError(f"the backfill journal of {self.id} step {self.step} is gone; see inv deploy.status")
        return last, int(row[1]), int(row[0]), True
