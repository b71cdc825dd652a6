"""What an operator does to a command: its output piped into a reader that stops early, an --output
that names a file the command must not overwrite, backups killed half-written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pgshift.dburl import DatabaseUrl
from tests.commands import INV, ROOT, cli_env, inv_here
from tests.conftest import write_migration


@pytest.mark.process
def test_status_into_a_closed_pipe_exits_quietly(task_db_url: DatabaseUrl, migrations_dir: Path) -> None:
    for n in range(50):
        write_migration(migrations_dir, f"2025010100{n:04d}_m{n}", f"CREATE TABLE t{n} (id int);\n")
    read_end, write_end = os.pipe()
    os.close(read_end)  # like `| head -1` that has already stopped reading
    try:
        done = subprocess.run([INV, "status", "--no-drift"], cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=120, stdin=subprocess.DEVNULL,
                              env=cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir)))
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 141, done.stderr


def test_generate_refuses_to_write_over_a_file_it_did_not_write(task_db_url: DatabaseUrl, tmp_path: Path) -> None:
    schema = tmp_path / "schema.sql"
    schema.write_text("CREATE TABLE users (id int PRIMARY KEY);\n")
    env = cli_env(task_db_url, ENVIRONMENT="development")
    done = inv_here("dev.generate", "--output", str(schema), env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.startswith(f"error: refusing to overwrite {schema}: it is not a models module") \
        and done.stderr.count("\n") == 1, done.stderr
    assert schema.read_text() == "CREATE TABLE users (id int PRIMARY KEY);\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["schema.sql"]  # no temporary file left either


def test_generate_replaces_its_own_module_through_a_rename(task_db_url: DatabaseUrl, tmp_path: Path) -> None:
    models = tmp_path / "models.py"
    env = cli_env(task_db_url, ENVIRONMENT="development")
    first = inv_here("dev.generate", "--output", str(models), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    before = models.stat().st_ino
    again = inv_here("dev.generate", "--output", str(models), env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert models.stat().st_ino != before  # a new file renamed over the old, never rewritten in place
    assert models.read_text().startswith('"""SQLAlchemy models for database ')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models.py"]
