"""The contract gate's evidence that the old application is gone, besides its sessions (``window``).

The old names are what the contract section drops: ``DROP COLUMN c`` of ``ALTER TABLE t`` (the
column ``t.c``), ``DROP VIEW v`` or ``DROP TABLE t`` (the name ``v`` or ``t``). Two more kinds of evidence:

* pg_stat_statements, where the extension is installed in the target (and loaded): the statements of
  this database that name an old name, and their calls. A look is stored after the expand (once its
  backfill ran, so pgshift's own statements are in it) and again at each ``deploy.complete``; calls that
  grew since the last look mean something still runs them. Utility statements and pgshift's own
  (which name its schema) are left out.
* the generated models module (``dev.generate``): a class for an old table, or an attribute mapped to
  an old column, is the new release still reading the old shape.
"""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from pgshift.databases.db import Database, SqlFailure
from pgshift.migrations import phases
from pgshift.migrations.source import Migration

DDL = """
CREATE SCHEMA IF NOT EXISTS pgshift;
CREATE TABLE IF NOT EXISTS pgshift.statement_looks (
    id        text PRIMARY KEY,
    calls     jsonb NOT NULL,
    looked_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""

_DROP_COLUMN = re.compile(r"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<table>[\w.\"]+)\s+(?P<body>[^;]*)",
                          re.IGNORECASE)
_COLUMN = re.compile(r"\bDROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?(?P<col>[\w\"]+)", re.IGNORECASE)
_DROP_RELATION = re.compile(r"\bDROP\s+(?:VIEW|TABLE)\s+(?:IF\s+EXISTS\s+)?(?P<names>[\w.\", ]+)", re.IGNORECASE)
_NOT_COLUMNS = {"constraint", "default", "not", "expression", "identity", "trigger"}
_APPLICATION = r"^\s*(/\*.*\*/\s*)?(select|insert|update|delete|with|merge|copy|table|values)\M"


class OldName(NamedTuple):
    table: str
    column: str | None = None

    @property
    def shown(self) -> str:
        return f"{self.table}.{self.column}" if self.column else f"table {self.table}"


def _bare(raw: str) -> str:
    return raw.strip().split(".")[-1].strip('"').lower()


def old_names(contract: str | None) -> list[OldName]:
    """What the contract section drops that an application could still name."""
    found: list[OldName] = []
    text = contract or ""
    for statement in _DROP_COLUMN.finditer(text):
        for column in _COLUMN.finditer(statement.group("body")):
            name = _bare(column.group("col"))
            if name not in _NOT_COLUMNS:
                found.append(OldName(_bare(statement.group("table")), name))
    for dropped in _DROP_RELATION.finditer(text):
        found.extend(OldName(_bare(n)) for n in dropped.group("names").split(",") if n.strip())
    return [n for n in dict.fromkeys(found) if re.fullmatch(r"\w+", n.table) and re.fullmatch(r"\w*", n.column or "")]


def _statements_view(db: Database) -> str | None:
    """The pg_stat_statements view of this database when it is installed here and readable, else None."""
    row = db.one("SELECT quote_ident(n.nspname) FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                 "WHERE e.extname = 'pg_stat_statements'")
    if row is None:
        return None
    view = f"{row[0]}.pg_stat_statements"
    try:
        db.one(f"SELECT 1 FROM {view} LIMIT 0")
    except SqlFailure:  # installed but not in shared_preload_libraries, or not readable by this role
        return None
    return view


def _calls(db: Database, view: str, names: list[OldName]) -> dict[str, tuple[int, str]]:
    """queryid -> (calls, the statement's text) of this database's statements naming an old name."""
    if not names:
        return {}
    matches = " OR ".join("(" + " AND ".join(f"s.query ~* {db.literal(_word(w))}" for w in (n.table, n.column) if w)
                          + ")" for n in names)
    rows = db.rows(f"SELECT s.queryid::text, sum(s.calls)::bigint, min(left(s.query, 200)) FROM {view} s "
                   "WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                   f"AND s.query ~* {db.literal(_APPLICATION)} AND s.query !~* 'pgshift' AND ({matches}) "
                   "GROUP BY s.queryid")
    return {str(r[0]): (int(r[1]), str(r[2])) for r in rows}


def _word(name: str) -> str:
    return r"\m" + name + r"\M"  # a regular expression for the name as a whole word


def look(db: Database, migration_id: str, names: list[OldName]) -> bool:
    """Store the calls of now as the last look for ``migration_id``; False without pg_stat_statements."""
    view = _statements_view(db)
    if view is None:
        return False
    found = _calls(db, view, names)
    db.execute(DDL)
    db.execute("INSERT INTO pgshift.statement_looks (id, calls) VALUES (%s, %s::jsonb) ON CONFLICT (id) DO UPDATE "
               "SET calls = EXCLUDED.calls, looked_at = clock_timestamp()",
               [migration_id, _json({k: v[0] for k, v in found.items()})])
    return True


def _json(calls: dict[str, int]) -> str:
    import json

    return json.dumps(calls, sort_keys=True)


class Since(NamedTuple):
    calls: int                # calls since the last look
    statements: list[str]     # the statements that ran, newest look first
    looked_at: datetime


def statements_since(db: Database, migration_id: str, names: list[OldName]) -> Since | None:
    """Calls of statements naming an old name since the last look after ``migration_id``'s expand;
    None when there is nothing to compare (no pg_stat_statements, no old name, or no look yet). Takes a
    new look either way, so the next call compares with now."""
    view = _statements_view(db)
    if view is None or not names:
        return None
    try:
        row = db.one("SELECT l.calls, l.looked_at FROM pgshift.statement_looks l JOIN pgshift.phases p "
                     "ON p.id = l.id WHERE l.id = %s AND l.looked_at >= p.expanded_at", [migration_id])
    except SqlFailure as failure:
        if failure.sqlstate not in ("42P01", "3F000"):
            raise
        row = None
    now = _calls(db, view, names)
    earlier_reset = db.one(f"SELECT count(*) FROM {view.rsplit('.', 1)[0]}.pg_stat_statements_info "
                           "WHERE stats_reset > %s", [row[1]]) if row is not None and _has_info(db, view) else None
    look(db, migration_id, names)
    if row is None:
        return None
    before: dict[str, int] = {str(k): int(v) for k, v in dict(row[0]).items()}
    reset = earlier_reset is not None and int(earlier_reset[0]) > 0  # the counts started again from 0
    grown = [(calls - (0 if reset else before.get(queryid, 0)), text) for queryid, (calls, text) in now.items()]
    grown = [(n, text) for n, text in grown if n > 0]
    if not grown:
        return None
    grown.sort(key=lambda g: -g[0])
    return Since(sum(n for n, _ in grown), [f"{' '.join(text.split())} ({n} call(s))" for n, text in grown], row[1])


def _has_info(db: Database, view: str) -> bool:
    row = db.one("SELECT to_regclass(%s) IS NOT NULL", [f"{view.rsplit('.', 1)[0]}.pg_stat_statements_info"])
    return bool(row and row[0])


_CLASS = re.compile(r"^class \w+\(.*\):\s*$", re.MULTILINE)
_TABLENAME = re.compile(r"^    __tablename__ = (['\"])(?P<name>.*?)\1\s*$", re.MULTILINE)
_ATTRIBUTE = re.compile(r"^    (?P<attr>\w+): Mapped\[.*?\] = mapped_column\((?:(['\"])(?P<name>[^'\"]+)\2)?",
                        re.MULTILINE)


def models_mapping(path: Path | None, names: list[OldName]) -> list[str]:
    """Where the models module at ``path`` still maps an old name: "models.py:12 maps users.name"."""
    if path is None or not path.is_file() or not names:
        return []
    text = path.read_text(errors="replace")
    starts = [m.start() for m in _CLASS.finditer(text)] + [len(text)]
    found: list[str] = []
    for begin, end in itertools.pairwise(starts):
        block = text[begin:end]
        table = _TABLENAME.search(block)
        if table is None:
            continue
        name = table.group("name").lower()
        line = text.count("\n", 0, begin) + 1
        for old in names:
            if old.table != name:
                continue
            if old.column is None:
                found.append(f"{path.name}:{line} maps {old.shown}")
                continue
            for attribute in _ATTRIBUTE.finditer(block):
                column = (attribute.group("name") or attribute.group("attr")).lower()
                if column == old.column:
                    found.append(f"{path.name}:{line + block.count(chr(10), 0, attribute.start())} maps {old.shown}")
    return found


def look_open(db: Database, migrations: list[Migration]) -> None:
    """The first pg_stat_statements look of every expanded migration that has none since its expand."""
    files = {m.id: m for m in migrations}
    for phase in phases.recorded(db).values():
        migration = files.get(phase.id)
        if phase.phase != "expanded" or migration is None:
            continue
        parsed = phases.parse(migration.sql, migration.path.name)
        if parsed is None:
            continue
        try:
            row = db.one("SELECT count(*) FROM pgshift.statement_looks l JOIN pgshift.phases p ON p.id = l.id "
                         "WHERE l.id = %s AND l.looked_at >= p.expanded_at", [phase.id])
        except SqlFailure as failure:
            if failure.sqlstate not in ("42P01", "3F000"):
                raise
            row = (0,)
        if row is not None and int(row[0]) == 0 and not look(db, phase.id, old_names(parsed.contract)):
            return  # no pg_stat_statements here: nothing to look at for the others either
