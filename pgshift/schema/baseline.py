"""Baseline: adopt a database no tool manages yet, as it is.

The live schema is written as one migration, ``<timestamp>_baseline.sql``: the statements that turn
an empty database into it (every kind the differ knows, in dependency order), with what the differ
cannot compare named in a comment at the top. Its rollback is refused (``migrations.refusal``): a
baseline has no safe down. It is recorded as applied, with its checksum and a row in the repair log,
in one transaction under the migration lock; no data is read or written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pgshift.databases.db import Database
from pgshift.errors import Aborted, ConfigError, Refused
from pgshift.migrations import audit, history, refusal, source
from pgshift.migrations.lock import migration_lock
from pgshift.questions import Confirm, Question
from pgshift.schema import diff
from pgshift.schema.shadow import shadow
from pgshift.settings import Settings

# What the differ does not compare, counted in the live database: each is named in the baseline's
# header, to be carried over by hand if the team needs it on new databases.
_NOT_COMPARED = {
    "grants on tables, views and sequences": "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = "
    "c.relnamespace WHERE c.relacl IS NOT NULL AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift')"
    " AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname NOT LIKE 'pgshift\\_%'",
    "rules (CREATE RULE)": "SELECT count(*) FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE r.rulename <> '_RETURN' "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema')",
    "extended statistics (CREATE STATISTICS)": "SELECT count(*) FROM pg_statistic_ext",
    "publications": "SELECT count(*) FROM pg_publication",
    "event triggers": "SELECT count(*) FROM pg_event_trigger",
    "foreign tables": "SELECT count(*) FROM pg_class WHERE relkind = 'f'",
    "user-defined casts": "SELECT count(*) FROM pg_cast WHERE oid >= 16384",
}


@dataclass(frozen=True)
class Baseline:
    migration: source.Migration
    statements: int
    not_compared: list[str] = field(default_factory=list)  # "3 grants on tables, ..." named in its header


def not_compared(db: Database) -> list[str]:
    found = []
    for what, query in _NOT_COMPARED.items():
        row = db.one(query)
        if row and row[0]:
            found.append(f"{row[0]} {what}")
    return found


def guard(settings: Settings, migrations: list[source.Migration]) -> None:
    """Refuse before anything is read: a folder with migrations is managed already."""
    if migrations:
        raise Refused(f"{settings.migrations_dir} has {len(migrations)} migration(s) already; a baseline adopts a "
                      "database no migrations describe yet. Use inv dev.squash --upto ID to fold a history instead")


def baseline(settings: Settings, db: Database, *, confirm: Confirm | None = None,
             reason: str | None = None) -> Baseline:
    migrations = source.of(settings)
    guard(settings, migrations)
    if settings.is_production:
        if confirm is None:
            raise Refused("a baseline of production needs a confirmation: run it at a terminal, or pass --yes")
        name = db.url.dbname
        if not confirm(Question(f"record a baseline of PRODUCTION: type the database name ({name}) to go ahead",
                                expected=name)):
            raise Aborted("baseline cancelled; nothing was written")
    with migration_lock(db, settings.lock_wait):
        live = diff.inspect(db)
        with shadow(settings, db) as scratch:
            empty = diff.inspect(scratch.db)
        plan = diff.plan(current=empty, desired=live)
        if plan.empty:
            raise ConfigError("the database has no schema to baseline; start with inv dev.migrate NAME instead")
        missing = not_compared(db)
        header = ["-- The schema of the database as it was adopted, written by `inv dev.baseline`.",
                  "-- It is recorded as applied there; on a new database it builds the same schema. Its rollback",
                  "-- is refused: a baseline has no safe down."]
        if missing:
            header.append("-- Not carried here (the differ does not compare them; add them by hand if new")
            header.append(f"-- databases need them): {', '.join(missing)}.")
        forward = "\n".join(header) + "\n\n" + plan.sql()
        created = source.create(settings.migrations_dir, "baseline", existing=migrations,
                                render=lambda ident: (forward, refusal.text(f"{ident} is a baseline")))
        history.ensure(db)
        record = history.upsert_sql(db, id=created.id, checksum=created.checksum, state="applied", duration_ms=0,
                                    transactional=True)
        try:
            db.execute(f"BEGIN; {record}; {audit.write_sql(db, 'baseline', created.id, reason)} COMMIT;")
        except BaseException:
            created.path.unlink(missing_ok=True)
            (settings.migrations_dir / f"{created.id}{source.ROLLBACK_SUFFIX}").unlink(missing_ok=True)
            raise
    return Baseline(created, len(plan.changes), missing)
