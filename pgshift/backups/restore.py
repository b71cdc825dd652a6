"""Restoring a backup over the target database, all or nothing.

Order: check the file (inside the backups folder, present, contents readable), confirm, take the
migration lock, take a safety backup of the current state (unless SKIP_BACKUP), restore into a scratch
database shaped like the target, then swap names in one commit (see ``pgshift.backups.swap``). An
archive's checksum (as in its manifest) is read beside the safety backup and pg_restore, which read
the same pages, instead of in a pass of its own before them: the swap waits for it, and a mismatch
drops the scratch database and names the file (a plain SQL file is checked whole first: that pass
also refuses ``\\connect``). Until the swap the target is never written to, so a failure or a kill at any
point before it leaves the target exactly as it was.

The replaced database is dropped last, after ``on_restored`` has reported the result: PostgreSQL
checkpoints on DROP DATABASE, which on a big database takes as long as flushing what the restore
wrote, and nobody should wait for that to learn the restore is done. From the swap on, the old copy
carries a throwaway name (``pgshift_old_..._<target>``), so a kill before or during the drop leaves it
named and recognisable, and the next command that makes a throwaway database drops it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgshift.backups import files, swap
from pgshift.backups.files import BackupInvalid
from pgshift.backups.inventory import Backup
from pgshift.databases import dump, target, throwaway
from pgshift.databases.db import Database
from pgshift.errors import Aborted, PgShiftError, Refused
from pgshift.migrations import lock
from pgshift.questions import Confirm, Question
from pgshift.settings import Settings


@dataclass(frozen=True)
class RestorePlan:
    """What a restore is about to do: shown to the user before they confirm."""

    backup: Backup
    database: str
    target: str           # printable (password redacted)
    environment: str
    safety_backup: bool
    warnings: tuple[str, ...] = ()

    def describe(self) -> str:
        head = self.backup.migration_head or "no migrations"
        return (f"restore {self.backup.path.name} (taken {self.backup.taken_at:%Y-%m-%d %H:%M:%S} UTC, "
                f"{self.backup.environment}, head {head}) over database {self.database} on {self.target}; "
                "other sessions on it will be ended" + "".join(f"; warning: {w}" for w in self.warnings))


@dataclass(frozen=True)
class RestoreResult:
    backup: Path
    database: str
    migration_head: str | None   # the newest applied migration now in place
    safety_backup: Backup | None
    duration_s: float
    warnings: tuple[str, ...] = ()
    replaced: str = ""           # the name the replaced database had until it was dropped

    def as_json(self) -> dict[str, Any]:
        return {"backup": str(self.backup), "database": self.database, "migration_head": self.migration_head,
                "safety_backup": str(self.safety_backup.path) if self.safety_backup else None,
                "duration_s": round(self.duration_s, 3), "warnings": list(self.warnings), "replaced": self.replaced}


def failpoint(name: str) -> None:
    """Crash-test hook, as in ``pgshift.migrations.apply``: PGSHIFT_FAILPOINT=<name> dies by SIGKILL here.
    Boundaries: ``restore:swapped`` (in place, not yet reported), ``restore:reported`` (reported, the
    replaced database not yet dropped)."""
    if os.environ.get("PGSHIFT_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def locate(settings: Settings, path: str | Path) -> Path:
    """The backup file named by ``path``: a bare file name is looked up in the backups folder; any
    other path must lead into it (symbolic links resolved)."""
    given = Path(path)
    folder = settings.backups_dir.resolve()
    if given.is_absolute():
        candidate = given
    elif len(given.parts) == 1:
        candidate = folder / given
    else:
        candidate = next((p for p in (Path.cwd() / given, settings.root / given) if p.exists()),
                         Path.cwd() / given)
    real = candidate.resolve()
    if not real.is_relative_to(folder):
        raise BackupInvalid(f"{path} is outside the backups folder {folder}; restore only from there "
                            "(copy the file into it first if you trust it)")
    return real


def unverified(backup: Backup, database: str, *, force: bool) -> tuple[str, ...]:
    """The warning for a backup with no manifest; Refused, unless ``force``, when its archive names another
    database than ``database`` as the one it was dumped from."""
    if backup.manifest is not None:
        return ()
    origin = dump.archive_database(backup.path) if backup.format == "custom" else None
    if origin is not None and origin != database and not force:
        name = backup.path.name
        raise Refused(f"{name} has no manifest and was dumped from database {origin}, not {database}; "
                      f"check it is the backup you mean, then inv rollback.restore {name} --force restores it")
    where = f"was dumped from database {origin}" if origin else "names no database it was dumped from"
    return (f"{backup.path.name} is unverified (no manifest) and {where}",)


def restore(settings: Settings, path: str | Path, *, confirm: Confirm | None = None,
            progress: dump.OnProgress | None = None, force: bool = False,
            on_restored: Callable[[RestoreResult], None] | None = None) -> RestoreResult:
    """Replace the target database with the backup at ``path``; ``force`` restores an archive without a
    manifest that names another database. ``on_restored`` hears the result as soon as the restored
    database is in place, before the replaced one is dropped."""
    started = time.monotonic()
    backup = files.verify(locate(settings, path), checksum=False)
    if backup.environment == "production" and not settings.is_production:
        raise Refused(f"{backup.path.name} is a production backup and ENVIRONMENT is {settings.environment}; "
                      "set ENVIRONMENT=production to restore it")
    if settings.is_production and backup.environment not in ("production", "?"):
        raise Refused(f"{backup.path.name} was taken from {backup.environment}; production restores only "
                      "production backups")
    url = target.url(settings)
    warnings = unverified(backup, url.dbname, force=force)
    plan = RestorePlan(backup, url.dbname, settings.describe_target(), settings.environment,
                       not settings.skip_backup, warnings)
    if confirm is not None:
        question = (Question(f"type the database name ({plan.database}) to go ahead", plan.database, plan)
                    if settings.is_production else Question(f"replace database {plan.database} with this backup?",
                                                            about=plan))
        if not confirm(question):
            raise Aborted("restore cancelled; nothing was changed")
    elif settings.is_production:
        raise Refused("restoring production needs a confirmation: run it at a terminal, or pass --yes")

    scratch = throwaway.name("new", label=url.dbname)
    safety = None
    checksum = files.Beside(lambda: files.check_checksum(backup))
    with target.connect(settings) as db, lock.migration_lock(db, settings.lock_wait):
        server_version = db.server_version
        with throwaway.admin(url, settings.connect_timeout) as admin:
            throwaway.sweep(admin)
            shape = swap.shape(admin, url.dbname)
        if not settings.skip_backup:
            safety = files.take(settings, url, reason="pre-restore", progress=progress)
        try:
            with throwaway.admin(url, settings.connect_timeout) as admin:
                swap.create_like(admin, scratch, shape)
            dump.restore(url.with_dbname(scratch), backup.path, backup.format, server_version,
                         objects=backup.manifest.objects if backup.manifest else None, progress=progress,
                         connect_timeout=settings.connect_timeout)
            with Database.connect(url.with_dbname(scratch), settings.connect_timeout) as restored:
                head = files.head(restored)
            with throwaway.admin(url, settings.connect_timeout) as admin:
                swap.copy_extras(admin, scratch, shape)
            checksum.result()  # a backup that does not match its manifest is never swapped in
        except BaseException as exc:
            throwaway.drop_quietly(url, scratch, settings.connect_timeout)
            damaged = checksum.error() if isinstance(exc, PgShiftError) else None
            if damaged is not None:  # the cause of whatever else failed; the target is as it was
                if safety is not None:  # nothing to keep it for: this run changed nothing
                    files.discard(safety.path)
                raise damaged from None
            raise
    # The lock and our session on the target end here: renaming needs the target free of sessions.
    try:
        with throwaway.admin(url, settings.connect_timeout) as admin:
            replaced = swap.swap(admin, url.dbname, scratch)
    except BaseException:
        throwaway.drop_quietly(url, scratch, settings.connect_timeout)
        raise
    # Done: the restored database is in place. Dropping the one it replaced is tidying up, after the
    # report; if it fails, the next command that makes a throwaway database drops it.
    failpoint("restore:swapped")
    result = RestoreResult(backup.path, url.dbname, head, safety, time.monotonic() - started, warnings, replaced)
    if on_restored is not None:
        on_restored(result)
    failpoint("restore:reported")
    with contextlib.suppress(PgShiftError), throwaway.admin(url, settings.connect_timeout) as admin:
        swap.drop_replaced(admin, replaced)
    return result
