"""A column rename without downtime, as an expand/contract migration written from a template.

The expand phase adds the new column and a trigger that keeps the two in step both ways (a write
through either name is seen through the other), then the backfill copies the old values over (its own
batches skip the trigger: they set ``pgshift.backfill``, and the copy they make is the step the trigger
would keep); the old
and the new application both work until ``deploy.complete`` drops the trigger and the old column.
``hints`` finds the renames a ``schema.sql`` declares with a ``-- renamed from old_name`` comment on
the column's line; a new type there makes it a type change too, the values cast both ways.
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


class Rename(NamedTuple):
    table: str
    old: str
    new: str
    type: str   # the column's type as declared, without its constraints
    old_type: str | None = None  # the old column's type when it differs: values are cast both ways

    @property
    def function(self) -> str:
        return f"pgshift_sync_{self.table.split('.')[-1]}_{self.new}"[:63]


def hints(schema_sql: str) -> list[Rename]:
    """The renames ``schema.sql`` declares: ``full_name text NOT NULL, -- renamed from name``."""
    found: list[Rename] = []
    for table in _TABLE.finditer(schema_sql):
        for column in _COLUMN.finditer(table.group("body")):
            kind = _CONSTRAINTS.sub("", column.group("type").rstrip(",")).strip()
            found.append(Rename(table.group("name"), column.group("old"), column.group("name"), kind))
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
-- pgshift: backfill {t} SET {new} = {copied} WHERE {new} IS DISTINCT FROM {copied}
-- pgshift: contract
DROP TRIGGER {fn} ON {t};
DROP FUNCTION {fn}();
ALTER TABLE {t} DROP COLUMN {old};
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
ALTER TABLE {t} DROP COLUMN {new};
"""
    return forward, rollback
