"""dev.reset: drop the development database, create it again, apply every migration, run the seed.

It refuses, before connecting to anything, unless ENVIRONMENT is development and the database is on
the embedded server or a local one (a Unix socket or a loopback address). The seed is
``migrations/seed.sql`` (run in one transaction) or ``migrations/seed.py`` (its ``seed(db)`` is
called with a ``pgshift.databases.db.Database``); neither is a migration.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from pgshift.databases import target, throwaway
from pgshift.databases.db import Database, SqlFailure
from pgshift.errors import Aborted, MigrationError, Refused
from pgshift.migrations import apply, drift, source, sqltext
from pgshift.questions import Confirm, Question
from pgshift.settings import Settings

SEED_FILES = ("seed.sql", "seed.py")
_NEVER = ("postgres", "template0", "template1")


@dataclass(frozen=True)
class ResetResult:
    database: str
    applied: apply.ApplyResult
    seed: Path | None  # the seed file that ran, if any


def guard(settings: Settings) -> None:
    """Refuse unless this is a development database on the embedded or a local server."""
    if settings.environment != "development":
        raise Refused(f"dev.reset drops the database, so it works on development only "
                      f"(ENVIRONMENT={settings.environment}); nothing was touched")
    url = settings.url
    if url is not None and not url.is_local():
        raise Refused(f"dev.reset works only on the embedded or a local server, and DATABASE_URL points at "
                      f"{url.host}; nothing was touched. Unset DATABASE_URL to use the embedded server")
    name = url.dbname if url is not None else settings.embedded_database
    if name in _NEVER:
        raise Refused(f"dev.reset will not drop the {name} database; point DATABASE_URL at your "
                      "application's development database")


def reset(settings: Settings, confirm: Confirm, limits: apply.Limits) -> ResetResult:
    """Rebuild the development database from the migrations and the seed, once ``confirm`` says yes."""
    guard(settings)
    url = target.url(settings)
    if not confirm(Question(f"drop {url.dbname} on {settings.describe_target()} and rebuild it from the "
                            "migrations and the seed?")):
        raise Aborted("nothing was changed")
    migrations = source.of(settings)
    admin = throwaway.admin_url(url, settings.connect_timeout)
    target.drop_database(admin, url.dbname, settings.connect_timeout)
    target.create_database(admin, url.dbname, settings.connect_timeout)
    with Database.connect(url, settings.connect_timeout) as db:
        with drift.kept(db, migrations):
            applied = apply.apply(db, migrations, limits)
        seed = seed_file(settings.migrations_dir)
        if seed is not None:
            run_seed(db, seed)
    return ResetResult(url.dbname, applied, seed)


def seed_file(folder: Path) -> Path | None:
    return next((folder / name for name in SEED_FILES if (folder / name).is_file()), None)


def run_seed(db: Database, path: Path) -> None:
    """Run a seed file; a failure leaves the migrated database unseeded and names the line."""
    if path.suffix == ".py":
        spec = importlib.util.spec_from_file_location("pgshift_seed", path)
        if spec is None or spec.loader is None:
            raise MigrationError(f"{path.name} cannot be loaded as a Python module")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not callable(getattr(module, "seed", None)):
            raise MigrationError(f"{path.name} has no seed(db) function; define one")
        module.seed(db)
        return
    sql = source.normalise(path.read_bytes(), path)
    prefix = "BEGIN;\n"
    try:
        db.execute(f"{prefix}{sql}\n;\nCOMMIT;")
    except SqlFailure as failure:
        line = sqltext.line_of(sql, failure.position - len(prefix)) if failure.position else 0
        where = f"{path.name}, line {line}" if line > 0 else path.name
        raise MigrationError(f"{where}: {failure}; the database is migrated but not seeded: fix the seed and "
                             "run inv dev.reset again") from None
