"""The core workflows behind ``dev.migrate`` and ``status``: each opens the target, does one job, and
returns data for the caller to print."""

from __future__ import annotations

from dataclasses import dataclass

from pgshift import apply, source, target
from pgshift.settings import Settings
from pgshift.status import Status, collect


def limits(settings: Settings) -> apply.Limits:
    return apply.Limits(lock_timeout=settings.lock_timeout, statement_timeout=settings.statement_timeout,
                        lock_wait=settings.lock_wait, lock_retries=settings.lock_retries,
                        retry_backoff=settings.retry_backoff)


def status(settings: Settings) -> Status:
    migrations = source.read(settings.migrations_dir)
    with target.connect(settings) as db:
        return collect(db, migrations, settings.describe_target(), settings.environment)


@dataclass(frozen=True)
class MigrateResult:
    created: source.Migration | None
    result: apply.ApplyResult


def migrate(settings: Settings, name: str | None = None, *, create_only: bool = False,
            upto: str | None = None, progress: apply.Progress | None = None) -> MigrateResult:
    """Create a migration pair named ``name`` (if given), then apply every pending migration."""
    created = source.create(settings.migrations_dir, name) if name else None
    if create_only:
        return MigrateResult(created, apply.ApplyResult([], []))
    migrations = source.read(settings.migrations_dir)
    with target.connect(settings) as db:
        result = apply.apply(db, migrations, limits(settings), upto=upto, progress=progress)
    return MigrateResult(created, result)
