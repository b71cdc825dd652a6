"""Benchmark of a fleet deploy: the same migrations over N databases, at several --parallel widths.

    .venv/bin/python bench/fleet.py [--databases 100] [--migrations 5] [--parallel 1,4,16] [--skip-backup]
                                    [--url postgresql://...]

Without --url it uses a private embedded PostgreSQL 18 (started and stopped here). For each width,
N fresh databases and one ``inv fleet.deploy --yes --no-rehearse --parallel P`` as a whole process
(production: each target backed up, maintenance, history, log). Printed per width: the wall time,
the median and slowest single target, the ideal (the first width's median target x ceil(N / P): what P
lanes that never slow each other down would take), the wall time's ratio to it, the ratio to the
slowest target x the waves of the run (the bound if each wave took its slowest target only), the
speed-up over the first width, the CPU the run's own processes used per target (the runner and its
pg_dump children; the server's is not counted) and the load average when the width ended. The target,
on a machine with cores to spare: --parallel 16 at least 5x faster than --parallel 1 (the targets of
one server share its CPUs, so fewer cores than P cap the speed-up).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _harness import URL_HELP, admin_url, env_for  # noqa: E402

from pgshift.databases import target  # noqa: E402
from pgshift.dburl import DatabaseUrl  # noqa: E402

INV = str(Path(sys.executable).parent / "inv")


def write_set(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(1, count + 1):
        ident = f"2025{n:010d}_table_{n}"
        (folder / f"{ident}.sql").write_text(f"CREATE TABLE t_{n} (id bigint PRIMARY KEY, name text NOT NULL);\n")
        (folder / f"{ident}.rollback.sql").write_text(f"DROP TABLE t_{n};\n")


def fleet_file(path: Path, admin: DatabaseUrl, names: list[str]) -> None:
    socket = admin.host is not None and admin.host.startswith("/")
    lines = ["[fleet]\nwave_size = 1000\nmax_failures = 0\n"]
    for name in names:
        where = f"/{name}?host={admin.host}&port={admin.port}" if socket else f"{admin.host}:{admin.port}/{name}"
        auth = f"{admin.user}:${{BENCH_PASSWORD}}@" if admin.password else f"{admin.user}@"
        lines.append(f'[[targets]]\nname = "{name}"\nurl = "postgresql://{auth}{where}"\n')
    path.write_text("\n".join(lines))


class Figures(NamedTuple):
    wall: float
    median: float
    slowest: float
    waves: int
    cpu: float   # seconds of CPU of the runner process and its children (pg_dump, pg_restore)
    load: float  # the 1-minute load average at the end


def one_width(admin: DatabaseUrl, work: Path, folder: Path, databases: int, width: int,
              skip_backup: bool = False) -> Figures:
    names = [f"bench_fleet_{uuid.uuid4().hex[:10]}" for _ in range(databases)]
    pool = ThreadPoolExecutor(max_workers=8)
    try:
        list(pool.map(lambda name: target.create_database(admin, name), names))
        file = work / f"fleet_{width}.toml"
        fleet_file(file, admin, names)
        env = env_for(admin, folder, "production", INVOKE_PGSHIFT_BACKUPS_DIR=str(work / "backups"),
                      INVOKE_PGSHIFT_LOGS_DIR=str(work / "logs"), BENCH_PASSWORD=admin.password or "",
                      **({"SKIP_BACKUP": "1"} if skip_backup else {}))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run([INV, "fleet.deploy", "--yes", "--no-rehearse", "--json", "--parallel", str(width),
                               "--fleet", str(file)], cwd=ROOT, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, check=False)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        if done.returncode != 0:
            raise SystemExit(f"fleet.deploy --parallel {width} failed ({done.returncode}): "
                             f"{(done.stderr or done.stdout).strip()[-800:]}")
        report = json.loads(done.stdout)
        seconds = [t["seconds"] for t in report["targets"]]
        return Figures(wall, statistics.median(seconds), max(seconds), len(report["waves"]), cpu, os.getloadavg()[0])
    finally:
        list(pool.map(lambda name: target.drop_database(admin, name), names))
        pool.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", type=int, default=100)
    parser.add_argument("--migrations", type=int, default=5)
    parser.add_argument("--parallel", default="1,4,16", help="the widths to measure, comma-separated")
    parser.add_argument("--url", help=URL_HELP)
    parser.add_argument("--skip-backup", action="store_true",
                        help="SKIP_BACKUP=1: no pg_dump per target, to see the share of the backups")
    args = parser.parse_args()
    widths = [int(w) for w in args.parallel.split(",") if w.strip()]
    work = Path(tempfile.mkdtemp(prefix="pgshift-bench-fleet-"))
    try:
        folder = work / "migrations"
        write_set(folder, args.migrations)
        with admin_url(args.url) as admin:
            load = os.getloadavg()[0]
            figures = [(w, one_width(admin, work, folder, args.databases, w, args.skip_backup)) for w in widths]
            where = "embedded PostgreSQL 18" if admin.host and admin.host.startswith("/") else str(admin)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"fleet benchmark on {where}: {args.databases} databases, {args.migrations} migrations each"
          f"{' (SKIP_BACKUP)' if args.skip_backup else ''}; "
          f"{os.cpu_count()} CPUs, load average {load:.1f} at the start")
    print("  parallel      wall  median target  slowest     ideal  wall/ideal  wall/(slowest x waves)  speed-up"
          "  CPU/target  load")
    first = figures[0][1]
    for width, f in figures:
        ideal = first.median * math.ceil(args.databases / width)
        bound = f.slowest * f.waves
        print(f"  {width:8d}  {f.wall:7.2f} s  {f.median:11.2f} s  {f.slowest:5.2f} s  {ideal:6.2f} s  "
              f"{f.wall / ideal:10.2f}  {f.wall / bound:22.2f}  {first.wall / f.wall:7.2f}x  "
              f"{f.cpu / args.databases * 1000:7.0f} ms  {f.load:4.1f}")


if __name__ == "__main__":
    main()
