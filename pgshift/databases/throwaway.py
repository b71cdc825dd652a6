"""Throwaway databases: every database the tool makes for itself, uses once and drops.

Kinds: ``scratch`` (a check's database), ``shadow`` (schema.sql loaded or migrations replayed),
``clone`` (a deploy's rehearsal), ``new`` and ``old`` (a restore's copy before and after the swap),
``test`` (the test suite's own). One naming scheme for all of them::

    pgshift_<kind>_<host>_<pid>_<random>[_<label>]

``host`` is a short digest of this machine's name and ``pid`` the process that made it, so what a
killed run left is recognisable: ours (the prefix), from this machine, and its process is gone. Every
command that makes a throwaway database first ``sweep``\\ s those away, and says so; ones of other
machines, or of live processes, are only listed (``leftovers``). ``label`` says what the database is
for (the restored database's name), cut to fit PostgreSQL's 63 bytes.

The admin database, where CREATE and DROP DATABASE run, is always found the same way (``admin_url``):
``postgres``, else ``template1``. A clone is a ``CREATE DATABASE ... TEMPLATE`` copy (``STRATEGY
FILE_COPY`` on PostgreSQL 15+, seconds per gigabyte) when nobody is connected to the source, else a
dump and restore through ``pgshift.databases.dump``, or for a rehearsal the schema and a sample of
the rows (``pgshift.databases.sample``); none writes to the source.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import NamedTuple

from pgshift.databases import dump, sample
from pgshift.databases.db import Database, DatabaseMissing, SqlFailure
from pgshift.databases.pids import alive
from pgshift.dburl import DatabaseUrl
from pgshift.errors import ConnectionFailed, CreateRefused, PgShiftError

PREFIX = "pgshift_"
KINDS = ("scratch", "shadow", "clone", "new", "old", "test")
_NAME = re.compile(r"^pgshift_(?P<kind>[a-z]+)_(?P<host>[0-9a-f]{6})_(?P<pid>\d+)_[0-9a-f]{6}(?:_(?P<label>.*))?$")
_ADMIN_DATABASES = ("postgres", "template1")
_IN_USE = "55006"  # object_in_use: the template has other sessions
_NO_RIGHT = "42501"  # insufficient_privilege


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


HOST = _host()


class Owner(NamedTuple):
    kind: str
    host: str
    pid: int
    label: str

    @property
    def gone(self) -> bool:
        """Made on this machine by a process that no longer runs: safe to drop."""
        return self.host == HOST and not alive(self.pid)


def name(kind: str, label: str = "") -> str:
    """A new name of ``kind``, unique to this process, carrying ``label`` as far as 63 bytes allow."""
    if kind not in KINDS:
        raise ValueError(f"unknown throwaway kind {kind!r}")
    base = f"{PREFIX}{kind}_{HOST}_{os.getpid()}_{secrets.token_hex(3)}"
    if not label:
        return base
    room = 63 - len(base.encode()) - 1
    return f"{base}_{label.encode()[:room].decode(errors='ignore')}" if room > 0 else base


def owner(database: str) -> Owner | None:
    """Who made ``database``, if it is one of ours."""
    found = _NAME.match(database)
    if found is None or found["kind"] not in KINDS:
        return None
    return Owner(found["kind"], found["host"], int(found["pid"]), found["label"] or "")


def admin_url(url: DatabaseUrl, connect_timeout: int = 10) -> DatabaseUrl:
    """An admin URL on ``url``'s server: a database other than ``url``'s own that we may connect to."""
    last: PgShiftError | None = None
    for candidate in (url.with_dbname(n) for n in _ADMIN_DATABASES if n != url.dbname):
        try:
            Database.connect(candidate, connect_timeout).close()
            return candidate
        except (ConnectionFailed, DatabaseMissing) as error:
            last = error
    raise ConnectionFailed(f"cannot open an admin session on the server of {url} to create databases: {last}; "
                           "let the user connect to the postgres database")


def admin(url: DatabaseUrl, connect_timeout: int = 10) -> Database:
    """A connection to ``url``'s server's admin database."""
    return Database.connect(admin_url(url, connect_timeout), connect_timeout)


def create(db: Database, database: str, template: str = "template0", *, strategy: bool = False) -> None:
    """CREATE DATABASE from the admin session ``db``; a role without CREATEDB gets the fix."""
    clause = " STRATEGY FILE_COPY" if strategy and db.server_version >= 150000 else ""
    try:
        db.execute(f"CREATE DATABASE {db.identifier(database)} TEMPLATE {db.identifier(template)}{clause}")
    except SqlFailure as failure:
        if failure.sqlstate == _NO_RIGHT:
            raise CreateRefused(
                f"user {db.url.user or 'of DATABASE_URL'!s} may not create databases on {db.url}, so no "
                "scratch database can be made; grant it CREATEDB, or point DATABASE_URL at a server where it "
                "may") from None
        raise


def drop(db: Database, database: str) -> None:
    """Drop one of our throwaway databases (never any other), ending sessions still in it."""
    if owner(database) is None:
        raise ValueError(f"refusing to drop {database!r}: not a throwaway database")
    db.execute(f"DROP DATABASE IF EXISTS {db.identifier(database)} WITH (FORCE)")


def drop_quietly(url: DatabaseUrl, database: str, connect_timeout: int = 10) -> None:
    """Best effort (on the way out of a failure): what is left, the next sweep drops."""
    with suppress(PgShiftError, ValueError), admin(url, connect_timeout) as db:
        drop(db, database)


def leftovers(db: Database) -> list[str]:
    """Our throwaway databases on ``db``'s server, from any run and machine, sorted."""
    return sorted(n for (n,) in db.rows("SELECT datname FROM pg_database WHERE datname LIKE 'pgshift\\_%'")
                  if owner(n) is not None)


_SWEPT: list[str] = []  # what this process dropped for killed runs, until ``swept`` hands it over


def sweep(db: Database) -> list[str]:
    """Drop what killed runs of this machine left (their process is gone); returns the names, which
    ``swept`` also hands to whoever reports on the command (its caller may not say it)."""
    gone = []
    for database in leftovers(db):
        found = owner(database)
        if found is not None and found.gone:
            with suppress(PgShiftError):
                drop(db, database)
                gone.append(database)
    _SWEPT.extend(gone)
    return gone


def swept() -> list[str]:
    """The throwaway databases of killed runs this process has dropped since the last call."""
    found = list(_SWEPT)
    _SWEPT.clear()
    return found


@contextmanager
def empty(admin_at: DatabaseUrl, kind: str = "scratch", *, connect_timeout: int = 10,
          durable: bool = False) -> Iterator[DatabaseUrl]:
    """A new empty database on ``admin_at``'s server, dropped when the block ends (whatever happens).

    Unless ``durable``, its commits do not wait for the disk (``synchronous_commit = off`` as the
    database's default): nothing in it has to survive a crash, and a check that commits hundreds of
    times runs several times faster. Timings meant to predict production's ask for ``durable``."""
    database = name(kind)
    with Database.connect(admin_at, connect_timeout) as db:
        sweep(db)
        create(db, database)
        try:
            if not durable:
                db.execute(f"ALTER DATABASE {db.identifier(database)} SET synchronous_commit = off")
        except BaseException:
            drop(db, database)
            raise
    try:
        yield admin_at.with_dbname(database)
    finally:
        with Database.connect(admin_at, connect_timeout) as db:
            drop(db, database)


class Clone(NamedTuple):
    url: DatabaseUrl
    sampled: int   # tables cut to the sample when the source was in use (``sample_rows``); 0: a whole copy
    sample_rows: int


@contextmanager
def clone(admin_at: DatabaseUrl, source: str, *, connect_timeout: int = 10) -> Iterator[DatabaseUrl]:
    """A copy of database ``source`` (schema and data) on the same server, dropped when the block ends."""
    with clone_or_sample(admin_at, source, connect_timeout=connect_timeout) as made:
        yield made.url


@contextmanager
def clone_or_sample(admin_at: DatabaseUrl, source: str, *, sample_rows: int = 0, whole: tuple[str, ...] = (),
                    connect_timeout: int = 10) -> Iterator[Clone]:
    """A copy of database ``source`` on the same server, dropped when the block ends: a template copy when
    nobody is connected to it; otherwise, with ``sample_rows``, its schema and that many rows of each
    table (``pgshift.databases.sample``; tables in ``whole`` entirely), else a whole dump and restore."""
    database = name("clone")
    sampled = 0
    try:
        with Database.connect(admin_at, connect_timeout) as db:
            sweep(db)
            version = db.server_version
            # The server waits 5 s for other sessions to leave a template before it gives up: when
            # someone is connected, go straight to the dump.
            busy = db.one("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [source]) != (0,)
            copied = False
            if not busy:
                try:
                    create(db, database, template=source, strategy=True)
                    copied = True
                except SqlFailure as failure:
                    if failure.sqlstate != _IN_USE:
                        raise
            if not copied:
                create(db, database)
        if not copied and sample_rows > 0:
            sampled = sample.copy(admin_at.with_dbname(source), admin_at.with_dbname(database), sample_rows, version,
                                  whole=whole, connect_timeout=connect_timeout)
        elif not copied:
            dump.copy(admin_at.with_dbname(source), admin_at.with_dbname(database), version)
        yield Clone(admin_at.with_dbname(database), sampled, sample_rows if not copied else 0)
    finally:
        with suppress(PgShiftError), Database.connect(admin_at, connect_timeout) as db:
            drop(db, database)


@contextmanager
def copy_of(source: DatabaseUrl, admin_at: DatabaseUrl, *, connect_timeout: int = 10) -> Iterator[DatabaseUrl]:
    """A copy of ``source`` on another server (``admin_at``'s), by dump and restore; dropped afterwards."""
    with Database.connect(admin_at, connect_timeout) as db:
        version = db.server_version
    with empty(admin_at, "clone", connect_timeout=connect_timeout) as into:
        dump.copy(source, into, version, connect_timeout=connect_timeout)
        yield into
