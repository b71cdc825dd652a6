"""The repair log: table ``pgshift.audit``, one row per hand change to the migration record.

Every command that writes the record other than by applying or rolling back a migration (baseline,
import, mark, repair, rebase, squash, an out-of-order apply, a rollback to a version) leaves a row:
who, from which host, when, what, and the reason given with ``--reason``.
"""

from __future__ import annotations

import getpass
import socket
from datetime import datetime
from typing import NamedTuple

from pgshift.databases.db import Database
from pgshift.migrations import history

DDL = """
CREATE SCHEMA IF NOT EXISTS pgshift;
CREATE TABLE IF NOT EXISTS pgshift.audit (
    n         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    who       text NOT NULL,
    host      text NOT NULL,
    action    text NOT NULL,
    migration text,
    reason    text,
    detail    text
);
"""


class Entry(NamedTuple):
    n: int
    at: datetime
    who: str
    host: str
    action: str
    migration: str | None
    reason: str | None
    detail: str | None

    def describe(self) -> str:
        why = f" because {self.reason}" if self.reason else ""
        what = f" {self.migration}" if self.migration else ""
        return f"{self.at:%Y-%m-%d %H:%M} {self.who}@{self.host}: {self.action}{what}{why}" + (
            f" ({self.detail})" if self.detail else "")


def user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no entry for this uid (a container)
        return "unknown"


def write_sql(db: Database, action: str, migration: str | None = None, reason: str | None = None,
              detail: str | None = None) -> str:
    """The statements that add a row (the table made if needed), to send inside the change's own
    transaction, so the row exists exactly when the change does."""
    values = ", ".join(db.literal(v) if v is not None else "NULL"
                       for v in (user(), socket.gethostname(), action, migration, reason, detail))
    return (f"{history.in_schema(db, DDL)}\nINSERT INTO {history.rel(db, 'audit')} "
            f"(who, host, action, migration, reason, detail) VALUES ({values});")


def write(db: Database, action: str, migration: str | None = None, reason: str | None = None,
          detail: str | None = None) -> None:
    db.execute(write_sql(db, action, migration, reason, detail))


def entries(db: Database, limit: int = 50) -> list[Entry]:
    """The newest rows first; none when nothing was ever repaired."""
    if not db.has_relation(history.rel(db, "audit")):
        return []
    return [Entry._make(row) for row in db.rows(
        f"SELECT n, at, who, host, action, migration, reason, detail FROM {history.rel(db, 'audit')} ORDER BY n "
        "DESC LIMIT %s",
        [limit])]
