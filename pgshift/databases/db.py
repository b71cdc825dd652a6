"""The one module that talks to psycopg.

``Database`` is a thin, autocommit connection with the few calls the engine needs. Driver errors
are turned into ``SqlFailure`` (a statement failed) or ``ConnectionFailed`` (we never got in), with
one-line messages that name the fix and never the password.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psycopg
from psycopg import pq, sql

from pgshift.databases.pids import alive
from pgshift.dburl import DatabaseUrl, redact
from pgshift.errors import ConnectionFailed, MigrationError, PgShiftError


class SqlFailure(MigrationError):
    """A statement failed on the server."""

    def __init__(self, message: str, sqlstate: str | None = None, position: int | None = None,
                 detail: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.position = position  # 1-based character offset in the text sent, if the server gave one
        self.detail = detail
        self.hint = hint

    @property
    def lock_timeout(self) -> bool:
        return self.sqlstate == "55P03"


def application_name(pid: int | None = None) -> str:
    """Who is connecting, as other sessions see it in pg_stat_activity: ``pgshift user@host pid N``,
    the host shortened to fit PostgreSQL's 63 bytes so the pid is always whole."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    tail = f" pid {os.getpid() if pid is None else pid}"
    head = f"pgshift {user}@"
    room = max(63 - len(head.encode()) - len(tail.encode()), 0)
    return head + socket.gethostname().encode()[:room].decode(errors="ignore") + tail


APP_NAME = re.compile(r"^pgshift .*@[^@ ]* pid (?P<pid>\d+)$")

# How often the server checks, while a statement runs, that our end of the connection is still there
# (PostgreSQL 14+). Without it a killed tool's statement runs to its end (and a script sent whole
# commits), holding the migration lock all the while. Given at connect time, so RESET ALL keeps it.
CLIENT_CHECK = "client_connection_check_interval"
CLIENT_CHECK_MS = 1000


def _watching_client(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` asking the server to end the session soon after its client dies."""
    given = kwargs.get("options", os.environ.get("PGOPTIONS", ""))
    return {**kwargs, "options": f"{given} -c {CLIENT_CHECK}={CLIENT_CHECK_MS}".strip()}


class Client(NamedTuple):
    """The process that opened a session of ours, read from the session's application_name."""

    pid: int
    here: bool  # this machine, and this user: a pid we can look up

    @property
    def gone(self) -> bool:
        """Opened on this machine by a process that no longer runs."""
        return self.here and not alive(self.pid)


def client_of(app: str | None) -> Client | None:
    """The client a session's ``application_name`` names, if the session is one of ours."""
    found = APP_NAME.match(app or "")
    if found is None:
        return None
    pid = int(found["pid"])
    return Client(pid, here=app == application_name(pid))


class DatabaseMissing(ConnectionFailed):
    """The server answered, but the database named in the URL is not there."""


@dataclass
class Database:
    url: DatabaseUrl
    conn: psycopg.Connection[Any]
    _companion: Database | None = field(default=None, repr=False)

    @classmethod
    def connect(cls, url: DatabaseUrl, connect_timeout: int = 10) -> Database:
        kwargs: dict[str, Any] = dict(url.connect_kwargs())
        kwargs.setdefault("connect_timeout", str(connect_timeout))
        kwargs.setdefault("application_name", application_name())
        try:
            try:
                conn = psycopg.connect(autocommit=True, prepare_threshold=None, **_watching_client(kwargs))
            except psycopg.OperationalError as exc:
                if CLIENT_CHECK not in str(exc) and "startup parameter" not in str(exc):
                    raise
                # PostgreSQL 13 or older, or a pooler that takes no options (PgBouncer: "unsupported
                # startup parameter"): connect without the check
                conn = psycopg.connect(autocommit=True, prepare_threshold=None, **kwargs)
        except psycopg.OperationalError as exc:
            raise _connect_error(url, str(exc)) from None
        except psycopg.ProgrammingError as exc:  # bad conninfo option in the URL's query string
            raise ConnectionFailed(f"DATABASE_URL has an option libpq rejects: {redact(str(exc))}") from None
        return cls(url=url, conn=conn)

    def close(self) -> None:
        if self._companion is not None:
            self._companion.close()
            self._companion = None
        self.conn.close()

    def companion(self) -> Database:
        """A second session to the same database, for watching this one from another thread while it
        runs a statement: opened on first use, kept for the next, closed with this session."""
        if self._companion is None or self._companion.conn.closed:
            self._companion = Database.connect(self.url)
        return self._companion

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pid(self) -> int:
        return int(self.conn.info.backend_pid)

    @property
    def server_version(self) -> int:
        return int(self.conn.info.server_version)

    def cancel(self) -> None:
        """Ask the server to cancel the statement this session runs (safe from another thread)."""
        with contextlib.suppress(psycopg.Error):  # nothing running, or the session is gone
            self.conn.cancel_safe(timeout=5)

    @contextlib.contextmanager
    def _command(self) -> Iterator[None]:
        """One command's errors: an SQL error leaves the session outside any transaction and comes out
        as ours; Ctrl-C or SIGTERM mid-command leaves it idle for the clean-up."""
        try:
            yield
        except psycopg.Error as exc:
            self._reset()
            raise _sql_error(exc) from None
        except KeyboardInterrupt:
            self._settle_interrupted()
            raise

    def execute(self, query: str, params: Sequence[Any] | None = None) -> None:
        """Run one statement, or (without params) a script of several, sent as one simple query."""
        with self._command():
            self.conn.execute(query.encode() if params is None else query, params, prepare=False)

    def rows(self, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with self._command():
            cursor = self.conn.execute(query, params, prepare=False)
            return cursor.fetchall() if cursor.description is not None else []

    def one(self, query: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        found = self.rows(query, params)
        return found[0] if found else None

    def has_relation(self, name: str) -> bool:
        """True if the (schema-qualified) table, view or index exists."""
        row = self.one("SELECT to_regclass(%s) IS NOT NULL", [name])
        return bool(row and row[0])

    def copy_to(self, query: str, into: Database, statement: str) -> None:
        """Stream the rows of ``COPY (query) TO STDOUT`` here into ``COPY ... FROM STDIN`` (``statement``)
        on ``into``, in binary, chunk by chunk; both sides of one table shape."""
        try:
            with self.conn.cursor().copy(f"COPY ({query}) TO STDOUT (FORMAT binary)".encode()) as out, \
                    into.conn.cursor().copy(f"{statement} (FORMAT binary)".encode()) as sink:
                for chunk in out:
                    sink.write(chunk)
        except psycopg.Error as exc:
            self._reset()
            into._reset()
            raise _sql_error(exc) from None

    def literal(self, value: Any) -> str:
        """A value quoted as an SQL literal, for scripts that cannot take parameters."""
        return sql.Literal(value).as_string(self.conn)

    def identifier(self, name: str) -> str:
        return sql.Identifier(name).as_string(self.conn)

    @property
    def in_transaction(self) -> bool:
        return self.conn.info.transaction_status != pq.TransactionStatus.IDLE

    def _settle_interrupted(self) -> None:
        """Ctrl-C or SIGTERM arrived mid-command but outside psycopg's own wait (which cancels and
        drains by itself): between sending and reading, or in the rollback after an error. Cancel what
        the server runs and read its results, so that the session still serves the clean-up (maintenance
        off, the outcome recorded) instead of failing with "another command is already in progress"."""
        pgconn = self.conn.pgconn
        if self.conn.closed or pgconn.transaction_status != pq.TransactionStatus.ACTIVE:
            return
        try:
            while pgconn.flush():
                pass
            self.conn.cancel_safe(timeout=5)
            while pgconn.get_result() is not None:
                pass
        except (psycopg.Error, OSError):
            self.conn.close()  # the server rolls back what was under way; the clean-up reports the loss
        self._reset()

    def _reset(self) -> None:
        """After an error in a script, leave the session outside any transaction."""
        if self.conn.closed:
            return
        try:
            if self.in_transaction:
                self.conn.execute(b"ROLLBACK")
        except psycopg.Error:
            pass
        except KeyboardInterrupt:
            self._settle_interrupted()
            raise


def _sql_error(exc: psycopg.Error) -> PgShiftError:
    if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        return ConnectionFailed(f"lost the connection to the database: {redact(str(exc)).strip()}")
    diag = exc.diag
    position = int(diag.statement_position) if diag.statement_position else None
    message = diag.message_primary or str(exc).strip().splitlines()[0]
    return SqlFailure(redact(message), sqlstate=exc.sqlstate, position=position,
                      detail=diag.message_detail, hint=diag.message_hint)


def _connect_error(url: DatabaseUrl, text: str) -> ConnectionFailed:
    where = f"{url.host or 'local socket'}" + (f":{url.port}" if url.port else "")
    lower = text.lower()
    if "password authentication failed" in lower or "no password supplied" in lower:
        return ConnectionFailed(
            f"PostgreSQL at {where} rejected the password for user {url.user!r}; fix DATABASE_URL")
    if "database" in lower and "does not exist" in lower:
        return DatabaseMissing(
            f"database {url.dbname!r} does not exist on {where}; create it (createdb {url.dbname}) "
            "or fix DATABASE_URL")
    if "role" in lower and "does not exist" in lower:
        return ConnectionFailed(f"user {url.user!r} does not exist on {where}; fix DATABASE_URL")
    if "could not translate host name" in lower:
        return ConnectionFailed(f"host {url.host!r} is unknown; fix the host in DATABASE_URL")
    if "timeout expired" in lower:
        return ConnectionFailed(f"PostgreSQL at {where} did not answer in time; check the host and firewall")
    if "connection refused" in lower or "no such file" in lower or "could not connect" in lower:
        return ConnectionFailed(
            f"cannot reach PostgreSQL at {where} (connection refused); is the server running?")
    first = redact(text).strip().splitlines()[0] if text.strip() else "unknown error"
    return ConnectionFailed(f"cannot connect to {url}: {first}")


def seen_from_elsewhere(db: Database) -> bool:
    """True when the server sees this session come from elsewhere than our socket: another TCP port,
    or a unix socket while ours is TCP. A proxy or pooler sits between (PgBouncer, pgpool, HAProxy).
    False on a direct link, and on a unix socket of ours (where the two cannot be told apart)."""
    row = db.one("SELECT inet_client_port()")
    theirs = row[0] if row else None
    try:
        with socket.socket(fileno=os.dup(db.conn.pgconn.socket)) as ours:
            mine = ours.getsockname()
    except OSError:
        return False
    if not isinstance(mine, tuple):
        return False
    return theirs is None or mine[1] != theirs


def pgbouncer_pool_mode(url: DatabaseUrl, connect_timeout: int = 10) -> str | None:
    """The pool mode of the PgBouncer at ``url``'s host and port for ``url``'s database: ``session``,
    ``transaction`` or ``statement``; ``unknown`` when it is PgBouncer but its console refuses this user
    (not in ``admin_users`` or ``stats_users``); None when it is not PgBouncer."""
    kwargs: dict[str, Any] = dict(url.with_dbname("pgbouncer").connect_kwargs())
    kwargs["connect_timeout"] = str(connect_timeout)
    try:
        conn = psycopg.connect(autocommit=True, prepare_threshold=None, **kwargs)
    except psycopg.Error as exc:
        return "unknown" if "not allowed" in str(exc) else None
    with conn:
        try:
            cursor = conn.execute("SHOW DATABASES", prepare=False)
        except psycopg.Error:  # a real database that happens to be named pgbouncer
            return None
        columns = [c.name for c in cursor.description or []]
        rows = [dict(zip(columns, r, strict=False)) for r in cursor.fetchall()]
        own = next((r for r in rows if r.get("name") == url.dbname), None)
        if own is not None and own.get("pool_mode"):
            return str(own["pool_mode"])
        config = {str(r[0]): r[1] for r in conn.execute("SHOW CONFIG", prepare=False).fetchall()}
        return str(config.get("pool_mode") or "session")
