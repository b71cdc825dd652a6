"""Helpers the test modules share (test modules never import each other)."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any


def dead_pid() -> int:
    """A pid no process has now: a child that already exited."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    return int(child.stdout)


def wait_for(check: Any, what: str, timeout: float = 30.0) -> Any:
    """Poll ``check()`` until it gives something true and return that; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
