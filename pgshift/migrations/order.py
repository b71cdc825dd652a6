"""Branch-safe order: migrations apply in id order, and one merged late must not slip in underneath.

Two guards, one per place a late migration shows:

* **On a database** (``refused``): a pending migration whose id sorts before the newest applied one is
  refused by default, naming both and the fix (``inv dev.rebase ID`` gives it the next timestamp).
  Teams that want out-of-order applies set ``allow_out_of_order`` (or pass ``--allow-out-of-order``);
  each one is then written to the repair log.
* **In the repository** (``check``, part of ``inv test``): migrations the branch adds must sort after
  every migration on the main branch (``git ls-tree``), and ``migrations/pgshift.head``, a checked-in
  file holding the newest id, must name the newest migration. Every command that writes a migration
  rewrites that one line, so two branches that each add one conflict in git on merge: the second
  merge cannot pass silently, and resolving it means ``inv dev.rebase`` and a new head.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgshift.errors import MigrationError
from pgshift.migrations import history, squashed
from pgshift.migrations.source import Migration

HEAD_FILE = "pgshift.head"


def late(migrations: list[Migration], records: dict[str, history.Record]) -> list[tuple[str, str]]:
    """(pending id, newest applied id) for each pending migration sorting before the newest applied."""
    records = squashed.mapped(migrations, records)
    applied = [i for i, r in records.items() if r.state == "applied"]
    if not applied:
        return []
    newest = max(applied)
    return [(m.id, newest) for m in migrations if m.id < newest and m.id not in applied and not m.empty]


def refuse(found: list[tuple[str, str]]) -> None:
    if found:
        ident, newest = found[0]
        more = f" (+{len(found) - 1} more)" if len(found) > 1 else ""
        raise MigrationError(
            f"{ident} is pending but sorts before {newest}, which is applied already (merged from another "
            f"branch?){more}; give it the next timestamp with inv dev.rebase {ident}, or apply it out of order "
            "with --allow-out-of-order (recorded)")


def write_head(folder: Path, newest: str) -> None:
    """Rewrite ``pgshift.head`` when the project keeps one."""
    path = folder / HEAD_FILE
    if path.exists():
        path.write_text(newest + "\n")


@dataclass(frozen=True)
class OrderReport:
    """``inv test``'s order check (the shape of every check's report)."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.problems:
            return f"{len(self.problems)} order problem(s); first: {self.problems[0]}"
        return "migrations are in branch-safe order" + (f" ({'; '.join(self.notes)})" if self.notes else "")

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "summary": self.summary(), "problems": self.problems, "notes": self.notes}


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30,
                          check=False, stdin=subprocess.DEVNULL)


def main_ids(folder: Path, main_branch: str) -> tuple[str, list[str]] | None:
    """The ref checked against (origin's first) and the migration ids in ``folder`` on it; None
    outside a git repository or without that branch."""
    for ref in (f"origin/{main_branch}", main_branch):
        if _git(folder, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}").returncode != 0:
            continue
        listed = _git(folder, "ls-tree", "--name-only", ref, "--", ".")
        if listed.returncode != 0:
            return None
        names = [Path(n).name for n in listed.stdout.splitlines()]
        return ref, sorted(n[:-4] for n in names if n.endswith(".sql") and not n.endswith(".rollback.sql"))
    return None


def check(folder: Path, migrations: list[Migration], main_branch: str) -> OrderReport:
    problems: list[str] = []
    notes: list[str] = []
    ids = [m.id for m in migrations]
    head = folder / HEAD_FILE
    if head.exists():
        named = head.read_text().strip()
        newest = ids[-1] if ids else ""
        if "<<<<<<<" in named or named != newest:
            problems.append(f"{HEAD_FILE} names {named.splitlines()[0] if named else 'nothing'} but the newest "
                            f"migration is {newest or 'none'}: migrations from two branches met; rebase the "
                            f"branch's own with inv dev.rebase ID, then write the newest id into {HEAD_FILE}")
    else:
        notes.append(f"no {HEAD_FILE}: parallel branches are caught only by the check against {main_branch}")
    on_main = main_ids(folder, main_branch)
    if on_main is None:
        notes.append(f"not checked against {main_branch}: not a git repository, or no such branch")
    else:
        ref, theirs = on_main
        if theirs:
            newest_main = theirs[-1]
            squashes = {m.id for m in migrations if m.sql.startswith(squashed.MARKER)}  # stand for main's own
            for ident in sorted(set(ids) - set(theirs) - squashes):
                if ident < newest_main:
                    problems.append(f"{ident} is added by this branch but sorts before {newest_main}, already on "
                                    f"{ref}; give it the next timestamp with inv dev.rebase {ident}")
    return OrderReport(problems, notes)
