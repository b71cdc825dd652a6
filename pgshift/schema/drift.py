"""Drift: does the live schema match what its applied migrations make?

The applied migrations (those the record says are applied, from their files) are replayed into a
shadow database and both schemas are compared object by object. Replaying, rather than storing a
snapshot when each migration is applied, needs no extra state, works the same whoever applied the
migrations (dev.migrate, a deploy, a restore), and cannot carry a hand change into the reference.
It costs about a second for the example project, so ``status`` does it only when asked (``--drift``).
"""

from __future__ import annotations

from pgshift.databases.db import Database
from pgshift.errors import MigrationError
from pgshift.migrations import apply, history
from pgshift.migrations.drift import Drift, DriftItem
from pgshift.migrations.source import Migration
from pgshift.schema import diff
from pgshift.schema.shadow import Prepared, Shadow
from pgshift.settings import Settings


def check(settings: Settings, db: Database, migrations: list[Migration], limits: apply.Limits) -> Drift:
    """Replay the applied migrations into a shadow database and compare it with ``db``."""
    records = history.records(db)
    replay = [m for m in migrations if m.id in records and records[m.id].state == "applied"]

    def replayed(scratch: Shadow) -> diff.Schema:
        try:
            apply.apply(scratch.db, replay, limits)
        except MigrationError as error:
            raise MigrationError(f"replaying the applied migrations into a shadow database on {scratch.where} "
                                 f"failed, so drift cannot be checked: {error}") from None
        return diff.inspect(scratch.db)

    prepared = Prepared(settings, db.url, replayed)  # the replay runs while the live schema is read
    actual = diff.inspect(db)
    expected = prepared.result()
    items = [DriftItem(d.kind, d.name, d.change, d.detail) for d in diff.differences(expected, actual)]
    return Drift(items=items, replayed=len(replay), shadow=prepared.where)
