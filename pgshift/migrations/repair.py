"""Repairing the record by hand: ``mark`` and ``repair``, under the migration lock, each change in one
transaction with its row in the repair log (``audit``).

``repair`` clears only records whose effect is known to be absent: a failed transactional migration
(its transaction rolled back with it), or a statement-by-statement one that stopped before its first
statement took effect. A record whose effect is (partly) present is kept and reported, with what to do.
An applied migration whose file was edited on purpose is accepted with ``accept_edit``: the record
takes the file's checksum, and the log keeps both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgshift.databases.db import Database
from pgshift.errors import ConfigError, MigrationError
from pgshift.migrations import audit, history, sqltext
from pgshift.migrations.lock import migration_lock
from pgshift.migrations.source import Migration


@dataclass(frozen=True)
class Repaired:
    cleared: list[str] = field(default_factory=list)   # "id: why": record removed, the migration is pending again
    kept: list[str] = field(default_factory=list)      # "id: why and what to do": effect present, record kept
    accepted: list[str] = field(default_factory=list)  # ids whose edited file was accepted

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def mark(db: Database, migrations: list[Migration], ident: str, *, applied: bool, lock_wait: float,
         reason: str | None = None) -> str:
    """Record ``ident`` as applied (its file's checksum) or as not applied (record removed); returns
    what was done, one line."""
    files = {m.id: m for m in migrations}
    with migration_lock(db, lock_wait):
        records = history.records(db)
        rec = records.get(ident)
        if applied:
            m = files.get(ident)
            if m is None:
                raise ConfigError(f"no migration {ident!r} in the folder; mark only a migration whose file exists")
            if rec is not None and rec.state == "applied" and rec.checksum == m.checksum:
                return f"{ident} is recorded as applied already; nothing changed"
            history.ensure(db)
            change = history.upsert_sql(db, id=ident, checksum=m.checksum, state="applied", duration_ms=None,
                                        transactional=True)
            what = f"marked {ident} applied" + (f" (it was {rec.state})" if rec is not None else "")
        else:
            if rec is None:
                return f"{ident} has no record; nothing changed"
            change = (f"{history.delete_sql(db, ident)}; "
                      f"DO $$ BEGIN IF to_regclass({db.literal(history.rel(db, 'rollbacks'))}) IS NOT NULL THEN "
                      f"DELETE FROM {history.rel(db, 'rollbacks')} WHERE id = {db.literal(ident)}; END IF; END $$")
            what = f"marked {ident} not applied (its {rec.state} record removed)"
        db.execute(f"BEGIN; {change}; {audit.write_sql(db, 'mark', ident, reason, detail=what)} COMMIT;")
        return what


def repair(db: Database, migrations: list[Migration], *, accept_edit: list[str], lock_wait: float,
           reason: str | None = None) -> Repaired:
    files = {m.id: m for m in migrations}
    found = Repaired()
    with migration_lock(db, lock_wait):
        records = history.records(db)
        script: list[str] = []
        for ident in accept_edit:
            rec, m = records.get(ident), files.get(ident)
            if rec is None or rec.state != "applied" or m is None:
                raise ConfigError(f"--accept-edit {ident}: not an applied migration with a file here; see inv status")
            if rec.checksum == m.checksum:
                raise ConfigError(f"--accept-edit {ident}: its file is unchanged; nothing to accept")
            script.append(f"UPDATE {history.rel(db, 'migrations')} SET checksum = {db.literal(m.checksum)} "
                          f"WHERE id = {db.literal(ident)};")
            script.append(audit.write_sql(db, "accept edit", ident, reason,
                                          detail=f"checksum {rec.checksum[:12]} -> {m.checksum[:12]}"))
            found.accepted.append(ident)
        for rec in records.values():
            if rec.state == "applied":
                continue
            why = _absent(db, rec, files.get(rec.id))
            if why is None:
                found.kept.append(
                    f"{rec.id}: stopped after statement {rec.statements_done} of {rec.statements_total}, which are in "
                    f"effect; run inv dev.migrate to finish it, or undo them by hand and inv dev.mark {rec.id} "
                    "--reverted")
                continue
            script.append(f"{history.delete_sql(db, rec.id)};")
            script.append(audit.write_sql(db, "repair", rec.id, reason, detail=f"cleared a {rec.state} record: {why}"))
            found.cleared.append(f"{rec.id}: {why}")
        if script:
            db.execute("BEGIN;\n" + "\n".join(script) + "\nCOMMIT;")
    return found


def _absent(db: Database, rec: history.Record, migration: Migration | None) -> str | None:
    """Why the failed record's effect is absent, or None when it may be present."""
    if rec.transactional:
        return "it ran in one transaction, which rolled back"
    if rec.statements_done:
        return None
    if migration is None:
        return None
    try:
        first = sqltext.statements(migration.sql, migration.path.name)[0]
    except (IndexError, MigrationError):  # no statement, or one the parser cannot read: keep the record
        return None
    if first.transactional:
        return "its first statement commits with its journal step, and none is journaled"
    if first.kind == "IndexStmt" and first.indexes and not db.has_relation(first.indexes[0]):
        return f"its first statement builds {first.indexes[0]}, which does not exist"
    return None
