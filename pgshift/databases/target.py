"""Which database a command works on, and the connection to it.

With a DATABASE_URL it is that database. Without one (development only) it is a database on the
embedded server, which is started on first use and created if it does not exist yet.
"""

from __future__ import annotations

from pgshift.databases import throwaway
from pgshift.databases.db import Database, DatabaseMissing
from pgshift.dburl import DatabaseUrl
from pgshift.settings import Settings


def url(settings: Settings) -> DatabaseUrl:
    """The target's URL, starting the embedded server if that is the target."""
    if settings.url is not None:
        return settings.url
    from pgshift.databases import embedded  # only without a DATABASE_URL: the common case of CI and production skips it

    info = embedded.ensure_running(settings.embedded_dir)
    return info.url(settings.embedded_database)


def connect(settings: Settings) -> Database:
    """Connect to the target. The embedded database is created on first use."""
    target = url(settings)
    try:
        db = Database.connect(target, settings.connect_timeout)
    except DatabaseMissing:
        if settings.url is not None:
            raise
        create_database(throwaway.admin_url(target, settings.connect_timeout), target.dbname,
                        settings.connect_timeout)
        db = Database.connect(target, settings.connect_timeout)
    db.record_schema = settings.record_schema
    return db


def create_database(admin: DatabaseUrl, name: str, connect_timeout: int = 10,
                    template: str | None = None) -> None:
    with Database.connect(admin, connect_timeout) as db:
        if db.one("SELECT 1 FROM pg_database WHERE datname = %s", [name]):
            return
        clause = f" TEMPLATE {db.identifier(template)}" if template else ""
        db.execute(f"CREATE DATABASE {db.identifier(name)}{clause}")


def drop_database(admin: DatabaseUrl, name: str, connect_timeout: int = 10) -> None:
    with Database.connect(admin, connect_timeout) as db:
        db.execute(f"DROP DATABASE IF EXISTS {db.identifier(name)} WITH (FORCE)")
