"""Expand and contract: a migration file in marked phases, and their record in ``pgshift.phases``.

A file with a ``-- pgshift: expand`` line is a zero-downtime change in one plain SQL file::

    -- pgshift: expand
    ALTER TABLE users ADD COLUMN full_name text;
    ALTER TABLE users ADD CONSTRAINT users_full_name_not_null CHECK (full_name IS NOT NULL) NOT VALID;
    -- pgshift: backfill users SET full_name = name WHERE full_name IS NULL
    -- pgshift: validate
    ALTER TABLE users VALIDATE CONSTRAINT users_full_name_not_null;
    -- pgshift: contract
    ALTER TABLE users ALTER COLUMN full_name SET NOT NULL;
    ALTER TABLE users DROP CONSTRAINT users_full_name_not_null;
    ALTER TABLE users DROP COLUMN name;
    -- pgshift: abort
    ALTER TABLE users DROP COLUMN full_name;

The expand section (with any text before the first marker) runs when the migration is applied, and its
phase row (``expanded``) commits with it; then each backfill line runs through ``backfill``, then each
statement of the validate section in a transaction of its own (``pgshift.migrations.validate``: a
``VALIDATE CONSTRAINT`` takes only SHARE UPDATE EXCLUSIVE, and would otherwise be held under the ACCESS
EXCLUSIVE lock its ``ADD CONSTRAINT ... NOT VALID`` took). The contract section runs only through
``complete``, the abort section (or else the rollback file) only through ``abort``. Until it is
completed, a later migration that mentions a table and a column this one touches is refused.
Everything here is plain text matching: the file stays what the team reviewed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from pgshift.databases.db import Database, SqlFailure
from pgshift.errors import MigrationError
from pgshift.migrations.source import Migration

DDL = """
CREATE SCHEMA IF NOT EXISTS pgshift;
CREATE TABLE IF NOT EXISTS pgshift.phases (
    id            text PRIMARY KEY,
    phase         text NOT NULL CHECK (phase IN ('expanded', 'completed')),
    columns       text[] NOT NULL DEFAULT '{}',
    expanded_at   timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    completed_by  text,
    forced_reason text
);
CREATE TABLE IF NOT EXISTS pgshift.backfills (
    id            text NOT NULL,
    step          integer NOT NULL,
    target        text NOT NULL,
    state         text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done')),
    last_key      text[],
    rows_done     bigint NOT NULL DEFAULT 0,
    rows_scanned  bigint NOT NULL DEFAULT 0,
    rows_total    bigint,
    batches       integer NOT NULL DEFAULT 0,
    batch_size    integer,
    paused        boolean NOT NULL DEFAULT false,
    throttled     text,
    started_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    PRIMARY KEY (id, step)
);
"""

_MARK = re.compile(r"^--\s*pgshift:\s*(expand|backfill|validate|contract|abort)\b[ \t]*(.*)$", re.IGNORECASE)
_BACKFILL = re.compile(r"^(?P<table>[\w.\"]+)\s+SET\s+(?P<set>.+?)(?:\s+WHERE\s+(?P<where>.+))?$",
                       re.IGNORECASE | re.DOTALL)
_ALTER = re.compile(r"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<table>[\w.\"]+)(?P<body>[^;]*)",
                    re.IGNORECASE)
_COLUMN = re.compile(r"\b(?:ADD|DROP|ALTER|RENAME)\s+(?:COLUMN\s+)?(?:IF\s+(?:NOT\s+)?EXISTS\s+)?(?P<col>[\w\"]+)"
                     r"(?:\s+TO\s+(?P<to>[\w\"]+))?", re.IGNORECASE)
_NOT_COLUMNS = {"constraint", "primary", "unique", "check", "foreign", "to", "exclude", "index"}
_ASSIGNED = re.compile(r"(?:^|,)\s*(?P<col>[\w\"]+)\s*=(?!=)")


class Backfill(NamedTuple):
    """One ``-- pgshift: backfill <table> SET <assignments> [WHERE <condition>]`` line."""

    step: int        # 1-based, in file order
    table: str       # as written (it goes into the SQL as the author wrote it)
    assignments: str
    where: str | None
    line: int


class Phases(NamedTuple):
    expand: str               # the file with every line outside the expand section blanked (same length)
    backfills: list[Backfill]
    contract: str | None      # the section (the file, other lines blanked); None when the file has none
    abort: str | None
    columns: tuple[str, ...]  # "table.column" the migration touches, lowercase
    validate: str | None = None  # the section, like contract; each statement runs in its own transaction


def has_phases(sql: str) -> bool:
    if "pgshift:" not in sql:
        return False
    return any((found := _MARK.match(line.strip())) is not None and found.group(1).lower() == "expand"
               for line in sql.splitlines())


def parse(sql: str, origin: str) -> Phases | None:
    """The phases of a file; None when it has no ``-- pgshift: expand`` line (an ordinary migration).
    Raises MigrationError naming the line of a malformed or misplaced marker."""
    if not has_phases(sql):
        return None
    lines = sql.split("\n")
    section = "expand"
    seen: list[str] = []
    # each the whole file, other lines blanked
    bodies: dict[str, list[str]] = {"validate": [], "contract": [], "abort": []}
    expand: list[str] = []
    backfills: list[Backfill] = []
    order = ["expand", "backfill", "validate", "contract", "abort"]
    for number, line in enumerate(lines, 1):
        found = _MARK.match(line.strip())
        if found is not None:
            kind, rest = found.group(1).lower(), found.group(2).strip()
            if (seen and order.index(kind) < order.index(seen[-1])) or (kind != "backfill" and kind in seen):
                raise MigrationError(f"{origin}, line {number}: '-- pgshift: {kind}' is out of place; the sections "
                                     "come once each in the order expand, backfill, validate, contract, abort")
            seen.append(kind)
            section = kind
            expand.append(_blank(line))
            for body in bodies.values():
                body.append(_blank(line))
            if kind == "backfill":
                backfills.append(_backfill(rest, len(backfills) + 1, origin, number))
            elif rest:
                raise MigrationError(f"{origin}, line {number}: nothing may follow '-- pgshift: {kind}' on its line")
            continue
        for name, body in bodies.items():
            body.append(line if name == section else _blank(line))
        if section == "expand":
            expand.append(line)
            continue
        expand.append(_blank(line))
        if section == "backfill" and line.strip() and not line.strip().startswith("--"):
            raise MigrationError(f"{origin}, line {number}: SQL after a backfill line belongs in the expand "
                                 "or the contract section; move it under '-- pgshift: contract'")
    contract = "\n".join(bodies["contract"]) if "contract" in seen else None
    abort = "\n".join(bodies["abort"]) if "abort" in seen else None
    validate = "\n".join(bodies["validate"]) if "validate" in seen else None
    expand_text = "\n".join(expand)
    return Phases(expand_text, backfills, contract, abort,
                  _touched(expand_text + "\n" + (contract or ""), backfills), validate)


def _blank(line: str) -> str:
    return " " * len(line)


def _backfill(text: str, step: int, origin: str, line: int) -> Backfill:
    found = _BACKFILL.match(text)
    if found is None:
        raise MigrationError(f"{origin}, line {line}: a backfill line reads '-- pgshift: backfill <table> SET "
                             "<column> = <expression> [WHERE <condition>]'; fix it")
    return Backfill(step, found.group("table"), found.group("set").strip(),
                    (found.group("where") or "").strip() or None, line)


def _name(raw: str) -> str:
    return raw.split(".")[-1].strip('"').lower()


def _touched(sql: str, backfills: list[Backfill]) -> tuple[str, ...]:
    found: set[str] = set()
    for statement in _ALTER.finditer(sql):
        table = _name(statement.group("table"))
        for column in _COLUMN.finditer(statement.group("body")):
            for name in (column.group("col"), column.group("to")):
                if name and _name(name) not in _NOT_COLUMNS:
                    found.add(f"{table}.{_name(name)}")
    for fill in backfills:
        for assigned in _ASSIGNED.finditer(fill.assignments):
            found.add(f"{_name(fill.table)}.{_name(assigned.group('col'))}")
    return tuple(sorted(found))


@dataclass(frozen=True)
class Expanding(Migration):
    """A phased migration as ``apply`` runs it: its expand section and its phase row; the checksum is
    still the whole file's, so the record guards every section."""

    whole_checksum: str = ""

    @cached_property
    def checksum(self) -> str:
        return self.whole_checksum


def runnable(db: Database, migration: Migration) -> Migration:
    """What ``apply`` runs of ``migration``: the file itself, or for a phased one its expand section
    followed by the statement that records it expanded (so the two commit together)."""
    found = parse(migration.sql, migration.path.name)
    if found is None:
        return migration
    record = (f"INSERT INTO pgshift.phases (id, phase, columns) VALUES ({db.literal(migration.id)}, 'expanded', "
              f"{db.literal(list(found.columns))}::text[]) ON CONFLICT (id) DO UPDATE SET phase = 'expanded', "
              "columns = EXCLUDED.columns, expanded_at = now(), completed_at = NULL, completed_by = NULL, "
              "forced_reason = NULL")
    return Expanding(id=migration.id, folder=migration.folder, sql=f"{found.expand}\n;\n{record}",
                     has_rollback=migration.has_rollback, whole_checksum=migration.checksum)


def ensure(db: Database) -> None:
    db.execute(DDL)


class Phase(NamedTuple):
    id: str
    phase: str
    columns: tuple[str, ...]
    completed_by: str | None
    forced_reason: str | None


def recorded(db: Database) -> dict[str, Phase]:
    """Every phase row; none before the first phased migration."""
    try:
        rows = db.rows("SELECT id, phase, columns, completed_by, forced_reason FROM pgshift.phases ORDER BY id")
    except SqlFailure as failure:
        if failure.sqlstate in ("42P01", "3F000"):
            return {}
        raise
    return {r[0]: Phase(r[0], r[1], tuple(r[2]), r[3], r[4]) for r in rows}


def refuse_overlap(db: Database, pending: list[Migration]) -> None:
    """Refuse a pending migration that mentions a table and a column an expanded, not yet completed
    migration touches: it would change what both application versions rely on during the window."""
    open_ = [(p.id, p.columns) for p in recorded(db).values() if p.phase == "expanded"] if pending else []
    for migration in pending:  # and those this same run expands first
        found = parse(migration.sql, migration.path.name)
        if found is not None:
            open_.append((migration.id, found.columns))
    for phase_id, columns in open_:
        for migration in pending:
            if migration.id <= phase_id:
                continue
            text = migration.sql.lower()
            for touched in columns:
                table, column = touched.split(".", 1)
                if _word(table, text) and _word(column, text):
                    raise MigrationError(
                        f"{migration.path.name} touches {touched}, which {phase_id} expands and leaves open "
                        "until inv deploy.complete; complete it (or inv deploy.abort) first, then apply this one")


def _word(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", text) is not None


def forget_sql(db: Database, migration_id: str) -> str:
    """The statements that remove a migration's phase and backfill rows (inside a rollback or abort)."""
    ident = db.literal(migration_id)
    return f"DELETE FROM pgshift.phases WHERE id = {ident}; DELETE FROM pgshift.backfills WHERE id = {ident};"
