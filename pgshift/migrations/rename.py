"""A column rename without downtime, as an expand/contract migration written from a template.

The expand phase adds the new column and a trigger that keeps the two in step both ways (a write
through either name is seen through the other), then the backfill copies the old values over (its own
batches skip the trigger: they set ``pgshift.backfill``, and the copy they make is the step the trigger
would keep); the old
and the new application both work until ``deploy.complete`` drops the trigger and the old column.
``hints`` finds the renames a ``schema.sql`` declares with a ``-- renamed from old_name`` comment on
the column's line; a new type there makes it a type change too, the values cast both ways. A new
column declared NOT NULL gets it the way that never scans the table under ACCESS EXCLUSIVE: a
``CHECK (new IS NOT NULL) NOT VALID`` in the expand (enforced from then on for every write), its
``VALIDATE CONSTRAINT`` in the validate section (a transaction of its own, SHARE UPDATE EXCLUSIVE), and
in the contract ``SET NOT NULL`` (which finds the validated check and skips its scan) and the check
dropped.

A new ``NOT NULL`` column whose values come from other columns of the row is the third template:
``computed_hints`` finds ``full_name text NOT NULL, -- computed from first_name || ' ' || last_name``;
the expand adds the column nullable with a trigger that fills it from the expression on every write
of the old application, and the check ``NOT VALID``; the backfill fills the rows there were; the
validate section validates the check, the contract sets ``NOT NULL``, drops the check and the trigger.

A column split into several is the fourth: ``split_hints`` finds ``first_name text NOT NULL, -- split from
name: split_part(name, ' ', 1)`` on each new column and ``-- name joined from first_name || ' ' ||
last_name`` in the table; the expand adds the parts and a trigger that keeps both shapes in step (the
old release writes the one column, the parts follow; the new release writes the parts, the column
follows), the backfill fills the parts, the contract sets their ``NOT NULL`` and drops the old column.

A table rename is the other case both application versions cannot share with triggers: ``table_hints``
finds ``CREATE TABLE new ( -- renamed from old``, and ``render_table`` renames the table and puts a view
with ``security_invoker = true`` (PostgreSQL 15+) under the old name, with the table's grants copied to
it: the old application reads and writes through the view with its own privileges and row security,
never the view owner's; the contract drops the view. No search_path change is needed.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_TABLE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>[\w.\"]+)\s*\((?P<body>.*?)\n\s*\)\s*;",
                    re.IGNORECASE | re.DOTALL)
_COLUMN = re.compile(r"^\s*(?P<name>[\w\"]+)\s+(?P<type>.+?)\s*,?\s*--\s*renamed\s+from\s+(?P<old>[\w\"]+)\s*$",
                     re.IGNORECASE | re.MULTILINE)
_CONSTRAINTS = re.compile(r"\s+(NOT\s+NULL|NULL|DEFAULT|PRIMARY|UNIQUE|CHECK|REFERENCES|GENERATED|COLLATE)\b.*$",
                          re.IGNORECASE)
_NOT_NULL = re.compile(r"\b(NOT\s+NULL|PRIMARY\s+KEY)\b", re.IGNORECASE)
_TABLE_HINT = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>[\w.\"]+)\s*\([ \t]*"
                         r"--\s*renamed\s+from\s+(?P<old>[\w.\"]+)[ \t]*$", re.IGNORECASE | re.MULTILINE)


def _trigger_function(kind: str, table: str, column: str) -> str:
    """The name of the function (and its trigger) that keeps ``column``'s shapes in step."""
    return f"pgshift_{kind}_{table.split('.')[-1]}_{column}"[:63]


def _not_null_check(table: str, column: str) -> str:
    """The name of the ``CHECK (column IS NOT NULL) NOT VALID`` that stands for NOT NULL until the contract."""
    return f"{table.split('.')[-1].strip(chr(34))}_{column.strip(chr(34))}_not_null"[:63]


class Rename(NamedTuple):
    table: str
    old: str
    new: str
    type: str   # the column's type as declared, without its constraints
    old_type: str | None = None  # the old column's type when it differs: values are cast both ways
    not_null: bool = False       # the new column is declared NOT NULL
    old_not_null: bool = False   # the old column is NOT NULL (a rollback puts that back)

    @property
    def function(self) -> str:
        return _trigger_function("sync", self.table, self.new)

    @property
    def check(self) -> str:
        return _not_null_check(self.table, self.new)


def hints(schema_sql: str) -> list[Rename]:
    """The renames ``schema.sql`` declares: ``full_name text NOT NULL, -- renamed from name``."""
    found: list[Rename] = []
    for table in _TABLE.finditer(schema_sql):
        for column in _COLUMN.finditer(table.group("body")):
            declared = column.group("type").rstrip(",")
            kind = _CONSTRAINTS.sub("", declared).strip()
            found.append(Rename(table.group("name"), column.group("old"), column.group("name"), kind,
                                not_null=_NOT_NULL.search(declared) is not None))
    return found


def render(ident: str, rename: Rename) -> tuple[str, str]:
    """The migration and its rollback for ``rename``: ``(forward, rollback)``."""
    t, old, new, fn = rename.table, rename.old, rename.new, rename.function
    kind = rename.old_type
    to_new = f"NEW.{old}::{rename.type}" if kind else f"NEW.{old}"
    to_old = f"NEW.{new}::{kind}" if kind else f"NEW.{new}"
    copied = f"{old}::{rename.type}" if kind else old
    back = f"{new}::{kind}" if kind else new
    what = f"rename {t}.{old} to {new}" + (f" ({kind} to {rename.type})" if kind else "")
    check = rename.check
    # NOT NULL without a scan under ACCESS EXCLUSIVE: a check NOT VALID now, validated alone, then used.
    add_check = (f"ALTER TABLE {t} ADD CONSTRAINT {check} CHECK ({new} IS NOT NULL) NOT VALID;\n"
                 if rename.not_null else "")
    validate = (f"-- pgshift: validate\nALTER TABLE {t} VALIDATE CONSTRAINT {check};\n" if rename.not_null else "")
    set_not_null = (f"ALTER TABLE {t} ALTER COLUMN {new} SET NOT NULL;\nALTER TABLE {t} DROP CONSTRAINT {check};\n"
                    if rename.not_null else "")
    old_not_null = f"ALTER TABLE {t} ALTER COLUMN {old} SET NOT NULL;\n" if rename.old_not_null else ""
    forward = f"""-- {ident}: {what} without downtime (expand, backfill, contract)
-- pgshift: expand
ALTER TABLE {t} ADD COLUMN {new} {rename.type};
CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.{new} IS NULL THEN
            NEW.{new} := {to_new};
        ELSIF NEW.{old} IS NULL THEN
            NEW.{old} := {to_old};
        END IF;
    ELSIF NEW.{new} IS DISTINCT FROM OLD.{new} AND NEW.{old} IS NOT DISTINCT FROM OLD.{old} THEN
        NEW.{old} := {to_old};
    ELSE
        NEW.{new} := {to_new};
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER {fn} BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW
    WHEN (current_setting('pgshift.backfill', true) IS DISTINCT FROM 'on') EXECUTE FUNCTION {fn}();
{add_check}-- pgshift: backfill {t} SET {new} = {copied} WHERE {new} IS DISTINCT FROM {copied}
{validate}-- pgshift: contract
DROP TRIGGER {fn} ON {t};
DROP FUNCTION {fn}();
{set_not_null}ALTER TABLE {t} DROP COLUMN {old};
-- pgshift: abort
DROP TRIGGER IF EXISTS {fn} ON {t};
DROP FUNCTION IF EXISTS {fn}();
ALTER TABLE {t} DROP COLUMN IF EXISTS {new};
"""
    rollback = f"""-- Rollback of {ident}: the old column back with the values of the new, expanded or completed.
DROP TRIGGER IF EXISTS {fn} ON {t};
DROP FUNCTION IF EXISTS {fn}();
ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {old} {kind or rename.type};
UPDATE {t} SET {old} = {back};
{old_not_null}ALTER TABLE {t} DROP COLUMN {new};
"""
    return forward, rollback


_COMPUTED = re.compile(r"^\s*(?P<name>[\w\"]+)\s+(?P<type>.+?)\s*,?\s*--\s*computed\s+from\s+(?P<expr>.+?)\s*$",
                       re.IGNORECASE | re.MULTILINE)


class Computed(NamedTuple):
    table: str
    column: str
    type: str        # without its constraints
    expression: str  # over the row's other columns, as written

    @property
    def function(self) -> str:
        return _trigger_function("fill", self.table, self.column)

    @property
    def check(self) -> str:
        return _not_null_check(self.table, self.column)


def computed_hints(schema_sql: str) -> list[Computed]:
    """The new NOT NULL columns ``schema.sql`` fills from others: ``c text NOT NULL, -- computed from a || b``."""
    found: list[Computed] = []
    for table in _TABLE.finditer(schema_sql):
        for column in _COMPUTED.finditer(table.group("body")):
            kind = _CONSTRAINTS.sub("", column.group("type").rstrip(",")).strip()
            found.append(Computed(table.group("name"), column.group("name"), kind, column.group("expr")))
    return found


def render_computed(ident: str, computed: Computed) -> tuple[str, str]:
    """The migration and its rollback for a new NOT NULL column computed from the row's others."""
    t, c, fn, check, expr = computed.table, computed.column, computed.function, computed.check, computed.expression
    forward = f"""-- {ident}: add {t}.{c} NOT NULL, filled from {expr}, without downtime
-- pgshift: expand
ALTER TABLE {t} ADD COLUMN {c} {computed.type};
-- The old application does not write {c}: every write of a row that lacks it fills it.
CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.{c} IS NULL THEN
        SELECT {expr} INTO NEW.{c} FROM (SELECT NEW.*) AS pgshift_row;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER {fn} BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW
    WHEN (current_setting('pgshift.backfill', true) IS DISTINCT FROM 'on') EXECUTE FUNCTION {fn}();
ALTER TABLE {t} ADD CONSTRAINT {check} CHECK ({c} IS NOT NULL) NOT VALID;
-- pgshift: backfill {t} SET {c} = {expr} WHERE {c} IS NULL
-- pgshift: validate
ALTER TABLE {t} VALIDATE CONSTRAINT {check};
-- pgshift: contract
DROP TRIGGER {fn} ON {t};
DROP FUNCTION {fn}();
ALTER TABLE {t} ALTER COLUMN {c} SET NOT NULL;
ALTER TABLE {t} DROP CONSTRAINT {check};
-- pgshift: abort
DROP TRIGGER IF EXISTS {fn} ON {t};
DROP FUNCTION IF EXISTS {fn}();
ALTER TABLE {t} DROP COLUMN IF EXISTS {c};
"""
    rollback = f"""-- Rollback of {ident}: without {t}.{c} again, expanded or completed.
DROP TRIGGER IF EXISTS {fn} ON {t};
DROP FUNCTION IF EXISTS {fn}();
ALTER TABLE {t} DROP COLUMN IF EXISTS {c};
"""
    return forward, rollback


_SPLIT = re.compile(r"^\s*(?P<name>[\w\"]+)\s+(?P<type>.+?)\s*,?\s*--\s*split\s+from\s+(?P<old>[\w\"]+)\s*:"
                    r"\s*(?P<expr>.+?)\s*$", re.IGNORECASE | re.MULTILINE)
_JOINED = re.compile(r"^\s*--\s*(?P<old>[\w\"]+)\s+joined\s+from\s+(?P<expr>.+?)\s*$", re.IGNORECASE | re.MULTILINE)


class Part(NamedTuple):
    column: str
    type: str        # without its constraints
    expression: str  # over the old column, as written
    not_null: bool


class Split(NamedTuple):
    """One column split into several: each part computed from the old column, the old one joined back
    from the parts (for the old release's reads of what the new release writes)."""

    table: str
    old: str
    parts: tuple[Part, ...]
    joined: str                  # the old column's value from the parts
    old_type: str = "text"       # as the database has it
    old_not_null: bool = False

    @property
    def function(self) -> str:
        return _trigger_function("split", self.table, self.old)

    def check(self, part: Part) -> str:
        return _not_null_check(self.table, part.column)


def split_hints(schema_sql: str) -> list[Split]:
    """The splits ``schema.sql`` declares: ``first_name text NOT NULL, -- split from name: split_part(name,
    ' ', 1)`` on each new column, and a line ``-- name joined from first_name || ' ' || last_name``."""
    found: list[Split] = []
    for table in _TABLE.finditer(schema_sql):
        body = table.group("body")
        parts: dict[str, list[Part]] = {}
        for column in _SPLIT.finditer(body):
            declared = column.group("type").rstrip(",")
            parts.setdefault(column.group("old"), []).append(Part(
                column.group("name"), _CONSTRAINTS.sub("", declared).strip(), column.group("expr"),
                _NOT_NULL.search(declared) is not None))
        joined = {m.group("old"): m.group("expr") for m in _JOINED.finditer(body)}
        found += [Split(table.group("name"), old, tuple(p), joined[old]) for old, p in parts.items() if old in joined]
    return found


def render_split(ident: str, split: Split) -> tuple[str, str]:
    """The migration and its rollback for a column split into parts, both releases working meanwhile."""
    t, old, fn, parts = split.table, split.old, split.function, split.parts
    names = [p.column for p in parts]
    fill_parts = (f"SELECT {', '.join(p.expression for p in parts)} INTO {', '.join(f'NEW.{n}' for n in names)} "
                  "FROM (SELECT NEW.*) AS pgshift_row;")
    fill_old = f"SELECT {split.joined} INTO NEW.{old} FROM (SELECT NEW.*) AS pgshift_row;"
    new_written = " OR ".join(f"NEW.{n} IS NOT NULL" for n in names)
    new_changed = " OR ".join(f"NEW.{n} IS DISTINCT FROM OLD.{n}" for n in names)
    checked = [p for p in parts if p.not_null]
    added = "".join(f"ALTER TABLE {t} ADD COLUMN {p.column} {p.type};\n" for p in parts)
    checks = "".join(f"ALTER TABLE {t} ADD CONSTRAINT {split.check(p)} CHECK ({p.column} IS NOT NULL) NOT VALID;\n"
                     for p in checked)
    validate = ("-- pgshift: validate\n" + "".join(f"ALTER TABLE {t} VALIDATE CONSTRAINT {split.check(p)};\n"
                                                   for p in checked)) if checked else ""
    not_null = "".join(f"ALTER TABLE {t} ALTER COLUMN {p.column} SET NOT NULL;\n"
                       f"ALTER TABLE {t} DROP CONSTRAINT {split.check(p)};\n" for p in checked)
    dropped = "".join(f"ALTER TABLE {t} DROP COLUMN IF EXISTS {n};\n" for n in names)
    assignments = ", ".join(f"{p.column} = {p.expression}" for p in parts)
    missing = " OR ".join(f"{n} IS NULL" for n in names)
    old_not_null = f"ALTER TABLE {t} ALTER COLUMN {old} SET NOT NULL;\n" if split.old_not_null else ""
    forward = f"""-- {ident}: split {t}.{old} into {', '.join(names)} without downtime (expand, backfill, contract)
-- pgshift: expand
{added}-- The old release writes {old}: the parts follow it. The new release writes the parts: {old} follows them.
CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.{old} IS NULL AND ({new_written}) THEN
            {fill_old}
        ELSE
            {fill_parts}
        END IF;
    ELSIF ({new_changed}) AND NEW.{old} IS NOT DISTINCT FROM OLD.{old} THEN
        {fill_old}
    ELSE
        {fill_parts}
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER {fn} BEFORE INSERT OR UPDATE ON {t} FOR EACH ROW
    WHEN (current_setting('pgshift.backfill', true) IS DISTINCT FROM 'on') EXECUTE FUNCTION {fn}();
{checks}-- pgshift: backfill {t} SET {assignments} WHERE {missing}
{validate}-- pgshift: contract
DROP TRIGGER {fn} ON {t};
DROP FUNCTION {fn}();
{not_null}ALTER TABLE {t} DROP COLUMN {old};
-- pgshift: abort
DROP TRIGGER IF EXISTS {fn} ON {t};
DROP FUNCTION IF EXISTS {fn}();
{dropped}"""
    rollback = f"""-- Rollback of {ident}: {old} back, joined from the parts, expanded or completed.
DROP TRIGGER IF EXISTS {fn} ON {t};
DROP FUNCTION IF EXISTS {fn}();
ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {old} {split.old_type};
UPDATE {t} SET {old} = {split.joined} WHERE {old} IS NULL;
{old_not_null}{dropped}"""
    return forward, rollback


class TableRename(NamedTuple):
    old: str
    new: str


def table_hints(schema_sql: str) -> list[TableRename]:
    """The table renames ``schema.sql`` declares: ``CREATE TABLE customers ( -- renamed from clients``."""
    return [TableRename(m.group("old"), m.group("name")) for m in _TABLE_HINT.finditer(schema_sql)]


def render_table(ident: str, rename: TableRename) -> tuple[str, str]:
    """The migration and its rollback for a table rename: the table takes its new name, a view with
    ``security_invoker`` and the table's grants keeps the old one until the contract drops it."""
    old, new = rename.old, rename.new
    bare_new = new.split(".")[-1]
    forward = f"""-- {ident}: rename table {old} to {bare_new} without downtime (expand, contract)
-- pgshift: expand
-- The old name stays as a view the old application reads and writes through with its own privileges
-- (security_invoker: its grants and row security, never the view owner's).
-- pgshift: ignore renaming-table
ALTER TABLE {old} RENAME TO {bare_new};
CREATE VIEW {old} WITH (security_invoker = true) AS SELECT * FROM {new};
{copy_grants(new, old)}
-- pgshift: contract
DROP VIEW {old};
-- pgshift: abort
DROP VIEW IF EXISTS {old};
ALTER TABLE {new} RENAME TO {old.split(".")[-1]};
"""
    rollback = f"""-- Rollback of {ident}: the table under its old name again, expanded or completed.
DROP VIEW IF EXISTS {old};
ALTER TABLE {new} RENAME TO {old.split(".")[-1]};
"""
    return forward, rollback


def copy_grants(table: str, view: str) -> str:
    """A DO block granting on ``view`` what others hold on ``table``: the table's and its columns' grants."""
    source = table.replace("'", "''")
    target = view.replace("'", "''")
    return f"""DO $pgshift$
DECLARE
    g record;
BEGIN
    FOR g IN
        SELECT a.privilege_type AS what, a.is_grantable AS again, NULL::text AS col,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS who
        FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
        WHERE c.oid = '{source}'::regclass AND a.grantee <> c.relowner
        UNION ALL
        SELECT a.privilege_type, a.is_grantable, quote_ident(t.attname),
               CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END
        FROM pg_class c JOIN pg_attribute t ON t.attrelid = c.oid
             CROSS JOIN LATERAL aclexplode(t.attacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
        WHERE c.oid = '{source}'::regclass AND NOT t.attisdropped AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT %s%s ON %s TO %s%s', g.what, coalesce(' (' || g.col || ')', ''), '{target}', g.who,
                       CASE WHEN g.again THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END
$pgshift$;"""
