"""What an operator does to a running command: its output piped into a reader that stops early."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from pgshift.dburl import DatabaseUrl
from tests.commands import INV, ROOT, cli_env
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
