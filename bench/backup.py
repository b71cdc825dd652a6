"""A whole backup cycle (dump, then restore) against the best bare pg_dump / pg_restore for the same size.

    .venv/bin/python bench/backup.py                      # a ~4 GB database
    .venv/bin/python bench/backup.py --gb 1               # quicker
    .venv/bin/python bench/backup.py --url postgresql://postgres@127.0.0.1:5432/postgres

It generates a database server-side (generate_series: a wide table with a primary key and a narrow
one with an index), then times, one after the other, each bare configuration's dump and its restore
into a new database:

    plain         pg_dump --format=plain, then psql --single-transaction -f
    custom -Z0    pg_dump --format=custom --compress=0, then pg_restore
    dir -j 2      pg_dump --format=directory --compress=0 --jobs=2, then pg_restore --jobs=2

and ours with the default settings: ``pgshift.backups.files.take`` (from ``backup_parallel_bytes`` up,
the directory format with parallel jobs; plus fsync, per-file SHA-256, table-of-contents check and
manifest), then ``pgshift.backups.restore.restore`` (SKIP_BACKUP: checksums and contents checked,
a scratch database shaped like the target, pg_restore, the swap). Our restore reports once the
restored database is in place and drops the replaced one after (DROP DATABASE waits for a
checkpoint, which no bare restore pays): the cycle counts the time until it is in place, and the
drop is shown beside it. The ratio is our cycle over the best bare cycle (target: within 1.05).
Last, the clone a rehearsal makes while a session is open on the database (schema and a sample of
each table's rows: seconds, where a whole copy takes as long as a restore).
Each of our operations runs in a fresh Python process. The defaults use a private embedded
PostgreSQL 18 under /tmp.
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
from pgshift.databases import embedded, pgbin, target, throwaway  # noqa: E402
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
    subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
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


def _new_database(admin: DatabaseUrl, name: str) -> None:
    target.drop_database(admin, name)
    target.create_database(admin, name)


BARE: dict[str, tuple[list[str], list[str]]] = {  # name: (pg_dump options, restore options)
    "plain": (["--format=plain"], []),
    "custom -Z0": (["--format=custom", "--compress=0"], []),
    "dir -j 2": (["--format=directory", "--compress=0", "--jobs=2"], ["--jobs=2"]),
}


def bare_cycle(admin: DatabaseUrl, url: DatabaseUrl, name: str, root: Path) -> tuple[float, float]:
    dump_options, restore_options = BARE[name]
    out = root / "bare"
    shutil.rmtree(out, ignore_errors=True)
    out.unlink(missing_ok=True)
    env = env_for(url)
    dumped = timed([str(pgbin.program("pg_dump")), *dump_options, "--no-password", f"--file={out}", url.dbname], env)
    copy = f"{url.dbname}_bare"
    started = time.monotonic()
    _new_database(admin, copy)
    if name == "plain":
        subprocess.run([str(pgbin.program("psql")), "--no-psqlrc", "--quiet", "--no-password", "--set=ON_ERROR_STOP=1",
                        "--single-transaction", f"--file={out}", copy], env=env, check=True, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL)
    else:
        subprocess.run([str(pgbin.program("pg_restore")), "--exit-on-error", "--no-password", *restore_options,
                        f"--dbname={copy}", str(out)], env=env, check=True, stdin=subprocess.DEVNULL)
    restored = time.monotonic() - started
    target.drop_database(admin, copy)
    shutil.rmtree(out, ignore_errors=True)
    out.unlink(missing_ok=True)
    return dumped, restored


def run_size(admin: DatabaseUrl, gigabytes: float, work: Path, rounds: int) -> dict[str, tuple[float, float, float]]:
    """name -> (dump s, restore s until in place, drop s afterwards), the fastest of ``rounds``."""
    megabytes = int(gigabytes * 1024)
    print(f"database of ~{megabytes} MB", flush=True)
    url = generate(admin, f"pgshift_bench_{megabytes}", megabytes)
    root = work / f"size{megabytes}"
    (root / "backups").mkdir(parents=True)
    results: dict[str, tuple[float, float, float]] = {}
    for _ in range(rounds):
        for name in BARE:
            dumped, restored = bare_cycle(admin, url, name, root)
            print(f"  {name}: dump {dumped:.1f} s, restore {restored:.1f} s", flush=True)
            if name not in results or dumped + restored < sum(results[name][:2]):
                results[name] = (dumped, restored, 0.0)
        backup = ours("backup", url, root)
        put = ours("restore", url, root, backup["path"])
        in_place = put["seconds"] - put["drop_s"]
        print(f"  ours ({Path(backup['path']).suffix}): backup {backup['seconds']:.1f} s, restore {in_place:.1f} s "
              f"in place, then {put['drop_s']:.1f} s dropping the replaced copy", flush=True)
        if "ours" not in results or backup["seconds"] + in_place < sum(results["ours"][:2]):
            results["ours"] = (backup["seconds"], in_place, put["drop_s"])
        shutil.rmtree(root / "backups")
        (root / "backups").mkdir()
    with Database.connect(url):  # the application is connected: no template copy, a sample instead
        started = time.monotonic()
        with throwaway.clone_or_sample(admin, url.dbname, sample_rows=settings.DEFAULTS["rehearsal_sample_rows"]):
            sampled = time.monotonic() - started
    print(f"  rehearsal clone with a session open: {sampled:.1f} s (schema and a sample of each table)", flush=True)
    results["rehearsal clone"] = (sampled, 0.0, 0.0)
    target.drop_database(admin, url.dbname)
    shutil.rmtree(root)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gb", type=float, default=4, help="database size in GB (default 4)")
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
        results = run_size(admin, args.gb, work, args.rounds)
    finally:
        if folder is not None:
            embedded.stop(folder)
        shutil.rmtree(work, ignore_errors=True)
    rehearsal = results.pop("rehearsal clone")[0]
    best = min((n for n in results if n != "ours"), key=lambda n: sum(results[n][:2]))
    floor = sum(results[best][:2])
    print(f"\n{args.gb:g} GB   {'dump s':>8} {'restore s':>10} {'cycle s':>8} {'/ best':>7}")
    for name, (dumped, restored, dropped) in results.items():
        cycle = dumped + restored
        extra = f"   then {dropped:.1f} s dropping the replaced copy" if name == "ours" else ""
        print(f"{name:<12} {dumped:>8.1f} {restored:>10.1f} {cycle:>8.1f} {cycle / floor:>7.3f}{extra}")
    print(f"ours / best bare ({best}): {sum(results['ours'][:2]) / floor:.3f} (target: within 1.05)")
    print(f"rehearsal clone of the database with a session open: {rehearsal:.1f} s")


if __name__ == "__main__":
    main()
