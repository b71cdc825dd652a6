"""The cleanup policy for the backups folder.

Per environment, a backup is kept when it is one of the newest ``keep_count``, or younger than
``keep_days``, or the newest verified one (so a rollback target always survives, however old). All
other backups go, with their manifests, as do the leftovers of killed backups (partial files whose
process is gone, manifests whose backup file is gone). The plan is a value: ``--dry-run`` prints it,
the real run carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pgshift.backups.directory import remove as remove_path
from pgshift.backups.inventory import Backup, leftovers, manifest_path, scan, sizes
from pgshift.errors import ToolError
from pgshift.settings import Settings


@dataclass(frozen=True)
class Removal:
    backup: Backup
    reason: str


@dataclass(frozen=True)
class CleanupPlan:
    keep: list[Backup]
    remove: list[Removal]
    leftovers: list[Path]
    dry_run: bool
    leftover_sizes: tuple[int, ...] = ()  # of each leftover, read before anything was removed

    @property
    def freed(self) -> int:
        """Bytes of the backups removed (their manifests and the leftovers not counted)."""
        return sum(r.backup.size for r in self.remove)

    @property
    def leftover_bytes(self) -> int:
        return sum(self.leftover_sizes)

    def as_json(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "freed_bytes": self.freed, "leftover_bytes": self.leftover_bytes,
                "remove": [{"file": str(r.backup.path), "reason": r.reason} for r in self.remove],
                "keep": [str(b.path) for b in self.keep], "leftovers": [str(p) for p in self.leftovers]}


def plan(backups: list[Backup], keep_count: int, keep_days: float, now: datetime) -> tuple[list[Backup],
                                                                                           list[Removal]]:
    """Split ``backups`` into kept and removed under the policy (pure: touches nothing)."""
    cutoff = now - timedelta(days=keep_days)
    keep: list[Backup] = []
    remove: list[Removal] = []
    for environment in sorted({b.environment for b in backups}):
        mine = sorted((b for b in backups if b.environment == environment),
                      key=lambda b: (b.taken_at, b.path.name), reverse=True)
        newest_verified = next((b for b in mine if b.verified), None)
        for rank, backup in enumerate(mine):
            if rank < keep_count or backup.taken_at >= cutoff or backup is newest_verified:
                keep.append(backup)
            else:
                age = (now - backup.taken_at).days
                remove.append(Removal(backup, f"{age} days old, beyond the newest {keep_count} of {environment}"))
    return keep, remove


def cleanup(settings: Settings, dry_run: bool = False, now: datetime | None = None) -> CleanupPlan:
    """Apply the retention policy to the backups folder (or only report it, with ``dry_run``)."""
    keep, remove = plan(scan(settings.backups_dir), settings.backup_keep_count, settings.backup_keep_days,
                        now or datetime.now(UTC))
    stale = leftovers(settings.backups_dir)
    stale_sizes = sizes(stale)
    if not dry_run:
        try:
            for removal in remove:
                remove_path(removal.backup.path)
                manifest_path(removal.backup.path).unlink(missing_ok=True)
            for path in stale:
                remove_path(path)
        except OSError as exc:
            raise ToolError(f"could not remove {exc.filename}: {exc.strerror}") from None
    return CleanupPlan(keep, remove, stale, dry_run, stale_sizes)
