"""Shadow databases: short-lived scratch databases to load ``schema.sql`` or replay migrations into.

A shadow is made on the target's own server (same version, same extensions), with ``TEMPLATE
template0`` so nothing a team added to ``template1`` leaks in, and dropped when the block ends. A
server that will not let the target's user create databases (a hosted one without CREATEDB) or
connect to the new one gets the shadow on the embedded server instead, and the result says so.

``Prepared`` does the shadow's work on a thread of its own (with its own connections), so the caller
reads the target's schema meanwhile; the shadow is dropped on that thread afterwards, while the
caller goes on. ``finish`` waits for such drops (the interpreter also waits for them at exit).

A shadow is a throwaway database (``pgshift.databases.throwaway``): what a killed process of this
machine left is dropped by the next one made.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Generic, TypeVar

from pgshift.databases import embedded, throwaway
from pgshift.databases.db import Database, SqlFailure
from pgshift.dburl import DatabaseUrl
from pgshift.errors import ConfigError, CreateRefused, PgShiftError
from pgshift.migrations import sqltext
from pgshift.settings import Settings

_PENDING: list[threading.Thread] = []
T = TypeVar("T")


@dataclass(frozen=True)
class Shadow:
    db: Database
    where: str  # where it lives, for messages: "the target's server" or the embedded fallback


@contextmanager
def shadow(settings: Settings, beside: Database) -> Iterator[Shadow]:
    """A fresh empty database on ``beside``'s server (or the embedded one), dropped afterwards."""
    name = throwaway.name("shadow")
    admin, where, owned = beside, "the target's server", False
    throwaway.sweep(beside)
    created = _try_create(admin, name)
    db = _try_connect(admin, name) if created else None
    if db is None:
        if created:
            _drop(admin, name)
        info = embedded.ensure_running(settings.embedded_dir)
        admin, owned = Database.connect(info.url("postgres"), settings.connect_timeout), True
        where = (f"the embedded PostgreSQL {admin.server_version // 10000} (the target's user may not create "
                 f"or open databases on its PostgreSQL {beside.server_version // 10000} server)")
        throwaway.create(admin, name)
        db = Database.connect(admin.url.with_dbname(name), settings.connect_timeout)
    try:
        yield Shadow(db, where)
    finally:
        db.close()
        _drop(admin, name)
        if owned:
            admin.close()


class Prepared(Generic[T]):
    """``work`` done in a fresh shadow database beside ``url``, on a background thread."""

    def __init__(self, settings: Settings, url: DatabaseUrl, work: Callable[[Shadow], T]) -> None:
        self.where = ""
        self._value: T | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(settings, url, work), name="pgshift-shadow")
        self._thread.start()
        _PENDING.append(self._thread)

    def _run(self, settings: Settings, url: DatabaseUrl, work: Callable[[Shadow], T]) -> None:
        try:
            # CREATE and DROP DATABASE run from the maintenance database when it can be opened: a
            # DROP from a session in the target would hold a snapshot there, which a concurrent
            # CREATE INDEX CONCURRENTLY in the target waits for. From the target itself, the drop
            # is over before the caller goes on.
            try:
                beside, apart = Database.connect(url.with_dbname("postgres"), settings.connect_timeout), True
            except PgShiftError:
                beside, apart = Database.connect(url, settings.connect_timeout), False
            with beside, shadow(settings, beside) as scratch:
                self.where = scratch.where
                self._value = work(scratch)
                if apart:
                    self._ready.set()  # the caller goes on; the shadow is dropped as the block ends
        except BaseException as error:  # handed to the caller by result(), raised there
            if not self._ready.is_set():
                self._error = error
        finally:
            self._ready.set()

    def result(self) -> T:
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self._value  # type: ignore[return-value]


def finish() -> None:
    """Wait until every shadow database started here has been dropped."""
    while _PENDING:
        _PENDING.pop().join()


def _try_create(admin: Database, name: str) -> bool:
    try:
        throwaway.create(admin, name)
    except CreateRefused:
        return False
    return True


def _try_connect(admin: Database, name: str) -> Database | None:
    try:
        return Database.connect(admin.url.with_dbname(name))
    except PgShiftError:
        return None


def _drop(admin: Database, name: str) -> None:
    with suppress(PgShiftError):
        throwaway.drop(admin, name)


def load(db: Database, sql: str, origin: str) -> None:
    """Run a schema script (``schema.sql``) in the shadow; a failure names the file and line."""
    if sqltext.is_empty(sql):
        return
    if not sqltext.may_need_parse(sql):
        try:
            db.execute(sql)
        except SqlFailure as failure:
            line = sqltext.line_of(sql, failure.position) if failure.position else 0
            raise _bad(origin, line, failure) from None
        return
    for statement in sqltext.statements(sql, origin):
        try:
            db.execute(statement.text)
        except SqlFailure as failure:
            line = statement.line + (sqltext.line_of(statement.text, failure.position) - 1 if failure.position else 0)
            raise _bad(origin, line, failure) from None


def _bad(origin: str, line: int, failure: SqlFailure) -> ConfigError:
    where = f"{origin}, line {line}" if line else origin
    return ConfigError(f"{where}: {failure}; fix {origin} and run again")
