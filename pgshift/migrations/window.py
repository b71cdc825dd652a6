"""The window between expand and contract: where each phased migration stands, completing it (the
contract section, gated on evidence that the old application is gone), aborting it, pausing its backfill.

The gate: with ``old_release`` set (an ``application_name`` LIKE pattern, e.g. ``shop-v41%``), sessions
of this database that match it are the old application still connected, and ``complete`` refuses while
any is; it refuses too while pg_stat_statements shows statements naming an old column or table run
since the last look, or the generated models module still maps one (``pgshift.migrations.gate``).
``force`` with a reason overrides it; the reason and the evidence are kept in the phase row.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from pgshift.databases.db import Database, SqlFailure
from pgshift.errors import ConfigError, LockTimeout, MigrationError, Refused
from pgshift.migrations import drift, gate, history, phases, sqltext, txmode, validate
from pgshift.migrations.budget import Limits, retrying, settings_sql
from pgshift.migrations.lock import migration_lock
from pgshift.migrations.source import Migration


class Fill(NamedTuple):
    step: int
    table: str
    state: str
    rows_done: int
    rows_scanned: int
    rows_total: int
    rate: float                 # rows per second over its life so far
    paused: bool
    throttled: str | None
    updated_at: datetime

    @property
    def eta_s(self) -> float | None:
        if self.state == "done" or self.rate <= 0 or self.rows_total <= 0:
            return None
        return max(self.rows_total - self.rows_scanned, 0) / self.rate

    def as_json(self) -> dict[str, Any]:
        return {**self._asdict(), "updated_at": self.updated_at.isoformat(), "eta_s": self.eta_s}


class Window(NamedTuple):
    id: str
    phase: str                  # expanded or completed
    columns: tuple[str, ...]
    backfills: list[Fill]
    forced_reason: str | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "phase": self.phase, "columns": list(self.columns),
                "backfills": [f.as_json() for f in self.backfills], "forced_reason": self.forced_reason}


def windows(db: Database) -> list[Window]:
    """Every phased migration's phase and backfill progress; empty before the first one."""
    recorded = phases.recorded(db)
    if not recorded:
        return []
    fills: dict[str, list[Fill]] = {}
    for r in db.rows("SELECT id, step, target, state, rows_done, rows_scanned, coalesce(rows_total, 0), "
                     "coalesce(rows_scanned / nullif(extract(epoch FROM updated_at - started_at), 0), 0)::float8, "
                     "paused, throttled, updated_at FROM pgshift.backfills ORDER BY id, step"):
        fills.setdefault(r[0], []).append(Fill(*r[1:]))
    return [Window(p.id, p.phase, p.columns, fills.get(p.id, []), p.forced_reason) for p in recorded.values()]


def pause(db: Database, paused: bool) -> int:
    """Set the control row of every unfinished backfill; how many there were."""
    try:
        rows = db.rows("UPDATE pgshift.backfills SET paused = %s WHERE state = 'running' RETURNING id", [paused])
    except SqlFailure as failure:
        if failure.sqlstate in ("42P01", "3F000"):
            return 0
        raise
    return len(rows)


def old_sessions(db: Database, pattern: str) -> list[str]:
    """The sessions of this database whose application_name matches ``pattern``, described."""
    if not pattern:
        return []
    return [f"pid {r[0]} ({r[1]}, from {r[2]})" for r in db.rows(
        "SELECT pid, application_name, coalesce(host(client_addr), 'local socket') FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE %s "
        "ORDER BY backend_start", [pattern])]


def _open(db: Database, migrations: list[Migration], only: str | None,
          what: str) -> list[tuple[Migration, phases.Phases]]:
    files = {m.id: m for m in migrations}
    found = [p for p in phases.recorded(db).values() if p.phase == "expanded" and (only is None or p.id == only)]
    if only is not None and not found:
        raise ConfigError(f"{only} is not an expanded migration; inv deploy.status lists them")
    chosen: list[tuple[Migration, phases.Phases]] = []
    for phase in found:
        migration = files.get(phase.id)
        if migration is None:
            raise MigrationError(f"{phase.id} is expanded but migrations/{phase.id}.sql is missing; "
                                 f"restore it to {what} it")
        parsed = phases.parse(migration.sql, migration.path.name)
        if parsed is None:
            raise MigrationError(f"{migration.path.name} lost its '-- pgshift: expand' sections since it was applied; "
                                 "restore the file from version control")
        chosen.append((migration, parsed))
    return chosen


def complete(db: Database, migrations: list[Migration], limits: Limits, *, old_release: str, force: bool = False,
             reason: str | None = None, only: str | None = None, models: Path | None = None,
             say: Callable[[str], None] | None = None) -> list[str]:
    """Run the contract section of every expanded migration (or ``only``), each in one transaction with its
    phase row, once its validate section ran (each statement alone). Refused while a backfill is unfinished,
    or while there is evidence of the old release (its sessions, its statements in pg_stat_statements, the
    ``models`` module mapping an old name), unless ``force`` with a ``reason``. Returns the ids completed."""
    if force and not (reason or "").strip():
        raise ConfigError("--force needs --reason 'why the old release may be ignored'; it is recorded")
    tell = say or (lambda _m: None)
    done: list[str] = []
    # The contract changes the schema of the same applied set: its drift reference changes with it.
    with migration_lock(db, limits.lock_wait), drift.kept(db, migrations, always=True, in_place=True):
        chosen = _open(db, migrations, only, "complete")
        if not chosen:
            return done
        for migration, parsed in chosen:
            unfinished = _unfinished(db, migration.id, parsed)
            if unfinished:
                raise Refused(f"{migration.id}: {unfinished}; run inv deploy (or inv dev.migrate) to finish it, "
                              "then inv deploy.complete")
        for migration, parsed in chosen:
            validate.run(db, migration, parsed, limits, tell)
        evidence = _evidence(db, chosen, old_release, models)
        forced: str | None = None
        if evidence:
            if not force:
                raise Refused("; and ".join(evidence) + "; or, if the old release is gone for sure, pass "
                              "--force --reason '...'")
            forced = f"{(reason or '').strip()} (forced past: {'; '.join(evidence)[:700]})"
        elif force:
            forced = (reason or "").strip()
        for migration, parsed in chosen:
            mark = (f"UPDATE pgshift.phases SET phase = 'completed', completed_at = now(), "
                    f"completed_by = current_setting('application_name'), forced_reason = {db.literal(forced)} "
                    f"WHERE id = {db.literal(migration.id)}")
            _run(db, f"{migration.id}.sql (contract)", parsed.contract or "", mark, limits)
            tell(f"completed {migration.id}")
            done.append(migration.id)
    return done


def _evidence(db: Database, chosen: list[tuple[Migration, phases.Phases]], old_release: str,
              models: Path | None) -> list[str]:
    """Why the old release may still be running, each with the next step; empty when nothing says so."""
    found: list[str] = []
    seen = old_sessions(db, old_release)
    if seen:
        found.append(f"{len(seen)} session(s) of the old release ({old_release}) still connected: {seen[0]}; "
                     "deploy the new release everywhere first")
    for migration, parsed in chosen:
        names = gate.old_names(parsed.contract)
        since = gate.statements_since(db, migration.id, names)
        if since is not None:
            found.append(f"pg_stat_statements shows {since.calls} call(s) since {since.looked_at:%Y-%m-%d %H:%M:%S} "
                         f"of statements naming {', '.join(n.shown for n in names)} ({migration.id} drops them), "
                         f"e.g. {since.statements[0][:160]}; move what runs them to the new names, then run "
                         "inv deploy.complete again (it compares with a look taken now)")
        mapped = gate.models_mapping(models, names)
        if mapped:
            found.append(f"the models module still maps what {migration.id} drops: {', '.join(mapped[:3])}; "
                         "remove those from the models the new release ships, then run inv deploy.complete again")
    return found


def abort(db: Database, migrations: list[Migration], limits: Limits, *, only: str | None = None,
          say: Callable[[str], None] | None = None) -> list[str]:
    """Undo every expanded migration not completed (or ``only``), newest first: its abort section, else its
    rollback file, in one transaction with the removal of its record. Returns the ids aborted."""
    tell = say or (lambda _m: None)
    done: list[str] = []
    with migration_lock(db, limits.lock_wait), drift.kept(db, migrations, always=True):
        for migration, parsed in reversed(_open(db, migrations, only, "abort")):
            sql = parsed.abort if parsed.abort is not None else migration.rollback_sql()
            if sql is None:
                raise MigrationError(f"{migration.path.name} has no '-- pgshift: abort' section and no rollback file; "
                                     "write one to abort it")
            forget = f"{history.delete_sql(db, migration.id)}; {phases.forget_sql(db, migration.id)}"
            _run(db, f"{migration.id}.sql (abort)", sql, forget, limits)
            tell(f"aborted {migration.id}")
            done.append(migration.id)
    return done


def _unfinished(db: Database, migration_id: str, parsed: phases.Phases) -> str | None:
    if not parsed.backfills:
        return None
    rows = db.rows("SELECT step, rows_scanned, coalesce(rows_total, 0) FROM pgshift.backfills "
                   "WHERE id = %s AND state = 'done'", [migration_id])
    if len(rows) == len(parsed.backfills):
        return None
    return f"its backfill is not finished ({len(rows)} of {len(parsed.backfills)} line(s) done)"


def _run(db: Database, origin: str, sql: str, record: str, limits: Limits) -> None:
    if not txmode.of(sql, origin).transactional:
        raise MigrationError(f"{origin}: runs in one transaction with its record, and a statement of it cannot "
                             "(CREATE INDEX CONCURRENTLY, ...); move that statement to the expand section")
    prefix = f"RESET ALL; BEGIN; {settings_sql(limits, local=True)}\n"
    try:
        retrying(db, limits, origin, lambda: db.execute(f"{prefix}{sql}\n;\n{record};\nCOMMIT;"))
    except LockTimeout as timeout:
        raise LockTimeout(f"{timeout}; nothing of it was applied") from None
    except SqlFailure as failure:
        where = origin
        if failure.position:
            where += f", line {sqltext.line_of(sql, failure.position - len(prefix))}"
        raise MigrationError(f"{where}: {failure}; nothing of it was applied, fix the section and run again") from None


def replay_contracts(db: Database, migrations: list[Migration], completed: set[str], limits: Limits) -> None:
    """Run the contract sections of ``completed`` on a database the migrations were just replayed into
    (a drift shadow): it then holds what the live database holds."""
    for migration in migrations:
        parsed = phases.parse(migration.sql, migration.path.name) if migration.id in completed else None
        if parsed is not None:
            mark = f"UPDATE pgshift.phases SET phase = 'completed' WHERE id = {db.literal(migration.id)}"
            _run(db, f"{migration.id}.sql (contract)", parsed.contract or "", mark, limits)
