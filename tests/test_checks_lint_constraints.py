"""lint rules (on the parse tree, knowing existing tables and transactions) and schema smells with fixes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pgshift.checks import constraints, lint
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.migrations import source
from tests.conftest import write_migration

BASE = "CREATE TABLE t (id int PRIMARY KEY, a int, b text);\nCREATE TABLE p (id int PRIMARY KEY);\n"


def _lint(folder: Path, sql: str, **kwargs: object) -> list[tuple[int, str]]:
    write_migration(folder, "20250101000000_base", BASE)
    write_migration(folder, "20250102000000_change", sql)
    report = lint.lint(source.read(folder), **kwargs)  # type: ignore[arg-type]
    return [(f.line, f.rule) for f in report.findings]


def test_each_unsafe_operation_on_an_existing_table_is_named_with_its_line(migrations_dir: Path) -> None:
    sql = """CREATE INDEX t_b ON t (b);
ALTER TABLE t ADD COLUMN c int NOT NULL;
ALTER TABLE t ADD COLUMN d uuid DEFAULT gen_random_uuid();
ALTER TABLE t ADD COLUMN e int NOT NULL DEFAULT 0, ADD COLUMN f timestamptz DEFAULT now();
ALTER TABLE t ALTER COLUMN b TYPE varchar(10);
ALTER TABLE t ADD CONSTRAINT t_a_fk FOREIGN KEY (a) REFERENCES p;
ALTER TABLE t ADD CONSTRAINT t_a_fk2 FOREIGN KEY (a) REFERENCES p NOT VALID;
ALTER TABLE t ADD CONSTRAINT t_a_pos CHECK (a > 0);
ALTER TABLE t ADD CONSTRAINT t_b_key UNIQUE (b);
ALTER TABLE t ALTER COLUMN a SET NOT NULL;
ALTER TABLE t RENAME COLUMN a TO aa;
ALTER TABLE t DROP COLUMN e;
DROP INDEX t_b;
DROP TABLE p CASCADE;
ALTER TABLE t RENAME TO things;
"""
    assert _lint(migrations_dir, sql) == [
        (1, "require-concurrent-index-creation"), (2, "adding-required-field"),
        (3, "adding-field-with-volatile-default"), (5, "changing-column-type"),
        (6, "constraint-missing-not-valid"), (8, "constraint-missing-not-valid"), (9, "adding-unique-constraint"),
        (10, "setting-not-null"), (11, "renaming-column"), (12, "ban-drop-column"),
        (13, "require-concurrent-index-deletion"), (14, "ban-drop-table"), (15, "renaming-table")]


def test_tables_created_in_the_same_migration_are_new_and_exempt(migrations_dir: Path) -> None:
    sql = ("CREATE TABLE n (id int);\nCREATE INDEX n_id ON n (id);\nALTER TABLE n ADD COLUMN x int NOT NULL;\n"
           "ALTER TABLE n ALTER COLUMN x TYPE bigint;\nCREATE INDEX CONCURRENTLY t_a ON t (a);\n")
    assert _lint(migrations_dir, sql) == []


def test_tables_the_target_has_count_as_existing(migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20250103000000_index", "CREATE INDEX legacy_a ON legacy (a);")
    assert _lint(migrations_dir, "SELECT 1;") == []
    assert _lint(migrations_dir, "SELECT 1;", existing={"public.legacy"}) == [
        (1, "require-concurrent-index-creation")]


def test_a_comment_naming_the_rule_silences_it_for_that_statement_or_file(migrations_dir: Path) -> None:
    sql = ("-- the table has 40 rows, a plain index is fine\n-- pgshift: ignore require-concurrent-index-creation\n"
           "CREATE INDEX t_b ON t (b);\nCREATE INDEX t_a ON t (a);\n")
    assert _lint(migrations_dir, sql) == [(4, "require-concurrent-index-creation")]
    whole = "-- pgshift: ignore-file require-concurrent-index-creation, setting-not-null\n" + sql
    assert _lint(migrations_dir, whole) == []
    report = lint.lint(source.read(migrations_dir))
    assert report.ok and report.silenced == 2 and "(2 silenced by comments)" in report.summary()


def test_lint_knows_whether_the_migration_runs_in_a_transaction(migrations_dir: Path) -> None:
    backfill = "ALTER TABLE t ADD COLUMN c int;\nUPDATE t SET c = a;\n"
    found = _lint(migrations_dir, backfill)
    assert found == [(2, "backfill-under-lock")]
    message = lint.lint(source.read(migrations_dir)).findings[0].message
    assert "the lock ALTER TABLE (line 1) takes on t is held while this UPDATE runs" in message
    # outside a transaction each statement commits on its own: the lock is gone before the UPDATE
    assert _lint(migrations_dir, "-- transactional: false\n" + backfill) == []
    # CONCURRENTLY in a file forced into one transaction cannot work at all
    assert _lint(migrations_dir, "-- transactional: true\nCREATE INDEX CONCURRENTLY t_a ON t (a);\n") == [
        (2, "concurrently-in-transaction")]


def test_only_the_named_migrations_are_linted_the_others_teach_the_tables(migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20250101000000_base", BASE + "CREATE INDEX t_a ON t (a);\n")
    write_migration(migrations_dir, "20250102000000_more", "CREATE INDEX t_b ON t (b);")
    report = lint.lint(source.read(migrations_dir), only={"20250102000000_more"})
    assert report.linted == ["20250102000000_more"]
    assert [(f.file, f.line, f.rule) for f in report.findings] == [
        ("20250102000000_more.sql", 1, "require-concurrent-index-creation")]


def test_constraints_reports_each_smell_with_its_fix(db_url: DatabaseUrl) -> None:
    with Database.connect(db_url) as db:
        db.execute("""
            CREATE TABLE parent (id int PRIMARY KEY, a int, b int, UNIQUE (a, b));
            CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent,
                                a int, b int, FOREIGN KEY (a, b) REFERENCES parent (a, b));
            CREATE INDEX child_b_a_idx ON child (b, a);
            CREATE TABLE keyless (code text NOT NULL UNIQUE);
            CREATE TABLE loose (v int);
            CREATE INDEX loose_v ON loose (v); CREATE INDEX loose_v_again ON loose (v);
            ALTER TABLE loose ADD CONSTRAINT loose_v_positive CHECK (v > 0) NOT VALID;
            CREATE INDEX loose_v_broken ON loose (v DESC);
            UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'loose_v_broken'::regclass;
            SELECT setval('child_id_seq', 1900000000);
        """)
        report = constraints.inspect(db)
    found = {(f.kind, f.table): f for f in report.findings}
    assert set(found) == {
        ("unindexed foreign key", "public.child"), ("no primary key", "public.keyless"),
        ("no primary key", "public.loose"), ("duplicate index", "public.loose"), ("not valid", "public.loose"),
        ("invalid index", "public.loose"), ("sequence", "child")}
    assert found["unindexed foreign key", "public.child"].fix == \
        "CREATE INDEX CONCURRENTLY child_parent_id_idx ON public.child (parent_id);"
    assert found["no primary key", "public.keyless"].fix == \
        "ALTER TABLE public.keyless ADD PRIMARY KEY USING INDEX keyless_code_key;"
    assert found["duplicate index", "public.loose"].fix == "DROP INDEX CONCURRENTLY public.loose_v_again;"
    assert found["not valid", "public.loose"].fix == 'ALTER TABLE public.loose VALIDATE CONSTRAINT "loose_v_positive";'
    assert found["invalid index", "public.loose"].fix == "REINDEX INDEX CONCURRENTLY public.loose_v_broken;"
    assert "has used 88% of its range" in found["sequence", "child"].problem
    assert found["sequence", "child"].fix.startswith("ALTER TABLE child ALTER COLUMN id TYPE bigint;")
    assert not report.ok


def test_lint_in_the_suite_knows_the_tables_the_target_has(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    from pgshift import api

    write_migration(migrations_dir, "20250101000000_index_legacy", "CREATE INDEX legacy_a ON legacy (a);")
    assert api.lint(make_settings(db_url)).ok  # nothing says legacy exists: it is new to these migrations
    with Database.connect(db_url) as db:
        db.execute("CREATE TABLE legacy (a int)")  # made by hand, long ago
    report = api.lint(make_settings(db_url))
    assert [(f.file, f.rule) for f in report.findings] == [
        ("20250101000000_index_legacy.sql", "require-concurrent-index-creation")]
