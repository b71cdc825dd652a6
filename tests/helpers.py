"""Helpers the test modules share (test modules never import each other)."""

from __future__ import annotations

import subprocess
import sys


def dead_pid() -> int:
    """A pid no process has now: a child that already exited."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    return int(child.stdout)
