"""The schema as plain data, read from the system catalogs: what ``dev.generate`` writes models from.

Tables with their columns, constraints and indexes, enums, and the extensions the types come from;
in the user's schemas only (not the catalogs, not ``pgshift``, not objects an extension owns).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pgshift.databases.db import Database

_USER_SCHEMAS = ("n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift') "
                 "AND n.nspname NOT LIKE 'pgshift\\_%' "
                 "AND n.nspname NOT LIKE 'pg\\_%'")
_NOT_EXTENSION = ("NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = {cls}::regclass AND d.objid = {oid} "
                  "AND d.deptype = 'e')")


@dataclass(frozen=True)
class Column:
    name: str
    type: str            # format_type: "character varying(100)", "text[]", "public.mood"
    base: str            # the type's own name (element type for arrays): "varchar", "text", "mood"
    base_schema: str
    is_array: bool
    is_enum: bool
    not_null: bool
    default: str | None
    identity: str        # "" none, "a" always, "d" by default
    generated: str       # "" none, "s" stored, "v" virtual
    identity_start: int | None = None
    identity_increment: int | None = None


@dataclass(frozen=True)
class ForeignKey:
    name: str
    columns: tuple[str, ...]
    ref_schema: str
    ref_table: str
    ref_columns: tuple[str, ...]
    on_delete: str  # "" for NO ACTION
    on_update: str
    deferrable: bool
    deferred: bool


@dataclass(frozen=True)
class Index:
    name: str
    unique: bool
    method: str
    elements: tuple[tuple[str, bool], ...]  # (column name or expression, is_expression)
    include: tuple[str, ...]
    where: str | None
    simple: bool  # no opclass, ordering or collation the elements above would lose


@dataclass
class Table:
    schema: str
    name: str
    columns: list[Column] = field(default_factory=list)
    primary_key: tuple[str, ...] = ()
    primary_key_name: str = ""
    uniques: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    checks: list[tuple[str, str]] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    indexes: list[Index] = field(default_factory=list)


@dataclass(frozen=True)
class Enum:
    schema: str
    name: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Catalog:
    tables: list[Table]
    enums: list[Enum]
    extensions: tuple[str, ...]
    database: str


_ACTIONS = {"a": "", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}


def read(db: Database) -> Catalog:
    tables: dict[int, Table] = {}
    for oid, schema, name in db.rows(
            "SELECT c.oid::int, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            f"WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND {_USER_SCHEMAS} AND "
            + _NOT_EXTENSION.format(cls="'pg_class'", oid="c.oid") + " ORDER BY n.nspname, c.relname"):
        tables[oid] = Table(schema, name)
    if tables:
        _columns(db, tables)
        _constraints(db, tables)
        _indexes(db, tables)
    enums = [Enum(s, n, tuple(v)) for s, n, v in db.rows(
        "SELECT n.nspname, t.typname, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) FROM pg_type t "
        "JOIN pg_namespace n ON n.oid = t.typnamespace JOIN pg_enum e ON e.enumtypid = t.oid "
        f"WHERE {_USER_SCHEMAS} GROUP BY n.nspname, t.typname ORDER BY n.nspname, t.typname")]
    extensions = tuple(r[0] for r in db.rows(
        "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY extname"))
    database = str((db.one("SELECT current_database()") or ("",))[0])
    return Catalog(list(tables.values()), enums, extensions, database)


def _columns(db: Database, tables: dict[int, Table]) -> None:
    generated = "a.attgenerated::text" if db.server_version >= 120000 else "''"
    for row in db.rows(
            "SELECT a.attrelid::int, a.attname, format_type(a.atttypid, a.atttypmod), "
            "coalesce(et.typname, t.typname), coalesce(etn.nspname, tn.nspname), t.typcategory = 'A', "
            "coalesce(et.typtype, t.typtype) = 'e', a.attnotnull, pg_get_expr(d.adbin, d.adrelid), "
            f"a.attidentity::text, {generated}, s.seqstart, s.seqincrement "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "JOIN pg_namespace tn ON tn.oid = t.typnamespace "
            "LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A' "
            "LEFT JOIN pg_namespace etn ON etn.oid = et.typnamespace "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "LEFT JOIN pg_sequence s ON a.attidentity <> '' AND s.seqrelid = "
            "pg_get_serial_sequence(a.attrelid::regclass::text, a.attname)::regclass "
            "WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum",
            [list(tables)]):
        (rel, name, type_, base, base_schema, is_array, is_enum, not_null, default, identity, gen,
         start, increment) = row
        tables[rel].columns.append(Column(name, type_, base, base_schema, bool(is_array), bool(is_enum),
                                          bool(not_null), default, identity or "", gen or "", start, increment))


def _constraints(db: Database, tables: dict[int, Table]) -> None:
    for row in db.rows(
            "SELECT c.conrelid::int, c.conname, c.contype::text, "
            "ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(n, i) JOIN pg_attribute a "
            "ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i), "
            "rn.nspname, r.relname, "
            "ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(n, i) JOIN pg_attribute a "
            "ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i), "
            "c.confdeltype::text, c.confupdtype::text, c.condeferrable, c.condeferred, pg_get_constraintdef(c.oid) "
            "FROM pg_constraint c LEFT JOIN pg_class r ON r.oid = c.confrelid "
            "LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace "
            "WHERE c.conrelid = ANY(%s) ORDER BY c.conrelid, c.contype, c.conname", [list(tables)]):
        rel, name, kind, columns, ref_schema, ref_table, ref_columns, on_delete, on_update, deferrable, \
            deferred, definition = row
        table = tables[rel]
        if kind == "p":
            table.primary_key, table.primary_key_name = tuple(columns), name
        elif kind == "u":
            table.uniques.append((name, tuple(columns)))
        elif kind == "c" and definition.startswith("CHECK (") and definition.endswith(")"):
            table.checks.append((name, definition[len("CHECK ("):-1]))
        elif kind == "f":
            table.foreign_keys.append(ForeignKey(
                name, tuple(columns), ref_schema, ref_table, tuple(ref_columns),
                _ACTIONS.get(on_delete, ""), _ACTIONS.get(on_update, ""), bool(deferrable), bool(deferred)))


def _indexes(db: Database, tables: dict[int, Table]) -> None:
    for row in db.rows(
            "SELECT i.indrelid::int, ic.relname, i.indisunique, am.amname, "
            "ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) FROM generate_series(1, i.indnkeyatts) k), "
            "ARRAY(SELECT i.indkey[k - 1] = 0 FROM generate_series(1, i.indnkeyatts) k), "
            "ARRAY(SELECT pg_get_indexdef(i.indexrelid, k, true) "
            "      FROM generate_series(i.indnkeyatts + 1, i.indnatts) k), "
            "pg_get_expr(i.indpred, i.indrelid), "
            "(SELECT bool_and(o = 0) FROM unnest(i.indoption::int2[]) o) "
            "AND (SELECT bool_and(c = 0 OR c = 100) FROM unnest(i.indcollation::oid[]) c) "
            "AND (SELECT bool_and(oc.opcdefault) FROM unnest(i.indclass::oid[]) x JOIN pg_opclass oc ON oc.oid = x) "
            "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam "
            "WHERE i.indrelid = ANY(%s) AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid "
            "AND c.conrelid = i.indrelid) ORDER BY ic.relname", [list(tables)]):
        rel, name, unique, method, keys, is_expr, include, where, simple = row
        tables[rel].indexes.append(Index(name, bool(unique), method, tuple(zip(keys, is_expr, strict=True)),
                                         tuple(include), where, bool(simple)))
