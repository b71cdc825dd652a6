"""Benchmark of the migration core against its floor and its peers, as whole processes, in one run.

    .venv/bin/python bench/core.py [--migrations 500] [--repeat 5] [--url postgresql://...]

Without --url it uses a private embedded PostgreSQL 18 (started and stopped here). Measured:
  apply:     N migrations (a table and an index each) from empty: inv dev.migrate, psql -1 -f of the
             same SQL (the floor), yoyo apply (a peer), and the bound for any Python tool: the bare
             Python process below sending that same SQL as one transaction
             (its start-up plus the server's work: no Invoke tool can beat it)
  status:    with N applied: inv dev.status (drift included, as always), dev.status --no-drift, yoyo
             list, and a bare Python process that imports invoke and psycopg and runs one query (the
             floor for any Python tool)
  apply-one: one new migration on top of N: inv dev.migrate, yoyo apply, the bare Python process
Figures are medians of --repeat runs; ratios are against the floor of each row.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _harness import URL_HELP, admin_url, env_for, timed  # noqa: E402

from pgshift.databases import pgbin, target  # noqa: E402
from pgshift.dburl import DatabaseUrl  # noqa: E402

BIN = Path(sys.executable).parent


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def write_set(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    bodies = []
    for n in range(1, count + 1):
        ident = f"2025{n:010d}_table_{n}"
        body = (f"CREATE TABLE t_{n} (id bigint PRIMARY KEY, name text NOT NULL);\n"
                f"CREATE INDEX t_{n}_name ON t_{n} (name);\n")
        (folder / f"{ident}.sql").write_text(body)
        (folder / f"{ident}.rollback.sql").write_text(f"DROP TABLE t_{n};\n")
        bodies.append(body)
    return bodies


def yoyo_url(url: DatabaseUrl) -> str:
    host = url.host or ""
    if host.startswith("/"):
        return f"postgresql+psycopg://{url.user}@/{url.dbname}?host={host}&port={url.port}"
    return f"postgresql+psycopg://{url.user}@{host}:{url.port}/{url.dbname}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--migrations", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--url", help=URL_HELP)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pgshift-bench-work-"))
    try:
        with admin_url(args.url) as admin:
            run(admin, work, args.migrations, args.repeat)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fresh(admin: DatabaseUrl) -> DatabaseUrl:
    name = f"bench_{uuid.uuid4().hex[:10]}"
    target.create_database(admin, name)
    return admin.with_dbname(name)


def run(admin: DatabaseUrl, work: Path, count: int, repeat: int) -> None:
    mig = work / "migrations"
    bodies = write_set(mig, count)
    combined = work / "all.sql"
    combined.write_text("".join(bodies))
    inv, yoyo, psql = str(BIN / "inv"), str(BIN / "yoyo"), str(pgbin.program("psql"))
    created: list[DatabaseUrl] = []

    def new_db() -> DatabaseUrl:
        url = fresh(admin)
        created.append(url)
        return url

    rows: list[tuple[str, str, float, float]] = []
    warm = fresh(admin)
    created.append(warm)
    for argv in ([inv, "--list"], [inv, "dev.status"], [yoyo, "--help"]):  # write bytecode caches first
        subprocess.run(argv, cwd=ROOT, env=env_for(warm, mig), capture_output=True, check=False)
    try:
        bare_apply = [sys.executable, "-c",
                      "import invoke, psycopg, os, sys\n"
                      "sql = open(sys.argv[1], 'rb').read()\n"
                      "with psycopg.connect(os.environ['DATABASE_URL']) as c: c.execute(sql)", str(combined)]
        apply_ours, apply_psql, apply_yoyo, apply_bound = [], [], [], []
        for _ in range(repeat):
            url = new_db()
            apply_ours.append(timed([inv, "dev.migrate"], env_for(url, mig)))
            url = new_db()
            apply_psql.append(timed([psql, "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", "-f", str(combined)],
                                    env_for(url, mig)))
            url = new_db()
            apply_bound.append(timed(bare_apply, env_for(url, mig)))
            url = new_db()
            apply_yoyo.append(timed([yoyo, "apply", "--batch", "--no-config-file", "--database", yoyo_url(url),
                                     str(mig)], env_for(url, mig)))
        floor = median(apply_psql)
        rows += [(f"apply {count}", "psql -1 -f (floor)", floor, 1.0),
                 (f"apply {count}", "python bound", median(apply_bound), median(apply_bound) / floor),
                 (f"apply {count}", "inv dev.migrate", median(apply_ours), median(apply_ours) / floor),
                 (f"apply {count}", "yoyo apply", median(apply_yoyo), median(apply_yoyo) / floor)]

        ours_db, yoyo_db = created[-4], created[-1]  # fully migrated by the last round
        bare = [sys.executable, "-c",
                "import invoke, psycopg, os\n"
                "with psycopg.connect(os.environ['DATABASE_URL']) as c: c.execute('SELECT 1').fetchone()"]
        status_ours: list[float] = []
        status_plain: list[float] = []
        status_yoyo: list[float] = []
        status_bare: list[float] = []
        timed([inv, "dev.status"], env_for(ours_db, mig), ok=(0, 3))  # the first after an apply compares in full
        for _ in range(repeat):  # interleaved, so a change in the machine's load falls on every tool alike
            status_ours.append(timed([inv, "dev.status"], env_for(ours_db, mig), ok=(0, 3)))
            status_plain.append(timed([inv, "dev.status", "--no-drift"], env_for(ours_db, mig), ok=(0, 3)))
            status_yoyo.append(timed([yoyo, "list", "--no-config-file", "--database", yoyo_url(yoyo_db),
                                      str(mig)], env_for(yoyo_db, mig)))
            status_bare.append(timed(bare, env_for(ours_db, mig)))
        floor = median(status_bare)
        case = f"status, {count} applied"
        rows += [(case, "bare python (floor)", floor, 1.0),
                 (f"status with drift, {count} applied", "inv dev.status", median(status_ours),
                  median(status_ours) / floor),
                 (case, "dev.status --no-drift", median(status_plain), median(status_plain) / floor),
                 (case, "yoyo list", median(status_yoyo), median(status_yoyo) / floor)]

        one_ours, one_yoyo = [], []
        for n in range(repeat):
            ident = f"2026{n:010d}_extra_{n}"
            (mig / f"{ident}.sql").write_text(f"CREATE TABLE extra_{n} (id int PRIMARY KEY);\n")
            one_ours.append(timed([inv, "dev.migrate"], env_for(ours_db, mig)))
            one_yoyo.append(timed([yoyo, "apply", "--batch", "--no-config-file", "--database", yoyo_url(yoyo_db),
                                   str(mig)], env_for(yoyo_db, mig)))
        rows += [(f"apply one on {count}", "bare python (floor)", floor, 1.0),
                 (f"apply one on {count}", "inv dev.migrate", median(one_ours), median(one_ours) / floor),
                 (f"apply one on {count}", "yoyo apply", median(one_yoyo), median(one_yoyo) / floor)]
    finally:
        for url in created:
            target.drop_database(admin, url.dbname)

    print(f"server: {admin.host}:{admin.port}   medians of {repeat} runs, whole processes")
    print(f"{'case':<34}{'tool':<22}{'seconds':>9}{'ratio':>8}")
    for case, tool, seconds, ratio in rows:
        print(f"{case:<34}{tool:<22}{seconds:>9.3f}{ratio:>7.2f}x")


if __name__ == "__main__":
    main()
