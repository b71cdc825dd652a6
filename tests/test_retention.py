"""The cleanup policy: newest N per environment, everything younger than D days, never the newest verified."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgshift import settings
from pgshift.backups import retention
from pgshift.backups.inventory import STAMP, Manifest, manifest_path, scan

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def make_backup(folder: Path, environment: str, days_old: float, manifest: bool = True) -> Path:
    """A backup file as the folder holds them (content is not read by the policy)."""
    taken = NOW - timedelta(days=days_old)
    path = folder / f"backup_{environment}_{taken.strftime(STAMP)}.dump"
    path.write_bytes(b"PGDMP" + os.urandom(64))
    if manifest:
        manifest_path(path).write_text(Manifest(
            file=path.name, format="custom", sha256="0" * 64, size=path.stat().st_size, database="app",
            environment=environment, server_version="18.1", pg_dump_version="18.1", migration_head=None,
            taken_at=taken.isoformat(), duration_s=1.0, reason="manual", objects=1).dumps())
    return path


def folder_settings(tmp_path: Path, count: int, days: float) -> settings.Settings:
    base = settings.load(tmp_path, {"backups_dir": "backups", "backup_keep_count": count,
                                    "backup_keep_days": days}, env={})
    base.backups_dir.mkdir()
    return base


def names(paths: list[Path]) -> set[str]:
    return {p.name for p in paths}


def test_keeps_newest_n_and_young_ones_per_environment(tmp_path: Path) -> None:
    config = folder_settings(tmp_path, count=2, days=7)
    dev = [make_backup(config.backups_dir, "development", d) for d in (1, 3, 10, 20, 30)]
    prod = [make_backup(config.backups_dir, "production", d) for d in (40, 50, 60)]
    plan = retention.cleanup(config, now=NOW)
    # development: newest two (1, 3 days) are also young; 10/20/30 days go.
    # production: newest two stay although old; the 60-day one goes.
    assert names([r.backup.path for r in plan.remove]) == names([*dev[2:], prod[2]])
    assert names([b.path for b in scan(config.backups_dir)]) == names([*dev[:2], *prod[:2]])
    assert not manifest_path(dev[2]).exists()
    assert all("days old, beyond the newest 2" in r.reason for r in plan.remove)


def test_younger_than_d_days_stays_beyond_n(tmp_path: Path) -> None:
    config = folder_settings(tmp_path, count=1, days=14)
    kept = [make_backup(config.backups_dir, "staging", d) for d in (1, 5, 13.9)]
    gone = make_backup(config.backups_dir, "staging", 14.1)
    plan = retention.cleanup(config, now=NOW)
    assert names([r.backup.path for r in plan.remove]) == {gone.name}
    assert names([b.path for b in plan.keep]) == names(kept)


def test_never_removes_the_newest_verified_backup(tmp_path: Path) -> None:
    config = folder_settings(tmp_path, count=1, days=0)
    verified = make_backup(config.backups_dir, "production", 100)
    newer_unverified = make_backup(config.backups_dir, "production", 1, manifest=False)
    older = make_backup(config.backups_dir, "production", 200)
    plan = retention.cleanup(config, now=NOW)
    assert names([r.backup.path for r in plan.remove]) == {older.name}
    assert verified.exists() and newer_unverified.exists()


def test_keep_count_zero_still_keeps_the_newest_verified(tmp_path: Path) -> None:
    config = replace(folder_settings(tmp_path, count=0, days=0), backup_keep_count=0)
    paths = [make_backup(config.backups_dir, "development", d) for d in (1, 2, 3)]
    plan = retention.cleanup(config, now=NOW)
    assert names([b.path for b in plan.keep]) == {paths[0].name}


def test_dry_run_removes_nothing(tmp_path: Path) -> None:
    config = folder_settings(tmp_path, count=1, days=1)
    paths = [make_backup(config.backups_dir, "development", d) for d in (2, 3, 4)]
    partial = config.backups_dir / ".backup_development_20261101_000000.dump.999999999.ab12.partial"
    partial.write_bytes(b"half")
    before = sorted(p.name for p in config.backups_dir.iterdir())
    plan = retention.cleanup(config, dry_run=True, now=NOW)
    assert names([r.backup.path for r in plan.remove]) == names(paths[1:])
    assert plan.leftovers == [partial] and plan.dry_run and plan.freed == sum(p.stat().st_size for p in paths[1:])
    assert sorted(p.name for p in config.backups_dir.iterdir()) == before
    assert plan.as_json()["remove"][0]["file"].startswith(str(config.backups_dir))


def test_removes_leftovers_of_killed_backups_but_not_live_ones(tmp_path: Path) -> None:
    config = folder_settings(tmp_path, count=5, days=5)
    dead = config.backups_dir / ".backup_development_20261101_000000.dump.999999999.ab12.partial"
    live = config.backups_dir / f".backup_development_20261101_000001.dump.{os.getpid()}.cd34.partial"
    orphan = config.backups_dir / "backup_development_20261101_000002.dump.json"
    for path in (dead, live, orphan):
        path.write_text("x")
    plan = retention.cleanup(config, now=NOW)
    assert plan.leftovers == sorted([dead, orphan])
    assert not dead.exists() and not orphan.exists() and live.exists()
