"""Maintenance mode: a flag in the target database the application reads, plus optional hooks.

The application needs one query (the table exists once pgshift has deployed to the database, or after
``inv prod.maintenance on|off``)::

    SELECT enabled FROM pgshift.maintenance;   -- exactly one row: true while maintenance is on

Each change is also announced with ``NOTIFY pgshift_maintenance, 'on'`` (or ``'off'``) for an
application that would rather ``LISTEN`` than poll. With another record schema (a tenant's, see
``pgshift.migrations.history``) the flag is that schema's ``maintenance`` and the channel
``<schema>_maintenance``: each tenant has its own.

The flag outlives the process that set it, so a deploy that dies leaves it on: the row remembers the
deploy that set it, and ``left_on_by_crash`` tells that case (the deploy is no longer running) from
maintenance turned on by hand. The next deploy and ``status`` report it; the next deploy turns it off.

Hooks are argument lists from the Invoke config (``maintenance_on_hook``, ``maintenance_off_hook``),
run without a shell, with ``PGSHIFT_MAINTENANCE=on|off`` and ``PGSHIFT_ENVIRONMENT`` added to their
environment, bounded by ``hook_timeout``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgshift.databases.db import Database, SqlFailure
from pgshift.dburl import redact
from pgshift.errors import ToolError
from pgshift.migrations import history

QUERY = "SELECT enabled FROM pgshift.maintenance"
CHANNEL = "pgshift_maintenance"

DDL = """
CREATE SCHEMA IF NOT EXISTS pgshift;
CREATE TABLE IF NOT EXISTS pgshift.maintenance (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    enabled    boolean NOT NULL DEFAULT false,
    since      timestamptz,
    set_by     text,
    reason     text,
    deploy_id  bigint
);
INSERT INTO pgshift.maintenance (singleton, enabled) VALUES (true, false) ON CONFLICT DO NOTHING;
"""


@dataclass(frozen=True)
class Maintenance:
    enabled: bool
    since: datetime | None = None
    set_by: str | None = None
    reason: str | None = None
    deploy_id: int | None = None  # set by a deploy (None: by hand)

    def left_on_by_crash(self, deploy_running: bool) -> bool:
        """On, set by a deploy that is no longer running."""
        return self.enabled and self.deploy_id is not None and not deploy_running

    def describe(self) -> str:
        if not self.enabled:
            return "maintenance off"
        who = f"deploy #{self.deploy_id}" if self.deploy_id is not None else "hand"
        since = f" since {self.since:%Y-%m-%d %H:%M:%S %Z}".rstrip() if self.since else ""
        return f"maintenance ON{since}, set by {who} ({self.set_by or '?'})" + (
            f": {self.reason}" if self.reason else "")

    def as_json(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "since": self.since.isoformat() if self.since else None,
                "set_by": self.set_by, "reason": self.reason, "deploy_id": self.deploy_id}


OFF = Maintenance(False)


def query(db: Database) -> str:
    """The application's query for this session's record schema."""
    return history.in_schema(db, QUERY)


def channel(db: Database) -> str:
    return CHANNEL if db.record_schema == history.SCHEMA else f'"{db.record_schema}_maintenance"'


def exists(db: Database) -> bool:
    return db.has_relation(history.rel(db, "maintenance"))


def ensure(db: Database) -> None:
    if not exists(db):
        db.execute(history.in_schema(db, DDL))


def state(db: Database) -> Maintenance:
    """The flag as the application sees it (off when the table does not exist yet). Reads only."""
    try:
        row = db.one(f"SELECT enabled, since, set_by, reason, deploy_id FROM {history.rel(db, 'maintenance')}")
    except SqlFailure as failure:
        if failure.sqlstate in ("42P01", "3F000"):
            return OFF
        raise
    return OFF if row is None else Maintenance(*row)


def switch(db: Database, on: bool, *, set_by: str, reason: str | None = None,
           deploy_id: int | None = None) -> Maintenance:
    """Turn the flag on or off (one transaction, with its NOTIFY) and return the new state."""
    ensure(db)
    db.execute("BEGIN")
    try:
        if on:
            db.execute(f"UPDATE {history.rel(db, 'maintenance')} SET enabled = true, since = now(), set_by = %s, "
                       "reason = %s, deploy_id = %s", [set_by, reason, deploy_id])
        else:
            db.execute(f"UPDATE {history.rel(db, 'maintenance')} SET enabled = false, since = now(), set_by = %s, "
                       "reason = NULL, deploy_id = NULL", [set_by])
        db.execute(f"NOTIFY {channel(db)}, '{'on' if on else 'off'}'")
        db.execute("COMMIT")
    except BaseException:
        if not db.conn.closed and db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return state(db)


def run_hook(argv: tuple[str, ...], on: bool, environment: str, timeout: float,
             redactor: Callable[[str], str] = redact) -> str | None:
    """Run a maintenance hook; returns what it printed (last line), None when none is configured.

    Raises ToolError (with the tail of its stderr, secrets redacted) when it fails or runs too long."""
    if not argv:
        return None
    env = {**os.environ, "PGSHIFT_MAINTENANCE": "on" if on else "off", "PGSHIFT_ENVIRONMENT": environment}
    try:
        done = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=timeout or None,
                              stdin=subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        raise ToolError(f"maintenance hook {argv[0]!r} was not found; fix pgshift.maintenance_"
                        f"{'on' if on else 'off'}_hook") from None
    except subprocess.TimeoutExpired:
        raise ToolError(f"maintenance hook {argv[0]!r} ran longer than {timeout:g}s and was stopped; "
                        "make it faster or raise pgshift.hook_timeout") from None
    if done.returncode != 0:
        tail = " / ".join(done.stderr.strip().splitlines()[-3:]) or "no output"
        raise ToolError(f"maintenance hook {argv[0]!r} exited with {done.returncode}: {redactor(tail)}")
    lines = done.stdout.strip().splitlines()
    return redactor(lines[-1]) if lines else ""
