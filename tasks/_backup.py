"""Printing backups, restores and cleanups; shared by the root, dev, prod and rollback tasks."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING

from tasks._cli import out, tty

if TYPE_CHECKING:
    from pgshift.api import Backup, DumpProgress, RestoreResult
    from pgshift.settings import Settings

COLUMNS = ["file", "environment", "taken at (UTC)", "size", "migration head", "verified"]


def size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class Meter:
    """One self-overwriting progress line on stderr, at most twice a second; silent without a TTY."""

    def __init__(self) -> None:
        self.enabled = tty() and sys.stderr.isatty()
        self._last = 0.0
        self._shown = False

    def __call__(self, p: DumpProgress) -> None:
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.5:
            return
        self._last = now
        if p.unit == "bytes":
            done = size(p.done) + (f" of ~{size(p.total)}" if p.total else "")
            rate = f"{size(p.rate)}/s"
        else:
            done = f"{p.done}" + (f" of {p.total}" if p.total else "") + " objects"
            rate = f"{p.rate:.0f} objects/s"
        sys.stderr.write(f"\r{p.phase}: {done}, {p.elapsed:.0f} s, {rate}\033[K")
        sys.stderr.flush()
        self._shown = True

    def close(self) -> None:
        if self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._shown = False


def row(backup: Backup, settings: Settings) -> list[str]:
    try:
        name = str(backup.path.relative_to(settings.root))
    except ValueError:
        name = str(backup.path)
    verified = {"verified": backup.note or "yes", "unverified": "no (no manifest)"}.get(
        backup.state, f"DAMAGED: {backup.note}")
    return [name, backup.environment, f"{backup.taken_at:%Y-%m-%d %H:%M:%S}", size(backup.size),
            backup.migration_head or "-", verified]


def show_backup(backup: Backup, settings: Settings) -> None:
    manifest = backup.manifest
    took = f", {manifest.duration_s:.1f} s" if manifest else ""
    head = backup.migration_head or "no migrations applied"
    database = manifest.database if manifest else "?"
    out(f"backed up {database} to {row(backup, settings)[0]} ({size(backup.size)}{took}; "
        f"migration head {head}; checksum and contents verified)")
    if backup.swept:  # on stderr, as the other clean-up notes
        sys.stderr.write(f"note: removed {len(backup.swept)} file(s) that interrupted backups had left in "
                         f"{backup.path.parent} ({size(backup.swept_bytes)}): "
                         f"{', '.join(p.name for p in backup.swept)}\n")


def show_restore(result: RestoreResult, settings: Settings) -> None:
    if result.safety_backup is not None:
        out(f"safety backup of the previous state: {row(result.safety_backup, settings)[0]}")
    for warning in result.warnings:
        out(f"warning: {warning}")
    out(f"restored {result.backup.name} into {result.database} in {result.duration_s:.1f} s")
    out(f"migration head now in place: {result.migration_head or 'none (no migrations applied)'}")


def take(config: Settings) -> None:
    """Back up the settings' target with a progress line, then say where the backup went."""
    from pgshift import api

    meter = Meter()
    try:
        backup = api.backup(config, progress=meter)
    finally:
        meter.close()
    show_backup(backup, config)
