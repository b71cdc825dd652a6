"""Deploying migrations to a shared database (staging, production).

``plan`` builds, without writing anything, the value ``--dry-run`` prints and a real run executes;
``workflow`` runs it (preflight, backup, maintenance on, apply, verify, maintenance off, notify,
log); ``rehearsal`` first runs the pending migrations on a scratch clone of the target;
``maintenance`` is the flag the application reads; ``history`` keeps every deploy in the target;
``runlog`` writes the log a person reads afterwards.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgshift.databases.db import Database

TABLES = ("pgshift.deploys", "pgshift.maintenance")


def tables(db: Database) -> tuple[bool, bool]:
    """Whether the deploy history and the maintenance flag exist here (neither does before a deploy).

    Kept in this light module: ``status`` asks it first and imports the deploy modules only when the
    answer is yes, which a development database never gives."""
    from pgshift.migrations.history import in_schema

    row = db.one(f"SELECT {', '.join(f'to_regclass({in_schema(db, t)!r}) IS NOT NULL' for t in TABLES)}")
    return (bool(row[0]), bool(row[1])) if row else (False, False)
