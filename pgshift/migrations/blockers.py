"""Who is blocking a migration: a watcher on a second connection.

Once a migration has hit ``lock_timeout``, its retries are watched: a thread polls
``pg_blocking_pids`` for the migrating session and remembers the sessions that held it up, so the
final message can name them (pid, application, client, what they run, since when). ``holding_up``
names the older transactions a concurrent index build waits for (its virtualxid waits), with the age
of each transaction.
"""

from __future__ import annotations

import threading

from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import PgShiftError

_QUERY = (
    "SELECT pid, coalesce(nullif(application_name, ''), usename::text, '?'), "
    "coalesce(host(client_addr), 'local socket'), state, left(regexp_replace(query, '\\s+', ' ', 'g'), 60), "
    "to_char(coalesce(xact_start, query_start), 'HH24:MI:SS') "
    "FROM pg_stat_activity WHERE pid = ANY(pg_blocking_pids(%s)) ORDER BY pid")

# A concurrent index build waits on the virtual transaction ids of older transactions: the sessions
# holding the ids it waits for, and those pg_blocking_pids names.
_HOLDING_UP = (
    "SELECT a.pid, coalesce(nullif(a.application_name, ''), a.usename::text, '?'), "
    "coalesce(host(a.client_addr), 'local socket'), coalesce(a.state, '?'), "
    "coalesce(extract(epoch FROM now() - a.xact_start)::int, 0), "
    "left(regexp_replace(a.query, '\\s+', ' ', 'g'), 60) "
    "FROM pg_stat_activity a WHERE a.pid = ANY(pg_blocking_pids(%s)) OR a.pid IN ("
    "SELECT h.pid FROM pg_locks w JOIN pg_locks h ON h.locktype = 'virtualxid' AND h.granted "
    "AND h.virtualxid = w.virtualxid WHERE w.pid = %s AND w.locktype = 'virtualxid' AND NOT w.granted) "
    "ORDER BY a.pid")


def holding_up(db: Database, pid: int) -> dict[int, str]:
    """The sessions session ``pid`` waits for, each described for a message."""
    return {other: f"pid {other} (application {app!r}, from {addr}, {state}, transaction open {age} s: {query})"
            for other, app, addr, state, age, query in db.rows(_HOLDING_UP, [pid, pid])}


class BlockerWatch:
    def __init__(self, url: DatabaseUrl, pid: int, interval: float = 0.1) -> None:
        self.seen: dict[int, str] = {}
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        try:
            self._db: Database | None = Database.connect(url)
        except PgShiftError:
            self._db = None
            return
        self._thread = threading.Thread(target=self._run, name="pgshift-blockers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self._db is not None
        while not self._stop.is_set():
            try:
                for pid, app, addr, state, query, since in self._db.rows(_QUERY, [self._pid]):
                    self.seen[pid] = f"pid {pid} ({app}, from {addr}, {state} since {since}: {query})"
            except PgShiftError:
                return
            self._stop.wait(self._interval)

    def describe(self) -> str:
        return "; ".join(self.seen.values()) if self.seen else "a session that could not be identified"

    def stop(self) -> None:
        self._stop.set()
        if self._db is not None:
            self._thread.join(timeout=2)
            self._db.close()
