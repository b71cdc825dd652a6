"""backward: every migration's rollback must restore the schema exactly, and the migration re-apply.

One pass, oldest first, linear in the number of migrations. Each migration is applied (committed,
the way deploys apply it) with a snapshot before and after; then, while it is the newest applied,
its round trip: roll back, compare with the snapshot before; re-apply, compare with the snapshot
after. When the migration and its rollback run in transactions, the round trip runs inside one
transaction that is then rolled back, so a broken rollback leaves nothing to repair and the walk goes
on at once. A round trip that must commit (CONCURRENTLY) ends with the migration applied again; when
it fails, the walk goes on from a copy of the scratch database saved on the way (one every
``_Scratch.EVERY`` migrations) plus at most that many migrations. One run finds every broken rollback.

A phased migration (``-- pgshift: expand`` ...) round-trips each way out of its window, reported per
phase: expand then abort, expand then the rollback file, and expand, backfill, validate, contract then
the rollback file, each back to the schema before it; then expanded again, the way deploys leave it.

A migration with a ``-- forward_only: true`` header has no rollback by design: it is skipped by
name; so is a baseline, whose rollback file refuses. Everything after either is still tested.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from pgshift.checks.forward import apply_one
from pgshift.databases import snapshot, throwaway
from pgshift.databases.db import Database, SqlFailure
from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError, PgShiftError
from pgshift.migrations import apply, phases, refusal, sqltext, window
from pgshift.migrations.source import Migration

FORWARD_ONLY = "forward-only ('-- forward_only: true'): no rollback by design"
FORWARD_ONLY_HISTORY = "forward-only (config pgshift.forward_only: true): no rollbacks by design"


@dataclass(frozen=True)
class RoundTrip:
    id: str
    file: str                     # the rollback file
    state: str                    # ok | failed | not tested | skipped (forward-only, or a refused rollback)
    problem: str | None = None
    diff: list[str] = field(default_factory=list)
    rollback_ms: int | None = None
    reapply_ms: int | None = None
    phase: str | None = None      # a phased migration's: abort | rollback after expand | rollback after contract


@dataclass(frozen=True)
class BackwardReport:
    trips: list[RoundTrip] = field(default_factory=list)
    note: str | None = None       # e.g. migrations left out because one does not apply

    @property
    def ok(self) -> bool:
        return not any(t.state == "failed" for t in self.trips)

    def summary(self) -> str:
        failed = [t for t in self.trips if t.state == "failed"]
        tested = sum(1 for t in self.trips if t.state not in ("not tested", "skipped"))
        if failed:
            first = failed[0]
            where = f" ({first.phase})" if first.phase else ""
            return f"{len(failed)} of {tested} rollback(s) fail; first: {first.file}{where}: {first.problem}"
        phased = sorted({t.id for t in self.trips if t.phase})
        tested = len({t.id for t in self.trips if t.state not in ("not tested", "skipped")})
        text = f"{tested} migration(s) round-trip (up, down, up) exactly"
        if phased:
            text += (f", {len(phased)} phased one(s) by phase (expand then abort, expand then rollback, "
                     "contract then rollback)")
        forward = (FORWARD_ONLY, FORWARD_ONLY_HISTORY)
        one_way = [t.id for t in self.trips if t.state == "skipped" and t.problem in forward]
        skipped = [t.id for t in self.trips if t.state == "skipped" and t.problem not in forward]
        if one_way:
            text += f"; skipped: forward-only: {len(one_way)} migration(s), newest {one_way[0]}"
        if skipped:
            text += f"; skipped {', '.join(skipped)} (rollback refused: a baseline)"
        return f"{text}; {self.note}" if self.note else text

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "summary": self.summary(), "note": self.note,
                "trips": [asdict(t) for t in self.trips]}


class _Scratch:
    """The scratch database the walk runs on, and copies of it saved every ``EVERY`` migrations on
    the way up (while a round trip that must commit lies ahead): reaching any earlier state is a copy
    of the nearest saved one and at most ``EVERY - 1`` migrations applied, never a replay from empty."""

    EVERY = 16

    def __init__(self, admin: DatabaseUrl, migrations: list[Migration], limits: apply.Limits) -> None:
        self.admin, self.migrations, self.limits = admin, migrations, limits
        self._saved_stack = contextlib.ExitStack()
        self._saved: dict[int, str] = {}   # migrations applied -> a database holding that state
        self._stack = contextlib.ExitStack()
        self._open(throwaway.empty(self.admin))

    def _open(self, database: contextlib.AbstractContextManager[DatabaseUrl]) -> None:
        try:
            self.url = self._stack.enter_context(database)
            self._connect()
        except BaseException:
            self._stack.close()  # the database just made is dropped again
            raise

    def _connect(self) -> None:
        self._conn = contextlib.ExitStack()
        self.db = self._conn.enter_context(Database.connect(self.url))
        self._stack.callback(self._conn.close)

    @contextlib.contextmanager
    def _copy(self, source: str) -> Iterator[DatabaseUrl]:
        """A copy of ``source`` (which no session may be on), dropped when the block ends. Copied block
        by block (the server's default strategy): a checkpoint per copy would cost more than the copy."""
        database = throwaway.name("scratch")
        with Database.connect(self.admin) as server:
            throwaway.create(server, database, template=source)
        try:
            yield self.admin.with_dbname(database)
        finally:
            with contextlib.suppress(PgShiftError), Database.connect(self.admin) as server:
                throwaway.drop(server, database)

    def save(self, count: int) -> None:
        """Keep a copy of the database as it is now: ``count`` migrations applied."""
        self._conn.close()  # a template must have no session
        try:
            self._saved[count] = self._saved_stack.enter_context(self._copy(self.url.dbname)).dbname
        finally:
            self._connect()

    def rebuild(self, applied: list[Migration], count: int) -> None:
        """The database with the first ``count`` of ``applied`` applied (and nothing else)."""
        base = max((c for c in self._saved if c <= count), default=0)
        self._stack.close()
        self._stack = contextlib.ExitStack()
        self._open(self._copy(self._saved[base]) if base else throwaway.empty(self.admin))
        if count > base:
            apply.apply(self.db, self.migrations, self.limits, upto=applied[count - 1].id)

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            self._saved_stack.close()


def take(db: Database) -> snapshot.Snapshot:
    """The snapshot as the default search path prints it: a migration's ``SET search_path`` lasts for
    the session (or the transaction), and would otherwise change how every definition reads."""
    db.execute("RESET search_path")
    return snapshot.take(db)


_COLUMNS = re.compile(r"columns \((?P<names>[^)]*)\)")


def by_name(snap: snapshot.Snapshot) -> snapshot.Snapshot:
    """The snapshot with each table's column list sorted: a rollback that re-adds a column puts it last."""

    def sort(match: re.Match[str]) -> str:
        return "columns (" + ", ".join(sorted(match.group("names").split(", "))) + ")"

    return snapshot.Snapshot({k: _COLUMNS.sub(sort, v) if k.startswith("table ") else v
                              for k, v in snap.objects.items()})


ORDER_NOTE = "column order differs after the round trip (a re-added column goes last); --strict-order fails it"


def _differs(expected: snapshot.Snapshot, now: snapshot.Snapshot, strict: bool) -> tuple[list[str], bool]:
    """The differences that fail the trip, and whether column order alone differs (a note, unless
    ``strict``, where it is a difference)."""
    if strict:
        return snapshot.diff(expected, now), False
    changed = snapshot.diff(by_name(expected), by_name(now))
    return changed, not changed and bool(snapshot.diff(expected, now))


def _rollback_file(m: Migration) -> str:
    return m.rollback_path.name if m.rollback_path else f"{m.id}.rollback.sql"


def round_trip(db: Database, migrations: list[Migration], m: Migration, limits: apply.Limits,
               before: snapshot.Snapshot, after: snapshot.Snapshot, strict: bool = False) -> RoundTrip:
    """Down, compare with ``before``; up, compare with ``after``; down again. ``m`` is the newest applied.

    On "ok" the database is back where it was before ``m``; on "failed" its state is unknown."""
    name = _rollback_file(m)
    if m.forward_only:
        return RoundTrip(m.id, name, "skipped", FORWARD_ONLY_HISTORY if m.one_way else FORWARD_ONLY)
    if refusal.refused(m) is not None:  # a baseline: no down by design; the walk stops at it
        return RoundTrip(m.id, name, "skipped", f"its rollback is refused: {refusal.refused(m)}")
    if m.rollback_path is None:
        return RoundTrip(m.id, name, "failed", f"no rollback file: write migrations/{name}")
    try:
        down_ms = apply.rollback(db, m, limits)
    except MigrationError as error:
        return RoundTrip(m.id, name, "failed", f"the rollback fails: {error}")
    changed, reordered = _differs(before, take(db), strict)
    if changed:
        return RoundTrip(m.id, name, "failed",
                         f"after the rollback the schema differs from before {m.path.name} ({len(changed)} "
                         "difference(s); '-' is missing, '+' was left behind)", changed, down_ms)
    try:
        up_ms = apply_one(db, migrations, m, limits).duration_ms
    except MigrationError as error:
        return RoundTrip(m.id, name, "failed", f"{m.path.name} does not apply again after its rollback: {error}",
                         rollback_ms=down_ms)
    changed, again = _differs(after, take(db), strict)
    if changed:
        return RoundTrip(m.id, name, "failed",
                         f"{m.path.name} applied again after its rollback gives a different schema", changed,
                         down_ms, up_ms)
    try:
        apply.rollback(db, m, limits)
    except MigrationError as error:
        return RoundTrip(m.id, name, "failed", f"the rollback fails the second time: {error}", [], down_ms, up_ms)
    return RoundTrip(m.id, name, "ok", ORDER_NOTE if reordered or again else None, rollback_ms=down_ms,
                     reapply_ms=up_ms)


def _one_transaction(m: Migration) -> bool:
    """Whether the migration and its rollback both run inside one transaction block."""
    if m.forced_transactional is False:
        return False
    sql = m.rollback_sql() or ""
    try:
        return all(not sqltext.may_need_parse(text) or all(s.transactional for s in sqltext.statements(text, name))
                   for text, name in ((m.sql, m.path.name), (sql, _rollback_file(m))))
    except MigrationError:  # a rollback that does not parse: the committed path reports it
        return False


def _where(name: str, sql: str, failure: SqlFailure, offset: int = 0) -> str:
    return f"{name}, line {sqltext.line_of(sql, failure.position - offset)}" if failure.position else name


def _trip_in_transaction(db: Database, m: Migration, limits: apply.Limits, before: snapshot.Snapshot,
                         after: snapshot.Snapshot, strict: bool = False) -> RoundTrip:
    """Down, compare with ``before``; up, compare with ``after``: inside one transaction that is then
    rolled back, so whatever happens the database is left as it was, ``m`` applied."""
    name = _rollback_file(m)
    sql = m.rollback_sql() or ""
    prefix = f"RESET ALL; BEGIN; {apply.settings_sql(limits, local=True)}\n"
    immediate = "\n;\nSET CONSTRAINTS ALL IMMEDIATE;"  # deferred checks fire here, as at a COMMIT
    try:
        started = time.monotonic()
        try:
            db.execute(f"{prefix}{sql}{immediate}")
        except SqlFailure as failure:
            return RoundTrip(m.id, name, "failed", f"the rollback fails: {_where(name, sql, failure, len(prefix))}: "
                             f"{failure}; nothing of the rollback was applied")
        down_ms = int((time.monotonic() - started) * 1000)
        changed, reordered = _differs(before, take(db), strict)
        if changed:
            return RoundTrip(m.id, name, "failed",
                             f"after the rollback the schema differs from before {m.path.name} ({len(changed)} "
                             "difference(s); '-' is missing, '+' was left behind)", changed, down_ms)
        started = time.monotonic()
        try:
            db.execute(f"{m.sql}{immediate}")
        except SqlFailure as failure:
            return RoundTrip(m.id, name, "failed", f"{m.path.name} does not apply again after its rollback: "
                             f"{_where(m.path.name, m.sql, failure)}: {failure}", rollback_ms=down_ms)
        up_ms = int((time.monotonic() - started) * 1000)
        changed, again = _differs(after, take(db), strict)
        if changed:
            return RoundTrip(m.id, name, "failed",
                             f"{m.path.name} applied again after its rollback gives a different schema", changed,
                             down_ms, up_ms)
        return RoundTrip(m.id, name, "ok", ORDER_NOTE if reordered or again else None, rollback_ms=down_ms,
                         reapply_ms=up_ms)
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")


def phase_trips(db: Database, migrations: list[Migration], m: Migration, limits: apply.Limits,
                before: snapshot.Snapshot, after: snapshot.Snapshot, strict: bool = False) -> list[RoundTrip]:
    """The trips of a phased migration ``m``, the newest applied (expanded): abort; the rollback file
    after the expand; contract, then the rollback file. Each compares with ``before``, and the expand
    again with ``after``. On success the database is left as it came (``m`` expanded); else unknown."""
    name = m.path.name
    trips: list[RoundTrip] = []

    def back(phase: str, file: str, undo: Callable[[], object], what: str) -> bool:
        started = time.monotonic()
        try:
            undo()
        except PgShiftError as error:
            trips.append(RoundTrip(m.id, file, "failed", f"{phase} fails: {error}", phase=phase))
            return False
        down_ms = int((time.monotonic() - started) * 1000)
        changed, _ = _differs(before, take(db), strict)
        if changed:
            trips.append(RoundTrip(m.id, file, "failed", f"after {what} the schema differs from "
                                   f"before {name} ({len(changed)} difference(s); '-' is missing, '+' was left "
                                   "behind)", changed, down_ms, phase=phase))
            return False
        started = time.monotonic()
        try:
            apply_one(db, migrations, m, limits)
        except MigrationError as error:
            trips.append(RoundTrip(m.id, file, "failed", f"{name} does not expand again after {phase}: {error}",
                                   rollback_ms=down_ms, phase=phase))
            return False
        up_ms = int((time.monotonic() - started) * 1000)
        changed, _ = _differs(after, take(db), strict)
        if changed:
            trips.append(RoundTrip(m.id, file, "failed", f"{name} expanded again after {phase} gives a different "
                                   "schema", changed, down_ms, up_ms, phase=phase))
            return False
        trips.append(RoundTrip(m.id, file, "ok", None, [], down_ms, up_ms, phase=phase))
        return True

    def complete_then_rollback() -> None:
        # A scratch copy: its own statements (a rehearsal's measuring) are no evidence of an old release.
        window.complete(db, migrations, limits, old_release="", only=m.id, force=True,
                        reason="round trip on a scratch copy")
        apply.rollback(db, m, limits)

    rollback = _rollback_file(m)
    if not back("abort", f"{name} (abort)", lambda: window.abort(db, migrations, limits, only=m.id),
                "the expand then deploy.abort"):
        return trips
    if m.rollback_path is None:
        trips.append(RoundTrip(m.id, rollback, "failed", f"no rollback file: write migrations/{rollback}",
                               phase="rollback after expand"))
        return trips
    if not back("rollback after expand", rollback, lambda: apply.rollback(db, m, limits),
                "the expand then the rollback file"):
        return trips
    back("rollback after contract", rollback, complete_then_rollback,
         "the expand, backfill, contract then the rollback file")
    return trips


def _trip(work: _Scratch, applied: list[Migration], limits: apply.Limits, before: snapshot.Snapshot,
          after: snapshot.Snapshot, strict: bool = False) -> RoundTrip | list[RoundTrip]:
    """The round trip of the newest of ``applied``; the scratch database is left with all of them applied."""
    m = applied[-1]
    if m.rollback_path is None and sqltext.is_empty(m.sql):  # a placeholder: nothing to undo, nothing to write
        return RoundTrip(m.id, _rollback_file(m), "ok")
    if m.forward_only or refusal.refused(m) is not None or m.rollback_path is None:
        return round_trip(work.db, work.migrations, m, limits, before, after)  # named without running anything
    if phases.has_phases(m.sql):  # its sections run apart, never the file at once
        trips = phase_trips(work.db, work.migrations, m, limits, before, after, strict)
        if any(t.state != "ok" for t in trips):
            work.rebuild(applied, len(applied))
        return trips
    if _one_transaction(m):
        return _trip_in_transaction(work.db, m, limits, before, after, strict)
    trip = round_trip(work.db, work.migrations, m, limits, before, after, strict)  # statement by statement
    if trip.state == "ok":
        apply_one(work.db, work.migrations, m, limits)  # back up to where the walk is
    else:
        work.rebuild(applied, len(applied))
    return trip


def run(admin: DatabaseUrl, migrations: list[Migration], limits: apply.Limits,
        strict_order: bool = False) -> BackwardReport:
    """Round-trip every migration on a scratch database on ``admin``'s server. Columns are compared by
    name (a changed order is a note on the trip); ``strict_order``: order counts too."""
    runnable = [m for m in migrations if not m.empty]
    work = _Scratch(admin, migrations, limits)
    try:
        before = take(work.db)
        applied: list[Migration] = []
        trips: list[RoundTrip] = []
        note = None
        # Copies are only ever needed by a round trip that must commit (CONCURRENTLY): none ahead, none saved.
        last_committing = max((i for i, m in enumerate(runnable) if not _one_transaction(m)), default=-1)
        for m in runnable:
            try:
                apply_one(work.db, migrations, m, limits)
            except MigrationError:
                note = f"{m.path.name} and later are not tested: it does not apply (see forward)"
                trips += [RoundTrip(o.id, _rollback_file(o), "not tested") for o in runnable[len(applied):]]
                break
            applied.append(m)
            after = take(work.db)
            trip = _trip(work, applied, limits, before, after, strict_order)
            trips.extend(trip if isinstance(trip, list) else [trip])
            before = after
            if len(applied) % work.EVERY == 0 and len(applied) <= last_committing:
                work.save(len(applied))
        return BackwardReport(sorted(trips, key=lambda t: t.id, reverse=True), note)
    finally:
        work.close()
