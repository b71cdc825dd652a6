"""Deploy history: table ``pgshift.deploys`` in the target, one row per deploy.

A row is written when a deploy has the migration lock (outcome ``running``) and finished when it
ends. A ``running`` row while no session holds the lock is a deploy that died (``kill -9``, a lost
machine): the next deploy marks it ``interrupted`` and says so, and ``status`` reports it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgshift.databases.db import Database, SqlFailure
from pgshift.migrations import history, lock

TABLE = "pgshift.deploys"
OUTCOMES = ("running", "succeeded", "failed", "rolled back", "interrupted")

DDL = """
CREATE SCHEMA IF NOT EXISTS pgshift;
CREATE TABLE IF NOT EXISTS pgshift.deploys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    environment  text NOT NULL,
    who          text NOT NULL,
    host         text NOT NULL,
    pid          integer NOT NULL,
    step         text NOT NULL DEFAULT 'started',
    outcome      text NOT NULL DEFAULT 'running'
                 CHECK (outcome IN ('running', 'succeeded', 'failed', 'rolled back', 'interrupted')),
    migrations   text[] NOT NULL DEFAULT '{}',
    durations    jsonb NOT NULL DEFAULT '{}',
    backup       text,
    log          text,
    rehearsed    boolean NOT NULL DEFAULT false,
    error        text
);
"""


@dataclass(frozen=True)
class Deploy:
    id: int
    started_at: datetime
    finished_at: datetime | None
    environment: str
    who: str
    host: str
    pid: int
    step: str
    outcome: str
    migrations: list[str]
    durations: dict[str, int] = field(default_factory=dict)  # migration id (and step names) -> ms
    backup: str | None = None
    log: str | None = None
    rehearsed: bool = False
    error: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat() if self.finished_at else None,
                "environment": self.environment, "who": self.who, "host": self.host, "pid": self.pid,
                "step": self.step, "outcome": self.outcome, "migrations": self.migrations,
                "durations_ms": self.durations, "backup": self.backup, "log": self.log,
                "rehearsed": self.rehearsed, "error": self.error}

    def describe(self) -> str:
        when = f"{self.started_at:%Y-%m-%d %H:%M:%S %Z}".strip()
        what = f"{len(self.migrations)} migration(s)" if self.migrations else "no migrations"
        took = f" in {self.duration_s:.1f} s" if self.duration_s is not None else ""
        where = f" (stopped at step {self.step})" if self.outcome in ("interrupted", "failed") else ""
        return f"deploy #{self.id} {self.outcome}{where}: {what}{took}, {when}, by {self.who}@{self.host}"


_COLUMNS = ("id, started_at, finished_at, environment, who, host, pid, step, outcome, migrations, durations, "
            "backup, log, rehearsed, error")


def exists(db: Database) -> bool:
    return db.has_relation(history.rel(db, "deploys"))


def ensure(db: Database) -> None:
    """Create the table (under the migration lock)."""
    if not exists(db):
        db.execute(history.in_schema(db, DDL))


def recent(db: Database, limit: int = 10) -> list[Deploy]:
    """The newest deploys first; none when the table does not exist."""
    try:
        rows = db.rows(f"SELECT {_COLUMNS} FROM {history.rel(db, 'deploys')} ORDER BY id DESC LIMIT %s", [limit])
    except SqlFailure as failure:
        if failure.sqlstate in ("42P01", "3F000"):
            return []
        raise
    return [_deploy(row) for row in rows]


def _deploy(row: tuple[Any, ...]) -> Deploy:
    values = dict(zip([c.strip() for c in _COLUMNS.split(",")], row, strict=True))
    values["migrations"], values["durations"] = list(values["migrations"]), dict(values["durations"])
    return Deploy(**values)


def start(db: Database, *, environment: str, who: str, host: str, pid: int, migrations: list[str],
          rehearsed: bool, log: str | None) -> int:
    row = db.one(f"INSERT INTO {history.rel(db, 'deploys')} (environment, who, host, pid, migrations, rehearsed, log) "
                 "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                 [environment, who, host, pid, migrations, rehearsed, log])
    assert row is not None
    return int(row[0])


def step(db: Database, deploy_id: int, name: str, **values: Any) -> None:
    """Record the step a deploy has reached (and any of backup, migrations, durations)."""
    sets, params = ["step = %s"], [name]
    for column, value in values.items():
        if column not in ("backup", "migrations", "durations"):
            raise ValueError(column)
        sets.append(f"{column} = %s")
        params.append(json.dumps(value) if column == "durations" else value)
    db.execute(f"UPDATE {history.rel(db, 'deploys')} SET {', '.join(sets)} WHERE id = %s", [*params, deploy_id])


def finish(db: Database, deploy_id: int, outcome: str, *, migrations: list[str], durations: dict[str, int],
           error: str | None = None) -> None:
    if outcome not in OUTCOMES:
        raise ValueError(outcome)
    db.execute(f"UPDATE {history.rel(db, 'deploys')} SET outcome = %s, finished_at = now(), migrations = %s, "
               "durations = %s, error = %s WHERE id = %s",
               [outcome, migrations, json.dumps(durations), error[:2000] if error else None, deploy_id])


def unfinished(db: Database) -> list[Deploy]:
    """Deploys still marked ``running``. Called by the lock holder, every one of them is dead."""
    return [d for d in recent(db, 50) if d.outcome == "running"]


def stale(db: Database) -> list[Deploy]:
    """``running`` deploys while nobody holds the migration lock: they died. For callers without the lock."""
    running = unfinished(db)
    if not running or not lock.is_free(db):
        return []
    return running


def mark_interrupted(db: Database, deploys: list[Deploy]) -> None:
    """Under the migration lock: the ``running`` rows left by dead deploys become ``interrupted``."""
    for d in deploys:
        db.execute(f"UPDATE {history.rel(db, 'deploys')} SET outcome = 'interrupted', error = coalesce(error, %s) "
                   "WHERE id = %s AND outcome = 'running'",
                   [f"the deploy process died during step {d.step}", d.id])
