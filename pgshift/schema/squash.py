"""``dev.squash --upto ID``: the migrations up to ID replaced by one that builds the same schema.

The old migrations are applied to a shadow database; its schema is written as one migration the way a
baseline is (every kind the differ knows, in dependency order), with a rollback that drops all of it.
Before anything in the folder changes, the squash is proved on a second shadow database: applied, its
catalog snapshot must equal the old migrations' object for object, and after its rollback the
database must be empty again. Then the squash is written (``<ID's timestamp>_squash.sql``, listing what
it replaces with their checksums, see ``migrations.squashed``) and the replaced files are deleted
(version control keeps them). The development database, if it applied all of them, records the squash
in their place at once; every other database does so the first time a migration is applied there.

Refused, before anything is built: an unknown ID, fewer than two migrations, a replaced file with no
statement yet, and (unless ``force``) replaced files that change data (INSERT, UPDATE, DELETE, COPY,
TRUNCATE, MERGE, DO, CALL): a schema cannot carry them, so they are named, and with ``force`` left out
and listed in the squash's header.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pgshift.databases import snapshot
from pgshift.databases.db import Database
from pgshift.errors import ConfigError, MigrationError, Refused
from pgshift.migrations import apply, drift, order, source, sqltext, squashed
from pgshift.migrations.lock import migration_lock
from pgshift.schema import baseline, diff
from pgshift.schema.shadow import shadow
from pgshift.settings import Settings

DATA_CHANGES = {"InsertStmt": "INSERT", "UpdateStmt": "UPDATE", "DeleteStmt": "DELETE", "CopyStmt": "COPY",
                "TruncateStmt": "TRUNCATE", "MergeStmt": "MERGE", "DoStmt": "DO block", "CallStmt": "CALL"}


@dataclass(frozen=True)
class Squashed:
    migration: source.Migration
    replaced: list[str]
    statements: int      # in the squash
    objects: int         # catalog objects proved equal
    settled: bool        # the development database now records the squash in place of the replaced
    left_out: list[str] = field(default_factory=list)      # data changes not carried (with force)
    not_compared: list[str] = field(default_factory=list)  # what the differ does not carry (with force)


def data_changes(migrations: list[source.Migration]) -> list[str]:
    """``"<file>, line N: INSERT"`` for each statement of ``migrations`` that changes data."""
    found = []
    for m in migrations:
        for statement in sqltext.statements(m.sql, m.path.name):
            what = DATA_CHANGES.get(statement.kind)
            if what is not None:
                found.append(f"{m.path.name}, line {statement.line}: {what}")
    return found


def chosen(settings: Settings, upto: str) -> tuple[list[source.Migration], list[source.Migration], str]:
    """The migrations to replace, those after, and the squash's id; refused before anything is built."""
    folder = settings.migrations_dir
    migrations = source.read(folder)
    index = next((n for n, m in enumerate(migrations) if m.id == upto), None)
    if index is None:
        raise ConfigError(f"--upto {upto}: no such migration in {folder}; see inv dev.status for the ids")
    replaced, after = migrations[:index + 1], migrations[index + 1:]
    if len(replaced) < 2:
        raise ConfigError(f"--upto {upto}: it is the first migration, nothing to squash; give a later id")
    empty = [m.id for m in replaced if m.empty]
    if empty:
        raise ConfigError(f"{empty[0]}.sql has no statement yet; write it or delete it, then squash")
    ident = f"{upto[:14]}_squash"
    if ident in {m.id for m in replaced} or (after and ident >= after[0].id):
        why = "is a migration to replace" if ident in {m.id for m in replaced} else f"sorts after {after[0].id}"
        raise ConfigError(f"the squash would be {ident}, which {why}; squash up to another migration")
    return replaced, after, ident


def squash(settings: Settings, db: Database, upto: str, *, force: bool = False,
           reason: str | None = None) -> Squashed:
    replaced, _after, ident = chosen(settings, upto)
    changes = data_changes(replaced)
    if changes and not force:
        raise Refused(f"the migrations to squash change data, which a schema cannot carry: {'; '.join(changes)}; "
                      "move that data elsewhere (a seed, a later migration), or pass --force to leave it out")
    limits = apply.Limits.of(settings)
    folder = settings.migrations_dir
    with migration_lock(db, settings.lock_wait), tempfile.TemporaryDirectory(prefix="pgshift-squash-") as work:
        with shadow(settings, db) as old:
            apply.apply(old.db, replaced, limits)
            expected = snapshot.take(old.db)
            built = diff.inspect(old.db)
            missing = baseline.not_compared(old.db)
            if missing and not force:
                raise Refused(f"the migrations to squash make what the differ does not carry: {', '.join(missing)}; "
                              "pass --force to squash without them (named in the squash's header)")
            with shadow(settings, db) as new:
                nothing = diff.inspect(new.db)
                forward, backward = diff.plan(nothing, built), diff.plan(built, nothing)
                text = _forward_text(ident, upto, replaced, forward, changes, missing)
                rollback = _rollback_text(ident, backward)
                made = _write(Path(work), ident, text, rollback)
                proved = _prove(new.db, made, expected, limits)
        final = _write(folder, ident, text, rollback)
        for m in replaced:
            m.path.unlink()
            if m.rollback_path is not None:
                m.rollback_path.unlink(missing_ok=True)
        migrations = source.read(folder)
        order.write_head(folder, migrations[-1].id)
        settled = _settle(db, migrations, reason)
    return Squashed(final, [m.id for m in replaced], len(forward.changes), proved, settled,
                    changes if force else [], missing)


def _prove(db: Database, made: source.Migration, expected: snapshot.Snapshot, limits: apply.Limits) -> int:
    """Apply the squash on an empty ``db``: its snapshot must be ``expected``; after its rollback, empty."""
    try:
        apply.apply(db, [made], limits)
    except MigrationError as error:
        raise MigrationError(f"the squash does not apply to an empty database ({error}); nothing was changed; "
                             "report it, and keep the migrations as they are") from None
    found = drift.differ(expected.objects, snapshot.take(db).objects)
    if found:
        raise MigrationError(f"the squash would build a different schema ({len(found)} difference(s), first: "
                             f"{found[0].describe()}); nothing was changed; keep the migrations as they are")
    apply.rollback(db, made, limits)
    left = drift.differ(drift.EMPTY, snapshot.take(db).objects)
    if left:
        raise MigrationError(f"the squash's rollback would leave {len(left)} object(s) (first: {left[0].describe()}); "
                             "nothing was changed; keep the migrations as they are")
    return len(expected)


def _write(folder: Path, ident: str, text: str, rollback: str) -> source.Migration:
    with open(folder / f"{ident}.sql", "x") as handle:
        handle.write(text)
    try:
        with open(folder / f"{ident}{source.ROLLBACK_SUFFIX}", "x") as handle:
            handle.write(rollback)
    except BaseException:
        (folder / f"{ident}.sql").unlink()
        raise
    return source.Migration(id=ident, folder=folder, sql=source.normalise(text.encode()), has_rollback=True)


def _settle(db: Database, migrations: list[source.Migration], reason: str | None) -> bool:
    """Record the squash on the development database if it applied everything it replaces (the drift
    reference carried over to the new record)."""
    from pgshift.migrations import history

    with drift.kept(db, migrations, always=True):
        records = history.records(db)
        script = squashed.settle_sql(db, migrations, records, reason)
        if script is None:
            return False
        db.execute(f"BEGIN; {script} COMMIT;")
    return True


def _forward_text(ident: str, upto: str, replaced: list[source.Migration], plan: diff.Plan,
                  left_out: list[str], missing: list[str]) -> str:
    lines = [f"{squashed.MARKER} of {len(replaced)} migrations, up to {upto}, written by "
             f"`inv dev.squash --upto {upto}`.",
             "-- It builds exactly the schema they built (proved on the catalog snapshot when it was written).",
             "-- A database that applied all of them records this one in their place; a new database applies",
             "-- this one instead. Its rollback drops everything it makes. The replaced files are in version",
             "-- control. The lines below name them; keep them as they are.",
             *squashed.header(ident, replaced)]
    if left_out:
        lines.append("-- Left out (data changes, squashed with --force): " + "; ".join(left_out) + ".")
    if missing:
        lines.append("-- Not carried here (the differ does not compare them): " + ", ".join(missing) + ".")
    return "\n".join(lines) + "\n\n" + plan.sql()


def _rollback_text(ident: str, plan: diff.Plan) -> str:
    return (f"-- Rollback of {ident}, the squash: drops everything it makes, back to an empty schema.\n"
            "-- Statements marked DATA LOSS destroy data.\n\n" + plan.sql())
