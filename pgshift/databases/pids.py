"""Whether a process of this machine is still running; several parts clean up after dead ones."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True if a process with this pid exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
