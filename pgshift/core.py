"""The core workflows behind ``dev.migrate`` and ``status``: each opens the target, does one job, and
returns data for the caller to print."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pgshift import deploy
from pgshift.databases import target
from pgshift.errors import ConfigError
from pgshift.migrations import source
from pgshift.migrations.status import Status, collect
from pgshift.settings import Settings

if TYPE_CHECKING:  # apply is imported where it is used: status, the hot path, never needs it
    from pgshift.migrations import apply
    from pgshift.schema.autogen import Generated


def limits(settings: Settings) -> apply.Limits:
    from pgshift.migrations import apply

    return apply.Limits(lock_timeout=settings.lock_timeout, statement_timeout=settings.statement_timeout,
                        lock_wait=settings.lock_wait, lock_retries=settings.lock_retries,
                        retry_backoff=settings.retry_backoff)


def status(settings: Settings, *, drift: bool = False) -> Status:
    """Where every migration stands; with ``drift``, also how the live schema differs from what the
    applied migrations make (replayed into a shadow database: about a second, so it is opt-in)."""
    migrations = source.read(settings.migrations_dir)
    with target.connect(settings) as db:
        found = collect(db, migrations, settings.describe_target(), settings.environment)
        present = deploy.tables(db)
        if any(present):  # the last deploy, a maintenance flag left on
            from pgshift.deploy.state import status_extra

            found = replace(found, extra={**found.extra, **status_extra(db, present)})
        if drift:
            from pgshift.schema import drift as schema_drift

            found = replace(found, drift=schema_drift.check(settings, db, migrations, limits(settings)))
    return found


@dataclass(frozen=True)
class MigrateResult:
    created: source.Migration | None
    result: apply.ApplyResult
    generated: Generated | None = None  # set when the migration was generated from schema.sql
    remaining: list[str] = field(default_factory=list)  # what still differs from schema.sql afterwards
    models: Path | None = None  # the models module, regenerated after the change


def migrate(settings: Settings, name: str | None = None, *, create_only: bool = False,
            upto: str | None = None, progress: apply.Progress | None = None, empty: bool = False,
            allow_data_loss: bool = False, confirm: Callable[[str], bool] | None = None) -> MigrateResult:
    """Create a migration pair named ``name`` (if given), then apply every pending migration.

    With ``schema.sql`` present the new migration is generated (see ``_migrate_to_schema``);
    ``empty`` asks for the hand-written template instead."""
    from pgshift.migrations import apply
    from pgshift.schema import declared_path

    if name and not empty and declared_path(settings).exists():
        return _migrate_to_schema(settings, name, create_only=create_only, upto=upto, progress=progress,
                                  allow_data_loss=allow_data_loss, confirm=confirm)

    created = source.create(settings.migrations_dir, name) if name else None
    if create_only:
        return MigrateResult(created, apply.ApplyResult([], []))
    migrations = source.read(settings.migrations_dir)
    with target.connect(settings) as db:
        result = apply.apply(db, migrations, limits(settings), upto=upto, progress=progress)
    return MigrateResult(created, result)


def _migrate_to_schema(settings: Settings, name: str, *, create_only: bool, upto: str | None,
                       progress: apply.Progress | None, allow_data_loss: bool,
                       confirm: Callable[[str], bool] | None) -> MigrateResult:
    """Apply what is pending, write the difference to schema.sql as migration ``name`` and its
    rollback, and apply it (unless ``create_only``). In sync: nothing is written."""
    from pgshift.migrations import apply
    from pgshift.migrations.lock import migration_lock
    from pgshift.schema import autogen, models_path, shadow

    if upto:
        raise ConfigError("--to cannot be combined with NAME while schema.sql exists: the new migration is "
                          "the difference from the fully migrated database; run inv dev.migrate --to ID first")
    autogen.check_name(settings.migrations_dir, name)
    say = progress or (lambda _msg: None)
    # One lock over apply, compare, write and apply: a second generator waits, then finds it done.
    # (Advisory locks stack within a session, so apply() taking it again inside is fine.)
    with target.connect(settings) as db, migration_lock(db, settings.lock_wait):
        before = apply.apply(db, source.read(settings.migrations_dir), limits(settings), progress=progress)
        say("comparing the database with schema.sql")
        generated = autogen.generate(settings, db, name, allow_data_loss=allow_data_loss, confirm=confirm)
        if generated.migration is None or create_only:
            shadow.finish()
            return MigrateResult(generated.migration, before, generated)
        after = apply.apply(db, source.read(settings.migrations_dir), limits(settings), progress=progress)
        remaining = [c.sql for c in autogen.remaining(db, generated.desired).changes]
        models = models_path(settings)
        refreshed = None
        if models.exists():  # the team uses generated models: keep them in step with the schema
            from pgshift.schema import generate

            refreshed = generate.write(db, models).path
    shadow.finish()
    done = apply.ApplyResult(before.applied + after.applied, after.empty)
    return MigrateResult(generated.migration, done, generated, remaining, refreshed)
