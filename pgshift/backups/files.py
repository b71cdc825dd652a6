"""Taking a backup, checking one, and listing them.

A backup is complete or absent. pg_dump writes a hidden ``.<name>.<pid>.<random>.partial`` created
with mode 0600; when it succeeds the file is fsynced while it is read back for its SHA-256 (the two
overlap), its table of contents is read back, the manifest is written (temporary name, fsync,
rename), and only then is the file renamed to its final name and the folder fsynced. A failure or an
interruption removes the partial file; a ``kill -9`` leaves a hidden partial that no listing shows,
which the next backup (once that process is gone) and ``prod.cleanup`` remove. A database of
``backup_parallel_bytes`` or more is backed up in the directory format instead
(``pgshift.backups.directory``), the same way under a hidden partial folder.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import itertools
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from pgshift.backups import directory
from pgshift.backups.inventory import STAMP, Backup, Manifest, describe, manifest_path, scan, sweep
from pgshift.databases import dump, target
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import PgShiftError, ToolError
from pgshift.migrations import history
from pgshift.settings import Settings

_READ = 4 << 20


class BackupInvalid(PgShiftError):
    """A backup file is missing, damaged, or not where backups live."""


def list_backups(settings: Settings) -> list[Backup]:
    """Every backup in the backups folder, newest first."""
    return scan(settings.backups_dir)


def head(db: Database) -> str | None:
    """The newest applied migration of the connected database."""
    if not history.exists(db):
        return None
    row = db.one(f"SELECT max(id) FROM {history.rel(db, 'migrations')} WHERE state = 'applied'")
    return row[0] if row else None


def chosen_format(settings: Settings, database_bytes: int | None) -> str:
    """The format a backup of a database this size is written in: a custom one of
    ``backup_parallel_bytes`` or more goes in the directory format."""
    fmt = settings.backup_format
    if fmt == "custom" and database_bytes is not None and database_bytes >= settings.backup_parallel_bytes:
        return "directory"
    return fmt


def take(settings: Settings, db_url: DatabaseUrl | None = None, reason: str = "manual",
         progress: dump.OnProgress | None = None, session: Database | None = None) -> Backup:
    """Back up ``db_url`` (default: the settings' target) into the backups folder. A caller already
    connected to it (a deploy under its lock) hands its ``session`` for the facts read first."""
    url = session.url if session is not None else db_url or target.url(settings)
    with (contextlib.nullcontext(session) if session is not None
          else Database.connect(url, settings.connect_timeout) if db_url else target.connect(settings)) as db:
        server_version = db.server_version
        migration_head = head(db)
        # From the catalog's page counts, not pg_relation_size(): that locks each table and would
        # wait behind any ALTER TABLE in progress.
        row = db.one("SELECT coalesce(sum(relpages::bigint), 0) * current_setting('block_size')::bigint "
                     "FROM pg_class WHERE relkind IN ('r', 'm', 't')")
        estimate = int(row[0]) if row else None
        db_size = db.one("SELECT pg_database_size(current_database())")
    fmt = chosen_format(settings, int(db_size[0]) if db_size is not None else None)
    folder = settings.backups_dir
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolError(f"cannot create the backups folder {folder}: {exc.strerror}") from None
    swept, swept_bytes = sweep(folder)
    taken = datetime.now(UTC).replace(microsecond=0)
    started = time.monotonic()
    finished = False
    try:
        final, partial = _reserve(folder, settings.environment, taken, dump.FORMATS[fmt])
    except OSError as exc:
        raise _write_error(folder, exc) from None
    meta = manifest_path(final)
    try:
        dump.dump(url, partial, fmt, server_version, lock_wait=settings.lock_wait, estimate=estimate,
                  progress=progress, connect_timeout=settings.connect_timeout)
        if fmt == "directory":
            sha256, headers = directory.seal(partial), 0
        else:
            sha256, _, headers = _synced_digest(partial, plain=fmt == "plain")
        objects = _plain_complete(partial, headers) if fmt == "plain" else len(dump.contents(partial))
        manifest = Manifest(
            file=final.name, format=fmt, sha256=sha256, size=dump.size_of(partial), database=url.dbname,
            environment=settings.environment, server_version=dump.version_text(server_version),
            pg_dump_version=dump.tool_version(dump.tool("pg_dump", server_version)),
            migration_head=migration_head, taken_at=taken.isoformat(),
            duration_s=round(time.monotonic() - started, 3), reason=reason, objects=objects)
        _write_atomic(meta, manifest.dumps())
        os.rename(partial, final)
        directory.fsync(folder)
        finished = True
    except OSError as exc:
        raise _write_error(folder, exc) from None
    except ToolError as exc:
        if "No space left" in str(exc):
            raise ToolError(f"out of disk space in {folder} while backing up; the partial file was removed. "
                            "Free space (inv prod.cleanup removes old backups) and run it again") from None
        raise
    finally:
        if not finished:
            directory.remove(partial)
            if not final.exists():
                meta.unlink(missing_ok=True)
    return replace(describe(final), swept=tuple(swept), swept_bytes=swept_bytes)


def verify(path: Path, *, checksum: bool = True) -> Backup:
    """Check a backup thoroughly before it is used: present, whole, checksum and contents readable.

    Without ``checksum`` an archive's checksum is left to ``check_checksum`` (a restore reads it beside
    pg_restore); a plain SQL file's is always read here, in the same pass that refuses ``\\connect``."""
    if path.is_dir() and path.suffix != dump.FORMATS["directory"]:
        raise BackupInvalid(f"{path} is a folder, not a backup file; inv rollback.list shows the backups there are")
    if not (path.is_file() or path.is_dir()):
        raise BackupInvalid(f"{path} does not exist; inv rollback.list shows the backups there are")
    backup = describe(path)
    if backup.state == "damaged":
        raise BackupInvalid(f"{path.name} is damaged ({backup.note}); pick another backup (inv rollback.list)")
    headers = check_checksum(backup) if checksum or backup.format == "plain" else 0
    try:
        if backup.format == "plain":
            _plain_complete(path, headers)
        else:
            dump.contents(path)
    except (ToolError, BackupInvalid) as exc:
        raise BackupInvalid(f"{exc}; pick another backup (inv rollback.list)") from None
    return backup


def discard(path: Path) -> None:
    """Remove a backup this command took and its manifest (one that turned out to have no use)."""
    manifest_path(path).unlink(missing_ok=True)
    directory.remove(path)


def check_checksum(backup: Backup) -> int:
    """Read the whole backup and compare its checksum with the manifest's; raises BackupInvalid.
    Returns the object headers counted in a plain SQL file (0 for an archive)."""
    path = backup.path
    try:
        sha256, _, headers = (directory.check(path), 0, 0) if path.is_dir() else _digest(
            path, plain=backup.format == "plain")
    except directory.Mismatch as exc:
        raise BackupInvalid(f"{path.name} is damaged: {exc}; pick another backup (inv rollback.list)") from None
    if backup.manifest is not None and sha256 != backup.manifest.sha256:
        raise BackupInvalid(f"{path.name} does not match its manifest's checksum: the file changed after it "
                            "was written; pick another backup (inv rollback.list)")
    return headers


def _reserve(folder: Path, environment: str, taken: datetime, ext: str) -> tuple[Path, Path]:
    """A final name nobody else uses and our partial file for it (mode 0600).

    Two backups started in the same second must not share a name. Each creates its own partial file
    first and then looks for another's partial of the same name: whoever sees a rival moves on to
    the next suffix, so at most one of them keeps any name."""
    base = f"backup_{environment}_{taken.strftime(STAMP)}"
    for n in itertools.count(1):
        final = folder / (f"{base}{ext}" if n == 1 else f"{base}_{n}{ext}")
        if final.exists() or manifest_path(final).exists():
            continue
        partial = folder / f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.partial"
        if ext == dump.FORMATS["directory"]:
            partial.mkdir(mode=0o700)
        else:
            os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        if [p for p in folder.glob(f".{glob.escape(final.name)}.*.partial") if p != partial]:
            directory.remove(partial)
            continue
        return final, partial
    raise AssertionError("unreachable")


def _digest(path: Path, plain: bool) -> tuple[str, int, int]:
    """SHA-256, size, and (for plain SQL) the number of ``-- Name:`` object headers.

    A plain dump made with ``pg_dump --create`` switches databases with ``\\connect``: restored, it
    would write somewhere other than the scratch database, so it is refused here, in the same read."""
    sha, size, headers, tail = hashlib.sha256(), 0, 0, b""
    with path.open("rb") as handle:
        while chunk := handle.read(_READ):
            sha.update(chunk)
            size += len(chunk)
            if plain:
                headers += chunk.count(b"\n-- Name: ")
                if b"\n\\connect " in tail + chunk:
                    raise BackupInvalid(f"{path.name} was made with pg_dump --create (it switches databases "
                                        "with \\connect); make it again without --create")
                tail = chunk[-16:]
    return sha.hexdigest(), size, headers


def _synced_digest(path: Path, plain: bool) -> tuple[str, int, int]:
    """fsync ``path`` in a thread while reading it back for the checksum: disk and CPU work together."""
    syncer = Beside(lambda: directory.fsync(path))
    try:
        return _digest(path, plain)
    finally:
        syncer.result()


class Beside:
    """``work()`` in a thread from now on; ``result()`` waits for it and raises what it raised."""

    def __init__(self, work: Callable[[], object]) -> None:
        self._error: BaseException | None = None

        def run() -> None:
            try:
                work()
            except BaseException as exc:  # handed to result()
                self._error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def result(self) -> None:
        if (error := self.error()) is not None:
            raise error

    def error(self) -> BaseException | None:
        self._thread.join()
        return self._error


def _plain_complete(path: Path, headers: int) -> int:
    """A plain dump starts with pg_dump's banner and ends with its closing line, or it was cut short."""
    with path.open("rb") as handle:
        start = handle.read(512)
        handle.seek(max(0, path.stat().st_size - 512))
        end = handle.read()
    if b"PostgreSQL database dump" not in start:
        raise BackupInvalid(f"{path.name} is not a pg_dump SQL file (no pg_dump header)")
    if b"PostgreSQL database dump complete" not in end:
        raise BackupInvalid(f"{path.name} is cut short (pg_dump's closing line is missing)")
    return headers


def _write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.partial")  # cleanup knows these
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _write_error(folder: Path, exc: OSError) -> ToolError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ToolError(f"out of disk space in {folder} while backing up; the partial file was removed. "
                         "Free space (inv prod.cleanup removes old backups) and run it again")
    return ToolError(f"could not write the backup in {folder}: {exc.strerror or exc}")
