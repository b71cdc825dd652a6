"""Schema differences, computed by ``results`` (migra's successor): the one module that imports it.

``inspect`` reads a live database's schema; ``plan`` gives the statements that turn one schema into
another; ``differences`` lists, object by object, how two schemas differ (for drift reports).

Where the library is wrong or unsafe, it is corrected here, each with a test:

* PostgreSQL 18 ``VIRTUAL`` generated columns are read as ``STORED`` and the difference is missed:
  generated columns are wrapped so virtuality is compared and written, and a switch between the two
  kinds is a drop and re-add (PostgreSQL cannot alter it in place).
* A function's body is read only when the connected user is a member of its owner's role (it
  copies ``information_schema``), so for anyone else every function looks changed: missing
  bodies are read from ``pg_proc`` directly.
* A column type change that keeps the base type (``varchar(100)`` to ``varchar(200)``) is taken
  as compatible, so views on the column are not dropped and recreated around it and the ALTER
  fails: compatibility compares the full type.
* Its dependency-ordered output also emits every modified enum a second time, as a bare drop and
  create that fails while a column uses the type: that duplicate group is left out.
* Recreating an enum puts each column's old default back before the new one is set, which fails
  when the old default is a value the new enum lacks: a default that a later statement of the
  same plan sets again is not set in between.
* An enum that only gains values is changed with ``ALTER TYPE ... ADD VALUE`` instead of being
  recreated (which rewrites every table using it), unless the new value is used in the same change.
* An index on a table that already exists is built (and a plain index dropped) ``CONCURRENTLY``,
  so writes go on meanwhile; the core then runs the migration outside a transaction.
* ``SET NOT NULL`` on an existing table scans it under an exclusive lock: a ``CHECK (c IS NOT NULL)``
  is added ``NOT VALID`` and validated first (which lets writes go on), so the ``SET NOT NULL``
  needs no scan, and is dropped after.
* A recreated enum's columns are recast with the column name unquoted; it is quoted.
* Extension versions are left out: a migration says which extension, the server which version.
* Statements that destroy data are recognised and carry the reason, for the comment above them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import results.dbdiff
import results.dbdiff.ordered
import results.dbdiff.statements
import results.dbdiff.util
import results.schemainspect

from pgshift.db import Database

# The library is only partly annotated: its entry points are used as untyped here, in one place.
_Migration: Any = results.dbdiff.Migration
_ordered_changes: Any = results.dbdiff.ordered.ordered_changes
_Statements: Any = results.dbdiff.statements.Statements
_differences: Any = results.dbdiff.util.differences
_ColumnInfo: Any = results.schemainspect.ColumnInfo
_PostgreSQL: Any = results.schemainspect.PostgreSQL

IGNORED_SCHEMAS = ("pgshift",)  # the migration record lives there; it is not part of the schema

_QI = r'"(?:[^"]|"")*"'  # a quoted identifier, as the library writes every name
_QNAME = rf"{_QI}\.{_QI}"
_DROP_TABLE = re.compile(rf"^drop table (?P<table>{_QNAME});$")
_DROP_COLUMN = re.compile(rf"^alter table (?P<table>{_QNAME}) drop column (?P<column>{_QI});$")
_SET_TYPE = re.compile(rf"^alter table (?P<table>{_QNAME}) alter column (?P<column>{_QI}) set data type ")
_ENUM_RECAST = re.compile(rf"^alter table (?P<table>{_QNAME}) alter column (?P<column>.+?) type "
                          rf"(?P<enum>{_QNAME}) using ")
_DROP_SEQUENCE = re.compile(rf"^drop sequence (?:if exists )?(?P<sequence>{_QNAME});$")
_DROP_INDEX = re.compile(rf"^drop index if exists (?P<index>{_QNAME});$")
_SET_DEFAULT = re.compile(rf"^alter table (?P<table>{_QNAME}) alter column (?P<column>{_QI}) "
                          r"(?P<action>set|drop) default\b")
_CREATE_INDEX = re.compile(r"^CREATE (UNIQUE )?INDEX ")
_SET_NOT_NULL = re.compile(rf"^alter table (?P<table>{_QNAME}) alter column (?P<column>{_QI}) set not null;$")

# Type changes that keep every value: anything else is treated as possibly losing data.
_WIDER = {
    "smallint": {"integer", "bigint", "numeric", "double precision"},
    "integer": {"bigint", "numeric"},
    "bigint": {"numeric"},
    "real": {"double precision"},
    "character varying": {"text"},
}


def unquote(name: str) -> str:
    """``"public"."users"`` -> ``public.users`` (quotes kept where a name needs them)."""
    parts = re.findall(_QI, name)
    if not parts:
        return name
    rest = name[sum(len(p) + 1 for p in parts) - 1:]
    plain = [p[1:-1].replace('""', '"') for p in parts]
    shown = [p if re.fullmatch(r"[a-z_][a-z0-9_$]*", p) else f'"{p}"' for p in plain]
    return ".".join(shown) + rest


class _GeneratedColumn(_ColumnInfo):  # type: ignore[misc]
    """A generated column that knows whether it is VIRTUAL (PostgreSQL 18) or STORED."""

    virtual: bool = False

    def __eq__(self, other: object) -> bool:
        return bool(super().__eq__(other)) and self.virtual == getattr(other, "virtual", False)

    __hash__ = None  # type: ignore[assignment]

    @property
    def creation_clause(self) -> str:
        text: str = super().creation_clause
        if self.virtual and text.endswith(" stored"):
            text = text[: -len(" stored")] + " virtual"
        return text

    def alter_table_statements(self, other: Any, table_name: str) -> list[str]:
        if self.virtual != getattr(other, "virtual", False):
            prefix = f"alter table {table_name}"
            return [f"{prefix} {other.drop_column_clause};", f"{prefix} {self.add_column_clause};"]
        result: list[str] = super().alter_table_statements(other, table_name)
        return result


def _fill_function_bodies(db: Database, inspected: Any) -> None:
    missing = {(f.schema, f.name, f.identity_arguments): f for f in inspected.functions.values()
               if getattr(f, "definition", "") is None}
    if not missing:
        return
    for schema, name, arguments, body in db.rows(
            "SELECT n.nspname, p.proname, pg_get_function_identity_arguments(p.oid), p.prosrc "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE n.nspname <> ALL (ARRAY['pg_catalog', 'information_schema'])"):
        found = missing.get((schema, name, arguments))
        if found is not None:
            found.definition = body


_STRICT: dict[Any, Any] = {}


def _strict(cls: Any) -> Any:
    """``cls`` with column compatibility judged on full types (typmods included), not base types."""
    if getattr(cls, "_pgshift_strict", False):
        return cls
    if cls in _STRICT:
        return _STRICT[cls]

    def has_compatible_columns(self: Any, other: Any) -> bool:
        mine = [(k, c.dbtypestr) for k, c in self.columns.items()]
        theirs = [(k, c.dbtypestr) for k, c in other.columns.items()]
        return (mine if self.relationtype == "f" else mine[: len(theirs)]) == theirs

    _STRICT[cls] = type(cls.__name__, (cls,), {"has_compatible_columns": has_compatible_columns,
                                               "_pgshift_strict": True})
    return _STRICT[cls]


@dataclass
class Schema:
    """One database's schema as read at one moment."""

    inspected: Any
    version: int  # server major version

    @property
    def tables(self) -> dict[str, Any]:
        return dict(self.inspected.tables)


def inspect(db: Database) -> Schema:
    """Read the schema of the database ``db`` is connected to (everything but the record)."""
    inspected = _PostgreSQL(db.conn.cursor())
    for name in IGNORED_SCHEMAS:
        inspected.exclude_schema(name)
    version = db.server_version // 10000
    virtual: set[tuple[str, str, str]] = set()
    if version >= 18:
        virtual = {(r[0], r[1], r[2]) for r in db.rows(
            "SELECT n.nspname, c.relname, a.attname FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE a.attgenerated = 'v' AND NOT a.attisdropped")}
    _fill_function_bodies(db, inspected)
    for selectable in inspected.selectables.values():
        selectable.__class__ = _strict(type(selectable))
    for relation in inspected.relations.values():
        for key, column in list(relation.columns.items()):
            if column.is_generated and not isinstance(column, _GeneratedColumn):
                wrapped = _GeneratedColumn.__new__(_GeneratedColumn)
                wrapped.__dict__.update(column.__dict__)
                wrapped.virtual = (relation.schema, relation.name, column.name) in virtual
                relation.columns[key] = wrapped
    return Schema(inspected, version)


@dataclass(frozen=True)
class Change:
    sql: str
    data_loss: str | None = None  # why this statement destroys data
    concurrent: bool = False      # runs outside a transaction (CREATE/DROP INDEX CONCURRENTLY)


@dataclass(frozen=True)
class Plan:
    changes: list[Change]

    @property
    def empty(self) -> bool:
        return not self.changes

    @property
    def data_loss(self) -> list[Change]:
        return [c for c in self.changes if c.data_loss]

    def sql(self) -> str:
        """The statements as a readable script, data-losing ones marked with a comment."""
        parts = []
        for change in self.changes:
            mark = f"-- DATA LOSS: {change.data_loss}\n" if change.data_loss else ""
            parts.append(f"{mark}{change.sql.strip()}")
        return "\n\n".join(parts) + ("\n" if parts else "")


class _Changes:
    """The library's change finder, minus the duplicated enum group (see the module docstring)."""

    def __init__(self, changes: Any) -> None:
        self._changes = changes

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._changes, name)
        if name != "enums":
            return found

        def enums(**options: Any) -> Any:
            only = options.get("creations_only") or options.get("drops_only") or options.get("modifications_only")
            if options.get("modifications", True) and not only:
                return _Statements()  # the table changes already rename, recreate and recast
            return found(**options)

        return enums


def plan(current: Schema, desired: Schema) -> Plan:
    """The statements that turn ``current`` into ``desired``, in an order that applies."""
    for table_key, table in desired.inspected.tables.items():
        before = current.inspected.tables.get(table_key)
        if before is None:
            continue
        for column_key, column in table.columns.items():
            old = before.columns.get(column_key)
            if old is not None and getattr(old, "virtual", False) != getattr(column, "virtual", False):
                column.can_set_expression = old.can_set_expression = False  # drop and re-add instead
    with _enum_additions(current, desired) as additions:
        migration = _Migration(current.inspected, desired.inspected, ignore_extension_versions=True)
        migration.set_safety(False)
        statements: list[str] = []
        for group in _ordered_changes(_Changes(migration.changes)):
            statements.extend(s for s in group if s and s.strip())
    changes = [c for s in _without_overridden_defaults(statements) for c in _classify(s, current, desired)]
    used = "\n".join(c.sql for c in changes)
    kept: list[Change] = []
    for enum_key, new_values, statements_for_enum in additions:
        if any(f"'{v}'" in used for v in new_values):  # the new value is used in the same change:
            return _recreate_enum_plan(current, desired, enum_key)  # it must be committed first
        kept.extend(Change(s) for s in statements_for_enum)
    return Plan(kept + changes)


def _recreate_enum_plan(current: Schema, desired: Schema, skip: str) -> Plan:
    """Plan again with every enum change left to the library (rename, recreate, recast).

    ``skip`` names the enum whose new value the same change uses: ADD VALUE would need its own
    transaction before that use."""
    with _enum_additions(current, desired, disabled=True):
        migration = _Migration(current.inspected, desired.inspected, ignore_extension_versions=True)
        migration.set_safety(False)
        statements = [s for g in _ordered_changes(_Changes(migration.changes)) for s in g if s and s.strip()]
    return Plan([c for s in _without_overridden_defaults(statements) for c in _classify(s, current, desired)])


def _without_overridden_defaults(statements: list[str]) -> list[str]:
    """Leave out a column default that a later statement sets or drops again."""
    later: set[tuple[str, str]] = set()
    kept: list[str] = []
    for statement in reversed(statements):
        match = _SET_DEFAULT.match(statement.strip())
        if match:
            key = (match["table"], _ident(match["column"]))
            if key in later and match["action"] == "set":
                continue
            later.add(key)
        kept.append(statement)
    return kept[::-1]


@contextmanager
def _enum_additions(current: Schema, desired: Schema,
                    disabled: bool = False) -> Iterator[list[tuple[str, list[str], list[str]]]]:
    """While active, enums that only gain values look unchanged to the library; yields the
    ``ADD VALUE`` statements that make the change instead."""
    found: list[tuple[str, list[str], list[str]]] = []
    saved: list[tuple[Any, list[str]]] = []
    if not disabled:
        for key, new in desired.inspected.enums.items():
            old = current.inspected.enums.get(key)
            if old is None or old.elements == new.elements or not old.can_be_changed_to(new):
                continue
            added = [e for e in new.elements if e not in old.elements]
            found.append((key, added, list(old.change_statements(new))))
            saved.append((old, list(old.elements)))
            old.elements = list(new.elements)
    try:
        yield found
    finally:
        for enum, elements in saved:
            enum.elements = elements


def _classify(statement: str, current: Schema, desired: Schema) -> list[Change]:
    text = statement.strip()
    if (match := _SET_NOT_NULL.match(text)) and match["table"] in current.inspected.tables:
        return _not_null_in_steps(match["table"], match["column"])
    if match := _ENUM_RECAST.match(text):
        column = match["column"]
        if not column.startswith('"'):
            quoted = '"' + column.replace('"', '""') + '"'
            text = (f"alter table {match['table']} alter column {quoted} type {match['enum']} "
                    f"using {quoted}::text::{match['enum']};")
    return [_one(text, current, desired)]


def _not_null_in_steps(table: str, column: str) -> list[Change]:
    name = _q(f"pgshift_{_ident(column)}_not_null"[:63])
    return [Change(f'alter table {table} add constraint "{name}" check ({column} is not null) not valid;'),
            Change(f'alter table {table} validate constraint "{name}";'),
            Change(f"alter table {table} alter column {column} set not null;"),
            Change(f'alter table {table} drop constraint "{name}";')]


def _one(text: str, current: Schema, desired: Schema) -> Change:
    tables_before = current.inspected.tables
    tables_after = desired.inspected.tables
    if match := _DROP_TABLE.match(text):
        return Change(text, f"drops table {unquote(match['table'])} and every row in it")
    if match := _DROP_COLUMN.match(text):
        table = tables_before.get(match["table"])
        column = table.columns.get(_ident(match["column"])) if table is not None else None
        if column is not None and column.is_generated:
            return Change(text)  # a generated column's values are computed, not stored data
        return Change(text, f"drops column {unquote(match['table'])}.{unquote(match['column'])} and its values")
    if match := _SET_TYPE.match(text):
        return Change(text, _narrowing(match["table"], _ident(match["column"]), tables_before, tables_after))
    if match := _ENUM_RECAST.match(text):
        old_enum = current.inspected.enums.get(match["enum"])
        new_enum = desired.inspected.enums.get(match["enum"])
        if old_enum is not None and new_enum is not None:
            gone = [e for e in old_enum.elements if e not in new_enum.elements]
            if gone:
                return Change(text, f"enum {unquote(match['enum'])} loses {', '.join(map(repr, gone))}: rows "
                                    f"holding them make this fail until they are changed")
        return Change(text)
    if match := _DROP_SEQUENCE.match(text):
        return Change(text, f"drops sequence {unquote(match['sequence'])} and its current value")
    if _CREATE_INDEX.match(text):
        return _concurrent_create(text, current, desired)
    if match := _DROP_INDEX.match(text):
        index = current.inspected.indexes.get(match["index"])
        if index is not None and index.constraint is None and not index.is_partitioned:
            table = f'"{_q(index.schema)}"."{_q(index.table_name)}"'
            if table in tables_after and table in tables_before and not tables_before[table].is_partitioned:
                return Change(f"drop index concurrently if exists {match['index']};", concurrent=True)
    return Change(text)


def _concurrent_create(text: str, current: Schema, desired: Schema) -> Change:
    for index in desired.inspected.indexes.values():
        if index.create_statement.strip() != text:
            continue
        table = f'"{_q(index.schema)}"."{_q(index.table_name)}"'
        existing = current.inspected.tables.get(table)
        if existing is None or existing.is_partitioned or index.is_partitioned or " ON ONLY " in text:
            return Change(text)
        return Change(_CREATE_INDEX.sub(lambda m: f"CREATE {m[1] or ''}INDEX CONCURRENTLY ", text, count=1),
                      concurrent=True)
    return Change(text)


def _narrowing(table_key: str, column: str, before: dict[str, Any], after: dict[str, Any]) -> str | None:
    old_table, new_table = before.get(table_key), after.get(table_key)
    old = old_table.columns.get(column) if old_table is not None else None
    new = new_table.columns.get(column) if new_table is not None else None
    where = f"{unquote(table_key)}.{column}"
    if old is None or new is None:
        return f"changes the type of {where}: values that do not fit are lost or make it fail"
    if _widens(old.dbtypestr, new.dbtypestr):
        return None
    return (f"changes {where} from {old.dbtypestr} to {new.dbtypestr}: values that do not fit are "
            "lost or make it fail")


def _widens(old: str, new: str) -> bool:
    base_old, size_old = _sized(old)
    base_new, size_new = _sized(new)
    if base_new in _WIDER.get(base_old, set()):
        return not (base_new == "numeric" and size_new)  # a bounded numeric can overflow
    if base_old == base_new:
        if not size_new:
            return True  # dropping a length or precision limit keeps every value
        if size_old and len(size_old) == len(size_new):
            if base_old == "numeric":  # numeric(p, s): the scale must stay, the precision may grow
                return size_new[1:] == size_old[1:] and size_new[0] >= size_old[0]
            return all(n >= o for n, o in zip(size_new, size_old, strict=True))
    return False


def _sized(type_text: str) -> tuple[str, tuple[int, ...]]:
    match = re.fullmatch(r"(.+?)\((\d+(?:,\s*\d+)?)\)", type_text.strip())
    if match is None:
        return type_text.strip(), ()
    return match[1].strip(), tuple(int(p) for p in match[2].split(","))


def _ident(quoted: str) -> str:
    quoted = quoted.strip()
    if quoted.startswith('"') and quoted.endswith('"'):
        return quoted[1:-1].replace('""', '"')
    return quoted


def _q(name: str) -> str:
    return name.replace('"', '""')


# ---- differences, for drift ----------------------------------------------------------------------

_KINDS = {
    "schemas": "schema", "extensions": "extension", "enums": "enum", "types": "type", "domains": "domain",
    "collations": "collation", "sequences": "sequence", "tables": "table", "views": "view",
    "materialized_views": "materialized view", "functions": "function", "constraints": "constraint",
    "indexes": "index", "triggers": "trigger", "rlspolicies": "policy",
}


@dataclass(frozen=True)
class Difference:
    kind: str    # table, column, index, function, ...
    name: str    # schema-qualified, e.g. public.users.nickname
    change: str  # "unexpected": exists, no migration made it; "missing": made, now gone; "changed"
    detail: str = ""


def differences(expected: Schema, actual: Schema) -> list[Difference]:
    """How ``actual`` differs from ``expected``, object by object (columns within tables)."""
    found: list[Difference] = []
    for category, kind in _KINDS.items():
        before = getattr(expected.inspected, category, {})
        after = getattr(actual.inspected, category, {})
        added, removed, modified, _ = _differences(before, after)
        if category == "extensions":  # a version is the server's business, not a migration's
            modified = {}
        found.extend(Difference(kind, unquote(k), "unexpected") for k in added)
        found.extend(Difference(kind, unquote(k), "missing") for k in removed)
        for key in modified:
            if category == "tables":
                columns = _column_differences(key, before[key], after[key])
                if columns:
                    found.extend(columns)
                    continue
            found.append(Difference(kind, unquote(key), "changed", _what_changed(category, before[key], after[key])))
    return found


def _column_differences(table_key: str, before: Any, after: Any) -> list[Difference]:
    added, removed, modified, _ = _differences(before.columns, after.columns)
    table = unquote(table_key)
    found = [Difference("column", f"{table}.{name}", "unexpected", after.columns[name].dbtypestr) for name in added]
    found += [Difference("column", f"{table}.{name}", "missing", before.columns[name].dbtypestr) for name in removed]
    for name in modified:
        old, new = before.columns[name], after.columns[name]
        parts = []
        if old.dbtypestr != new.dbtypestr:
            parts.append(f"type {old.dbtypestr} -> {new.dbtypestr}")
        if old.not_null != new.not_null:
            parts.append("NOT NULL " + ("added" if new.not_null else "dropped"))
        if old.default != new.default:
            parts.append(f"default {old.default or 'none'} -> {new.default or 'none'}")
        found.append(Difference("column", f"{table}.{name}", "changed", "; ".join(parts) or "definition differs"))
    return found


def _what_changed(category: str, before: Any, after: Any) -> str:
    if category == "functions":
        return "body or signature differs" if getattr(before, "definition", None) != getattr(
            after, "definition", None) else "attributes differ"
    if category == "indexes":
        return f"{getattr(before, 'definition', '')} -> {getattr(after, 'definition', '')}"
    if category == "enums":
        return f"values {list(before.elements)} -> {list(after.elements)}"
    return "definition differs"
