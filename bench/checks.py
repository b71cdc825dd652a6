"""Benchmark of the migration checks: forward and backward on many migrations, and data generation.

    .venv/bin/python bench/checks.py [--migrations 400] [--rows 1000000] [--url postgresql://.../postgres]

Without --url it runs on a private embedded PostgreSQL 18 (started and stopped here) and on the
local PostgreSQL 15 at 127.0.0.1:5432 when that answers. Measured:
  forward:   N migrations applied one by one to an empty scratch database (the check's own path)
  backward:  up, down, up for each of the N, with snapshots; also at N/4 and N/2, to show it grows
             linearly (ms per migration stays flat); then again with every other rollback broken: the
             walk goes on from a saved copy after each failure, so it must stay within 1.5x of the
             passing run (the floor; a replay from empty after each failure was 3-5x at 350)
  datagen:   this repository's schema (migrations/) filled with --rows in the tables nothing
             references: rows per second, indexes and keys rebuilt included; then ANALYZE
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pgshift.checks import backward, datagen, forward  # noqa: E402
from pgshift.databases import embedded, throwaway  # noqa: E402
from pgshift.databases.db import Database  # noqa: E402
from pgshift.dburl import DatabaseUrl  # noqa: E402
from pgshift.errors import PgShiftError  # noqa: E402
from pgshift.migrations import apply, source  # noqa: E402

PG15 = DatabaseUrl(host="127.0.0.1", port=5432, dbname="postgres", user="postgres")


def write_set(folder: Path, count: int) -> None:
    """A realistic mix: tables with keys and references, added columns, concurrent indexes, views."""
    folder.mkdir(parents=True, exist_ok=True)
    table = 0
    for n in range(1, count + 1):
        ident = f"2025{n:010d}_step_{n}"
        kind = n % 4
        if kind == 1 or table == 0:
            parent = f", parent_id bigint REFERENCES t_{table}" if table else ""
            table = n
            forward_sql = (f"CREATE TABLE t_{n} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY{parent},\n"
                           f"    name text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());\n"
                           + (f"CREATE INDEX t_{n}_parent_idx ON t_{n} (parent_id);\n" if parent else ""))
            rollback = f"DROP TABLE t_{n};\n"
        elif kind == 2:
            forward_sql = f"ALTER TABLE t_{table} ADD COLUMN c_{n} integer NOT NULL DEFAULT 0;\n"
            rollback = f"ALTER TABLE t_{table} DROP COLUMN c_{n};\n"
        elif kind == 3:
            forward_sql = f"CREATE INDEX CONCURRENTLY t_{table}_c_{n - 1}_idx ON t_{table} (c_{n - 1});\n"
            rollback = f"DROP INDEX CONCURRENTLY t_{table}_c_{n - 1}_idx;\n"
        else:
            forward_sql = (f"CREATE VIEW v_{n} AS SELECT id, name FROM t_{table} WHERE c_{n - 2} > 0;\n"
                           f"CREATE FUNCTION f_{n}(x bigint) RETURNS bigint LANGUAGE sql IMMUTABLE\n"
                           f"    AS $$ SELECT x + {n} $$;\n")
            rollback = f"DROP FUNCTION f_{n}(bigint);\nDROP VIEW v_{n};\n"
        (folder / f"{ident}.sql").write_text(forward_sql)
        (folder / f"{ident}.rollback.sql").write_text(rollback)


FAILING_FLOOR = 1.5  # half the rollbacks failing may cost at most this much more than none


def break_every_other_rollback(folder: Path) -> int:
    """Empty every other rollback file (a rollback that forgets its work): its round trip fails."""
    files = sorted(folder.glob("*.rollback.sql"))
    for path in files[1::2]:
        path.write_text("-- forgot to undo it\n")
    return len(files[1::2])


def bench_walks(admin: DatabaseUrl, count: int) -> bool:
    """Forward and backward at N/4, N/2 and N; True when backward with failures stays under the floor."""
    limits = apply.Limits()
    within = True
    for size in sorted({max(count // 4, 1), max(count // 2, 1), count}):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "migrations"
            write_set(folder, size)
            migrations = source.read(folder)
            started = time.perf_counter()
            ahead = forward.forward(admin, migrations, limits)
            forward_s = time.perf_counter() - started
            started = time.perf_counter()
            back = backward.run(admin, migrations, limits)
            backward_s = time.perf_counter() - started
            broken = break_every_other_rollback(folder)
            started = time.perf_counter()
            failing = backward.run(admin, source.read(folder), limits)
            failing_s = time.perf_counter() - started
        assert ahead.ok and back.ok, (ahead.summary(), back.summary())
        failed = sum(1 for t in failing.trips if t.state == "failed")
        assert failed == broken, failing.summary()
        ratio = failing_s / backward_s
        within = within and ratio <= FAILING_FLOOR
        print(f"  {size:4d} migrations: forward {forward_s:6.2f}s ({forward_s / size:6.4f} s each)   "
              f"backward {backward_s:6.2f}s ({backward_s / size:6.4f} s each)   "
              f"with {failed} failing {failing_s:6.2f}s ({failing_s / size:6.4f} s each, {ratio:.2f}x; "
              f"floor {FAILING_FLOOR}x: {'ok' if ratio <= FAILING_FLOOR else 'OVER'})")
    return within


def bench_datagen(admin: DatabaseUrl, rows: int) -> None:
    migrations = source.read(ROOT / "migrations")
    with throwaway.empty(admin) as url, Database.connect(url) as db:
        apply.apply(db, migrations, apply.Limits())
        report = datagen.fill(db, rows)
    print(f"  datagen: {report.rows:,} rows in {report.seconds:.2f}s = {report.rows_per_second:,.0f} rows/s with the "
          f"index rebuild ({report.index_seconds:.2f}s of it); inserts alone {report.insert_rows_per_second:,.0f} "
          f"rows/s; ANALYZE {report.analyze_seconds:.2f}s more")
    for t in report.tables:
        print(f"    {t.table:28s} {t.rows:>12,} rows {t.ms:>7,} ms" + (f"  ({t.note})" if t.note else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--migrations", type=int, default=400)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--url", help="admin URL of a server where scratch databases may be created")
    args = parser.parse_args()
    servers: list[tuple[str, DatabaseUrl]] = []
    folder: Path | None = None
    if args.url:
        servers.append(("given server", DatabaseUrl.parse(args.url)))
    else:
        folder = Path(tempfile.mkdtemp(prefix="pgshift-bench-", dir="/tmp"))
        folder.chmod(0o755)
        servers.append(("embedded PostgreSQL 18", embedded.ensure_running(folder).url("postgres")))
        try:
            Database.connect(PG15, connect_timeout=3).close()
            servers.append(("local PostgreSQL 15", PG15))
        except PgShiftError:
            print("(local PostgreSQL 15 not answering: skipped)")
    within = True
    try:
        for name, admin in servers:
            with Database.connect(admin) as db:
                version = db.one("SHOW server_version")
            print(f"{name} ({version[0] if version else '?'}):")
            within = bench_walks(admin, args.migrations) and within
            bench_datagen(admin, args.rows)
    finally:
        if folder is not None:
            embedded.stop(folder)
            shutil.rmtree(folder, ignore_errors=True)
    sys.exit(0 if within else 1)


if __name__ == "__main__":
    main()
