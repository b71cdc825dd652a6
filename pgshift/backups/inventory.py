"""What is in the backups folder: backup files, the manifest beside each, and reading them back.

A backup is ``backup_<environment>_<YYYYMMDD_HHMMSS>.<dump|sql>`` with ``<file>.json`` beside it. Work in
progress is a hidden ``.<file>.<pid>.<random>.partial`` that nothing here lists, and the manifest is written
before the backup file is renamed into place, so a file that lists with a manifest is complete. A
``.sql`` or ``.dump`` without a manifest (older scripts made bare ``.sql`` files) lists as unverified.
What a killed backup left (its partial file, once its pid is gone) is swept by the next backup and by
``prod.cleanup``.
A big database's backup is a ``.dir`` folder (``pgshift.backups.directory``), listed the same way.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from pgshift.databases.dump import FORMATS, size_of
from pgshift.databases.pids import alive

NAME = re.compile(r"^backup_(?P<env>[a-z0-9-]+)_(?P<ts>\d{8}_\d{6})(?:_\d+)?\.(?P<ext>dump|sql|dir)$")
PARTIAL = re.compile(r"^\.(?P<file>.+)\.(?P<pid>\d+)\.[0-9a-f]+\.partial$")
STAMP = "%Y%m%d_%H%M%S"


@dataclass(frozen=True)
class Manifest:
    """Written beside every backup: what it holds and how to check it."""

    file: str
    format: str                 # "custom" or "plain"
    sha256: str
    size: int
    database: str
    environment: str
    server_version: str
    pg_dump_version: str
    migration_head: str | None  # the newest applied migration when the backup was taken
    taken_at: str               # ISO 8601, UTC
    duration_s: float
    reason: str                 # manual, pre-deploy, pre-restore, ...
    objects: int                # table-of-contents entries (custom) or object headers (plain)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        data = json.loads(path.read_text())
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def dumps(self) -> str:
        return json.dumps({"pgshift_manifest": 1, **asdict(self)}, indent=2) + "\n"


@dataclass(frozen=True)
class Backup:
    path: Path
    environment: str
    taken_at: datetime
    size: int
    format: str
    manifest: Manifest | None
    state: str        # "verified" (manifest, sizes agree), "unverified" (no manifest), "damaged"
    note: str = ""
    swept: tuple[Path, ...] = ()  # what killed backups had left, removed before this one was taken
    swept_bytes: int = 0

    @property
    def verified(self) -> bool:
        return self.state == "verified"

    @property
    def restore_command(self) -> str:
        """The command that puts this backup back, for messages (a bare name is looked up in backups/)."""
        return f"inv rollback.restore {self.path.name}"

    @property
    def migration_head(self) -> str | None:
        return self.manifest.migration_head if self.manifest else None

    def as_json(self) -> dict[str, Any]:
        return {"file": str(self.path), "environment": self.environment,
                "taken_at": self.taken_at.isoformat(), "size": self.size, "format": self.format,
                "migration_head": self.migration_head, "state": self.state, "verified": self.verified,
                "note": self.note, "manifest": asdict(self.manifest) if self.manifest else None}


def manifest_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def format_of(path: Path) -> str:
    for fmt, ext in FORMATS.items():
        if path.suffix == ext:
            return fmt
    return "custom"


class _Stat(NamedTuple):
    st_size: int
    st_mtime: float


def _stat(path: Path) -> _Stat:
    """A backup's size and time: a directory backup's size is that of its files."""
    found = path.stat()
    return _Stat(size_of(path) if path.is_dir() else found.st_size, found.st_mtime)


def describe(path: Path) -> Backup:
    """A backup file as the listing shows it (cheap: reads the manifest and one stat, not the data)."""
    stat = _stat(path)
    found = NAME.match(path.name)
    environment = found["env"] if found else "?"
    taken = (datetime.strptime(found["ts"], STAMP).replace(tzinfo=UTC) if found
             else datetime.fromtimestamp(stat.st_mtime, UTC))
    meta = manifest_path(path)
    if not meta.exists():
        return Backup(path, environment, taken, stat.st_size, format_of(path), None, "unverified",
                      "no manifest: checked only when restored")
    try:
        manifest = Manifest.load(meta)
    except (OSError, ValueError, KeyError, TypeError):
        return Backup(path, environment, taken, stat.st_size, format_of(path), None, "damaged",
                      f"{meta.name} is unreadable")
    taken = datetime.fromisoformat(manifest.taken_at)
    if manifest.size != stat.st_size:
        return Backup(path, manifest.environment, taken, stat.st_size, manifest.format, manifest, "damaged",
                      f"size is {stat.st_size} bytes, the manifest says {manifest.size}")
    broken = _ends_broken(path, manifest.format)
    if broken:
        return Backup(path, manifest.environment, taken, stat.st_size, manifest.format, manifest, "damaged", broken)
    return Backup(path, manifest.environment, taken, stat.st_size, manifest.format, manifest, "verified",
                  CHECKED)


# What "verified" means in a listing: the checksum and the contents were read back when the backup was
# written; what is checked now, at every listing, is only what costs a stat and two short reads.
CHECKED = "when written; size and ends ok now"
_CUSTOM_MAGIC = b"PGDMP"
_PLAIN_END = b"PostgreSQL database dump complete"


def _ends_broken(path: Path, fmt: str) -> str:
    """Why the file's first or last bytes are not a pg_dump file's, or "" (a cheap check, not the checksum)."""
    if fmt == "directory":  # its table of contents is an archive header like a custom file's
        path, fmt = path / "toc.dat", "custom"
    try:
        with path.open("rb") as handle:
            start = handle.read(len(_CUSTOM_MAGIC))
            handle.seek(max(0, path.stat().st_size - 512))
            end = handle.read()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if fmt == "custom" and start != _CUSTOM_MAGIC:
        return "its first bytes are not a pg_dump archive's: the file changed after it was written"
    if fmt == "plain" and _PLAIN_END not in end:
        return "pg_dump's closing line is missing: the file changed after it was written"
    return ""


def scan(folder: Path) -> list[Backup]:
    """Every backup file in ``folder``, newest first."""
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        if entry.name.startswith(".") or entry.suffix not in FORMATS.values() or not (
                entry.is_file() or (entry.is_dir() and entry.suffix == FORMATS["directory"])):
            continue
        try:
            found.append(describe(entry))
        except FileNotFoundError:
            continue  # removed while we looked
    return sorted(found, key=lambda b: (b.taken_at, b.path.name), reverse=True)


def sizes(paths: list[Path]) -> tuple[int, ...]:
    """The size of each file, as it is now (0 for one already gone)."""
    found = []
    for path in paths:
        try:
            found.append(size_of(path))
        except FileNotFoundError:
            found.append(0)
    return tuple(found)


def sweep(folder: Path) -> tuple[list[Path], int]:
    """Remove what killed backups left in ``folder`` (``leftovers``); returns what went and its bytes."""
    stale = leftovers(folder)
    removed, freed = [], 0
    for path, size in zip(stale, sizes(stale), strict=True):
        try:
            shutil.rmtree(path) if path.is_dir() else path.unlink()  # a directory backup's partial folder
        except FileNotFoundError:
            continue  # another sweep got there first
        except OSError:
            continue  # not ours to remove after all (permissions): prod.cleanup reports it
        removed.append(path)
        freed += size
    return removed, freed


def leftovers(folder: Path) -> list[Path]:
    """Partial files of backups whose process is gone, and manifests whose backup file is gone."""
    if not folder.is_dir():
        return []
    entries = list(folder.iterdir())
    busy = set()
    stale = []
    for entry in entries:
        partial = PARTIAL.match(entry.name)
        if partial and alive(int(partial["pid"])):
            busy.add(partial["file"])
        elif partial:
            stale.append(entry)
    for entry in entries:
        if (entry.suffix == ".json" and NAME.match(entry.stem) and entry.stem not in busy
                and not entry.with_suffix("").exists()):
            stale.append(entry)
    return sorted(stale)

