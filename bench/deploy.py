"""Benchmark of a deploy's cost over a plain migrate, as whole processes.

    .venv/bin/python bench/deploy.py [--migrations 50] [--rows 200000] [--repeat 3] [--url postgresql://...]

Without --url it uses a private embedded PostgreSQL 18 (started and stopped here). The target holds
one table of --rows rows (so the backup and the rehearsal's clone have data to copy); then, medians of
--repeat runs, each on a fresh copy:
  inv dev.migrate                 the floor: apply the N pending migrations, nothing else
  inv prod.deploy --yes           + preflight, backup, maintenance on/off, history, log
  inv deploy --yes                + the rehearsal on a clone (apply, roll back, re-apply, checks)
  inv deploy --dry-run            the plan alone (drift on, and off)
  inv prod.deploy, Slack hanging  one pending migration with a webhook that never answers, against
                                  the same deploy with no webhook: what a dead Slack costs
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _harness import URL_HELP, admin_url, env_for, timed  # noqa: E402

from pgshift.databases import target  # noqa: E402
from pgshift.databases.db import Database  # noqa: E402
from pgshift.dburl import DatabaseUrl  # noqa: E402

INV = str(Path(sys.executable).parent / "inv")


def write_set(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(1, count + 1):
        ident = f"2025{n:010d}_table_{n}"
        (folder / f"{ident}.sql").write_text(f"CREATE TABLE t_{n} (id bigint PRIMARY KEY, name text NOT NULL);\n")
        (folder / f"{ident}.rollback.sql").write_text(f"DROP TABLE t_{n};\n")


def deploy_env(url: DatabaseUrl, work: Path, folder: Path, **extra: str) -> dict[str, str]:
    return env_for(url, folder, "production", INVOKE_PGSHIFT_BACKUPS_DIR=str(work / "backups"),
                   INVOKE_PGSHIFT_LOGS_DIR=str(work / "logs"), **extra)


def seeded(admin: DatabaseUrl, rows: int) -> DatabaseUrl:
    """A new database holding one table of ``rows`` rows."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    target.create_database(admin, name)
    url = admin.with_dbname(name)
    with Database.connect(url) as db:
        db.execute("CREATE TABLE payload (id bigint PRIMARY KEY, body text NOT NULL); "
                   f"INSERT INTO payload SELECT g, md5(g::text) FROM generate_series(1, {rows}) g; ANALYZE payload;")
    return url


class Hanging(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        time.sleep(30)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--migrations", type=int, default=50)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--url", help=URL_HELP)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pgshift-bench-work-"))
    created: list[str] = []
    with admin_url(args.url) as admin:
        try:
            run(admin, work, args.migrations, args.rows, args.repeat, created)
        finally:
            for name in created:
                target.drop_database(admin, name)
            shutil.rmtree(work, ignore_errors=True)


def run(admin: DatabaseUrl, work: Path, count: int, rows: int, repeat: int, created: list[str]) -> None:
    many, one = work / "many", work / "one"
    write_set(many, count)
    write_set(one, 1)

    def fresh() -> DatabaseUrl:
        url = seeded(admin, rows)
        created.append(url.dbname)
        return url

    def measure(argv: list[str], folder: Path, **extra: str) -> float:
        samples = []
        for _ in range(repeat):
            url = fresh()
            samples.append(timed(argv, deploy_env(url, work, folder, **extra)))
        return statistics.median(samples)

    timed([INV, "--list"], deploy_env(admin, work, many))  # bytecode caches first
    no_drift = {"INVOKE_PGSHIFT_PREFLIGHT_DRIFT": "0"}
    figures = [
        (f"inv dev.migrate ({count} pending, the floor)",
         measure([INV, "dev.migrate"], many, ENVIRONMENT="development")),
        (f"inv prod.deploy --yes ({count} pending)", measure([INV, "prod.deploy", "--yes"], many)),
        (f"inv deploy --yes ({count} pending, rehearsed)", measure([INV, "deploy", "--yes"], many)),
        (f"inv deploy --dry-run ({count} pending)", measure([INV, "deploy", "--dry-run"], many)),
        (f"inv deploy --dry-run ({count} pending, no drift)", measure([INV, "deploy", "--dry-run"], many, **no_drift)),
        ("inv prod.deploy --yes (1 pending, no Slack)", measure([INV, "prod.deploy", "--yes"], one, **no_drift)),
    ]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hanging)
    server.daemon_threads = True
    server.block_on_close = False
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_port}/services/T0/B0/bench"
    figures.append(("inv prod.deploy --yes (1 pending, Slack hanging)",
                    measure([INV, "prod.deploy", "--yes"], one, SLACK_WEBHOOK_URL=hook, **no_drift)))
    server.shutdown()
    where = "embedded PostgreSQL 18" if admin.host and admin.host.startswith("/") else str(admin)
    print(f"deploy benchmark on {where}: {rows:,} rows in the target, median of {repeat}")
    width = max(len(name) for name, _ in figures)
    for name, seconds in figures:
        print(f"  {name.ljust(width)}  {seconds:6.2f} s")


if __name__ == "__main__":
    main()
