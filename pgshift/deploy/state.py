"""Where deploys stand: recent history, what is pending, the maintenance flag, an unfinished deploy.

``collect`` feeds ``deploy.status``; ``status_extra`` adds the last deploy and the maintenance flag to
every ``status`` (two cheap reads, none when the tables do not exist yet). Both only read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pgshift.databases import target
from pgshift.databases.db import Database
from pgshift.deploy import deploys, maintenance, tables
from pgshift.migrations import history, lock, source, window
from pgshift.migrations.status import states
from pgshift.settings import Settings

if TYPE_CHECKING:
    from pgshift.migrations.drift import Drift
    from pgshift.migrations.window import Window


@dataclass(frozen=True)
class DeployState:
    target: str
    environment: str
    deploys: list[deploys.Deploy]
    pending: list[str]
    maintenance: maintenance.Maintenance
    maintenance_left_by_crash: bool
    deploy_running: bool          # a session holds the migration lock now
    interrupted: list[int]        # deploys still marked running whose process died
    drift: Drift | None = None    # None: not checked
    windows: list[Window] = field(default_factory=list)  # phased migrations: their phase, backfill progress

    def as_json(self) -> dict[str, Any]:
        return {"target": self.target, "environment": self.environment, "pending": self.pending,
                "maintenance": {**self.maintenance.as_json(), "left_by_crash": self.maintenance_left_by_crash},
                "deploy_running": self.deploy_running, "interrupted": self.interrupted,
                "deploys": [d.as_json() for d in self.deploys],
                "drift": self.drift.as_json() if self.drift is not None else None,
                "phases": [w.as_json() for w in self.windows]}


def collect(settings: Settings, limit: int = 10, *, drift: bool = True) -> DeployState:
    migrations = source.of(settings)
    with target.connect(settings) as db:
        found = deploys.recent(db, limit)
        records = history.records(db)
        pending = [s.id for s in states(migrations, records) if s.state in ("pending", "failed")]
        flag = maintenance.state(db)
        running = not lock.is_free(db)
        stale = [d.id for d in deploys.stale(db)]
        open_windows = window.windows(db)
        drifted = None
        if drift:
            from pgshift.migrations.apply import Limits
            from pgshift.schema import drift as schema_drift

            drifted = schema_drift.check(settings, db, migrations, Limits.of(settings), records)
    return DeployState(settings.describe_target(), settings.environment, found, pending, flag,
                       flag.left_on_by_crash(running), running, stale, drifted, open_windows)


def status_extra(db: Database, present: tuple[bool, bool] | None = None) -> dict[str, Any]:
    """``last_deploy`` and ``maintenance`` for ``Status.extra``; nothing before the first deploy.

    ``present`` is what ``pgshift.deploy.tables`` said, if the caller asked it already."""
    has_deploys, has_flag = present if present is not None else tables(db)
    if not (has_deploys or has_flag):
        return {}
    extra: dict[str, Any] = {}
    running = not lock.is_free(db)
    if has_deploys:
        last = deploys.recent(db, 1)
        if last:
            d = last[0]
            dead = d.outcome == "running" and not running
            extra["last_deploy"] = {**d.as_json(), "describe": d.describe(), "died": dead}
    if has_flag:
        flag = maintenance.state(db)
        extra["maintenance"] = {**flag.as_json(), "left_by_crash": flag.left_on_by_crash(running),
                                "describe": flag.describe()}
    return extra
