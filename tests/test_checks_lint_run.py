"""lint: DROP INDEX without CONCURRENTLY matters only for an index on a table that existed before the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgshift.checks import lint
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.migrations import source
from tests.conftest import write_migration


def test_dropping_an_index_made_in_this_run_on_a_new_table_is_clean(migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20240101000000_orders", "CREATE TABLE orders (id bigint PRIMARY KEY, x int);\n"
                    "CREATE INDEX orders_x ON orders (x);")
    write_migration(migrations_dir, "20240102000000_drop_x", "DROP INDEX orders_x;")
    write_migration(migrations_dir, "20240103000000_drop_old", "DROP INDEX IF EXISTS legacy_idx;")
    migrations = source.read(migrations_dir)
    pending = lint.lint(migrations, only={m.id for m in migrations})
    assert [(f.migration, f.rule) for f in pending.findings] == [
        ("20240103000000_drop_old", "require-concurrent-index-deletion")]  # an index no migration made: unknown
    later = lint.lint(migrations, only={migrations[1].id}, existing={"public.orders"})
    assert [f.rule for f in later.findings] == ["require-concurrent-index-deletion"]  # orders existed already


def test_a_finding_on_a_table_that_exists_names_its_size_on_the_target(db_url: DatabaseUrl, migrations_dir: Path,
                                                                        make_settings: Any) -> None:
    from pgshift import api

    write_migration(migrations_dir, "20240101000000_orders", "create table orders (id bigint primary key, total int);")
    settings = make_settings(db_url)
    api.migrate(settings)
    with Database.connect(db_url) as db:
        db.execute("insert into orders select g, g from generate_series(1, 5000) g; analyze orders")
    write_migration(migrations_dir, "20240102000000_index_total", "create index orders_total on orders (total);")
    write_migration(migrations_dir, "20240103000000_fresh", "create table fresh (id int);\n"
                    "create index fresh_id on fresh (id);")
    report = api.lint(settings)
    (finding,) = report.findings
    assert finding.rule == "require-concurrent-index-creation"
    assert "(orders on the target: ~5,000 rows, " in finding.message and " MB)" in finding.message
