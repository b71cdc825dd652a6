"""A sampled copy: the whole schema of a database plus at most N rows of each table.

For a rehearsal of a database the application is connected to, where ``CREATE DATABASE ... TEMPLATE``
is refused and a whole dump of a big database takes minutes. In order: the schema's pre-data part
(types, tables, functions, no indexes or constraints), then the first ``rows`` rows of each table
streamed over COPY (tables named in ``whole`` entirely: the migration history must be exact), then
rows whose foreign keys point at rows the sample left out are deleted until none do, then the
post-data part (indexes, constraints, triggers, materialized views refreshed), then each sequence set
to its value in the source. The source is only read, inside one repeatable-read snapshot.
"""

from __future__ import annotations

from collections.abc import Collection

from pgshift.databases import dump
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl

_TABLES = """
SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY 2, 3
"""
_COLUMNS = ("SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped "
            "AND attgenerated = '' ORDER BY attnum")
_FOREIGN_KEYS = """
SELECT format('%I.%I', cn.nspname, cc.relname), format('%I.%I', pn.nspname, pc.relname),
       array(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.i),
       array(SELECT a.attname FROM unnest(con.confkey) WITH ORDINALITY k(num, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num ORDER BY k.i)
FROM pg_constraint con
JOIN pg_class cc ON cc.oid = con.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
JOIN pg_class pc ON pc.oid = con.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE con.contype = 'f' AND con.conparentid = 0
"""
_SEQUENCES = ("SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences "
              "WHERE last_value IS NOT NULL")


def copy(source: DatabaseUrl, into: DatabaseUrl, rows: int, server_version: int, *, whole: Collection[str] = (),
         connect_timeout: int = 10) -> int:
    """Fill the empty database ``into`` with ``source``'s schema and a sample of its rows (``rows`` per
    table; tables whose ``schema.name`` or schema is in ``whole`` entirely). Returns the number of tables sampled
    (those that had more rows than the sample took)."""
    dump.copy(source, into, server_version, connect_timeout=connect_timeout, section="pre-data")
    cut = 0
    with Database.connect(source, connect_timeout) as src, Database.connect(into, connect_timeout) as dst:
        src.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            for oid, schema, table in src.rows(_TABLES):
                name = f"{src.identifier(schema)}.{src.identifier(table)}"
                columns = ", ".join(src.identifier(c) for (c,) in src.rows(_COLUMNS, [oid]))
                if not columns:
                    continue
                limit = "" if schema in whole or f"{schema}.{table}" in whole else f" LIMIT {int(rows)}"
                src.copy_to(f"SELECT {columns} FROM ONLY {name}{limit}", dst, f"COPY {name} ({columns}) FROM STDIN")
                if limit and src.one(f"SELECT EXISTS (SELECT FROM ONLY {name} OFFSET {int(rows)})") == (True,):
                    cut += 1
            keys = src.rows(_FOREIGN_KEYS)
            sequences = src.rows(_SEQUENCES)
        finally:
            src.execute("ROLLBACK")
        _prune(dst, keys)
        dump.copy(source, into, server_version, connect_timeout=connect_timeout, section="post-data")
        for sequence, value in sequences:
            dst.rows("SELECT setval(%s::regclass, %s)", [sequence, value])
    return cut


def _prune(db: Database, keys: list[tuple[str, str, list[str], list[str]]]) -> None:
    """Delete sampled rows whose foreign key points at a row the sample left out, until none is left
    (a deleted parent row orphans its children in turn)."""
    q = db.identifier
    while True:
        deleted = 0
        for child, parent, mine, theirs in keys:
            present = " AND ".join(f"c.{q(c)} IS NOT NULL" for c in mine)
            match = " AND ".join(f"p.{q(t)} = c.{q(c)}" for c, t in zip(mine, theirs, strict=True))
            row = db.one(f"WITH gone AS (DELETE FROM {child} c WHERE {present} AND NOT EXISTS "
                         f"(SELECT FROM {parent} p WHERE {match}) RETURNING 1) SELECT count(*) FROM gone")
            deleted += int(row[0]) if row else 0
        if not deleted:
            return
