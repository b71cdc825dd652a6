"""The checks on histories written the way real projects write them."""

from __future__ import annotations

from pathlib import Path

from pgshift.checks import lint
from pgshift.migrations import source
from tests.conftest import write_migration


def test_lint_treats_a_table_made_earlier_in_the_same_pending_run_as_new(migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20240101000000_orders", "CREATE TABLE orders (id bigint PRIMARY KEY, x int);")
    write_migration(migrations_dir, "20240102000000_orders_x", "CREATE INDEX orders_x ON orders (x);")
    migrations = source.read(migrations_dir)
    pending = {m.id for m in migrations}
    assert lint.lint(migrations, only=pending).findings == []
    applied_first = lint.lint(migrations, only={migrations[1].id})
    assert [f.rule for f in applied_first.findings] == ["require-concurrent-index-creation"]
