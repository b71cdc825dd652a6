"""Loading many rows fast: a few connections at once, and indexes set aside while loading.

``Pool`` runs statements on several connections of the same database (one big INSERT is split into
row ranges by ``chunks``). ``set_aside`` drops the indexes, and the primary and unique keys that no
foreign key needs, of the tables about to be loaded; ``put_back`` re-creates them exactly (every
index at once, then each key attached to its index with ``ADD CONSTRAINT ... USING INDEX``): an
index built once over the rows is several times faster than one kept up row by row.
"""

from __future__ import annotations

import itertools
import queue
import time
from concurrent.futures import ThreadPoolExecutor

from pgshift.databases.db import Database, SqlFailure
from pgshift.dburl import DatabaseUrl


def chunks(template: str, rows: int, workers: int, smallest: int = 200_000) -> list[str]:
    """The INSERT split into row ranges, so one big table loads on several connections at once."""
    parts = max(1, min(workers, rows // smallest))
    bounds = [rows * i // parts for i in range(parts + 1)]
    return [template.replace("__LO__", str(lo + 1)).replace("__HI__", str(hi))
            for lo, hi in itertools.pairwise(bounds) if hi > lo]


class Pool:
    """A few extra connections to the same database, each running one statement at a time."""

    def __init__(self, url: DatabaseUrl, size: int, setup: str) -> None:
        self._free: queue.Queue[Database] = queue.Queue()
        self._all: list[Database] = []
        for _ in range(size):
            conn = Database.connect(url)
            conn.execute(f"{setup}; SET maintenance_work_mem = '256MB'")
            self._all.append(conn)
            self._free.put(conn)
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="pgshift-datagen")
        self.interrupted = False  # Ctrl-C or SIGTERM arrived while it ran: its work is to be thrown away

    def _one(self, sql: str) -> tuple[int, str | None]:
        conn = self._free.get()
        started = time.monotonic()
        try:
            conn.execute(sql)
            return int((time.monotonic() - started) * 1000), None
        except SqlFailure as failure:
            return int((time.monotonic() - started) * 1000), str(failure)
        finally:
            self._free.put(conn)

    def run(self, scripts: list[str]) -> list[tuple[int, str | None]]:
        """Run every script; (ms, error or None) for each, in order. Interrupted (Ctrl-C, SIGTERM), it
        cancels what its connections run, so the worker threads end now, not when their loads do."""
        try:
            return list(self._executor.map(self._one, scripts))
        except BaseException:
            self.interrupted = True
            for conn in self._all:
                conn.cancel()
            raise

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        for conn in self._all:
            conn.close()


_ASIDE = """
SELECT co.contype::text, co.conrelid::regclass::text, co.conname, ic.relname, pg_get_indexdef(co.conindid)
FROM pg_constraint co JOIN pg_index i ON i.indexrelid = co.conindid JOIN pg_class ic ON ic.oid = co.conindid
WHERE co.contype IN ('p', 'u') AND co.conrelid = ANY(%(t)s) AND NOT co.condeferrable
AND i.indnkeyatts = i.indnatts
AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conindid = co.conindid)
UNION ALL
SELECT 'idx', i.indrelid::regclass::text, c.relname, c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = ANY(%(t)s) AND NOT EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conindid = i.indexrelid
                                              AND co.contype IN ('p', 'u', 'x', 'f'))
AND NOT (i.indisunique AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL))"""

_KEEP = """
SELECT i.indrelid FROM pg_index i WHERE i.indrelid = ANY(%s) AND (i.indisclustered OR i.indisreplident)
UNION SELECT c.oid FROM pg_class c WHERE c.oid = ANY(%s) AND (c.relkind = 'p' OR c.relhassubclass)"""


Aside = tuple[str, str, str, str, str]  # kind (p, u or idx), table, constraint or index name, index name, index def


def set_aside(db: Database, oids: list[int]) -> list[Aside]:
    """Drop the indexes (and the unique and primary keys no foreign key needs) of the tables to fill.

    Returns what was dropped. Keys a foreign key references stay, and with them the foreign keys, so
    nothing has to be validated again afterwards; so do deferrable keys, exclusion constraints and
    partial or expression unique indexes (the insert skips the rows that would break those)."""
    keep = {r[0] for r in db.rows(_KEEP, [oids, oids])}
    oids = [o for o in oids if o not in keep]
    if not oids:
        return []
    found: list[Aside] = [(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]))
                          for r in db.rows(_ASIDE, {"t": oids})]  # type: ignore[arg-type]
    drops = [f"DROP INDEX {_schema_of(table)}{db.identifier(name)}" if kind == "idx"
             else f"ALTER TABLE {table} DROP CONSTRAINT {db.identifier(name)}"
             for kind, table, name, _, _ in found]
    if drops:
        db.execute("BEGIN; " + "; ".join(drops) + "; COMMIT")
    return found


def _schema_of(table: str) -> str:
    """The schema prefix (with its dot) of a regclass text; nothing when the table is on the search path."""
    head, dot, _ = table.rpartition(".")
    return head + dot if dot and (not table.startswith('"') or '".' in table) else ""


def put_back(db: Database, pool: Pool, aside: list[Aside], tables: list[str]) -> str | None:
    """Re-create what ``set_aside`` dropped, as it was: every index at once (each on a connection of
    its own; builds on one table do not block each other), then the keys on their indexes.

    If the data breaks a unique index, the tables are emptied, everything is put back anyway, and the
    error is returned (None when all went back). After an interrupted load nothing is rebuilt: the
    scratch database it went into is dropped."""
    if pool.interrupted:
        return None
    builds = [definition for _, _, _, _, definition in aside]
    keys = [f"ALTER TABLE {table} ADD CONSTRAINT {db.identifier(name)} "
            f"{'PRIMARY KEY' if kind == 'p' else 'UNIQUE'} USING INDEX {db.identifier(index)}"
            for kind, table, name, index, _ in aside if kind != "idx"]
    failed = [(build, error) for build, (_, error) in zip(builds, pool.run(builds), strict=True) if error]
    if failed:
        db.execute("TRUNCATE " + ", ".join(tables))
        for build, _ in failed:
            db.execute(build)
    if keys:
        db.execute("BEGIN; " + ";\n".join(keys) + "; COMMIT")
    return failed[0][1] if failed else None
