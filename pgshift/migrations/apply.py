"""Applying and rolling back migrations, crash-safe.

* A transactional migration is sent as one script: ``BEGIN``, session limits, its SQL, the record
  row, ``COMMIT``. The effect and the record commit together or not at all; a killed process leaves
  nothing, and its advisory lock dies with its connection.
* A migration with statements that refuse a transaction block runs statement by statement. Plain
  statements still commit together with their journal step; a non-transactional one is followed by
  its journal step, and on resume after a crash it is first settled (a half-built index is dropped
  and rebuilt, one already built is kept).
* Consecutive transactional migrations never tried before go to the server together, up to
  ``BATCH_SIZE`` per message: each still in its own transaction with its own record, so the server
  runs them as it would one by one, without a round trip and a wait on the client between them.
  After a failure the record tells which committed; the failed one is reported, or retried alone.
* Every commit but the last of a run is asynchronous (``synchronous_commit = off``). Each one is still
  atomic; the final synchronous commit flushes the log up to it, so a finished run is durable, and a
  server crash mid-run loses only whole migrations, which the next run re-applies.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from pgshift.databases.db import Database, SqlFailure
from pgshift.errors import ChecksumMismatch, ConfigError, LockTimeout, MigrationError, PgShiftError
from pgshift.migrations import backfill, gate, history, phases, sqltext, squashed, stepwise, txmode, validate
from pgshift.migrations.budget import Limits, retrying, settings_sql
from pgshift.migrations.lock import migration_lock
from pgshift.migrations.source import Migration

__all__ = ["Applied", "ApplyResult", "Limits", "Pending", "apply", "rollback", "settings_sql", "verify"]

Progress = Callable[[str], None]

# The value types below are named tuples rather than dataclasses: building a dataclass costs about a
# millisecond at import, and every dev.migrate imports this module.


class Applied(NamedTuple):
    id: str
    duration_ms: int
    transactional: bool
    attempts: int = 1


class ApplyResult(NamedTuple):
    applied: list[Applied]
    empty: list[str]  # pending files with no statement yet: never applied


class Pending(NamedTuple):
    migration: Migration
    record: history.Record | None  # a failed or interrupted earlier attempt


_failpoint = stepwise.failpoint  # crash-test hook names: ``locked``, ``committed:<id>``, and inside a
# migration run statement by statement ``executed:<id>:<n>`` and ``journaled:<id>:<n>``
# (PGSHIFT_FAILPOINT=<name> dies by SIGKILL there)
UNSAFE_NEW_VALUE = "55P04"  # a new enum value used in the transaction that added it


def verify(migrations: list[Migration], records: dict[str, history.Record]) -> list[Pending]:
    """Check every applied migration against its file; return what is left to apply, in order."""
    files = {m.id: m for m in migrations}
    records = squashed.mapped(migrations, records)
    for rec in records.values():
        if rec.state != "applied":
            if rec.id not in files and not rec.transactional and rec.statements_done:
                raise MigrationError(f"{rec.id} {history.stopped_without_file(rec)}")
            continue
        found = files.get(rec.id)
        if found is None:
            raise MigrationError(squashed.stranded(migrations, rec.id) or (
                f"{rec.id} is recorded as applied but migrations/{rec.id}.sql is missing; "
                "restore the file from version control"))
        if found.checksum != rec.checksum:
            raise ChecksumMismatch(
                f"{found.path.name} was edited after it was applied on {rec.applied_at:%Y-%m-%d %H:%M}; "
                f"restore it (git checkout -- {_from_repo_root(found.path)}) and put the change in a new migration")
    left: list[Pending] = []
    for m in migrations:
        record = records.get(m.id)
        if record is None or record.state != "applied":
            left.append(Pending(m, record))
    return left


def _from_repo_root(path: Path) -> str:
    """``path`` as git names it from the top of its work tree (the folder holding ``.git``)."""
    for folder in path.resolve().parents:
        if (folder / ".git").exists():
            return path.resolve().relative_to(folder).as_posix()
    return str(path)


def apply(db: Database, migrations: list[Migration], limits: Limits, *, upto: str | None = None,
          progress: Progress | None = None, watch: backfill.Watch | None = None) -> ApplyResult:
    """Apply every pending migration (up to and including ``upto``) under the migration lock; the
    backfills of phased ones report to ``watch`` too, when given."""
    say = progress or (lambda _msg: None)
    if upto is not None and upto not in {m.id for m in migrations}:  # before anything is written
        raise ConfigError(f"--to {upto}: no such migration; see inv status for the ids")
    with migration_lock(db, limits.lock_wait, progress):
        _failpoint("locked")
        records = history.records(db)
        if not records:  # a first run: create the record table (one round trip saved on every other run)
            history.ensure(db)
        settle = squashed.settle_sql(db, migrations, records)
        if settle is not None:  # it applied what a squash replaces: record the squash instead
            db.execute(f"BEGIN; {settle} COMMIT;")
            records = history.records(db)
        pending = verify(migrations, records)
        if upto is not None:
            pending = [p for p in pending if p.migration.id <= upto]
        runnable = [p for p in pending if not p.migration.empty]
        phased = any(phases.has_phases(m.sql) for m in migrations)
        if phased and runnable:  # a phased file runs its expand section; none may touch what an open one touches
            phases.ensure(db)
            phases.refuse_overlap(db, [p.migration for p in runnable])
            runnable = [Pending(phases.runnable(db, p.migration), p.record) for p in runnable]
        done: list[Applied] = []
        index = 0
        while index < len(runnable):
            batch = _batch(runnable, index)
            for item in batch:
                say(f"applying {item.migration.id}")
            try:
                failure: SqlFailure | None = None
                if len(batch) > 1:
                    end = index + len(batch) == len(runnable)
                    applied, failed, failure = _apply_batch(db, batch, limits, durable=end)
                else:
                    applied, failed = [], batch[0]
                for one in applied:
                    done.append(one)
                    _failpoint(f"committed:{one.id}")
                    say(f"applied {one.id} in {one.duration_ms} ms")
                index += len(applied)
                if failed is not None:
                    index += 1
                    if failure is not None and not failure.lock_timeout and failure.sqlstate != "25001":
                        error = _explain_transactional(db, failed.migration, failure, limits)
                        _record_failure(db, failed.migration, transactional=True, error=str(error))
                        raise error
                    # Alone, the one-migration path applies it, retrying a lock timeout or running a
                    # statement that refuses a transaction outside one. What a failed batch did not
                    # reach is batched again on the next round.
                    done.append(_apply_one(db, failed, limits, durable=index == len(runnable), say=progress))
                    _failpoint(f"committed:{failed.migration.id}")
                    say(f"applied {failed.migration.id} in {done[-1].duration_ms} ms")
            except PgShiftError as error:
                # Those commits were asynchronous; the failure record written since was not, and
                # flushing it flushed them: what is reported as applied is durable.
                error.applied_before = tuple(a.id for a in done)
                raise
        if phased:  # the backfills of phased files applied now, or of an earlier run that stopped
            backfill.run_open(db, migrations, limits, say, watch)
            validate.run_open(db, migrations, limits, say)  # each statement alone, once the rows are filled
            gate.look_open(db, migrations)  # what the contract gate compares pg_stat_statements with
        return ApplyResult(applied=done, empty=[p.migration.id for p in pending if p.migration.empty])


BATCH_SIZE = 50             # migrations per message at most
BATCH_CHARS = 1_000_000     # and this much SQL: a big file goes alone


def _batch(runnable: list[Pending], start: int) -> list[Pending]:
    """The migrations from ``start`` on that can share one message: transactional, never tried."""
    batch: list[Pending] = []
    size = 0
    for item in runnable[start:start + BATCH_SIZE]:
        m = item.migration
        plain = item.record is None and m.forced_transactional is None and not m.may_need_parse
        size += len(m.sql)
        if not plain or (batch and size > BATCH_CHARS):
            break
        batch.append(item)
    return batch or runnable[start:start + 1]


def _apply_batch(db: Database, batch: list[Pending], limits: Limits,
                 durable: bool) -> tuple[list[Applied], Pending | None, SqlFailure | None]:
    """Send ``batch`` as one message. Returns what committed, then the migration it stopped at (if
    it did) and that migration's failure, its position made relative to the migration's SQL."""
    message: list[str] = []
    spans: list[tuple[int, int, int]] = []  # each migration's part of the message: start, its SQL, end
    length = 0
    for n, item in enumerate(batch):
        prefix, part = _script(db, item.migration, limits, durable=durable and n == len(batch) - 1)
        spans.append((length, length + len(prefix), length + len(part)))
        length += len(part)
        message.append(part)
    failure: SqlFailure | None = None
    try:
        db.execute("".join(message))
    except SqlFailure as error:
        failure = error
    ids = [item.migration.id for item in batch]
    took = dict(db.rows(f"SELECT id, duration_ms FROM {history.rel(db, 'migrations')} WHERE id = ANY(%s)", [ids]))
    applied = [Applied(i, int(took[i] or 0), transactional=True) for i in ids if i in took]
    if failure is None:
        return applied, None, None
    # The message stops at the first error and each record commits with its migration, so the first
    # migration without a record is where it stopped. The error is that migration's, unless it points
    # elsewhere: a syntax error anywhere rejects the whole message before any of it runs. Then the
    # migration is handed back without an error, to be applied alone, and the rest batched again.
    stopped = len(applied)
    start, sql_start, end = spans[stopped]
    if failure.position is not None:
        if not start < failure.position <= end:
            return applied, batch[stopped], None
        failure.position -= sql_start
    return applied, batch[stopped], failure


def _apply_one(db: Database, item: Pending, limits: Limits, durable: bool,
               say: Progress | None = None) -> Applied:
    migration = item.migration
    if isinstance(migration, phases.Expanding):  # an expand phase: the application runs on, a tight budget
        limits = limits.for_phases()
    mode = txmode.of(migration.sql, migration.path.name, may_need_parse=migration.may_need_parse)
    if mode.statements is not None:
        return _apply_statements(db, item, limits, mode.statements, say)
    try:
        elapsed, tries = retrying(db, limits, migration.path.name,
                                  lambda: _apply_script(db, migration, limits, durable))
        return Applied(migration.id, elapsed, transactional=True, attempts=tries)
    except LockTimeout as timeout:
        _record_failure(db, migration, transactional=True, error=f"{timeout}; nothing of it was applied")
        raise LockTimeout(f"{timeout}; nothing of it was applied") from None
    except SqlFailure as failure:
        if failure.sqlstate in ("25001", UNSAFE_NEW_VALUE) and migration.forced_transactional is None:
            # The server says a statement cannot run in a transaction block, or an enum value is used
            # before its commit, though the quick scan saw no sign of either (an odd string escape can
            # hide one): trust the server, run it split.
            return _apply_statements(db, item, limits,
                                     sqltext.statements(migration.sql, migration.path.name), say)
        error = _explain_transactional(db, migration, failure, limits)
        _record_failure(db, migration, transactional=True, error=str(error))
        raise error from None


def _script(db: Database, migration: Migration, limits: Limits, durable: bool) -> tuple[str, str]:
    """A transactional migration as the script that applies it: its prefix, and the whole script.

    One statement, not four, sets the limits and notes the start (the duration is measured from it,
    since a batch shares one statement_timestamp()); the record commits with the migration."""
    if isinstance(migration, phases.Expanding):
        limits = limits.for_phases()
    sync = "" if durable else ", set_config('synchronous_commit', 'off', true)"
    prefix = (f"RESET ALL; BEGIN; SELECT set_config('lock_timeout', '{int(limits.lock_timeout * 1000)}ms', true), "
              f"set_config('statement_timeout', '{int(limits.statement_timeout * 1000)}ms', true){sync}, "
              f"{history.NOTE_START};\n")
    record = history.upsert_sql(db, id=migration.id, checksum=migration.checksum, state="applied",
                                duration_ms=history.SINCE_NOTED_MS, transactional=True)
    return prefix, f"{prefix}{migration.sql}\n;\n{record};\nCOMMIT;\n"


def _apply_script(db: Database, migration: Migration, limits: Limits, durable: bool) -> int:
    prefix, script = _script(db, migration, limits, durable)
    started = time.monotonic()
    try:
        db.execute(script)
    except SqlFailure as failure:
        if failure.position is not None:
            failure.position -= len(prefix)
        raise
    return int((time.monotonic() - started) * 1000)


def _apply_statements(db: Database, item: Pending, limits: Limits,
                      statements: list[sqltext.Statement], say: Progress | None = None) -> Applied:
    migration = item.migration
    hashes = [stepwise.digest(s) for s in statements]
    start, resumed = 0, False
    rec = item.record
    if rec is not None and not rec.transactional:
        # An earlier run journaled up to here and stopped: the statement it stopped at may have run, or
        # half-run (a killed CREATE INDEX CONCURRENTLY leaves an INVALID index), whatever its position.
        start = rec.statements_done
        if list(rec.done_hashes) != hashes[:start]:
            raise MigrationError(
                f"{migration.path.name} stopped after statement {start} of {rec.statements_total}, and the "
                f"statements already run were edited since; restore them, or undo statements 1-{start} "
                f"by hand and DELETE FROM {history.rel(db, 'migrations')} WHERE id = '{migration.id}'")
        resumed = True
    started = time.monotonic()
    where = f"WHERE id = {db.literal(migration.id)}"
    db.execute(history.upsert_sql(db, id=migration.id, checksum=migration.checksum, state="running",
                                  duration_ms=None, transactional=False, total=len(statements),
                                  done=start, hashes=tuple(hashes[:start])))
    journal = stepwise.Journal(
        step=lambda n: (f"UPDATE {history.rel(db, 'migrations')} SET statements_done = {n}, "
                        f"done_hashes = done_hashes || {db.literal(hashes[n - 1])}::text {where}"),
        executed=f"executed:{migration.id}", journaled=f"journaled:{migration.id}")
    ran = stepwise.run(db, statements, limits, journal, start=start, resumed=resumed, what=migration.path.name,
                       progress=say)
    stopped = ran.stopped
    if stopped is not None:
        _record_failure(db, migration, transactional=False, error=str(stopped.error))
        if isinstance(stopped.error, SqlFailure):
            raise _explain(migration, stopped.error, statement=stopped.statement, done=stopped.at,
                           total=len(statements)) from None
        raise type(stopped.error)(f"{stopped.error}; {_left(stopped.at, len(statements))}") from None
    elapsed = int((time.monotonic() - started) * 1000)
    db.execute(f"UPDATE {history.rel(db, 'migrations')} SET state = 'applied', error = NULL, applied_at = now(), "
               f"duration_ms = {elapsed} {where}")
    return Applied(migration.id, elapsed, transactional=False, attempts=ran.attempts)


def _left(done: int, total: int) -> str:
    return (f"statements 1-{done} of {total} stay applied and recorded; fix the file from statement "
            f"{done + 1} on and run again to resume") if done else "nothing of it was applied"


def _record_failure(db: Database, migration: Migration, *, transactional: bool, error: str) -> None:
    if transactional:
        db.execute(history.upsert_sql(db, id=migration.id, checksum=migration.checksum, state="failed",
                                      duration_ms=None, transactional=True, error=error[:2000]))
    else:
        db.execute(f"UPDATE {history.rel(db, 'migrations')} SET state = 'failed', error = {db.literal(error[:2000])} "
                   f"WHERE id = {db.literal(migration.id)}")


def _explain(migration: Migration, failure: SqlFailure, *, statement: sqltext.Statement | None = None,
             done: int = 0, total: int = 0, split: bool = True) -> MigrationError:
    """One line: file, line, the statement, the server's message, what state it left and what to do.

    ``failure.position`` is relative to ``statement`` when one is given, else to the whole file."""
    if statement is not None:
        line = statement.line + (sqltext.line_of(statement.text, failure.position) - 1
                                 if failure.position else 0)
    else:
        line = sqltext.line_of(migration.sql, failure.position) if failure.position else 0
        statement = _statement_at(migration, line)
    left = _left(done, total) if split else "nothing of it was applied; fix the file and run again"
    missing = _MISSING_EXTENSION.search(str(failure)) if failure.sqlstate in ("0A000", "58P01") else None
    if missing is not None:  # the server lacks the extension's files: the migration is not at fault
        left = (f"the file is fine, the server lacks the extension: install {missing.group(1)} there, or set "
                "DATABASE_URL to a server that has it; "
                + (_left(done, total) if split else "nothing of it was applied"))
    where = f"{migration.path.name}, line {line}" if line > 0 else migration.path.name
    excerpt = f" [{_short(statement.text)}]" if statement is not None else ""
    hint = f" (hint: {failure.hint})" if failure.hint else ""
    return MigrationError(f"{where}: {failure}{hint}{excerpt}; {left}")


_MISSING_EXTENSION = re.compile(r'extension "([^"]+)"')
LOCATE_SECONDS = 30  # the longest a failed migration is re-run to find the statement that failed


def _explain_transactional(db: Database, migration: Migration, failure: SqlFailure,
                           limits: Limits) -> MigrationError:
    """The error of a migration sent as one script, naming the statement that failed and its line.

    The server gives a position only for errors found while it plans a statement (an unknown column);
    for one found while running it (a duplicate key, a division by zero, a relation that exists) it
    does not say which statement of the script failed. Then the migration runs once more, statement
    by statement, in a transaction that is rolled back, and the first that fails is the one."""
    if failure.position is None:
        found = _locate(db, migration, limits)
        if found is not None:
            statement, again = found
            return _explain(migration, again, statement=statement, split=False)
    return _explain(migration, failure, split=False)


def _locate(db: Database, migration: Migration,
            limits: Limits) -> tuple[sqltext.Statement, SqlFailure] | None:
    try:
        statements = sqltext.statements(migration.sql, migration.path.name)
    except MigrationError:
        return None
    budget = LOCATE_SECONDS if not limits.statement_timeout else min(limits.statement_timeout, LOCATE_SECONDS)
    db.execute(f"RESET ALL; BEGIN; SET LOCAL lock_timeout = '{int(limits.lock_timeout * 1000)}ms'; "
               f"SET LOCAL statement_timeout = '{int(budget * 1000)}ms';")
    try:
        for statement in statements:
            try:
                db.execute(statement.text)
            except SqlFailure as again:  # the session is rolled back already
                return None if again.sqlstate == "57014" else (statement, again)  # 57014: out of time
        return None  # it failed at COMMIT (a deferred constraint), or not again
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")


def _statement_at(migration: Migration, line: int) -> sqltext.Statement | None:
    if line <= 0:
        return None
    try:
        found = [s for s in sqltext.statements(migration.sql) if s.line <= line]
    except MigrationError:
        return None
    return found[-1] if found else None


def _short(text: str, width: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def rollback(db: Database, migration: Migration, limits: Limits) -> int:
    """Run a migration's rollback file and remove its record. Returns ms.

    The file runs as a forward file would (``txmode``): in one transaction with the removal of the
    record, or statement by statement, journaled in ``pgshift.rollbacks``, the record and the journal
    row removed together at the end; a crash resumes where the journal stopped."""
    sql = migration.rollback_sql()
    origin = f"{migration.id}.rollback.sql"
    if sql is None:
        raise MigrationError(f"{migration.id} has no rollback file {origin}; write one")
    started = time.monotonic()
    mode = txmode.of(sql, origin)
    if mode.statements is not None:
        _rollback_statements(db, migration, limits, mode.statements)
        return int((time.monotonic() - started) * 1000)
    prefix = f"RESET ALL; BEGIN; {settings_sql(limits, local=True)}\n"
    forget = _forget_sql(db, migration)
    try:
        retrying(db, limits, origin, lambda: db.execute(
            f"{prefix}{sql}\n;\n{history.delete_sql(db, migration.id)};{forget}\nCOMMIT;"))
    except LockTimeout as timeout:
        raise LockTimeout(f"{timeout}; nothing of the rollback was applied") from None
    except SqlFailure as failure:
        where = origin
        if failure.position:
            where += f", line {sqltext.line_of(sql, failure.position - len(prefix))}"
        raise MigrationError(f"{where}: {failure}; nothing of the rollback was applied") from None
    return int((time.monotonic() - started) * 1000)


def _rollback_statements(db: Database, migration: Migration, limits: Limits,
                         statements: list[sqltext.Statement]) -> None:
    origin = f"{migration.id}.rollback.sql"
    hashes = [stepwise.digest(s) for s in statements]
    where = f"WHERE id = {db.literal(migration.id)}"
    db.execute(history.in_schema(db, history.ROLLBACKS_DDL))
    before = history.rollback_journal(db).get(migration.id)
    start = 0
    if before is not None:
        start = before[1]
        if list(before[2]) != hashes[:start]:
            raise MigrationError(f"{origin} stopped after statement {start}, and the statements already "
                                 "run were edited since; restore them and run again")
    else:
        db.execute(f"INSERT INTO {history.rel(db, 'rollbacks')} (id, statements_total) "
                   f"VALUES ({db.literal(migration.id)}, {len(statements)})")
    journal = stepwise.Journal(
        step=lambda n: (f"UPDATE {history.rel(db, 'rollbacks')} SET statements_done = {n}, "
                        f"done_hashes = done_hashes || {db.literal(hashes[n - 1])}::text {where}"),
        executed=f"rollback-executed:{migration.id}", journaled=f"rollback-journaled:{migration.id}")
    stopped = stepwise.run(db, statements, limits, journal, start=start, resumed=before is not None,
                           what=origin).stopped
    if stopped is not None:
        left = (f"statements 1-{stopped.at} of {len(statements)} are done and journaled; fix the file from "
                f"statement {stopped.at + 1} on and run again to resume") if stopped.at else "nothing of it ran"
        raise MigrationError(f"{origin}, line {stopped.statement.line}: {stopped.error}; {left}") from None
    db.execute(f"BEGIN; {history.delete_sql(db, migration.id)}; DELETE FROM {history.rel(db, 'rollbacks')} {where};"
               f"{_forget_sql(db, migration)} COMMIT;")


def _forget_sql(db: Database, migration: Migration) -> str:
    """A phased migration rolled back takes its phase and backfill rows with it."""
    return phases.forget_sql(db, migration.id) if phases.has_phases(migration.sql) and \
        db.has_relation(history.rel(db, "phases")) else ""
