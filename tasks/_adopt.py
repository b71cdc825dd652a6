"""Output shared by the adopting and repairing tasks of several namespaces (dev, prod, rollback)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tasks._cli import out

if TYPE_CHECKING:
    from pgshift.api import Baseline, Repaired

REASON_HELP = "why (written to the repair log, pgshift.audit, with who, host and when)"


def show_baseline(made: Baseline) -> None:
    out(f"wrote {made.migration.path.name} ({made.statements} statement(s)) and its refused rollback; "
        "recorded it as applied: the database was not changed")
    for what in made.not_compared:
        out(f"not carried: {what} (the differ does not compare them; add them by hand if new databases need them)")


MARK_HELP = {
    "id_": "the migration whose record to set",
    "applied": "record it as applied (with its file's checksum), e.g. after running it by hand",
    "reverted": "remove its record, e.g. after undoing it by hand",
    "reason": REASON_HELP,
}


def mark_flags(applied: bool, reverted: bool) -> bool:
    from pgshift.errors import ConfigError

    if applied == reverted:
        raise ConfigError("give exactly one of --applied or --reverted")
    return applied


def show_repair(found: Repaired) -> None:
    for line in found.accepted:
        out(f"accepted the edited file of {line}: its record now has the file's checksum")
    for line in found.cleared:
        out(f"cleared {line}; it is pending again")
    for line in found.kept:
        out(f"kept {line}")
    if not (found.accepted or found.cleared or found.kept):
        out("nothing to repair: every record is applied")
