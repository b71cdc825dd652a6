"""Adopting another tool's migrations: ``dev.import --from prisma`` (and the folder half of ``--from yoyo``).

Each Prisma ``<YYYYMMDDHHMMSS>_<name>/migration.sql`` is copied byte for byte to
``migrations/<YYYYMMDDHHMMSS>_<name>.sql`` (so the review history still matches). Rollback files are
generated where the differ can: the migrations are replayed one by one into a shadow database, and
each rollback is the difference from the state after it back to the state before. What the differ
does not compare (grants, rules, ...) or a replay that fails leaves the rollback missing, and says why.

The target's ``_prisma_migrations`` records then become ours: finished ones are recorded applied,
rolled-back ones not, failed ones reported. Prisma's table is left as it is (and out of every schema
comparison: ``diff.IGNORED_TABLES``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pgshift.databases.db import Database
from pgshift.errors import ConfigError, MigrationError
from pgshift.migrations import apply, audit, history, source
from pgshift.migrations.lock import migration_lock
from pgshift.schema import diff
from pgshift.schema.autogen import not_compared
from pgshift.schema.shadow import Prepared, Shadow
from pgshift.settings import Settings

_PRISMA_FOLDER = re.compile(r"^(?P<stamp>\d+)_(?P<name>.+)$")
PRISMA_TABLE = "_prisma_migrations"


@dataclass
class Imported:
    """What an import did, and what it did not convert (each with the reason)."""

    tool: str
    written: list[str] = field(default_factory=list)       # migration files written
    kept: list[str] = field(default_factory=list)          # already there, identical: left
    rollbacks: list[str] = field(default_factory=list)     # rollback files generated
    no_rollback: list[str] = field(default_factory=list)   # "id: why" (no rollback written)
    adopted: list[str] = field(default_factory=list)       # recorded applied from the tool's records
    not_applied: list[str] = field(default_factory=list)   # "id: why" (rolled back, never applied)
    failed: list[str] = field(default_factory=list)        # "id: detail" failed in the tool, not recorded
    not_converted: list[str] = field(default_factory=list)  # files and records left out, with the reason
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class _Source:
    ident: str
    path: Path


def our_id(stamp: str, name: str) -> str:
    """Prisma's folder name as one of our ids: a 14-digit stamp, a lowercase name of a-z 0-9 _."""
    clean = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "migration"
    return f"{stamp.zfill(14)}_{clean}"


def read_prisma(folder: Path, found: Imported) -> list[_Source]:
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; give the Prisma migrations folder (prisma/migrations)")
    picked: list[tuple[str, _Source]] = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        match = _PRISMA_FOLDER.match(entry.name)
        if not entry.is_dir() or match is None:
            why = ("Prisma's provider lock, not needed here" if entry.name == "migration_lock.toml"
                   else "not a Prisma migration folder")
            found.not_converted.append(f"{entry.name}: {why}")
            continue
        sql = entry / "migration.sql"
        if not sql.is_file():
            found.not_converted.append(f"{entry.name}: no migration.sql in it")
            continue
        found.not_converted.extend(f"{entry.name}/{extra.name}: only migration.sql is converted"
                                   for extra in sorted(entry.iterdir()) if extra.name != "migration.sql")
        if len(match["stamp"]) > 14:
            found.not_converted.append(f"{entry.name}: its timestamp has more than 14 digits; rename it")
            continue
        picked.append((entry.name, _Source(our_id(match["stamp"], match["name"]), sql)))
    ids = [s.ident for _, s in picked]
    if ids != sorted(ids) or len(set(ids)) != len(ids):
        raise ConfigError(f"the Prisma folders in {folder} do not keep their order (or collide) once named "
                          "YYYYMMDDHHMMSS_name; rename them so their timestamps sort as they were applied")
    return [s for _, s in picked]


def write_files(settings: Settings, sources: list[_Source], found: Imported) -> list[source.Migration]:
    """Copy each migration byte for byte (one already there must be identical); return the folder."""
    folder = settings.migrations_dir
    folder.mkdir(parents=True, exist_ok=True)
    for item in sources:
        raw = item.path.read_bytes()
        dest = folder / f"{item.ident}.sql"
        if dest.exists():
            if dest.read_bytes() != raw:
                raise ConfigError(f"{dest} exists with other content than {item.path}; move it away and import again")
            found.kept.append(item.ident)
            continue
        dest.write_bytes(raw)
        found.written.append(item.ident)
    return source.read(folder)


def write_rollbacks(settings: Settings, db: Database, migrations: list[source.Migration], ids: list[str],
                    found: Imported) -> None:
    """Replay ``migrations`` into a shadow; write the reverse difference of each of ``ids`` that has no
    rollback file yet."""
    wanted = {i for i in ids if not (settings.migrations_dir / f"{i}{source.ROLLBACK_SUFFIX}").exists()}
    if not wanted:
        return
    limits = apply.Limits.of(settings)

    def replay(scratch: Shadow) -> dict[str, str]:
        made: dict[str, str] = {}
        before = diff.inspect(scratch.db)
        for n, m in enumerate(migrations):
            try:
                apply.apply(scratch.db, migrations[: n + 1], limits)
            except MigrationError as error:
                for later in migrations[n:]:
                    if later.id in wanted:
                        made[later.id] = f"!replaying {m.id} into a shadow database failed ({error})"
                return made
            after = diff.inspect(scratch.db)
            if m.id in wanted:
                ignored = not_compared(m.sql, m.path.name)
                if ignored:
                    made[m.id] = f"!the differ does not compare {'; '.join(ignored)}"
                else:
                    made[m.id] = diff.plan(current=after, desired=before).sql()
            before = after
        return made

    made = Prepared(settings, db.url, replay).result()
    for m in migrations:
        text = made.get(m.id)
        if text is None:
            continue
        if text.startswith("!"):
            found.no_rollback.append(f"{m.id}: {text[1:]}; write {m.id}{source.ROLLBACK_SUFFIX} by hand")
            continue
        header = (f"-- Rollback of {m.id}, generated on import: the schema after it turned back into the schema "
                  "before it.\n-- Data a migration changed is not restored; check it before relying on it.\n")
        (settings.migrations_dir / f"{m.id}{source.ROLLBACK_SUFFIX}").write_text(header + text)
        found.rollbacks.append(m.id)


def prisma_records(db: Database) -> list[tuple[str, datetime | None, datetime | None, datetime, str | None, str]]:
    """Prisma's rows: name, finished_at, rolled_back_at, started_at, logs, checksum (oldest first)."""
    if not db.has_relation(PRISMA_TABLE):
        return []
    return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in db.rows(
        f"SELECT migration_name, finished_at, rolled_back_at, started_at, logs, checksum FROM {PRISMA_TABLE} "
        "ORDER BY started_at")]


def adopt_prisma_records(db: Database, settings: Settings, sources: list[_Source], found: Imported,
                         reason: str | None) -> None:
    """Turn ``_prisma_migrations`` into our records, under the migration lock, in one transaction."""
    by_name = {s.path.parent.name: s for s in sources}
    migrations = {m.id: m for m in source.of(settings)}
    with migration_lock(db, settings.lock_wait):
        rows = prisma_records(db)
        if not rows:
            found.warnings.append(f"the database has no {PRISMA_TABLE} table (or it is empty): nothing recorded; "
                                  "every imported migration is pending there")
            return
        history.ensure(db)
        ours = history.records(db)
        applied: dict[str, tuple[datetime, datetime]] = {}
        for name, finished, rolled_back, started, logs, checksum in rows:
            item = by_name.get(name)
            if item is None:
                found.not_converted.append(f"{PRISMA_TABLE} row {name}: no such folder in the Prisma folder")
                continue
            if rolled_back is not None:
                found.not_applied.append(f"{item.ident}: rolled back in Prisma on {rolled_back:%Y-%m-%d %H:%M}")
            elif finished is None:
                detail = (logs or "no log").strip().splitlines()
                found.failed.append(f"{item.ident}: failed or unfinished in Prisma ({detail[0] if detail else ''}); "
                                    "not recorded: check what of it ran, then inv dev.mark")
            else:
                applied[item.ident] = (finished, started)
                if checksum != _sha256(item.path.read_bytes()):
                    found.warnings.append(f"{item.ident}: migration.sql changed after Prisma applied it (its "
                                          "checksum differs); recorded applied with the file as it is now")
        script: list[str] = ["BEGIN;"]
        for ident, (done_at, begun_at) in sorted(applied.items()):
            if ident in ours:
                continue
            m = migrations[ident]
            ms = int((done_at - begun_at).total_seconds() * 1000)
            script.append(
                f"INSERT INTO {history.rel(db, 'migrations')} "
                "(id, checksum, state, applied_at, duration_ms, applied_by) VALUES "
                f"({db.literal(ident)}, {db.literal(m.checksum)}, 'applied', {db.literal(done_at)}, {ms}, "
                "'prisma (imported)');")
            found.adopted.append(ident)
        for item in sources:
            if item.ident not in applied and not any(x.startswith(item.ident) for x in found.not_applied
                                                     + found.failed):
                found.not_applied.append(f"{item.ident}: no {PRISMA_TABLE} row: pending")
        script.append(audit.write_sql(db, "import", reason=reason, detail=f"from prisma: {len(found.adopted)} "
                                                                           "record(s) adopted"))
        script.append("COMMIT;")
        db.execute("\n".join(script))


def _sha256(raw: bytes) -> str:
    import hashlib

    return hashlib.sha256(raw).hexdigest()


def import_prisma(settings: Settings, db: Database, folder: Path, *, reason: str | None = None) -> Imported:
    found = Imported("prisma")
    sources = read_prisma(folder, found)
    if not sources:
        raise ConfigError(f"no Prisma migrations (<timestamp>_<name>/migration.sql) in {folder}")
    migrations = write_files(settings, sources, found)
    write_rollbacks(settings, db, migrations, [s.ident for s in sources], found)
    adopt_prisma_records(db, settings, sources, found, reason)
    return found
