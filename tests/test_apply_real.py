"""Applying real-shaped migrations: where a runtime error inside a one-transaction migration is named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError
from tests.conftest import write_migration


def test_runtime_error_in_a_transactional_migration_names_its_statement_and_line(
        db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any) -> None:
    write_migration(migrations_dir, "20250101000000_a",
                    "CREATE TABLE a (id int PRIMARY KEY);\n"
                    "INSERT INTO a VALUES (1);\n"
                    "\n"
                    "INSERT INTO a VALUES (1);\n"
                    "CREATE TABLE b (id int);\n")
    with pytest.raises(MigrationError) as raised:
        api.migrate(make_settings(db_url))
    message = str(raised.value)
    assert "20250101000000_a.sql, line 4:" in message, message
    assert "[INSERT INTO a VALUES (1)]" in message and "nothing of it was applied" in message
    assert api.status(make_settings(db_url)).migrations[0].state == "failed"
