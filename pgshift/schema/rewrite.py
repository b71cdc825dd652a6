"""The statements of a plan, made safe and marked: rules applied to the differ's output text.

The differ writes every statement in a fixed form (lower-case keywords, every name quoted), so
each rule below is a pattern on that text plus a look at the two schemas (duck-typed: this module
never imports the differ; ``diff`` hands it what the differ inspected):

* An index on a table that already exists is built (and a plain index dropped) ``CONCURRENTLY``,
  so writes go on meanwhile; the core then runs the migration outside a transaction.
* ``SET NOT NULL`` on an existing table scans it under an exclusive lock: a ``CHECK (c IS NOT NULL)``
  is added ``NOT VALID`` and validated first (which lets writes go on), so the ``SET NOT NULL``
  needs no scan, and is dropped after.
* A recreated enum's columns are recast with the column name unquoted; it is quoted.
* Recreating an enum puts each column's old default back before the new one is set, which fails
  when the old default is a value the new enum lacks: a default that a later statement of the
  same plan sets again is not set in between.
* Statements that destroy data are recognised and carry the reason, for the comment above them:
  dropped tables, columns (not generated ones) and sequences, type changes that are not widenings,
  enum values removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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


def without_overridden_defaults(statements: list[str]) -> list[str]:
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


def rewrite(statement: str, current: Any, desired: Any) -> list[Change]:
    """One statement of the differ's, as the statements to write (usually itself), made safe and marked."""
    text = statement.strip()
    if (match := _SET_NOT_NULL.match(text)) and match["table"] in current.tables:
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


def _one(text: str, current: Any, desired: Any) -> Change:
    tables_before = current.tables
    tables_after = desired.tables
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
        old_enum = current.enums.get(match["enum"])
        new_enum = desired.enums.get(match["enum"])
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
        index = current.indexes.get(match["index"])
        if index is not None and index.constraint is None and not index.is_partitioned:
            table = f'"{_q(index.schema)}"."{_q(index.table_name)}"'
            if table in tables_after and table in tables_before and not tables_before[table].is_partitioned:
                return Change(f"drop index concurrently if exists {match['index']};", concurrent=True)
    return Change(text)


def _concurrent_create(text: str, current: Any, desired: Any) -> Change:
    for index in desired.indexes.values():
        if index.create_statement.strip() != text:
            continue
        table = f'"{_q(index.schema)}"."{_q(index.table_name)}"'
        existing = current.tables.get(table)
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
