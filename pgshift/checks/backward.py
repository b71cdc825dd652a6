"""backward: for each migration, newest first, rollback must restore the schema exactly; then re-apply.

One pass, linear in the number of migrations. Migrations are applied one by one from empty, with a
snapshot after each: snapshot k is the schema *before* migration k+1, so every "before" is known
without replaying anything. Then from the newest down, for migration k: roll back, compare with
snapshot k-1; re-apply, compare with snapshot k; roll back again to reach the state migration k-1
left. A failure leaves the database in an unknown state, so the scratch database is then rebuilt up
to migration k-1 (the only replay, and only after a failure) and the walk goes on: one run finds
every broken rollback.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pgshift.checks.forward import apply_one
from pgshift.databases import snapshot, throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError
from pgshift.migrations import apply, refusal
from pgshift.migrations.source import Migration


@dataclass(frozen=True)
class RoundTrip:
    id: str
    file: str                     # the rollback file
    state: str                    # ok | failed | not tested | skipped (a refused rollback)
    problem: str | None = None
    diff: list[str] = field(default_factory=list)
    rollback_ms: int | None = None
    reapply_ms: int | None = None


@dataclass(frozen=True)
class BackwardReport:
    trips: list[RoundTrip] = field(default_factory=list)
    note: str | None = None       # e.g. migrations left out because one does not apply

    @property
    def ok(self) -> bool:
        return not any(t.state == "failed" for t in self.trips)

    def summary(self) -> str:
        failed = [t for t in self.trips if t.state == "failed"]
        tested = sum(1 for t in self.trips if t.state not in ("not tested", "skipped"))
        if failed:
            first = failed[0]
            return f"{len(failed)} of {tested} rollback(s) fail; first: {first.file}: {first.problem}"
        text = f"{tested} migration(s) round-trip (up, down, up) exactly"
        skipped = [t.id for t in self.trips if t.state == "skipped"]
        if skipped:
            text += f"; skipped {', '.join(skipped)} (rollback refused: a baseline)"
        return f"{text}; {self.note}" if self.note else text

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "summary": self.summary(), "note": self.note,
                "trips": [asdict(t) for t in self.trips]}


class _Scratch:
    """The scratch database the walk runs on, rebuildable to any prefix of the migrations."""

    def __init__(self, admin: DatabaseUrl, migrations: list[Migration], limits: apply.Limits) -> None:
        self.admin, self.migrations, self.limits = admin, migrations, limits
        self._stack = contextlib.ExitStack()
        self.db = self._fresh()

    def _fresh(self) -> Database:
        try:
            url = self._stack.enter_context(throwaway.empty(self.admin))
            return self._stack.enter_context(Database.connect(url))
        except BaseException:
            self._stack.close()  # the database just made is dropped again
            raise

    def rebuild(self, upto: Migration | None) -> None:
        self._stack.close()
        self._stack = contextlib.ExitStack()
        self.db = self._fresh()
        if upto is not None:
            apply.apply(self.db, self.migrations, self.limits, upto=upto.id)

    def close(self) -> None:
        self._stack.close()


_COLUMNS = re.compile(r"columns \((?P<names>[^)]*)\)")


def _by_name(snap: snapshot.Snapshot) -> snapshot.Snapshot:
    """The snapshot with each table's column list sorted: a rollback that re-adds a column puts it last."""

    def sort(match: re.Match[str]) -> str:
        return "columns (" + ", ".join(sorted(match.group("names").split(", "))) + ")"

    return snapshot.Snapshot({k: _COLUMNS.sub(sort, v) if k.startswith("table ") else v
                              for k, v in snap.objects.items()})


def _rollback_file(m: Migration) -> str:
    return m.rollback_path.name if m.rollback_path else f"{m.id}.rollback.sql"


def round_trip(db: Database, migrations: list[Migration], m: Migration, limits: apply.Limits,
               before: snapshot.Snapshot, after: snapshot.Snapshot) -> RoundTrip:
    """Down, compare with ``before``; up, compare with ``after``; down again. ``m`` is the newest applied.

    On "ok" the database is back where it was before ``m``; on "failed" its state is unknown."""
    name = _rollback_file(m)
    if refusal.refused(m) is not None:  # a baseline: no down by design; the walk stops at it
        return RoundTrip(m.id, name, "skipped", f"its rollback is refused: {refusal.refused(m)}")
    if m.rollback_path is None:
        return RoundTrip(m.id, name, "failed", f"no rollback file: write migrations/{name}")
    try:
        down_ms = apply.rollback(db, m, limits)
    except MigrationError as error:
        return RoundTrip(m.id, name, "failed", f"the rollback fails: {error}")
    changed = snapshot.diff(_by_name(before), _by_name(snapshot.take(db)))
    if changed:
        return RoundTrip(m.id, name, "failed",
                         f"after the rollback the schema differs from before {m.path.name} ({len(changed)} "
                         "difference(s); '-' is missing, '+' was left behind)", changed, down_ms)
    try:
        up_ms = apply_one(db, migrations, m, limits).duration_ms
    except MigrationError as error:
        return RoundTrip(m.id, name, "failed", f"{m.path.name} does not apply again after its rollback: {error}",
                         rollback_ms=down_ms)
    changed = snapshot.diff(_by_name(after), _by_name(snapshot.take(db)))
    if changed:
        return RoundTrip(m.id, name, "failed",
                         f"{m.path.name} applied again after its rollback gives a different schema", changed,
                         down_ms, up_ms)
    try:
        apply.rollback(db, m, limits)
    except MigrationError as error:
        return RoundTrip(m.id, name, "failed", f"the rollback fails the second time: {error}", [], down_ms, up_ms)
    return RoundTrip(m.id, name, "ok", rollback_ms=down_ms, reapply_ms=up_ms)


def run(admin: DatabaseUrl, migrations: list[Migration], limits: apply.Limits) -> BackwardReport:
    """Round-trip every migration on a scratch database on ``admin``'s server."""
    runnable = [m for m in migrations if not m.empty]
    work = _Scratch(admin, migrations, limits)
    try:
        snaps = [snapshot.take(work.db)]
        applied: list[Migration] = []
        note = None
        for m in runnable:
            try:
                apply_one(work.db, migrations, m, limits)
            except MigrationError:
                note = f"{m.path.name} and later are not tested: it does not apply (see forward)"
                work.rebuild(applied[-1] if applied else None)
                break
            applied.append(m)
            snaps.append(snapshot.take(work.db))
        trips: list[RoundTrip] = [RoundTrip(m.id, _rollback_file(m), "not tested")
                                  for m in runnable[len(applied):]]
        for k in reversed(range(len(applied))):
            trip = round_trip(work.db, migrations, applied[k], limits, snaps[k], snaps[k + 1])
            trips.append(trip)
            if trip.state == "skipped":  # what is older cannot be reached without undoing it
                trips += [RoundTrip(o.id, _rollback_file(o), "not tested") for o in applied[:k]]
                break
            if trip.state != "ok" and k > 0:
                work.rebuild(applied[k - 1])
        return BackwardReport(sorted(trips, key=lambda t: t.id, reverse=True), note)
    finally:
        work.close()
