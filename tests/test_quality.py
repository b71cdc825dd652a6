"""The code stays clean: ruff, mypy (strict) and the import contracts run as part of the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", [
    ["ruff", "check", "pgshift", "tasks", "tasks.py", "tests", "bench"],
    ["mypy"],
    ["lint-imports"],
], ids=["ruff", "mypy", "import-contracts"])
def test_tool_is_clean(command: list[str]) -> None:
    done = subprocess.run([str(BIN / command[0]), *command[1:]], cwd=ROOT, text=True, capture_output=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
