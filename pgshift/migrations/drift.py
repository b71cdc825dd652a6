"""Drift, as status reports it: how the live schema differs from what its applied migrations make."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class DriftItem:
    kind: str    # table, column, index, function, ...
    name: str    # schema-qualified: public.users.nickname
    change: str  # unexpected (no migration made it), missing (made, now gone), changed
    detail: str = ""

    def describe(self) -> str:
        what = {"unexpected": "exists, but no migration made it", "missing": "a migration made it; it is gone",
                "changed": "differs from what the migrations made"}.get(self.change, self.change)
        return f"{self.kind} {self.name}: {what}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Drift:
    """How the live schema differs from the schema its applied migrations make."""

    items: list[DriftItem]
    replayed: int  # migrations replayed into the shadow database
    shadow: str    # where that shadow database ran

    def as_json(self) -> dict[str, Any]:
        return {"clean": not self.items, "replayed": self.replayed, "shadow": self.shadow,
                "differences": [asdict(i) for i in self.items]}
