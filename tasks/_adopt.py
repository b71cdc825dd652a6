"""Output shared by the adopting and repairing tasks of several namespaces (dev, prod, rollback)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks._cli import out

if TYPE_CHECKING:
    from pgshift.api import Baseline

REASON_HELP = "why (written to the repair log, pgshift.audit, with who, host and when)"


def show_baseline(made: Baseline) -> None:
    out(f"wrote {made.migration.path.name} ({made.statements} statement(s)) and its refused rollback; "
        "recorded it as applied: the database was not changed")
    for what in made.not_compared:
        out(f"not carried: {what} (the differ does not compare them; add them by hand if new databases need them)")
