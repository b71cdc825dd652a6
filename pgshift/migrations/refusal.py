"""Rollbacks that are refused on purpose: a rollback file whose first line is ``REFUSED``.

A baseline (and a squash) has no safe down: undoing it would drop the whole schema and its data. Its
rollback file says so in its first line, and every command that would run it stops instead and
names the file (``rollback.to``, ``on_failure=rollback``); ``test.backward`` skips it.
"""

from __future__ import annotations

from pgshift.migrations.source import Migration

REFUSED = "-- pgshift: rollback refused"


def text(reason: str) -> str:
    """A refused rollback file's content."""
    return f"{REFUSED}: {reason}\n"


def refused(migration: Migration) -> str | None:
    """The reason its rollback is refused, or None when it may run (or has no rollback file)."""
    sql = migration.rollback_sql()
    if sql is None or not sql.startswith(REFUSED):
        return None
    return sql.splitlines()[0][len(REFUSED):].lstrip(": ").strip() or "refused"
