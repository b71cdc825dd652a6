"""Scratch databases: created by the tool on a server, used for one check, always dropped.

* ``server_of(url)`` finds an admin connection on the same server (database ``postgres``, else
  ``template1``) so that creating and dropping never needs a session in the developer's database.
* ``empty(admin)`` yields a fresh database made from ``template0`` (commits not waiting for the disk,
  unless asked to be ``durable``).
* ``clone(admin, source)`` yields a copy of ``source``: ``CREATE DATABASE ... TEMPLATE`` (with
  ``STRATEGY FILE_COPY`` on PostgreSQL 15+, a few seconds per gigabyte), or, when the server refuses
  because someone is connected to the source, ``pg_dump | psql``. Neither writes to the source.

Names are ``pgshift_scratch_<pid>_<random>``, so concurrent runs never collide, and a leftover from a
killed run is recognisable (``leftovers`` lists them).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from pgshift.databases import pgbin
from pgshift.databases.db import Database, SqlFailure
from pgshift.dburl import DatabaseUrl, redact
from pgshift.errors import ConnectionFailed, PgShiftError, ToolError

PREFIX = "pgshift_scratch_"
_ADMIN_DATABASES = ("postgres", "template1")
_IN_USE = "55006"  # object_in_use: the template has other sessions


def new_name() -> str:
    return f"{PREFIX}{os.getpid()}_{secrets.token_hex(5)}"


def server_of(url: DatabaseUrl, connect_timeout: int = 10) -> DatabaseUrl:
    """An admin URL on ``url``'s server: a database other than ``url``'s own that we may connect to."""
    last: PgShiftError | None = None
    for name in _ADMIN_DATABASES:
        if name == url.dbname:
            continue
        candidate = url.with_dbname(name)
        try:
            Database.connect(candidate, connect_timeout).close()
            return candidate
        except ConnectionFailed as error:
            last = error
    raise ConnectionFailed(f"cannot open an admin session on the server of {url} to create scratch "
                           f"databases: {last}; let the user connect to the postgres database")


def _create(admin: Database, name: str, template: str = "template0", strategy: bool = False) -> None:
    clause = " STRATEGY FILE_COPY" if strategy and admin.server_version >= 150000 else ""
    try:
        admin.execute(f"CREATE DATABASE {admin.identifier(name)} TEMPLATE {admin.identifier(template)}{clause}")
    except SqlFailure as failure:
        if failure.sqlstate == "42501":
            raise ConnectionFailed(
                f"user {admin.url.user or 'of DATABASE_URL'!s} may not create databases on {admin.url}, so no "
                "scratch database can be made; grant it CREATEDB, or point DATABASE_URL at a server where it "
                "may") from None
        raise


def drop(admin: DatabaseUrl, name: str, connect_timeout: int = 10) -> None:
    """Drop a scratch database (only ever one of ours: the name must carry our prefix)."""
    if not name.startswith(PREFIX):
        raise ValueError(f"refusing to drop {name!r}: not a scratch database")
    with Database.connect(admin, connect_timeout) as db:
        db.execute(f"DROP DATABASE IF EXISTS {db.identifier(name)} WITH (FORCE)")


@contextmanager
def empty(admin: DatabaseUrl, connect_timeout: int = 10, durable: bool = False) -> Iterator[DatabaseUrl]:
    """A new empty database on the admin's server, dropped when the block ends (whatever happens).

    Unless ``durable``, its commits do not wait for the disk (``synchronous_commit = off`` as the
    database's default): nothing in a scratch database has to survive a crash, and a check that
    commits hundreds of times runs several times faster. Timings meant to predict production's ask
    for ``durable``."""
    name = new_name()
    with Database.connect(admin, connect_timeout) as db:
        _create(db, name)
        try:
            if not durable:
                db.execute(f"ALTER DATABASE {db.identifier(name)} SET synchronous_commit = off")
        except BaseException:
            db.execute(f"DROP DATABASE IF EXISTS {db.identifier(name)} WITH (FORCE)")
            raise
    try:
        yield admin.with_dbname(name)
    finally:
        drop(admin, name, connect_timeout)


@contextmanager
def clone(admin: DatabaseUrl, source: str, connect_timeout: int = 10) -> Iterator[DatabaseUrl]:
    """A copy of database ``source`` (schema and data), dropped when the block ends."""
    name = new_name()
    try:
        with Database.connect(admin, connect_timeout) as db:
            version = db.server_version
            # The server waits 5 s for other sessions to leave a template before it gives up: when
            # someone is connected, go straight to the dump.
            busy = db.one("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [source]) != (0,)
            copied = False
            if not busy:
                try:
                    _create(db, name, template=source, strategy=True)
                    copied = True
                except SqlFailure as failure:
                    if failure.sqlstate != _IN_USE:
                        raise
            if not copied:
                _create(db, name)
        if not copied:
            dump_restore(admin.with_dbname(source), admin.with_dbname(name), version)
        yield admin.with_dbname(name)
    finally:
        drop(admin, name, connect_timeout)


def dump_restore(source: DatabaseUrl, into: DatabaseUrl, server_version: int = 0) -> None:
    """Copy ``source`` into the empty database ``into``: pg_dump | psql, in one transaction; reads only the source.

    The client programs are PostgreSQL 18's; for an older server the one setting they emit that it
    does not know (``transaction_timeout``, 17+) is left out of the stream."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    skip = b"SET transaction_timeout" if server_version and server_version < 170000 else None
    with tempfile.TemporaryFile() as dump_err, tempfile.TemporaryFile() as load_err:
        dumper = subprocess.Popen(
            [str(pgbin.program("pg_dump")), "--format=plain", "--no-owner", "--no-acl"],
            env={**base, **source.env()}, stdout=subprocess.PIPE, stderr=dump_err, stdin=subprocess.DEVNULL)
        loader = subprocess.Popen(
            [str(pgbin.program("psql")), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
             f"--dbname={into.dbname}"],
            env={**base, **into.env()}, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=load_err)
        assert dumper.stdout is not None and loader.stdin is not None
        try:
            for line in dumper.stdout:
                if skip is None or not line.startswith(skip):
                    loader.stdin.write(line)
        except BrokenPipeError:
            pass  # psql stopped on an error: its stderr says which
        finally:
            dumper.stdout.close()
            with contextlib.suppress(BrokenPipeError):
                loader.stdin.close()
        if loader.wait() != 0 and dumper.poll() is None:
            dumper.kill()
        for code, err, what in ((dumper.wait(), dump_err, "pg_dump"), (loader.wait(), load_err, "psql")):
            if code != 0:
                err.seek(0)
                tail = err.read().decode(errors="replace").strip().splitlines()[-3:] or ["no output"]
                raise ToolError(f"could not copy {source.dbname} into a scratch database: {what} exited with "
                                f"{code}: {redact(' / '.join(tail))}")


def leftovers(admin: DatabaseUrl, connect_timeout: int = 10) -> list[str]:
    """Scratch databases present on the server (ours or another run's)."""
    with Database.connect(admin, connect_timeout) as db:
        return [r[0] for r in db.rows("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1",
                                      [PREFIX.replace("_", r"\_") + "%"])]
