"""Running the checks one after another so that one that cannot run never stops the others.

A check that raises is a failed check carrying its message (``NotRun``): ``inv test`` still prints
every other check, the summary and ``--json``, and exits 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pgshift.errors import PgShiftError

T = TypeVar("T")


@dataclass(frozen=True)
class NotRun:
    """The report of a check that stopped with an error before it could report."""

    check: str
    error: str
    not_run: bool = True  # how a caller that only knows the report protocol tells one apart

    @property
    def ok(self) -> bool:
        return False

    def summary(self) -> str:
        return f"could not run: {self.error}"

    def as_json(self) -> dict[str, Any]:
        return {"ok": False, "summary": self.summary(), "error": self.error}


def guarded(name: str, step: Callable[[], T]) -> T | NotRun:
    """``step()``, or a ``NotRun`` naming what stopped it."""
    try:
        return step()
    except PgShiftError as error:
        return NotRun(name, str(error))
    except Exception as error:  # a fault in pgshift itself: still a finding, never a lost summary
        return NotRun(name, f"{type(error).__name__}: {error} (a fault in pgshift; please report it)")
