"""What a deploy tells the team: one ``Event`` per moment worth a message.

The workflow hands events to a ``notify`` callback (Slack, in ``pgshift.deploy.notify``); the callback
returns a warning when the message could not be delivered, which the deploy logs and goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

KINDS = ("start", "success", "failure", "rollback", "maintenance on", "maintenance off", "backfill")


@dataclass(frozen=True)
class Event:
    kind: str
    environment: str
    database: str
    who: str                  # user@host
    deploy_id: int | None = None
    migrations: list[str] = field(default_factory=list)
    durations: dict[str, int] = field(default_factory=dict)  # migration id -> ms
    backup: str | None = None
    detail: str = ""          # the error, the rollback done, the reason maintenance changed
    total_s: float | None = None

    @property
    def final(self) -> bool:
        """The outcome of a deploy: worth one more try when Slack failed earlier in the run."""
        return self.kind in ("success", "failure", "rollback")

    def title(self) -> str:
        deploy = f"deploy #{self.deploy_id}" if self.deploy_id is not None else "deploy"
        where = f"{self.environment} ({self.database})"
        return {
            "start": f"{deploy} to {where} started by {self.who}",
            "success": f"{deploy} to {where} succeeded",
            "failure": f"{deploy} to {where} FAILED",
            "rollback": f"{deploy} to {where} failed and was rolled back",
            "maintenance on": f"maintenance mode ON for {where}",
            "maintenance off": f"maintenance mode off for {where}",
            "backfill": f"{deploy} to {where}: {self.detail.partition(': ')[0]}",
        }[self.kind]

    def lines(self) -> list[str]:
        found = [self.title()]
        if self.migrations:
            timed = [f"{m} ({self.durations[m]} ms)" if m in self.durations else m for m in self.migrations]
            found.append(f"migrations: {', '.join(timed)}")
        if self.total_s is not None:
            found.append(f"took {self.total_s:.1f} s")
        if self.backup:
            found.append(f"backup: {self.backup}")
        if self.detail:
            found.append(self.detail)
        found.append(f"by {self.who}")
        return found

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "environment": self.environment, "database": self.database, "who": self.who,
                "deploy_id": self.deploy_id, "migrations": self.migrations, "durations_ms": self.durations,
                "backup": self.backup, "detail": self.detail, "total_s": self.total_s}


Notify = Callable[[Event], "str | None"]  # returns a warning when the message was not delivered
