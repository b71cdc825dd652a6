"""Squashed migrations: one migration standing for a run of older ones (``inv dev.squash``).

A squash's file opens with ``MARKER`` and lists what it replaces, one ``-- replaces ID CHECKSUM`` line
each (``... in SQUASH`` for the migrations an earlier squash it replaces stood for). The replaced
files are gone from the folder; a database that applied all of them is taken to have applied the
squash: ``mapped`` gives the records as they read with the squash in their place (status, drift,
order and apply all see it so), and ``settle_sql`` rewrites them so, under the migration lock, the
first time anything is applied or rolled back there. A database that applied only some of them (or
one edited after it was applied) is not mapped, and ``stranded`` says why.
"""

from __future__ import annotations

import re

from pgshift.databases.db import Database
from pgshift.migrations import history
from pgshift.migrations.source import Migration

MARKER = "-- pgshift: squash"
_REPLACES = re.compile(r"^-- replaces (\S+) ([0-9a-f]{64})(?: in (\S+))?$", re.MULTILINE)


def replaces(migration: Migration) -> dict[str, list[tuple[str, str]]]:
    """What ``migration`` stands for, as ``squash id -> [(id, checksum)]``: earlier squashes it folded
    in first (oldest first), its own list last. Empty for a migration that is not a squash."""
    if not migration.sql.startswith(MARKER):
        return {}
    groups: dict[str, list[tuple[str, str]]] = {}
    for ident, checksum, inside in _REPLACES.findall(migration.sql):
        groups.setdefault(inside or migration.id, []).append((ident, checksum))
    own = groups.pop(migration.id, [])
    return {**dict(sorted(groups.items())), migration.id: own}


def header(ident: str, replaced: list[Migration]) -> list[str]:
    """The ``-- replaces`` lines of a new squash ``ident`` of ``replaced`` (earlier squashes carried)."""
    lines = []
    for m in replaced:
        for into, entries in replaces(m).items():
            lines += [f"-- replaces {i} {c} in {into}" for i, c in entries]
    lines += [f"-- replaces {m.id} {m.checksum}" for m in replaced]
    return lines


def mapped(migrations: list[Migration], records: dict[str, history.Record]) -> dict[str, history.Record]:
    """``records`` with each complete set of replaced ones (all applied, checksums as squashed) read as
    one applied record of their squash; the same dict when nothing maps (the common case)."""
    squashes = [m for m in migrations if m.sql.startswith(MARKER)]
    if not squashes or not records:
        return records
    out = dict(records)
    for m in squashes:
        groups = replaces(m)
        checksums = {i: c for entries in groups.values() for i, c in entries} | {m.id: m.checksum}
        for into, entries in groups.items():
            found = [out.get(i) for i, _ in entries]
            if into in out or not entries or any(r is None or r.state != "applied" for r in found):
                continue
            applied = [r for r in found if r is not None]
            if any(r.checksum != c for r, (_, c) in zip(applied, entries, strict=True)):
                continue
            for i, _ in entries:
                del out[i]
            newest = max(applied, key=lambda r: r.applied_at)
            out[into] = newest._replace(id=into, checksum=checksums.get(into, ""), transactional=True,
                                        duration_ms=sum(r.duration_ms or 0 for r in applied),
                                        statements_total=None, statements_done=0, done_hashes=(), error=None)
    return records if out.keys() == records.keys() else dict(sorted(out.items()))


def stranded(migrations: list[Migration], ident: str) -> str | None:
    """Why ``ident``, recorded but without a file, was not read as part of a squash; None if none has it."""
    for m in migrations:
        for into, entries in replaces(m).items():
            if any(i == ident for i, _ in entries):
                return (f"{ident} is recorded as applied but was squashed into {into} ({m.path.name}), and this "
                        f"database has not applied every one of the {len(entries)} migrations it replaces as "
                        "they were squashed; bring it up to date from a checkout before the squash (git log "
                        f"-- {m.folder.name}), then run again")
    return None


def settle_sql(db: Database, migrations: list[Migration], records: dict[str, history.Record],
               reason: str | None = None) -> str | None:
    """The statements that rewrite ``records`` as ``mapped`` reads them, with a repair-log row per
    squash; None when nothing maps."""
    from pgshift.migrations import audit  # status imports this module and never writes

    now = mapped(migrations, records)
    if now is records:
        return None
    script = []
    for ident in records.keys() - now.keys():
        script.append(f"{history.delete_sql(db, ident)};")
    for ident in sorted(now.keys() - records.keys()):
        rec = now[ident]
        record = history.upsert_sql(db, id=ident, checksum=rec.checksum, state="applied",
                                    duration_ms=rec.duration_ms, transactional=True)
        script.append(f"{record}; UPDATE {history.rel(db, 'migrations')} SET applied_at = {db.literal(rec.applied_at)} "
                      f"WHERE id = {db.literal(ident)};")  # when the newest replaced one was applied
        gone = sorted(records.keys() - now.keys())
        script.append(audit.write_sql(db, "squash", ident, reason,
                                      detail=f"records of {len(gone)} squashed migration(s) replaced: "
                                             f"{gone[0]} .. {gone[-1]}"))
    return " ".join(script)


def settle(db: Database, migrations: list[Migration]) -> list[str]:
    """Rewrite the record of a database that applied what a squash replaces (call under the migration
    lock); returns the squashes now recorded."""
    records = history.records(db)
    script = settle_sql(db, migrations, records)
    if script is None:
        return []
    db.execute(f"BEGIN; {script} COMMIT;")
    return sorted(history.records(db).keys() - records.keys())
