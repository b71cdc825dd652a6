"""constraints: schema smells, each with the SQL that fixes it.

Run on a scratch database with every migration applied (``run``), or on any database (``inspect``:
a deploy can point it at a clone of the target, where sequence use is real).

* a foreign key whose columns no index leads with (every delete or key update in the parent scans
  the child; the child cannot be joined by index)
* a table without a primary key (no logical replication of updates, no safe row identity)
* an invalid index (a failed ``CREATE INDEX CONCURRENTLY``: maintained on writes, never used)
* duplicate indexes (same table, columns, operator classes, expressions and predicate)
* a constraint left ``NOT VALID``
* a sequence that has used more than ``sequence_limit`` of its range

Every finding has an id, ``<kind>:<object>`` (``unindexed-foreign-key:public.orders.orders_user_id_fkey``).
A team that has judged one acceptable writes ``-- pgshift: accept <id>`` in any migration, or
``-- pgshift: accept <kind>`` in the migration that made the finding (all of that kind it made):
the finding is then shown as accepted and does not fail the check.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pgshift.checks.forward import apply_one
from pgshift.databases import throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError
from pgshift.migrations import apply
from pgshift.migrations.source import Migration

_USER = ("n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift') AND n.nspname NOT LIKE 'pgshift\\_%' "
         "AND n.nspname NOT LIKE 'pg\\_%' "
         "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
         "AND d.objid = c.oid AND d.deptype = 'e')")

_UNINDEXED_FK = rf"""
SELECT format('%I.%I', n.nspname, c.relname), co.conname,
       array_agg(quote_ident(a.attname) ORDER BY k.i), c.relname
FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN LATERAL unnest(co.conkey) WITH ORDINALITY AS k(attnum, i)
JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.attnum
WHERE co.contype = 'f' AND {_USER}
AND NOT EXISTS (
    SELECT 1 FROM pg_index i
    WHERE i.indrelid = co.conrelid AND i.indisvalid
    AND (i.indpred IS NULL OR NOT EXISTS (  -- a partial index WHERE fk_col IS NOT NULL serves the lookups too
        SELECT 1 FROM regexp_split_to_table(btrim(pg_get_expr(i.indpred, i.indrelid), '()'),
                                            '\)? AND \(?') AS p(term)
        WHERE p.term NOT IN (SELECT quote_ident(fa.attname) || ' IS NOT NULL' FROM pg_attribute fa
                             WHERE fa.attrelid = co.conrelid AND fa.attnum = ANY(co.conkey))))
    AND (SELECT array_agg(x ORDER BY x) FROM unnest(i.indkey[0:cardinality(co.conkey) - 1]) x)
        = (SELECT array_agg(x ORDER BY x) FROM unnest(co.conkey) x))
GROUP BY n.nspname, c.relname, co.conname ORDER BY 1, 2"""

_NO_PRIMARY_KEY = f"""
SELECT format('%I.%I', n.nspname, c.relname),
       (SELECT ic.relname FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
        WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
        AND NOT EXISTS (SELECT 1 FROM unnest(i.indkey) k JOIN pg_attribute a ON a.attrelid = c.oid
                        AND a.attnum = k WHERE NOT a.attnotnull)
        ORDER BY ic.relname LIMIT 1)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {_USER}
AND NOT EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conrelid = c.oid AND co.contype = 'p')
ORDER BY 1"""

_INVALID_INDEX = f"""
SELECT format('%I.%I', n.nspname, c.relname), format('%I.%I', n.nspname, ic.relname)
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT i.indisvalid AND {_USER} ORDER BY 1, 2"""

_DUPLICATE_INDEX = f"""
SELECT format('%I.%I', n.nspname, c.relname),
       array_agg(format('%I.%I', n.nspname, ic.relname) ORDER BY (co.oid IS NULL), ic.relname),
       array_agg(co.oid IS NULL ORDER BY (co.oid IS NULL), ic.relname)
FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_constraint co ON co.conindid = i.indexrelid AND co.conrelid = i.indrelid
                            AND co.contype IN ('p', 'u', 'x')  -- not a self-referencing FK on the key
WHERE {_USER}
GROUP BY n.nspname, c.relname, i.indrelid, i.indkey::text, i.indclass::text, i.indcollation::text,
         i.indoption::text, coalesce(pg_get_expr(i.indexprs, i.indrelid), ''),
         coalesce(pg_get_expr(i.indpred, i.indrelid), ''), ic.relam, i.indisunique
HAVING count(*) > 1 ORDER BY 1"""

_NOT_VALID = f"""
SELECT format('%I.%I', n.nspname, c.relname), co.conname,
       CASE co.contype WHEN 'f' THEN 'foreign key' WHEN 'c' THEN 'check' ELSE co.contype::text END
FROM pg_constraint co JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE NOT co.convalidated AND co.contype <> 'n' AND {_USER} ORDER BY 1, 2"""

_SEQUENCES = """
SELECT format('%I.%I', s.schemaname, s.sequencename), s.last_value, s.max_value, s.min_value,
       s.increment_by, s.data_type::text,
       (SELECT format('%s.%I', d.refobjid::regclass, a.attname) FROM pg_depend d
        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass
        AND d.objid = format('%I.%I', s.schemaname, s.sequencename)::regclass
        AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
FROM pg_sequences s
WHERE s.schemaname NOT IN ('pgshift') AND s.schemaname NOT LIKE 'pgshift\\_%'
AND s.last_value IS NOT NULL AND NOT s.cycle
ORDER BY 1"""


@dataclass(frozen=True)
class Finding:
    kind: str      # unindexed foreign key | no primary key | invalid index | duplicate index | not valid | sequence
    table: str
    problem: str
    fix: str
    id: str = ""   # <kind>:<object>, what an accept comment names
    accepted_in: str | None = None  # the migration whose comment accepted it


@dataclass(frozen=True)
class ConstraintsReport:
    findings: list[Finding] = field(default_factory=list)
    note: str | None = None
    accepted: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        also = f"; {len(self.accepted)} accepted" if self.accepted else ""
        if self.findings:
            first = self.findings[0]
            return f"{len(self.findings)} problem(s){also}; first: {first.table}: {first.problem}"
        return ("no missing indexes, keys or other schema smells" + (also.replace(";", ",", 1) if also else "")
                + (f"; {self.note}" if self.note else ""))

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "summary": self.summary(), "note": self.note,
                "findings": [asdict(f) for f in self.findings], "accepted": [asdict(f) for f in self.accepted]}


def _index_name(table: str, columns: list[str]) -> str:
    bare = table.rsplit(".", 1)[-1].strip('"')
    name = "_".join([bare, *(c.strip('"') for c in columns), "idx"])
    return name[:63]


def _ident(name: str) -> str:
    """A name as PostgreSQL would print it: quoted only when it must be."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


def _slug(kind: str) -> str:
    return kind.replace(" ", "-")


def inspect(db: Database, sequence_limit: float = 0.75) -> ConstraintsReport:
    """Every smell in the database ``db`` is connected to (reads only)."""
    found = [replace(f, id=f"{_slug(f.kind)}:{f.id}") for f in _inspect(db, sequence_limit)]
    return ConstraintsReport(found)


def _inspect(db: Database, sequence_limit: float) -> list[Finding]:
    """The findings, each with the object part of its id."""
    found: list[Finding] = []
    for table, name, columns, _ in db.rows(_UNINDEXED_FK):
        cols = ", ".join(columns)
        found.append(Finding(
            "unindexed foreign key", table,
            f"foreign key {name} ({cols}) has no index that starts with its columns: deleting or updating a "
            "referenced row scans the whole table",
            f"CREATE INDEX CONCURRENTLY {_index_name(table, list(columns))} ON {table} ({cols});",
            f"{table}.{_ident(name)}"))
    for table, unique_index in db.rows(_NO_PRIMARY_KEY):
        fix = (f"ALTER TABLE {table} ADD PRIMARY KEY USING INDEX {unique_index};" if unique_index
               else f"ALTER TABLE {table} ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;")
        found.append(Finding("no primary key", table, "table has no primary key", fix, table))
    for table, index in db.rows(_INVALID_INDEX):
        found.append(Finding("invalid index", table,
                             f"index {index} is invalid (a failed concurrent build): written to, never read",
                             f"REINDEX INDEX CONCURRENTLY {index};", index))
    for table, indexes, droppable in db.rows(_DUPLICATE_INDEX):
        keep = indexes[0]
        for index, free in zip(indexes[1:], droppable[1:], strict=True):
            fix = (f"DROP INDEX CONCURRENTLY {index};" if free
                   else f"-- {index} backs a constraint; drop the other one: DROP INDEX CONCURRENTLY {keep};")
            found.append(Finding("duplicate index", table, f"index {index} duplicates {keep}", fix, index))
    for table, name, kind in db.rows(_NOT_VALID):
        found.append(Finding("not valid", table,
                             f"{kind} constraint {name} is NOT VALID: existing rows were never checked",
                             f"ALTER TABLE {table} VALIDATE CONSTRAINT {db.identifier(name)};",
                             f"{table}.{_ident(name)}"))
    for name, last, top, bottom, step, data_type, owner in db.rows(_SEQUENCES):
        used = (last - bottom) / (top - bottom) if step > 0 else (top - last) / (top - bottom)
        if used < sequence_limit:
            continue
        fix = (f"ALTER TABLE {owner.rsplit('.', 1)[0]} ALTER COLUMN {owner.rsplit('.', 1)[1]} TYPE bigint; "
               f"ALTER SEQUENCE {name} AS bigint;" if owner and data_type != "bigint"
               else f"ALTER SEQUENCE {name} AS bigint;" if data_type != "bigint"
               else f"-- {name} is bigint already: plan a new key scheme")
        found.append(Finding("sequence", owner.rsplit(".", 1)[0] if owner else name,
                             f"sequence {name} ({data_type}) has used {used:.0%} of its range", fix, name))
    return found


_ACCEPT = re.compile(r"--\s*pgshift:\s*accept\s+(?P<what>[^\n]+)", re.IGNORECASE)


def accepts(sql: str) -> set[str]:
    """What a migration's ``-- pgshift: accept`` comments name: finding ids or kinds."""
    return {w.strip() for found in _ACCEPT.finditer(sql) for w in re.split(r"[,\s]+", found.group("what"))
            if w.strip()}


def accepted_by(finding: Finding, migrations: list[Migration], accept: tuple[str, ...] = ()) -> str | None:
    """The migration whose comment accepts ``finding``, for a caller that inspects once (a deploy's
    rehearsal): one naming its id, or its kind and mentioning its table; or the config's ``accept``."""
    if finding.id in accept:
        return CONFIG
    kind = finding.id.split(":", 1)[0]
    table = re.compile(rf"\b{re.escape(finding.table.rsplit('.', 1)[-1].strip(chr(34)))}\b", re.IGNORECASE)
    for m in migrations:
        tokens = accepts(m.sql)
        if finding.id in tokens or (kind in tokens and table.search(m.sql)):
            return m.id
    return None


CONFIG = "config pgshift.accept"


def run(admin: DatabaseUrl, migrations: list[Migration], limits: apply.Limits,
        sequence_limit: float = 0.75, accept: tuple[str, ...] = ()) -> ConstraintsReport:
    """Apply every migration to a scratch database and inspect the result.

    A migration with an accept comment is inspected before and after it, so that ``accept <kind>``
    covers exactly the findings it made. ``accept`` (config ``pgshift.accept``) names finding ids
    accepted for the whole project."""
    named: dict[str, str] = {}     # finding id -> the migration that accepts it by id
    made: dict[str, str] = {}      # finding id -> the migration that made it and accepts its kind
    note = None
    with throwaway.empty(admin) as url, Database.connect(url) as db:
        for m in migrations:
            if m.empty:
                continue
            tokens = accepts(m.sql)
            earlier = {f.id for f in inspect(db, sequence_limit).findings} if tokens else set()
            try:
                apply_one(db, migrations, m, limits)
            except MigrationError:
                note = f"checked the schema before {m.path.name}, which does not apply"
                break
            for token in tokens:
                named.setdefault(token, m.id)
            if tokens:
                for f in inspect(db, sequence_limit).findings:
                    if f.id not in earlier and f.id.split(":", 1)[0] in tokens:
                        made.setdefault(f.id, m.id)
        report = inspect(db, sequence_limit)
    failing: list[Finding] = []
    accepted: list[Finding] = []
    for f in report.findings:
        by = named.get(f.id) or made.get(f.id) or (CONFIG if f.id in accept else None)
        (failing if by is None else accepted).append(f if by is None else replace(f, accepted_in=by))
    return ConstraintsReport(failing, note, accepted)
