"""Backup and restore speed against bare pg_dump / pg_restore, and our memory as the database grows.

    .venv/bin/python bench/backup.py                      # 1024 MB and 256 MB databases
    .venv/bin/python bench/backup.py --sizes 200 50       # smaller, quicker
    .venv/bin/python bench/backup.py --url postgresql://postgres@127.0.0.1:5432/postgres

For each size it generates a database server-side (generate_series: a wide table with a primary key
and a narrow one with an index), then in the same run times, one after the other:

    bare dump     pg_dump --format=custom --compress=0 --file=...      (the format backups use)
    our backup    pgshift.backups.files.take: the same pg_dump, plus fsync, SHA-256, table-of-contents
                  check and manifest
    bare restore  CREATE DATABASE + pg_restore --exit-on-error into it
    our restore   pgshift.backups.restore.restore (SKIP_BACKUP): checksum and contents check, a scratch
                  database shaped like the target, pg_restore, swap, drop the old one. DROP DATABASE
                  forces a checkpoint, which bare pg_restore never pays, so the time until the
                  restored database is in place is shown too.

Ratios are ours / bare (target: within 1.05). Each of our operations runs in a fresh Python process,
so its peak RSS (ru_maxrss) is that operation's alone; the data streams through pg_dump / pg_restore
and through our SHA-256 in 4 MB reads, so it must not grow with the database. The defaults use a
private embedded PostgreSQL 18 under /tmp.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pgshift import settings  # noqa: E402
from pgshift.backups import files as backups  # noqa: E402
from pgshift.backups import restore, swap  # noqa: E402
from pgshift.databases import embedded, pgbin, target  # noqa: E402
from pgshift.databases.children import env_for  # noqa: E402
from pgshift.databases.db import Database  # noqa: E402
from pgshift.dburl import DatabaseUrl  # noqa: E402

ROW_BYTES = 190  # heap bytes per row of the wide table, measured; sizes are approximate


def generate(admin: DatabaseUrl, name: str, megabytes: int) -> DatabaseUrl:
    target.drop_database(admin, name)
    target.create_database(admin, name)
    url = admin.with_dbname(name)
    rows = megabytes * 1_000_000 * 9 // 10 // ROW_BYTES
    with Database.connect(url) as db:
        db.execute(
            "CREATE TABLE wide AS SELECT g AS id, md5(g::text) || repeat('x', 96) AS payload, "
            f"(g % 1000)::int AS bucket, now() - g * interval '1 second' AS at FROM generate_series(1, {rows}) g; "
            "ALTER TABLE wide ADD PRIMARY KEY (id); "
            "CREATE TABLE narrow AS SELECT g AS id, g % 97 AS k FROM generate_series(1, "
            f"{rows // 4}) g; CREATE INDEX narrow_k ON narrow (k)")
        db.execute("VACUUM ANALYZE")
        size = db.one("SELECT pg_database_size(current_database())")
    print(f"  generated {name}: {size[0] / 1e6 if size else 0:.0f} MB", flush=True)
    return url


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL)
    return time.monotonic() - started


def ours(operation: str, url: DatabaseUrl, root: Path, backup: str = "") -> dict[str, Any]:
    """Run one of our operations in a fresh process; returns its time and peak memory."""
    done = subprocess.run([sys.executable, __file__, "--child", operation, "--url", _secret_url(url),
                           "--root", str(root), "--backup", backup], check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def child(operation: str, url: DatabaseUrl, root: Path, backup: str) -> None:
    loaded = settings.load(root, {"backups_dir": str(root / "backups")}, env={"SKIP_BACKUP": "1"})
    config = replace(loaded, url=url)
    dropping = [0.0]
    drop_replaced = swap.drop_replaced

    def timed_drop(db: Database, old: str) -> None:
        began = time.monotonic()
        drop_replaced(db, old)
        dropping[0] = time.monotonic() - began

    swap.drop_replaced = timed_drop  # type: ignore[assignment]
    started = time.monotonic()
    path = ""
    if operation == "backup":
        path = str(backups.take(config).path)
    else:
        restore.restore(config, backup)
    elapsed = time.monotonic() - started
    print(json.dumps({"seconds": elapsed, "path": path, "drop_s": dropping[0],
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _secret_url(url: DatabaseUrl) -> str:
    text = str(url)
    return text.replace(":***@", f":{url.password}@", 1) if url.password else text


def run_size(admin: DatabaseUrl, megabytes: int, work: Path, rounds: int) -> list[tuple[str, float, dict[str, Any]]]:
    print(f"database of ~{megabytes} MB", flush=True)
    url = generate(admin, f"pgshift_bench_{megabytes}", megabytes)
    root = work / f"size{megabytes}"
    (root / "backups").mkdir(parents=True)
    env = env_for(url)
    bare_file = root / "bare.dump"
    copy = f"{url.dbname}_bare"
    bare_dump = bare_restore = float("inf")
    our_dump: dict[str, Any] = {"seconds": float("inf")}
    our_restore: dict[str, Any] = {"seconds": float("inf")}
    for _ in range(rounds):
        bare_file.unlink(missing_ok=True)
        bare_dump = min(bare_dump, timed([str(pgbin.program("pg_dump")), "--format=custom", "--compress=0",
                                          "--no-password", f"--file={bare_file}", url.dbname], env))
        our_dump = min(our_dump, ours("backup", url, root), key=lambda r: float(r["seconds"]))
        target.drop_database(admin, copy)
        started = time.monotonic()
        target.create_database(admin, copy)
        subprocess.run([str(pgbin.program("pg_restore")), "--exit-on-error", "--no-password", f"--dbname={copy}",
                        str(bare_file)], env=env, check=True, stdin=subprocess.DEVNULL)
        bare_restore = min(bare_restore, time.monotonic() - started)
        target.drop_database(admin, copy)
        our_restore = min(our_restore, ours("restore", url, root, our_dump["path"]), key=lambda r: float(r["seconds"]))
    target.drop_database(admin, url.dbname)
    shutil.rmtree(root)
    return [("backup", bare_dump, our_dump), ("restore", bare_restore, our_restore)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 256], help="database sizes in MB")
    parser.add_argument("--rounds", type=int, default=1, help="repeat each timing, keep the fastest")
    parser.add_argument("--url", help="admin URL of the server (default: a private embedded PostgreSQL 18)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--backup", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, DatabaseUrl.parse(args.url), Path(args.root), args.backup)
        return
    work = Path(tempfile.mkdtemp(prefix="pgshift-bench-", dir="/tmp"))
    work.chmod(0o755)
    folder = None
    try:
        if args.url:
            admin = DatabaseUrl.parse(args.url)
        else:
            folder = work / "pg"
            admin = embedded.ensure_running(folder).url("postgres")
        with Database.connect(admin) as db:
            print(f"server {db.one('SHOW server_version')}; tools {pgbin.program('pg_dump')}", flush=True)
        results = {size: run_size(admin, size, work, args.rounds) for size in args.sizes}
    finally:
        if folder is not None:
            embedded.stop(folder)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'size':>7}  {'operation':<8} {'bare s':>8} {'ours s':>8} {'ratio':>6}  {'our peak RSS':>12}")
    for size, rows in results.items():
        for name, bare, mine in rows:
            print(f"{size:>4} MB  {name:<8} {bare:>8.2f} {mine['seconds']:>8.2f} {mine['seconds'] / bare:>6.3f}  "
                  f"{mine['rss_mb']:>9.0f} MB")
            if mine["drop_s"]:
                in_place = mine["seconds"] - mine["drop_s"]
                print(f"{'':>7}  {'':<8} {'':>8} {in_place:>8.2f} {in_place / bare:>6.3f}  in place; then "
                      f"{mine['drop_s']:.2f} s dropping the replaced database (PostgreSQL checkpoints)")


if __name__ == "__main__":
    main()
