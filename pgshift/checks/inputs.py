"""What the checks read before they run: the migrations, and what the target already has.

Every check runs on scratch databases on the target's server (the embedded one in development
without a DATABASE_URL). The target itself is only read: which migrations it has applied
(performance measures the ones it lacks, lint checks those; ``every`` lints all) and which tables it
has (a table made outside the migrations exists all the same, for lint).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pgshift.databases import target, throwaway
from pgshift.databases.db import Database, DatabaseMissing
from pgshift.dburl import DatabaseUrl
from pgshift.errors import Refused
from pgshift.migrations import history, source, squashed
from pgshift.migrations.apply import Limits
from pgshift.migrations.source import Migration
from pgshift.settings import Settings


@dataclass(frozen=True)
class Inputs:
    admin: DatabaseUrl            # where scratch databases are made
    migrations: list[Migration]
    limits: Limits
    applied: set[str]             # ids the target has applied
    target: str                   # for printing
    tables: set[str] = field(default_factory=set)  # the target's tables (schema.name), for lint
    accept: tuple[str, ...] = ()  # constraints findings accepted by the config
    sizes: dict[str, str] = field(default_factory=dict)  # the target's tables: "~N rows, X MB", for lint

    @property
    def pending(self) -> set[str]:
        return {m.id for m in self.migrations if m.id not in self.applied}


def gather(settings: Settings, scratch_databases: bool = True) -> Inputs:
    """What the checks need; ``scratch_databases=False`` (lint) only reads the target."""
    if scratch_databases and settings.is_production:
        raise Refused("inv test makes scratch databases on the target's server and fills them with generated "
                      "data, which production's server must not carry; point DATABASE_URL at a development "
                      "or CI server, or use inv deploy, which rehearses on a clone")
    migrations = source.of(settings)
    url = target.url(settings)
    applied, tables, sizes = _read_target(url, settings.connect_timeout, migrations)
    admin = throwaway.admin_url(url, settings.connect_timeout) if scratch_databases else url
    return Inputs(admin, migrations, Limits.of(settings), applied, settings.describe_target(), tables,
                  settings.accept, sizes)


_TARGET_TABLES = """
SELECT format('%s.%s', n.nspname, c.relname), greatest(c.reltuples, 0)::bigint, pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift')
AND n.nspname NOT LIKE 'pgshift\\_%' AND n.nspname NOT LIKE 'pg\\_%'"""


def _read_target(url: DatabaseUrl, connect_timeout: int,
                 migrations: list[Migration]) -> tuple[set[str], set[str], dict[str, str]]:
    """The target's applied migrations, its tables and their sizes (the planner's row estimate and the
    bytes on disk), read only; a database not created yet has none."""
    try:
        with Database.connect(url, connect_timeout) as db:
            records = squashed.mapped(migrations, history.records(db))
            applied = {r.id for r in records.values() if r.state == "applied"}
            rows = db.rows(_TARGET_TABLES)
    except DatabaseMissing:
        return set(), set(), {}
    sizes = {str(name).rsplit(".", 1)[-1].lower(): f"~{count:,} rows, {size / 1e6:,.1f} MB"
             for name, count, size in rows}
    return applied, {str(r[0]) for r in rows}, sizes
