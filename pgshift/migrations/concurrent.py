"""Concurrent index builds (``CREATE INDEX CONCURRENTLY``, ``REINDEX ... CONCURRENTLY``): their own wait
budget, their retries, their progress and their leftovers.

Such a build waits, in several phases, for older transactions to end (the writers of the table, the
snapshots older than its own, the readers of an index it drops): waits on virtual transaction ids,
during which it holds only a lock that the application's reads and writes do not queue behind. So
these waits get their own budget, ``concurrent_wait_timeout`` for each try, instead of the table-lock
budget. A watcher on a second session follows the try: it cancels the statement
(``pg_cancel_backend``) once its waits for older transactions pass the budget, or once its wait for
the table lock itself passes ``lock_timeout``; it remembers whom the build waited for; and it reports
the phase and the blocks or tuples done from ``pg_stat_progress_create_index``. A cancelled try's
INVALID leftover (the index it built, or for a REINDEX the ``_ccnew``/``_ccold`` indexes) is dropped
and the statement retried after the usual growing, jittered pause, up to ``lock_retries`` times.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pgshift.databases.db import Database, SqlFailure
from pgshift.errors import LockTimeout, PgShiftError
from pgshift.migrations import sqltext
from pgshift.migrations.blockers import holding_up
from pgshift.migrations.budget import Limits, pause

Say = Callable[[str], None]

POLL = 0.1           # seconds between the watcher's looks at the build
REPORT_EVERY = 5.0   # seconds between progress lines, for a sink that writes lines
LIVE_EVERY = 0.5     # seconds between updates of the one line a live sink (a terminal) rewrites
BACKSTOP = 5.0       # seconds past the budget after which the server itself ends a wait the watcher missed
CANCELED = "57014"
# Waits for older transactions: on their virtual transaction ids, and then on the id of one that was
# prepared (two-phase) or, in a unique index's build, on a transaction inserting a conflicting row.
OLDER = ("virtualxid", "transactionid")

_STATE = (
    "SELECT a.wait_event_type, a.wait_event, p.phase, p.command, p.index_relid::regclass::text, "
    "p.blocks_done, p.blocks_total, p.tuples_done, p.tuples_total, p.lockers_done, p.lockers_total, "
    "p.current_locker_pid FROM pg_stat_activity a LEFT JOIN pg_stat_progress_create_index p ON p.pid = a.pid "
    "WHERE a.pid = %s")
_CANCEL = "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid = %s AND wait_event = %s"

# The INVALID indexes a failed REINDEX CONCURRENTLY left, that no running build is still working on.
_CC_LEFTOVERS = (
    "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
    "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_class t ON t.oid = i.indrelid "
    "WHERE NOT i.indisvalid AND c.relname ~ '_cc(new|old)[0-9]*$' "
    "AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.relation = i.indexrelid AND l.pid <> pg_backend_pid()) "
    "AND ({scope}) ORDER BY 1")
_SCOPES = {
    "index": "i.indrelid = (SELECT indrelid FROM pg_index WHERE indexrelid = to_regclass(%s))",
    "table": "t.oid = to_regclass(%s) OR t.oid = (SELECT reltoastrelid FROM pg_class WHERE oid = to_regclass(%s))",
    "schema": "t.relnamespace = to_regnamespace(%s) OR t.oid IN "
              "(SELECT reltoastrelid FROM pg_class WHERE relnamespace = to_regnamespace(%s))",
}


def handles(statement: sqltext.Statement) -> bool:
    """True for the statements run here: a concurrent index build or rebuild."""
    return not statement.transactional and statement.kind in ("IndexStmt", "ReindexStmt")


def command(statement: sqltext.Statement) -> str:
    return "REINDEX CONCURRENTLY" if statement.kind == "ReindexStmt" else "CREATE INDEX CONCURRENTLY"


def leftovers(db: Database, statement: sqltext.Statement) -> list[str]:
    """The INVALID indexes an earlier, failed or cancelled try of ``statement`` left behind."""
    if statement.kind == "IndexStmt":
        if not statement.indexes:
            return []
        row = db.one("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [statement.indexes[0]])
        return [statement.indexes[0]] if row is not None and not row[0] else []
    if statement.kind != "ReindexStmt":
        return []
    scope = _SCOPES.get(statement.reindex)
    if scope is None:  # a whole database: the leftovers anywhere in it
        return [name for name, in db.rows(_CC_LEFTOVERS.format(scope="true"))]
    if not statement.indexes:
        return []
    return [name for name, in db.rows(_CC_LEFTOVERS.format(scope=scope),
                                      [statement.indexes[0]] * scope.count("%s"))]


def drop_leftovers(db: Database, statement: sqltext.Statement) -> list[str]:
    """Drop what ``leftovers`` finds (each drop waits under the session's lock budget); the names dropped."""
    found = leftovers(db, statement)
    for name in found:
        db.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    return found


def settle(db: Database, statement: sqltext.Statement) -> bool:
    """Before a retry or on resume: drop the INVALID leftovers. True when the work is already done (the
    index a CREATE INDEX names exists and is valid); a REINDEX always runs again."""
    drop_leftovers(db, statement)
    if statement.kind == "IndexStmt" and statement.indexes:
        row = db.one("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", [statement.indexes[0]])
        return row is not None and bool(row[0])
    return False


def run(db: Database, statement: sqltext.Statement, limits: Limits, what: str, say: Say | None, *,
        settle_first: bool) -> int:
    """Run one concurrent build under its budgets, retrying a cancelled or timed-out try after dropping
    its leftovers. Returns the tries it took; raises LockTimeout naming the blockers when out of retries."""
    watch = Watch(db, limits, what, say)
    tries = 0
    try:
        while True:
            tries += 1
            try:
                # A REINDEX first drops what any failed one left, or it would rebuild those leftovers too
                if (settle_first or tries > 1 or statement.kind == "ReindexStmt") and settle(db, statement):
                    return tries
                _attempt(db, statement, limits, watch)
                return tries
            except SqlFailure as failure:
                reason = watch.why(failure)
                if reason is None:
                    raise
                if tries > limits.lock_retries:
                    raise LockTimeout(_gave_up(db, statement, limits, what, watch, reason, tries)) from None
                time.sleep(pause(limits, tries))
    finally:
        watch.stop()


def _attempt(db: Database, statement: sqltext.Statement, limits: Limits, watch: Watch) -> None:
    if not watch.connected:  # nobody to cancel it: the table-lock budget bounds every wait, as before
        db.execute(statement.text)
        return
    backstop = max(limits.lock_timeout, limits.concurrent_wait) + BACKSTOP
    db.execute(f"SET lock_timeout = '{int(backstop * 1000)}ms'")
    watch.arm(command(statement))
    try:
        db.execute(statement.text)
    finally:
        watch.disarm()
        db.execute(f"SET lock_timeout = '{int(limits.lock_timeout * 1000)}ms'")


def _gave_up(db: Database, statement: sqltext.Statement, limits: Limits, what: str, watch: Watch,
             reason: str, tries: int) -> str:
    try:
        dropped = drop_leftovers(db, statement)
        left = (f"its unfinished index {', '.join(dropped)} was dropped" if len(dropped) == 1 else
                f"its unfinished indexes {', '.join(dropped)} were dropped" if dropped else "it left no INVALID index")
    except PgShiftError as error:
        left = f"its INVALID leftover could not be dropped yet ({error}); the next run drops it"
    who = "; ".join(watch.seen.values()) or "sessions that could not be identified"
    if reason == "lock":
        return (f"{what}: could not get a table lock within {limits.lock_timeout:g}s, {tries} attempts; "
                f"blocked by {who}; {left}. End that session or retry when it is done")
    phases = ", ".join(sorted(watch.phases)) or "waiting for older transactions"
    return (f"{what}: {command(statement)} waited longer than concurrent_wait_timeout "
            f"({limits.concurrent_wait:g}s) for older transactions to end ({phases}), {tries} attempts; "
            f"held up by {who}; {left}. End those transactions (an idle one: SELECT pg_terminate_backend(pid)) "
            "or raise concurrent_wait_timeout, and run again")


class Watch:
    """A second session that follows each try of one concurrent build: cancels it past its budgets,
    names whom it waited for, and reports its progress to ``say``."""

    def __init__(self, db: Database, limits: Limits, what: str, say: Say | None) -> None:
        self.seen: dict[int, str] = {}   # pid -> description, of every session a try waited for
        self.phases: set[str] = set()    # the phases in which a try was cancelled for waiting too long
        self.reason: str | None = None   # why the watcher cancelled the current try: "wait" or "lock"
        # The server's own pid: behind a pooler the connection's idea of it may be the pooler's.
        pid = db.one("SELECT pg_backend_pid()")
        self._pid = int(pid[0]) if pid else db.pid
        self._limits, self._what, self._say = limits, what, say
        self._live = _live_of(say)
        self._every = LIVE_EVERY if self._live else REPORT_EVERY
        self._armed = False
        self._busy = threading.Lock()  # held while a look is under way: disarm waits for it
        self._stop = threading.Event()
        self._last_wait = ""
        try:
            self._db: Database | None = db.companion()  # one per applying session, not per build
        except PgShiftError:
            self._db = None
            return
        self._thread = threading.Thread(target=self._run, name="pgshift-concurrent", daemon=True)
        self._thread.start()

    @property
    def connected(self) -> bool:
        return self._db is not None

    def arm(self, command: str) -> None:
        with self._busy:
            self.reason, self._last_wait, self._command = None, "", command
            self._waited = self._lock_waited = 0.0
            self._started = self._tick = self._reported = time.monotonic()
            self._shown = False
            self._armed = True

    def disarm(self) -> None:
        with self._busy:
            self._armed = False
            if self._shown and self._live is not None:
                self._live("")  # the live line cleared
                self._shown = False

    def why(self, failure: SqlFailure) -> str | None:
        """Why a try failed, if for a budget: "wait" (older transactions), "lock" (the table lock)."""
        if failure.sqlstate == CANCELED:
            return self.reason
        if failure.lock_timeout:  # the backstop, or a leftover's drop that waited too long
            return "wait" if self._last_wait in OLDER else "lock"
        return None

    def stop(self) -> None:
        self._stop.set()
        if self._db is not None:
            self._thread.join(timeout=5)  # the session stays open for the next build (the companion's)

    def _run(self) -> None:
        while not self._stop.wait(POLL):
            with self._busy:
                if not self._armed:
                    continue
                try:
                    self._look()
                except PgShiftError:
                    return  # the watcher's session is gone: the backstop still ends a wait

    def _look(self) -> None:
        assert self._db is not None
        row = self._db.one(_STATE, [self._pid])
        now = time.monotonic()
        step, self._tick = now - self._tick, now
        if row is None:
            return
        wait_type, wait_event, phase = row[0], row[1], row[2]
        self._last_wait = wait_event or ""
        if wait_type == "Lock" and wait_event in (*OLDER, "relation"):
            self.seen.update(holding_up(self._db, self._pid))
        if wait_type == "Lock" and wait_event in OLDER:
            self._waited += step
            if self._waited > self._limits.concurrent_wait:
                self._cancel("wait", wait_event, phase)
        elif wait_type == "Lock" and wait_event == "relation":
            self._lock_waited += step
            if self._lock_waited > self._limits.lock_timeout:
                self._cancel("lock", wait_event, phase)
        else:
            self._lock_waited = 0.0
        if phase is not None and self._say is not None and now - self._reported >= self._every:
            self._reported = now
            self._report(line(self._what, self._command, now - self._started, phase, row[4:]))

    def _cancel(self, reason: str, wait_event: str, phase: str | None) -> None:
        assert self._db is not None
        self.reason = reason
        if not self._db.rows(_CANCEL, [self._pid, wait_event]):
            self.reason = None  # it stopped waiting meanwhile
        elif reason == "wait" and phase:
            self.phases.add(phase)

    def _report(self, text: str) -> None:
        if self._live is not None:
            self._live(text)
            self._shown = True
        elif self._say is not None:
            self._say(text)


def line(what: str, command: str, elapsed: float, phase: str, progress: tuple[Any, ...]) -> str:
    """One progress line: the phase, and the blocks, tuples or older transactions done of their total."""
    index, blocks_done, blocks_total, tuples_done, tuples_total, lockers_done, lockers_total, locker = progress
    parts = [phase]
    for name, done, total in (("blocks", blocks_done, blocks_total), ("tuples", tuples_done, tuples_total),
                              ("older transactions", lockers_done, lockers_total)):
        if total:
            parts.append(f"{name} {done} of {total} ({100 * done // total}%)")
    if locker:
        parts.append(f"waiting for pid {locker}")
    return f"{what}: {command} {index or ''}: {', '.join(parts)}, {elapsed:.0f} s"


def _live_of(say: Say | None) -> Say | None:
    """A sink that can rewrite one line (a terminal) offers it as ``say.live``."""
    live = getattr(say, "live", None)
    return live if callable(live) else None
