"""Drift: does the live schema match what its applied migrations make?

The quick way, taken whenever it can be: the live catalog against the reference stored for the
applied set (``pgshift.migrations.drift``), in one query. Where no reference is stored (a database
migrated before references were kept), the applied migrations are replayed into a shadow database
once; its catalog snapshot is stored as the reference, so the next status is quick again, and the
result says it replayed. A shadow that had to run on another server (the embedded one, when the
target's user may not create databases) is compared object by object with ``results`` instead, and
nothing is stored: another PostgreSQL version prints some definitions differently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgshift.databases import snapshot
from pgshift.databases.db import Database
from pgshift.errors import MigrationError
from pgshift.migrations import drift as reference
from pgshift.migrations import history
from pgshift.migrations.drift import Drift, DriftItem
from pgshift.migrations.source import Migration
from pgshift.settings import Settings

if TYPE_CHECKING:  # the replay's machinery is imported only when a replay is needed: status stays quick
    from pgshift.migrations.apply import Limits
    from pgshift.schema import diff
    from pgshift.schema.shadow import Shadow

__all__ = ["Drift", "DriftItem", "check"]


def check(settings: Settings, db: Database, migrations: list[Migration], limits: Limits,
          records: dict[str, history.Record] | None = None) -> Drift:
    """How ``db`` differs from what its applied migrations make (``records``: read here if not given)."""
    records = history.records(db) if records is None else records
    found = reference.compare(db, records)
    if found is not None:
        return Drift(items=found, replayed=0, shadow="", method="snapshot")
    return _replay(settings, db, migrations, limits, records)


def _replay(settings: Settings, db: Database, migrations: list[Migration], limits: Limits,
            records: dict[str, history.Record]) -> Drift:
    from pgshift.migrations import apply, phases, squashed, window
    from pgshift.schema import diff
    from pgshift.schema.shadow import Prepared

    applied = squashed.mapped(migrations, records)  # a squash stands for the migrations it replaced
    replay = [m for m in migrations if m.id in applied and applied[m.id].state == "applied"]
    version = db.server_version // 10000
    completed = {p.id for p in phases.recorded(db).values() if p.phase == "completed"} \
        if any(phases.has_phases(m.sql) for m in replay) else set()

    def replayed(scratch: Shadow) -> snapshot.Snapshot | diff.Schema:
        try:
            apply.apply(scratch.db, replay, limits)
            window.replay_contracts(scratch.db, replay, completed, limits)  # what deploy.complete ran live
        except MigrationError as error:
            raise MigrationError(f"replaying the applied migrations into a shadow database on {scratch.where} "
                                 f"failed, so drift cannot be checked: {error}") from None
        if scratch.db.server_version // 10000 == version:
            return snapshot.take(scratch.db)
        return diff.inspect(scratch.db)

    prepared = Prepared(settings, db.url, replayed)  # the replay runs while the live schema is read
    live = snapshot.take(db)
    expected = prepared.result()
    if isinstance(expected, snapshot.Snapshot):
        stored = reference.store(db, reference.applied_key(records), records, expected.objects)
        return Drift(items=reference.differ(expected.objects, live.objects), replayed=len(replay),
                     shadow=prepared.where, method="replay", stored=stored)
    items = [DriftItem(d.kind, d.name, d.change, d.detail) for d in diff.differences(expected, diff.inspect(db))]
    return Drift(items=items, replayed=len(replay), shadow=prepared.where)
