"""The checks on histories written the way real projects write them."""

from __future__ import annotations

from pathlib import Path

from pgshift.checks import backward, lint
from pgshift.dburl import DatabaseUrl
from pgshift.migrations import source
from pgshift.migrations.apply import Limits
from tests.conftest import write_migration


def test_lint_treats_a_table_made_earlier_in_the_same_pending_run_as_new(migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20240101000000_orders", "CREATE TABLE orders (id bigint PRIMARY KEY, x int);")
    write_migration(migrations_dir, "20240102000000_orders_x", "CREATE INDEX orders_x ON orders (x);")
    migrations = source.read(migrations_dir)
    pending = {m.id for m in migrations}
    assert lint.lint(migrations, only=pending).findings == []
    applied_first = lint.lint(migrations, only={migrations[1].id})
    assert [f.rule for f in applied_first.findings] == ["require-concurrent-index-creation"]


def test_backward_accepts_a_rollback_that_re_adds_a_dropped_column_last(
        db_url: DatabaseUrl, migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20240101000000_users", "CREATE TABLE users (id int PRIMARY KEY, nickname text, "
                    "email text);", "DROP TABLE users;")
    write_migration(migrations_dir, "20240102000000_drop_nickname", "ALTER TABLE users DROP COLUMN nickname;",
                    "ALTER TABLE users ADD COLUMN nickname text;")
    report = backward.run(db_url, source.read(migrations_dir), Limits())
    assert report.ok, report.summary()
