"""``dev.import --from yoyo``: adopt the records of a database yoyo migrated.

pgshift's folder layout is yoyo's raw SQL layout, so files named ``YYYYMMDDHHMMSS_name.sql`` (and
their ``.rollback.sql``) are copied byte for byte, or kept in place when the folder is ours already.
Python migrations, post-apply hooks and ids not in that form are named as not converted.
"""

from __future__ import annotations

import shutil
from datetime import UTC
from pathlib import Path

from pgshift.databases.db import Database
from pgshift.errors import ConfigError
from pgshift.migrations import audit, history, source, yoyo_records
from pgshift.migrations.lock import migration_lock
from pgshift.schema.adopt import Imported
from pgshift.settings import Settings


def import_yoyo(settings: Settings, db: Database, folder: Path, *, reason: str | None = None) -> Imported:
    found = Imported("yoyo")
    ours = settings.migrations_dir
    converted: list[yoyo_records.YoyoMigration] = []
    for m in yoyo_records.read_folder(folder):
        if m.post_apply:
            found.not_converted.append(f"{m.path.name}: a yoyo post-apply hook; pgshift has none, run it by hand")
        elif m.path.suffix != ".sql":
            found.not_converted.append(f"{m.path.name}: a Python migration; rewrite it as SQL")
        elif not source.ID_PATTERN.match(m.id):
            found.not_converted.append(f"{m.path.name}: not named YYYYMMDDHHMMSS_name.sql; rename it (and its "
                                       "record) by hand")
        else:
            converted.append(m)
    if not converted:
        raise ConfigError(f"no yoyo SQL migrations named YYYYMMDDHHMMSS_name.sql in {folder}")
    ours.mkdir(parents=True, exist_ok=True)
    same = folder.resolve() == ours.resolve()
    for m in converted:
        for path in (m.path, m.path.with_name(f"{m.id}{source.ROLLBACK_SUFFIX}")):
            dest = ours / path.name
            if same or not path.exists():
                continue
            if dest.exists():
                if dest.read_bytes() != path.read_bytes():
                    raise ConfigError(f"{dest} exists with other content than {path}; move it away and import again")
                continue
            shutil.copyfile(path, dest)
        (found.kept if same else found.written).append(m.id)
        if not m.path.with_name(f"{m.id}{source.ROLLBACK_SUFFIX}").exists():
            found.no_rollback.append(f"{m.id}: yoyo had no rollback file; write {m.id}{source.ROLLBACK_SUFFIX}")
    migrations = {m.id: m for m in source.read(ours)}
    with migration_lock(db, settings.lock_wait):
        done = yoyo_records.applied(db)
        if not done:
            found.warnings.append(f"the database has no {yoyo_records.TABLE} records: nothing recorded")
            return found
        history.ensure(db)
        recorded = history.records(db)
        script = ["BEGIN;"]
        for m in converted:
            when = done.get(m.hash)
            if when is None:
                found.not_applied.append(f"{m.id}: no {yoyo_records.TABLE} row: pending")
                continue
            if m.id in recorded:
                continue
            script.append(
                f"INSERT INTO {history.rel(db, 'migrations')} (id, checksum, state, applied_at, applied_by) VALUES "
                f"({db.literal(m.id)}, {db.literal(migrations[m.id].checksum)}, 'applied', "
                f"{db.literal(when.replace(tzinfo=UTC))}, 'yoyo (imported)');")
            found.adopted.append(m.id)
        known = {m.hash for m in converted}
        found.not_converted.extend(f"{yoyo_records.TABLE} row {h[:12]}...: no such migration in {folder}"
                                   for h in sorted(set(done) - known))
        script.append(audit.write_sql(db, "import", reason=reason,
                                      detail=f"from yoyo: {len(found.adopted)} record(s) adopted"))
        script.append("COMMIT;")
        db.execute("\n".join(script))
    return found
