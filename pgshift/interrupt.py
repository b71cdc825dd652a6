"""SIGTERM taken as Ctrl-C: one handler for the task layer, a deploy and a fleet run."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (a cancelled CI job, a stopped container, a plain ``kill``) raises KeyboardInterrupt, as
    Ctrl-C does: the running statement is cancelled and rolled back, the clean-up runs (maintenance off,
    history, Slack; a fleet run starts no more targets), exit 130. Main thread only: elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
