"""``dev.rebase ID``: give a migration merged out of order the next timestamp (after every migration in
the folder and on the main branch).

Its files are renamed (content untouched, so its checksum stays); where the development database has
it recorded already, the record is renamed with it, under the migration lock, with a repair-log row.
"""

from __future__ import annotations

from datetime import datetime

from pgshift.databases.db import Database
from pgshift.errors import ConfigError
from pgshift.migrations import audit, history, order, source
from pgshift.migrations.lock import migration_lock
from pgshift.settings import Settings


def rebase(settings: Settings, db: Database, ident: str, *, reason: str | None = None,
           now: datetime | None = None) -> str:
    """Rename ``ident`` to the next timestamp after every other migration; returns the new id."""
    folder = settings.migrations_dir
    migrations = source.read(folder)
    found = next((m for m in migrations if m.id == ident), None)
    if found is None:
        raise ConfigError(f"no migration {ident!r} in {folder}; see inv dev.status for the ids")
    on_main = order.main_ids(folder, settings.main_branch)  # main's newest may not be merged in yet
    others = sorted({m.id for m in migrations if m.id != ident} | set(on_main[1] if on_main else []))
    if not others or others[-1] < ident:
        raise ConfigError(f"{ident} sorts after every other migration already; nothing to rebase")
    stamp = (now or datetime.now()).strftime("%Y%m%d%H%M%S")
    if stamp <= others[-1][:14]:
        stamp = str(int(others[-1][:14]) + 1)
    new = f"{stamp}_{ident[15:]}"
    with migration_lock(db, settings.lock_wait):
        records = history.records(db)
        if new in records:
            raise ConfigError(f"{new} is recorded already on this database; run inv dev.rebase again in a second")
        found.path.rename(folder / f"{new}.sql")
        if found.rollback_path is not None:
            found.rollback_path.rename(folder / f"{new}{source.ROLLBACK_SUFFIX}")
        if ident in records:
            db.execute(f"BEGIN; UPDATE {history.rel(db, 'migrations')} SET id = {db.literal(new)} "
                       f"WHERE id = {db.literal(ident)}; "
                       f"{audit.write_sql(db, 'rebase', new, reason, detail=f'was {ident}')} COMMIT;")
    order.write_head(folder, new)
    return new
