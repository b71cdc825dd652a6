"""Benchmark of schema as code, as whole processes: generated migrations, drift, models.

    .venv/bin/python bench/schema.py [--migrations 100] [--repeat 3] [--url postgresql://...]

Without --url it uses a private embedded PostgreSQL 18 (started and stopped here). With N migrations
applied (a table and an index each) and a schema.sql that declares them all:
  migrate NAME:   inv dev.migrate NAME where schema.sql gained one table (generate, write, apply)
  in sync:        inv dev.migrate NAME where nothing changed (the diff alone; nothing written)
  status:         inv dev.status, inv dev.status --drift (replays the N migrations into a shadow),
                  and a bare Python process that imports invoke and psycopg and runs one query
  generate:       inv dev.generate (models for N tables, written and import-checked)
Figures are medians of --repeat runs; the ratio is against the bare Python process.
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

from pgshift.databases import target  # noqa: E402
from pgshift.dburl import DatabaseUrl  # noqa: E402

BIN = Path(sys.executable).parent
INV = str(BIN / "inv")


def table_sql(n: int) -> str:
    return (f"CREATE TABLE t_{n} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, "
            f"parent_id bigint REFERENCES t_{max(n - 1, 1)} (id));\nCREATE INDEX t_{n}_name ON t_{n} (name);\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--migrations", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--url", help=URL_HELP)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pgshift-bench-work-"))
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with admin_url(args.url) as admin:
        target.create_database(admin, name)
        try:
            rows = run(admin.with_dbname(name), work, args.migrations, args.repeat)
        finally:
            target.drop_database(admin, name)
            shutil.rmtree(work, ignore_errors=True)
    print(f"server: {admin.host}:{admin.port}   medians of {args.repeat} runs, whole processes")
    print(f"{'case':<34}{'seconds':>9}{'ratio':>8}")
    for case, seconds, ratio in rows:
        print(f"{case:<34}{seconds:>9.3f}{ratio:>7.1f}x")


def run(url: DatabaseUrl, work: Path, count: int, repeat: int) -> list[tuple[str, float, float]]:
    mig = work / "migrations"
    mig.mkdir()
    schema = work / "schema.sql"
    for n in range(1, count + 1):
        ident = f"2025{n:010d}_table_{n}"
        (mig / f"{ident}.sql").write_text(table_sql(n))
        (mig / f"{ident}.rollback.sql").write_text(f"DROP TABLE t_{n};\n")
    schema.write_text("".join(table_sql(n) for n in range(1, count + 1)))
    env = env_for(url, mig)
    subprocess.run([INV, "--list"], cwd=ROOT, env=env, capture_output=True, check=False)  # bytecode caches
    timed([INV, "dev.migrate"], env)

    generated, in_sync = [], []
    for r in range(repeat):
        with schema.open("a") as handle:
            handle.write(f"CREATE TABLE extra_{r} (id int PRIMARY KEY, t_1_id bigint REFERENCES t_1 (id));\n"
                         f"CREATE INDEX t_1_name_lower_{r} ON t_1 (lower(name));\n")
        generated.append(timed([INV, "dev.migrate", f"extra_{r}"], env))
        in_sync.append(timed([INV, "dev.migrate", f"none_{r}"], env))
    bare = [sys.executable, "-c",
            "import invoke, psycopg, os\n"
            "with psycopg.connect(os.environ['DATABASE_URL']) as c: c.execute('SELECT 1').fetchone()"]
    floor = statistics.median(timed(bare, env) for _ in range(repeat))
    status = statistics.median(timed([INV, "dev.status"], env) for _ in range(repeat))
    drift = statistics.median(timed([INV, "dev.status", "--drift"], env) for _ in range(repeat))
    models = work / "models.py"
    generate = statistics.median(timed([INV, "dev.generate", "--output", str(models)], env) for _ in range(repeat))
    total = count + repeat
    return [
        ("bare python (floor)", floor, 1.0),
        (f"status, {total} applied", status, status / floor),
        (f"status --drift, {total} applied", drift, drift / floor),
        (f"dev.migrate NAME on {count}+", statistics.median(generated), statistics.median(generated) / floor),
        (f"dev.migrate NAME in sync, {total}", statistics.median(in_sync), statistics.median(in_sync) / floor),
        (f"dev.generate, {count + repeat} tables", generate, generate / floor),
    ]


if __name__ == "__main__":
    main()
