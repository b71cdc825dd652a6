"""The migrations folder: names, templates, checksums, yoyo reading the same layout, and the quick scan."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from pgshift.errors import ConfigError
from pgshift.migrations import source, sqltext
from tests.conftest import write_migration


@pytest.mark.parametrize("name", ["Add", "add-x", "../etc", "a/b", "1abc", "", "x" * 81, "add x"])
def test_bad_names_are_refused(migrations_dir: Path, name: str) -> None:
    with pytest.raises(ConfigError, match=r"not valid|too long"):
        source.create(migrations_dir, name)
    assert list(migrations_dir.iterdir()) == []


def test_create_writes_the_pair_and_refuses_a_duplicate(migrations_dir: Path) -> None:
    made = source.create(migrations_dir, "add_feature", now=datetime(2025, 7, 8, 12, 0, 0))
    assert made.id == "20250708120000_add_feature"
    assert made.path.exists() and made.rollback_path is not None and made.rollback_path.exists()
    assert made.empty  # a template has no statements
    with pytest.raises(ConfigError, match="exists already"):
        source.create(migrations_dir, "add_feature")


def test_new_ids_sort_after_the_newest_even_in_the_same_second(migrations_dir: Path) -> None:
    now = datetime(2025, 7, 8, 12, 0, 0)
    first = source.create(migrations_dir, "one", now=now)
    second = source.create(migrations_dir, "two", now=now)
    assert first.id < second.id
    assert [m.id for m in source.read(migrations_dir)] == [first.id, second.id]


def test_stray_and_orphan_files_are_errors(migrations_dir: Path) -> None:
    (migrations_dir / "add_users.sql").write_text("SELECT 1;")
    with pytest.raises(ConfigError, match=r"is not named YYYYMMDDHHMMSS_name\.sql"):
        source.read(migrations_dir)
    (migrations_dir / "add_users.sql").unlink()
    (migrations_dir / "20250101000000_x.rollback.sql").write_text("SELECT 1;")
    with pytest.raises(ConfigError, match="has no forward migration"):
        source.read(migrations_dir)


def test_seed_and_schema_files_are_not_migrations(migrations_dir: Path) -> None:
    (migrations_dir / "seed.sql").write_text("INSERT INTO t VALUES (1);")
    write_migration(migrations_dir, "20250101000000_a", "SELECT 1;")
    assert [m.id for m in source.read(migrations_dir)] == ["20250101000000_a"]


def test_checksum_ignores_bom_and_line_endings_only() -> None:
    unix = source.checksum(source.normalise(b"SELECT 1;\nSELECT 2;\n"))
    assert source.checksum(source.normalise(b"\xef\xbb\xbfSELECT 1;\r\nSELECT 2;\r\n")) == unix
    assert source.checksum(source.normalise(b"SELECT 1;\nSELECT 3;\n")) != unix


def test_yoyo_reads_the_same_migrations_in_the_same_order(migrations_dir: Path) -> None:
    from yoyo import read_migrations

    write_migration(migrations_dir, "20250101000000_a", "CREATE TABLE a (id int);", "DROP TABLE a;")
    write_migration(migrations_dir, "20250102000000_b", "CREATE TABLE b (id int);", "DROP TABLE b;")
    ours = source.read(migrations_dir)
    theirs = list(read_migrations(str(migrations_dir)))
    assert [m.id for m in theirs] == [m.id for m in ours]


def test_the_shipped_migrations_are_well_formed() -> None:
    shipped = source.read(Path(__file__).resolve().parent.parent / "migrations")
    assert shipped, "the repository ships an initial schema"
    assert all(m.rollback_path is not None and not m.empty for m in shipped)


TRICKY = [
    "", "  \n\t\n", "-- only a comment\n-- and another", "/* block */", "/* nested /* twice */ still */\n",
    "/* a\n-- b */", "select 1", "  -- c\n  select 1;", "'--not a comment'", "-1", "/* x */ select 1",
    "E'\\'' -- x", "$$ -- body $$", "select '\n-- inside a string\n'", "\ufeffselect 1", "  \r\n-- x\r\n",
    "create index concurrently i on t (a)", "-- concurrently\nselect 1", "select 'vacuum'",
    "create table legend (starts_at date)", '"BEGIN"', "do $$ begin end $$", "commit", "/* commit */",
]


@pytest.mark.parametrize("sql", TRICKY)
def test_quick_answers_agree_with_the_lexer(sql: str) -> None:
    found, any_token = sqltext.words(sql)
    assert sqltext.is_empty(sql) is (not any_token)
    assert sqltext.may_need_parse(sql) is bool(found & sqltext.NEEDS_PARSE)
