"""Fill every table of a scratch database with generated rows, server-side.

Each table is one ``INSERT ... SELECT ... FROM generate_series(1, n) g``; nothing loops in Python.
Row ``g`` of a table gets, per column, a value derived from ``g`` and the column's type that is
distinct for distinct ``g`` (so primary keys and unique constraints hold), and timestamps that grow
with the column's position (so ``CHECK (ends_at > starts_at)`` holds when the columns are declared in
that order). A column whose CHECK is an ``IN`` list cycles through the list. Rows that would still
break a CHECK are filtered out with the CHECK's own expression, so the insert never fails on one.

Foreign keys: parents are filled first (tables in dependency order); a child row ``g`` takes the key of
parent row ``1 + (g - 1) % parent_rows``, computed with the parent's own formula when the parent was
filled completely, else joined by row number; so every reference exists. A
reference to the table itself, or within a cycle, is NULL (a NOT NULL one skips the table).

Sizes: ``rows`` for every table that no foreign key references (those tend to be the big ones),
a tenth of it for referenced tables, less where a unique constraint cannot hold more distinct
values (a unique reference to a parent: at most the parent's rows). A table that already has rows
(a seed) is left as it is and serves as a parent with its own rows.

On a superuser connection foreign-key triggers are skipped while filling
(``session_replication_role = replica``); every reference is valid by construction.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pgshift.checks import bulkload
from pgshift.databases import snapshot
from pgshift.databases.db import Database
from pgshift.errors import MigrationError

_TABLES = """
SELECT c.oid, format('%I.%I', n.nspname, c.relname), c.reltuples::bigint,
       EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift') AND n.nspname NOT LIKE 'pgshift\\_%'
AND n.nspname NOT LIKE 'pg\\_%'
AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                AND d.deptype = 'e')
ORDER BY 2"""

_COLUMNS = """
SELECT a.attrelid, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod),
       coalesce(bt.typname, t.typname), coalesce(bt.typtype, t.typtype), coalesce(bt.typcategory, t.typcategory),
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END, a.attnotnull, a.attidentity <> '',
       a.attgenerated <> '', pg_get_expr(ad.adbin, ad.adrelid), coalesce(t.typbasetype, 0) <> 0,
       coalesce(bt.oid, t.oid)::regtype::text
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum"""

_CONSTRAINTS = """
SELECT conrelid, contype, conkey, confrelid, confkey, pg_get_expr(conbin, conrelid)
FROM pg_constraint WHERE conrelid = ANY(%s) AND contype IN ('p', 'u', 'f', 'c')
ORDER BY conrelid, conname"""

# Unique indexes that back no constraint: a plain one caps the rows like a unique constraint; a
# partial or expression one cannot be reasoned about from the columns, so it stays in place while
# loading and the insert skips the rows that would break it (ON CONFLICT DO NOTHING).
_UNIQUE_INDEXES = """
SELECT i.indrelid, (i.indkey::int2[])[0:i.indnkeyatts - 1], i.indexprs IS NOT NULL OR i.indpred IS NOT NULL
FROM pg_index i WHERE i.indrelid = ANY(%s) AND i.indisunique
AND NOT EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conindid = i.indexrelid AND co.conrelid = i.indrelid)
ORDER BY i.indrelid, i.indexrelid"""

_ANY_LIST = re.compile(r"^\(*\"?(\w+)\"?\)?(?:::[\w ]+)? = ANY \(+(ARRAY\[.*?\])\)?(?:::[\w \[\]]+)?\)+$")
_TEXT_TYPES = {"text", "varchar", "bpchar", "citext", "name"}


@dataclass
class _Column:
    num: int
    name: str
    type: str          # as declared, for the cast
    base: str          # base type name (domains resolved)
    typtype: str
    category: str
    typmod: int
    notnull: bool
    identity: bool
    generated: bool
    default: str | None
    domain: bool
    regtype: str


@dataclass
class _Table:
    oid: int
    name: str
    columns: list[_Column] = field(default_factory=list)
    unique: list[list[int]] = field(default_factory=list)
    fks: list[tuple[list[int], int, list[int]]] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    skips_conflicts: bool = False  # a partial or expression unique index: duplicates are left out

    @property
    def counted(self) -> bool:
        """Whether the rows made must be counted: some generated ones may have been left out."""
        return bool(self.checks) or self.skips_conflicts


@dataclass(frozen=True)
class TableFill:
    table: str
    planned: int
    rows: int
    ms: int
    note: str | None = None  # why fewer rows than planned, or why skipped


@dataclass(frozen=True)
class FillReport:
    tables: list[TableFill]
    seconds: float           # all of it but ANALYZE: inserting, then rebuilding indexes
    analyze_seconds: float
    index_seconds: float = 0.0  # the part of ``seconds`` spent rebuilding the indexes set aside

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    @property
    def largest(self) -> int:
        return max((t.rows for t in self.tables), default=0)

    def as_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "seconds": round(self.seconds, 3), "rows_per_second": round(self.rows_per_second),
                "index_seconds": round(self.index_seconds, 3), "analyze_seconds": round(self.analyze_seconds, 3),
                "tables": [asdict(t) for t in self.tables]}

    @property
    def insert_rows_per_second(self) -> float:
        """The rate of the inserts alone, index rebuilding left out."""
        inserting = self.seconds - self.index_seconds
        return self.rows / inserting if inserting > 0 else 0.0


def _q(db: Database, name: str) -> str:
    return db.identifier(name)


def _load(db: Database) -> tuple[list[_Table], set[int]]:
    tables = {oid: _Table(oid, name) for oid, name, _, _ in db.rows(_TABLES)}
    oids = list(tables)
    for row in db.rows(_COLUMNS, [oids]):
        tables[row[0]].columns.append(_Column(*row[1:]))
    for relid, kind, keys, ref, refkeys, expr in db.rows(_CONSTRAINTS, [oids]):
        table = tables[relid]
        if kind in ("p", "u"):
            table.unique.append(list(keys))
        elif kind == "f":
            table.fks.append((list(keys), ref, list(refkeys)))
        elif expr:
            table.checks.append(expr)
    for relid, keys, partial in db.rows(_UNIQUE_INDEXES, [oids]):
        if partial or 0 in keys:  # 0: an expression among the key columns
            tables[relid].skips_conflicts = True
        else:
            tables[relid].unique.append(list(keys))
    nonempty = {oid for oid, t in tables.items()
                if db.one(f"SELECT EXISTS (SELECT 1 FROM {t.name})") == (True,)}
    return list(tables.values()), nonempty


def _order(tables: list[_Table]) -> list[_Table]:
    """Parents before children; a cycle is cut where it is met."""
    by_oid = {t.oid: t for t in tables}
    done: list[_Table] = []
    seen: set[int] = set()

    def visit(t: _Table, path: set[int]) -> None:
        if t.oid in seen:
            return
        path.add(t.oid)
        for _, ref, _ in t.fks:
            if ref in by_oid and ref not in path:
                visit(by_oid[ref], path)
        path.discard(t.oid)
        if t.oid not in seen:
            seen.add(t.oid)
            done.append(t)

    for t in sorted(tables, key=lambda t: t.name):
        visit(t, set())
    return done


def _value(col: _Column, position: int) -> tuple[str | None, int | None]:
    """SQL for the value of row ``g`` in this column, and how many distinct values it can take."""
    base, mod = col.base, col.typmod
    if col.typtype == "e":
        return f"(enum_range(NULL::{col.regtype}))[1 + (g % cardinality(enum_range(NULL::{col.regtype})))]", None
    if col.category == "A":
        return "'{}'", 1
    if base == "int2":
        return "(g % 32767)", 32766
    if base == "int4":
        return "(g % 2147483647)", 2147483646
    if base == "int8":
        return "g", None
    if base == "numeric":
        if mod > 4:
            precision, scale = ((mod - 4) >> 16) & 0xFFFF, (mod - 4) & 0xFFFF
            limit = 10 ** min(precision - scale, 15)
            return (f"(g % {limit})", limit - 1) if limit > 1 else ("0", 1)
        return "g", None
    if base in ("float4", "float8"):
        return "g", None
    if base == "bool":
        return "(g % 2 = 0)", 2
    if base in _TEXT_TYPES:
        length = mod - 4 if mod > 4 else None
        if "email" in col.name.lower() and (length is None or length >= 40):
            return "('user' || g || '@example.test')", None
        if length is None or length >= 20:
            return "('v' || g)", None
        return f"lpad(to_hex(g), {length}, '0')", 16 ** length - 1
    if base == "uuid":
        return "lpad(to_hex(g), 32, '0')::uuid", None
    if base == "timestamptz":  # 2020-01-01 UTC + g seconds + a day per column position
        return f"to_timestamp(g + {1577836800 + position * 86400})", None
    if base == "timestamp":
        return f"(to_timestamp(g + {1577836800 + position * 86400}) AT TIME ZONE 'UTC')", None
    if base == "date":
        return f"(date '2000-01-01' + (g % 2000000)::int + {position})", 1999999
    if base in ("time", "timetz"):
        return "(time '00:00' + (g % 86400) * interval '1 second')", 86399
    if base == "interval":
        return "(g * interval '1 second')", None
    if base in ("inet", "cidr"):
        return "('10.0.0.0'::inet + (g % 16777216))", 16777215
    if base in ("json", "jsonb"):
        return "jsonb_build_object('n', g)", None
    if base == "bytea":
        return "int8send(g)", None
    if base == "money":
        return "(g % 1000000)::numeric", 999999
    return None, None


def _in_list(table: _Table, column: str) -> tuple[str, int] | None:
    for check in table.checks:
        found = _ANY_LIST.match(check.strip())
        if found and found.group(1) == column:
            items = len(re.findall(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b", found.group(2)))
            return found.group(2), max(items, 1)
    return None


def _plan_rows(table: _Table, rows: int, referenced: set[int], counts: dict[int, int]) -> int:
    planned = rows if table.oid not in referenced else max(rows // 10, 1)
    fk_of = {k: ref for keys, ref, _ in table.fks for k in keys}
    values = {c.num: c for c in table.columns}
    for keys in table.unique:
        caps: list[int] = []
        for num in keys:
            if num in fk_of:
                caps.append(counts.get(fk_of[num], 0))
            else:
                col = values[num]
                listed = _in_list(table, col.name)
                cap = listed[1] if listed else _value(col, 0)[1]
                caps.append(cap if cap is not None else planned)
        planned = min(planned, max(caps, default=planned))
    return planned


def _statement(db: Database, table: _Table, n: int, counts: dict[int, int], names: dict[int, str],
               filled: set[int], formulas: dict[int, dict[int, str]] | None = None,
               ) -> tuple[str | None, str | None, dict[int, str]]:
    """The INSERT for ``n`` rows (or a reason the table cannot be filled), and the formula of each
    column whose value is a plain function of ``g``.

    A reference to a parent whose keys are such formulas, filled completely, takes the parent's
    formula at row ``1 + (g - 1) % parent_rows`` (no join); any other reference joins the parent's
    rows by number."""
    formulas = formulas or {}
    direct: dict[int, str] = {}
    fk_col: dict[int, tuple[int, int]] = {}
    joins: list[str] = []
    null_cols: dict[int, str] = {}
    for index, (keys, ref, refkeys) in enumerate(table.fks):
        if ref not in filled or ref == table.oid or counts.get(ref, 0) == 0:
            why = (f"{names[ref]}, which has no rows" if ref in filled and ref != table.oid
                   else "its own table or one in a cycle of references, not filled yet")
            null_cols.update(dict.fromkeys(keys, why))
            continue
        known = formulas.get(ref, {})
        if all(k in known for k in refkeys):
            row = f"(1 + (g - 1) % {counts[ref]})"
            for mine, theirs in zip(keys, refkeys, strict=True):
                direct.setdefault(mine, re.sub(r"\bg\b", row, known[theirs]))
            continue
        parent_cols = {num: name for num, name in _column_names(db, ref, refkeys)}
        alias = f"p{index}"
        cols = ", ".join(f"{_q(db, parent_cols[k])} AS k{k}" for k in refkeys)
        joins.append(f"JOIN (SELECT row_number() OVER () AS rn, {cols} FROM {names[ref]}) {alias} "
                     f"ON {alias}.rn = 1 + (g - 1) % {counts[ref]}")
        for mine, theirs in zip(keys, refkeys, strict=True):
            fk_col.setdefault(mine, (index, theirs))
    select: list[str] = []
    targets: list[str] = []
    plain: dict[int, str] = {}
    for position, col in enumerate(table.columns):
        if col.generated:
            continue
        if col.num in direct:
            expr = direct[col.num]
        elif col.num in fk_col:
            index, theirs = fk_col[col.num]
            expr = f"p{index}.k{theirs}"
        elif col.num in null_cols:
            if col.notnull:
                return None, f"NOT NULL column {col.name} references {null_cols[col.num]}", {}
            expr = "NULL"
        else:
            listed = _in_list(table, col.name)
            if listed:
                expr = f"({listed[0]})[1 + (g % cardinality({listed[0]}))]"
            else:
                generated, _ = _value(col, position)
                if generated is not None:
                    expr = generated
                    if col.typtype != "e" and not col.domain:
                        plain[col.num] = f"({expr})::{col.type}"
                elif col.default is not None:
                    expr = col.default
                elif not col.notnull:
                    expr = "NULL"
                else:
                    return None, f"no generator for column {col.name} of type {col.type}", {}
        select.append(f"({expr})::{col.type} AS {_q(db, col.name)}")
        targets.append(_q(db, col.name))
    where = " AND ".join(f"({check}) IS NOT FALSE" for check in table.checks) or "true"
    identity = " OVERRIDING SYSTEM VALUE" if any(c.identity for c in table.columns) else ""
    conflicts = " ON CONFLICT DO NOTHING" if table.skips_conflicts else ""
    cols = ", ".join(targets)
    return (f"INSERT INTO {table.name} ({cols}){identity} SELECT {cols} FROM "
            f"(SELECT {', '.join(select)} FROM generate_series(__LO__, __HI__) AS g {' '.join(joins)}) s "
            f"WHERE {where}{conflicts}"), None, plain


def _column_names(db: Database, relid: int, nums: list[int]) -> list[tuple[int, str]]:
    return [(int(r[0]), str(r[1])) for r in db.rows(
        "SELECT attnum, attname FROM pg_attribute WHERE attrelid = %s AND attnum = ANY(%s)", [relid, nums])]


def fill(db: Database, rows: int, workers: int = 0, progress: Callable[[str], None] | None = None) -> FillReport:
    """Fill every empty table; ``rows`` in each table that nothing references. Then ANALYZE.

    Tables that do not depend on each other are filled at the same time on ``workers`` connections
    (default: one per CPU, at most 4). Indexes and constraints that need one are set aside while
    loading (an index built once at the end is several times faster than one kept up row by row) and
    put back with their exact definitions; a snapshot before and after proves the schema is as it was."""
    tables, nonempty = _load(db)
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    referenced = {ref for t in tables for _, ref, _ in t.fks if ref != t.oid}
    names = {t.oid: t.name for t in tables}
    counts: dict[int, int] = {}
    filled: set[int] = set()
    formulas: dict[int, dict[int, str]] = {}    # table -> column -> its value as a function of g
    candidates: dict[int, dict[int, str]] = {}
    results: list[TableFill] = []
    superuser = db.one("SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == (True,)
    setup = "SET synchronous_commit = off" + ("; SET session_replication_role = replica" if superuser else "")
    before = snapshot.take(db)
    started = time.monotonic()
    pool = bulkload.Pool(db.url, workers, setup)
    aside = bulkload.set_aside(db, [t.oid for t in tables if t.oid not in nonempty])
    broken: str | None = None
    try:
        for level in _levels(tables):
            jobs: list[tuple[_Table, int, list[str]]] = []
            for table in level:
                if table.oid in nonempty:
                    counts[table.oid] = int((db.one(f"SELECT count(*) FROM {table.name}") or (0,))[0])
                    results.append(TableFill(table.name, 0, counts[table.oid], 0, "had rows already: kept"))
                    continue
                planned = _plan_rows(table, rows, referenced, counts)
                sql, reason, plain = _statement(db, table, planned, counts, names, filled, formulas)
                if sql is None:
                    counts[table.oid] = 0
                    results.append(TableFill(table.name, planned, 0, 0, f"skipped: {reason}"))
                else:
                    jobs.append((table, planned, bulkload.chunks(sql, planned, workers)))
                    candidates[table.oid] = plain
            if progress is not None and jobs:
                progress("filling " + ", ".join(f"{t.name} ({n:,} rows)" for t, n, _ in jobs))
            outcomes = iter(pool.run([chunk for _, _, chunks in jobs for chunk in chunks]))
            for table, planned, chunks in jobs:
                done = [next(outcomes) for _ in chunks]
                ms = max((d[0] for d in done), default=0)
                error = next((d[1] for d in done if d[1]), None)
                note = f"skipped: {error}" if error else None
                made = planned
                if error is not None or table.counted:
                    made = int((db.one(f"SELECT count(*) FROM {table.name}") or (0,))[0])
                    if error is not None and made:
                        note = f"{made:,} of {planned:,} rows (part of the load failed: {error})"
                    if error is None and made < planned:
                        broke = ("a CHECK or a partial or expression unique index" if table.checks
                                 and table.skips_conflicts else "a CHECK" if table.checks
                                 else "a partial or expression unique index")
                        note = f"{planned - made} generated row(s) broke {broke} and were left out"
                counts[table.oid] = made
                if error is None and made == planned:
                    formulas[table.oid] = candidates[table.oid]
                results.append(TableFill(table.name, planned, made, ms, note))
            filled.update(t.oid for t in level)
        for table in tables:
            _reset_sequences(db, table)
    finally:
        indexing = time.monotonic()
        if progress is not None and aside:
            progress(f"rebuilding {len(aside)} index(es) set aside while loading")
        try:
            broken = bulkload.put_back(db, pool, aside, [t.name for t in tables if t.oid not in nonempty])
        finally:
            pool.close()
    index_seconds = time.monotonic() - indexing
    if broken is not None:  # the tables were emptied to put the index back: say so, measure without data
        emptied = f"emptied: generated rows broke a unique index ({broken})"
        results = [r if r.note == "had rows already: kept" else TableFill(r.table, r.planned, 0, r.ms, emptied)
                   for r in results]
    seconds = time.monotonic() - started
    changed = snapshot.diff(before, snapshot.take(db))
    if changed:
        raise MigrationError(f"generating data changed the schema, which must not happen: {changed[0]}")
    t0 = time.monotonic()
    db.execute("ANALYZE")
    return FillReport(sorted(results, key=lambda r: r.table), seconds, time.monotonic() - t0, index_seconds)


def _levels(tables: list[_Table]) -> list[list[_Table]]:
    """Tables grouped so that each group's parents are all in earlier groups."""
    depth: dict[int, int] = {}
    by_oid = {t.oid: t for t in tables}
    for table in _order(tables):
        parents = [depth[ref] for _, ref, _ in table.fks if ref in depth and ref != table.oid]
        depth[table.oid] = 1 + max(parents, default=-1)
    grouped: dict[int, list[_Table]] = {}
    for oid, level in depth.items():
        grouped.setdefault(level, []).append(by_oid[oid])
    return [grouped[k] for k in sorted(grouped)]


def _reset_sequences(db: Database, table: _Table) -> None:
    """Move each serial or identity sequence past the values we inserted explicitly."""
    for col in table.columns:
        row = db.one("SELECT pg_get_serial_sequence(%s, %s)", [table.name, col.name])
        if row and row[0]:
            db.rows(f"SELECT setval(%s, max({_q(db, col.name)})) FROM {table.name} "
                    f"HAVING max({_q(db, col.name)}) IS NOT NULL", [row[0]])
