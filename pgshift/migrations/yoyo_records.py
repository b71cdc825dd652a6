"""yoyo-migrations' view of a folder and a database: the one module that imports yoyo.

yoyo itself reads the folder (its ids, its post-apply hooks, the hash it records per migration);
its record table ``_yoyo_migration`` is read by hash with a plain SELECT, so nothing of yoyo's is
written or upgraded on the target.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from pgshift.databases.db import Database
from pgshift.errors import ConfigError

TABLE = "_yoyo_migration"


class YoyoMigration(NamedTuple):
    id: str
    path: Path
    hash: str
    post_apply: bool


def read_folder(folder: Path) -> list[YoyoMigration]:
    """Every migration yoyo sees in ``folder``, in yoyo's order."""
    from yoyo import read_migrations

    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder; give the yoyo migrations folder")
    found = read_migrations(str(folder))
    return ([YoyoMigration(m.id, Path(m.path), m.hash, False) for m in found]
            + [YoyoMigration(m.id, Path(m.path), m.hash, True) for m in found.post_apply])


def applied(db: Database) -> dict[str, datetime]:
    """Hash -> when yoyo applied it (UTC); empty when yoyo never ran here."""
    if not db.has_relation(TABLE):
        return {}
    return {str(h): when for h, when in db.rows(f"SELECT migration_hash, applied_at_utc FROM {TABLE}")}
