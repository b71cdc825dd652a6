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
* Every foreign key from or to a table with any change is dropped and added again (and validated,
  scanning the referencing table), which leaves rows unchecked in between: only those whose own
  columns, or the referenced key, change are recreated.
* Domains are inspected but never compared: their creations come before the tables, their
  changes as ``ALTER DOMAIN`` (a new check added ``NOT VALID`` then validated), drops at the end.
* Its dependency-ordered output also emits every modified enum a second time, as a bare drop and
  create that fails while a column uses the type: that duplicate group is left out.
* An enum that only gains values is changed with ``ALTER TYPE ... ADD VALUE`` instead of being
  recreated (which rewrites every table using it), unless the new value is used in the same change.
* Extension versions are left out: a migration says which extension, the server which version.
* Statements are then made safe and marked where they lose data: see ``rewrite``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import results.dbdiff
import results.dbdiff.ordered
import results.dbdiff.statements
import results.dbdiff.util
import results.schemainspect
import results.schemainspect.pg.obj

from pgshift.databases.db import Database
from pgshift.migrations.drift import OTHER_TOOLS_TABLES
from pgshift.schema.rewrite import Change, Plan, rewrite, unquote, without_overridden_defaults

__all__ = ["Change", "Difference", "Plan", "Schema", "differences", "inspect", "plan", "unquote"]

# The library is only partly annotated: its entry points are used as untyped here, in one place.
_Migration: Any = results.dbdiff.Migration
_ordered_changes: Any = results.dbdiff.ordered.ordered_changes
_Statements: Any = results.dbdiff.statements.Statements
_differences: Any = results.dbdiff.util.differences
_ColumnInfo: Any = results.schemainspect.ColumnInfo
_PostgreSQL: Any = results.schemainspect.PostgreSQL

IGNORED_SCHEMAS = ("pgshift",)  # the migration record lives there; it is not part of the schema
# Other tools' migration records, left in place when a project is adopted (``dev.import``): never part
# of the schema either, so drift does not report them and no generated migration drops them.
IGNORED_TABLES = OTHER_TOOLS_TABLES

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
_STRICT_LOCK = threading.Lock()  # schemas are read on two threads at once: one subclass per class


def _strict(cls: Any) -> Any:
    """``cls`` with column compatibility judged on full types (typmods included), not base types."""
    if getattr(cls, "_pgshift_strict", False):
        return cls
    with _STRICT_LOCK:
        if cls not in _STRICT:
            _STRICT[cls] = _strict_subclass(cls)
        return _STRICT[cls]


def _strict_subclass(cls: Any) -> Any:

    def has_compatible_columns(self: Any, other: Any) -> bool:
        mine = [(k, c.dbtypestr) for k, c in self.columns.items()]
        theirs = [(k, c.dbtypestr) for k, c in other.columns.items()]
        return (mine if self.relationtype == "f" else mine[: len(theirs)]) == theirs

    return type(cls.__name__, (cls,), {"has_compatible_columns": has_compatible_columns, "_pgshift_strict": True})


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
    tenants = [r[0] for r in db.rows("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'pgshift\\_%'")]
    for name in (*IGNORED_SCHEMAS, *tenants):  # and the record schemas of tenants (pgshift_<schema>)
        inspected.exclude_schema(name)
    _exclude_tables(inspected)
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


def _exclude_tables(inspected: Any) -> None:
    """Leave out ``IGNORED_TABLES`` and what belongs to them (their keys, indexes, triggers)."""
    for prop in results.schemainspect.pg.obj.PROPS.split():
        items = getattr(inspected, prop)
        if any(getattr(v, "name", None) in IGNORED_TABLES or getattr(v, "table_name", None) in IGNORED_TABLES
               for v in items.values()):
            setattr(inspected, prop, {k: v for k, v in items.items() if getattr(v, "name", None) not in IGNORED_TABLES
                                      and getattr(v, "table_name", None) not in IGNORED_TABLES})


class _Changes:
    """The library's change finder, minus the duplicated enum group and the needless foreign key
    recreations (see the module docstring)."""

    def __init__(self, changes: Any) -> None:
        self._changes = changes

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._changes, name)
        if name == "enums":
            def enums(**options: Any) -> Any:
                only = (options.get("creations_only") or options.get("drops_only")
                        or options.get("modifications_only"))
                if options.get("modifications", True) and not only:
                    return _Statements()  # the table changes already rename, recreate and recast
                return found(**options)

            return enums
        if name == "fk_constraints":
            def foreign_keys(**options: Any) -> Any:
                needless = self._needless_foreign_key_statements()
                return _Statements([s for s in found(**options) if s not in needless])

            return foreign_keys
        return found

    def _needless_foreign_key_statements(self) -> set[str]:
        before, after = self._changes.i_from, self._changes.i_target
        rekeyed: set[str] = set()  # tables whose primary key, unique constraints or unique indexes change
        for found_before, found_after in ((before.constraints, after.constraints), (before.indexes, after.indexes)):
            for key in set(found_before) | set(found_after):
                a, b = found_before.get(key), found_after.get(key)
                if a is not None and b is not None and a == b:
                    continue
                for item in (a, b):
                    if item is not None and (getattr(item, "is_unique", False) or getattr(
                            item, "constraint_type", None) in ("PRIMARY KEY", "UNIQUE")):
                        rekeyed.add(item.quoted_full_table_name)
        needless: set[str] = set()
        for key, old in before.constraints.items():
            new = after.constraints.get(key)
            if old.constraint_type != "FOREIGN KEY" or new is None or old != new:
                continue
            if old.quoted_full_foreign_table_name in rekeyed:
                continue
            if _same_columns(before, after, old.quoted_full_table_name, old.fk_columns_local) and _same_columns(
                    before, after, old.quoted_full_foreign_table_name, old.fk_columns_foreign):
                needless.add(old.drop_statement)
                needless.update(new.safer_create_statements)
        return needless


def _same_columns(before: Any, after: Any, table: str, columns: Any) -> bool:
    old, new = before.tables.get(table), after.tables.get(table)
    if old is None or new is None:
        return False
    for name in columns or ():
        a, b = old.columns.get(name), new.columns.get(name)
        if a is None or b is None or (a.dbtypestr, a.collation) != (b.dbtypestr, b.collation):
            return False
    return True


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
        changes = _changes(current, desired)
    used = "\n".join(c.sql for c in changes)
    if any(f"'{v}'" in used for _, added, _ in additions for v in added):
        # A new enum value is used in the same change: ADD VALUE would need its own transaction
        # first, so every enum change is left to the library (rename, recreate, recast).
        return Plan(_changes(current, desired))
    return Plan([Change(s) for _, _, statements in additions for s in statements] + changes)


def _changes(current: Schema, desired: Schema) -> list[Change]:
    migration = _Migration(current.inspected, desired.inspected, ignore_extension_versions=True)
    migration.set_safety(False)
    statements = [s for group in _ordered_changes(_Changes(migration.changes)) for s in group if s and s.strip()]
    early, late = _domain_changes(current.inspected.domains, desired.inspected.domains)
    if early:
        first = next((i for i, s in enumerate(statements) if _NEEDS_DOMAINS.match(s.strip())), len(statements))
        statements[first:first] = early
    statements += late
    return [c for s in without_overridden_defaults(statements)
            for c in rewrite(s, current.inspected, desired.inspected)]


# The first statement that may use a domain: everything before it creates schemas, extensions, types.
_NEEDS_DOMAINS = re.compile(r"^(create (table|view|or replace view|materialized view|unlogged table)|alter table|"
                            r"set check_function_bodies|create or replace function)\b", re.IGNORECASE)


def _domain_changes(before: dict[str, Any], after: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Statements for domains: (before the tables change, after they have)."""
    early: list[str] = []
    late: list[str] = [before[k].drop_statement for k in before if k not in after]
    for key, new in after.items():
        old = before.get(key)
        if old is None:
            early.append(new.create_statement.strip() + ";")
            continue
        if (old.data_type, old.collation) != (new.data_type, new.collation):
            early += [old.drop_statement, new.create_statement.strip() + ";"]  # cannot be altered in place
            continue
        name = new.signature
        if old.default != new.default:
            early.append(f"alter domain {name} set default {new.default};" if new.default
                         else f"alter domain {name} drop default;")
        if old.not_null != new.not_null:
            early.append(f"alter domain {name} {'set' if new.not_null else 'drop'} not null;")
        if (old.check or "") != (new.check or ""):
            if old.constraint_name:
                early.append(f'alter domain {name} drop constraint "{old.constraint_name}";')
            if new.check:
                check = new.constraint_name or f"{new.name}_check"
                early += [f'alter domain {name} add constraint "{check}" {new.check} not valid;',
                          f'alter domain {name} validate constraint "{check}";']
    return early, late


@contextmanager
def _enum_additions(current: Schema, desired: Schema) -> Iterator[list[tuple[str, list[str], list[str]]]]:
    """While active, enums that only gain values look unchanged to the library; yields the
    ``ADD VALUE`` statements that make the change instead."""
    found: list[tuple[str, list[str], list[str]]] = []
    saved: list[tuple[Any, list[str]]] = []
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
