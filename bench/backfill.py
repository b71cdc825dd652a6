"""A column rename without downtime under load: backfill speed, and what two application versions see.

    .venv/bin/python bench/backfill.py                    # 1,000,000 rows on a private embedded PostgreSQL 18
    .venv/bin/python bench/backfill.py --rows 5000000 --url postgresql://postgres@127.0.0.1:5432/postgres

A table of --rows users (id, name) gets the rename template's migration (users.name to full_name: the
new column, triggers keeping both in step, a backfill, then the contract). Two client loops run the
whole time, each in its own process (as applications are): the old application reads and writes
through ``name``, the new one through ``full_name`` (from the moment the expand phase commits). The
old application stops before ``deploy.complete``, as the contract gate requires; the new one runs
through it.

Reported: the backfill's rows per second (against the 200,000 rows/s target, and as a ratio to two
floors measured in the same run: one bare UPDATE of a fresh copy of the table, and the same with a
row trigger like the rename's in place, which the backfill's batches pay for too), errors per client (must
be 0), each client's p50/p99 latency per phase (before, expand, backfill, complete), the longest single
operation any client saw (a lock wait shows there; target under 200 ms), and that every row ends right.
``--min-rate`` makes a rate below it exit 1.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _harness import URL_HELP, admin_url  # noqa: E402

from pgshift import api, settings  # noqa: E402
from pgshift.databases import throwaway  # noqa: E402
from pgshift.databases.db import Database  # noqa: E402
from pgshift.dburl import DatabaseUrl  # noqa: E402
from pgshift.migrations import backfill, phases, rename  # noqa: E402
from pgshift.migrations.budget import Limits  # noqa: E402

TABLE = "20250101000000_users"
RENAME = "20250102000000_rename_user_name"
TARGET_RATE = 200_000


def _client_loop(url: str, column: str, rows: int, app: str, ready: Any, go: Any, stop: Any, out: Any) -> None:
    """One application version's loop, in a process of its own (as an application is: threads here
    would share one interpreter lock with the migrator): read a random user, write it, through its
    column name, from ``go`` to ``stop``; then send back its samples (when, seconds) and errors."""
    chance = random.Random(column)
    samples: list[tuple[float, float]] = []
    errors: list[str] = []
    parsed = DatabaseUrl.parse(url)
    with Database.connect(replace(parsed, params=(*parsed.params, ("application_name", app)))) as db:
        ready.set()
        go.wait()
        while not stop.is_set():
            key = chance.randint(1, rows)
            for query, params in ((f"SELECT {column} FROM users WHERE id = %s", [key]),
                                  (f"UPDATE users SET {column} = %s WHERE id = %s", [f"{column} {key}", key])):
                began = time.monotonic()
                try:
                    db.rows(query, params)
                except Exception as error:  # counted, and the loop goes on
                    errors.append(str(error))
                samples.append((began, time.monotonic() - began))
            time.sleep(0.001)
    out.put((samples, errors))


class Client:
    """An application version's loop in its own process, started now, going from ``start()``."""

    def __init__(self, url: DatabaseUrl, column: str, rows: int, app: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready, self._go, self._stop = context.Event(), context.Event(), context.Event()
        self._out = context.Queue()
        self._process = context.Process(target=_client_loop, daemon=True, args=(
            str(url), column, rows, app, self._ready, self._go, self._stop, self._out))
        self._process.start()
        self.samples: list[tuple[float, float]] = []
        self.errors: list[str] = []

    def connected(self) -> None:
        if not self._ready.wait(timeout=120):
            raise SystemExit(f"the client process ({self._process.pid}) did not connect")

    def start(self) -> None:
        self._go.set()

    def finish(self) -> None:
        self._go.set()
        self._stop.set()
        self.samples, self.errors = self._out.get(timeout=60)
        self._process.join(timeout=10)


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0, "p50_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0}
    ordered = sorted(samples)
    return {"n": len(ordered), "p50_ms": round(statistics.median(ordered) * 1000, 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 1)}


def alone_rate(url: DatabaseUrl, rows: int, limits: Limits) -> float:
    """Rows per second of the backfill engine itself on a fresh copy with the trigger, no clients: what
    the batches cost over the floor, apart from the CPU the clients take on this machine."""
    with Database.connect(url) as db:
        _floor_table(db, rows, trigger=True)
        fill = phases.Backfill(1, "floor_users", "full_name = name", "full_name IS DISTINCT FROM name", 1)
        done = backfill.run(db, "bench_alone", fill, limits, lambda _line: None)
        db.execute("DELETE FROM pgshift.backfills WHERE id = 'bench_alone'; DROP TABLE floor_users; "
                   "DROP FUNCTION floor_sync()")
    return rows / done.seconds


def _floor_table(db: Database, rows: int, trigger: bool) -> None:
    db.execute("CREATE TABLE floor_users (id bigint PRIMARY KEY, name text NOT NULL, full_name text); "
               f"INSERT INTO floor_users SELECT g, 'user ' || g FROM generate_series(1, {rows}) g; "
               "ANALYZE floor_users; CHECKPOINT;")
    if trigger:
        db.execute("CREATE FUNCTION floor_sync() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   "NEW.full_name := NEW.name; RETURN NEW; END $$; "
                   "CREATE TRIGGER floor_sync BEFORE INSERT OR UPDATE ON floor_users FOR EACH ROW WHEN "
                   "(current_setting('pgshift.backfill', true) IS DISTINCT FROM 'on') "
                   "EXECUTE FUNCTION floor_sync()")


def floor_rate(url: DatabaseUrl, rows: int, trigger: bool) -> float:
    """Rows per second of the same copy as one bare UPDATE of a fresh table, no clients: the floor.
    With ``trigger``, the table has a row trigger like the rename's, which skips the update (its WHEN
    is false, as for a backfill batch) but still makes the server lock each row before it."""
    with Database.connect(url) as db:
        _floor_table(db, rows, trigger)
        if trigger:
            db.execute("SET pgshift.backfill = 'on'")
        began = time.perf_counter()
        db.execute("UPDATE floor_users SET full_name = name")
        took = time.perf_counter() - began
        db.execute("RESET pgshift.backfill; DROP TABLE floor_users; DROP FUNCTION IF EXISTS floor_sync()")
    return rows / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=float, default=1e6)
    parser.add_argument("--url", help=URL_HELP)
    parser.add_argument("--batch-seconds", type=float, default=None, help="the backfill's target batch time")
    parser.add_argument("--before", type=float, default=2.0, help="seconds of load before the expand")
    parser.add_argument("--min-rate", type=float, default=0.0, help="exit 1 below this many rows/s")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = int(args.rows)
    with admin_url(args.url) as admin, tempfile.TemporaryDirectory() as scratch:
        name = throwaway.name("scratch", "backfill")
        with Database.connect(admin) as db:
            throwaway.create(db, name)
        try:
            report = run(admin.with_dbname(name), Path(scratch), rows, args)
        finally:
            throwaway.drop_quietly(admin, name)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        show(report)
    if report["errors"] or not report["rows_correct"] or report["rows_per_s"] < args.min_rate:
        raise SystemExit(1)


def run(url: DatabaseUrl, scratch: Path, rows: int, args: argparse.Namespace) -> dict[str, Any]:
    folder = scratch / "migrations"
    folder.mkdir()
    (folder / f"{TABLE}.sql").write_text(
        "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);\n"
        f"INSERT INTO users SELECT g, 'user ' || g FROM generate_series(1, {rows}) g;\nANALYZE users;\n")
    config: dict[str, Any] = {"migrations_dir": str(folder), "logs_dir": str(scratch / "logs"),
                              "backups_dir": str(scratch / "backups"), "old_release": "bench-old%"}
    if args.batch_seconds is not None:
        config["backfill_batch_seconds"] = args.batch_seconds
    conf = replace(settings.load(scratch, config, env={}), url=url)
    api.migrate(conf)
    forward, rollback = rename.render(RENAME, rename.Rename("users", "name", "full_name", "text"))
    (folder / f"{RENAME}.sql").write_text(forward)
    (folder / f"{RENAME}.rollback.sql").write_text(rollback)

    marks: dict[str, float] = {}
    old = Client(url, "name", rows, "bench-old")
    new = Client(url, "full_name", rows, "bench-new")

    def progress(line: str) -> None:
        if line.startswith(f"applied {RENAME}"):
            marks["backfill"] = time.monotonic()
            new.start()
        elif line.startswith(f"applying {RENAME}"):
            marks["expand"] = time.monotonic()

    old.connected()
    new.connected()
    old.start()
    time.sleep(args.before)
    api.migrate(conf, progress=progress)
    marks["backfill_end"] = time.monotonic()
    with Database.connect(url) as db:
        row = db.one("SELECT rows_scanned, extract(epoch FROM finished_at - started_at)::float8, batches, batch_size "
                     "FROM pgshift.backfills WHERE id = %s", [RENAME])
        mismatched = db.one("SELECT count(*) FROM users WHERE full_name IS DISTINCT FROM name")
    assert row is not None and mismatched is not None
    scanned, seconds, batches, last_size = row
    time.sleep(0.5)
    old.finish()
    marks["complete"] = time.monotonic()
    api.deploy_complete(conf)
    marks["complete_end"] = time.monotonic()
    time.sleep(0.5)
    new.finish()
    with Database.connect(url) as db:
        missing = db.one("SELECT count(*) FROM users WHERE full_name IS NULL")
    assert missing is not None

    spans = [("before", 0.0, marks["expand"]), ("expand", marks["expand"], marks["backfill"]),
              ("backfill", marks["backfill"], marks["backfill_end"]), ("complete", marks["complete"],
                                                                       marks["complete_end"] + 0.5)]
    latency = {client: {phase: percentiles([s for when, s in c.samples if start <= when < end])
                        for phase, start, end in spans}
               for client, c in (("old", old), ("new", new))}
    longest = max((s for c in (old, new) for _when, s in c.samples), default=0.0)
    rate = scanned / seconds if seconds else 0.0
    floor = floor_rate(url, rows, trigger=False)
    floor_trigger = floor_rate(url, rows, trigger=True)
    alone = alone_rate(url, rows, Limits.of(conf))
    return {"rows": rows, "rows_per_s": round(rate), "target_rows_per_s": TARGET_RATE,
            "floor_rows_per_s": round(floor), "ratio_to_floor": round(rate / floor, 2),
            "floor_trigger_rows_per_s": round(floor_trigger), "ratio_to_floor_trigger": round(rate / floor_trigger, 2),
            "alone_rows_per_s": round(alone), "alone_ratio_to_floor_trigger": round(alone / floor_trigger, 2),
            "ratio_to_target": round(rate / TARGET_RATE, 2), "backfill_s": round(seconds, 2),
            "batches": batches, "last_batch_size": last_size,
            "expand_ms": round((marks["backfill"] - marks["expand"]) * 1000, 1),
            "complete_ms": round((marks["complete_end"] - marks["complete"]) * 1000, 1),
            "errors": {"old": len(old.errors), "new": len(new.errors)}
            if old.errors or new.errors else {},
            "first_errors": (old.errors + new.errors)[:3], "latency": latency,
            "longest_op_ms": round(longest * 1000, 1),
            "rows_correct": mismatched[0] == 0 and missing[0] == 0}


def show(r: dict[str, Any]) -> None:
    print(f"backfill: {r['rows']:,} rows in {r['backfill_s']} s = {r['rows_per_s']:,} rows/s "
          f"({r['ratio_to_target']}x the {r['target_rows_per_s']:,} target), {r['batches']} batches, "
          f"last batch {r['last_batch_size']:,} rows")
    print(f"floor: one bare UPDATE of the same rows, no clients: {r['floor_rows_per_s']:,} rows/s; "
          f"ours / floor = {r['ratio_to_floor']}")
    print(f"floor with the rename's row trigger in place (skipped by WHEN, but each row locked first): "
          f"{r['floor_trigger_rows_per_s']:,} rows/s; ours / that floor = {r['ratio_to_floor_trigger']}")
    print(f"the same backfill with no clients running, on such a copy: {r['alone_rows_per_s']:,} rows/s = "
          f"{r['alone_ratio_to_floor_trigger']} of that floor (the rest is the CPU the clients take)")
    print(f"expand {r['expand_ms']} ms, complete {r['complete_ms']} ms; rows correct: {r['rows_correct']}")
    print(f"errors: {r['errors'] or 'none'}" + (f" e.g. {r['first_errors'][0]}" if r["first_errors"] else ""))
    print(f"longest single client operation: {r['longest_op_ms']} ms (target under 200)")
    print(f"{'client':8} {'phase':10} {'ops':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for client, by_phase in r["latency"].items():
        for phase, p in by_phase.items():
            if p["n"]:
                print(f"{client:8} {phase:10} {p['n']:>7} {p['p50_ms']:>8} {p['p99_ms']:>8} {p['max_ms']:>8}")


if __name__ == "__main__":
    main()
