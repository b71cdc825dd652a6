"""Supervising the PostgreSQL client programs we run as child processes.

A child gets an argument list (never a shell string), stdin closed unless we feed it, and the
connection in libpq environment variables built from ``DatabaseUrl.env()``: no host, user or password
is ever on its command line, where every local user could read it with ``ps``. Its stderr is drained
into a bounded tail (so a chatty ``--verbose`` cannot fill a pipe or our memory) that error messages
quote. A child dies with us (``PR_SET_PDEATHSIG``), and we stop it if we are interrupted.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO

from pgshift.dburl import DatabaseUrl, redact
from pgshift.errors import ToolError

# Inherited libpq variables that would quietly change which server or role a child talks to.
_INHERITED_CONNECTION = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD",
                         "PGSERVICE", "PGOPTIONS", "PGAPPNAME", "PGSSLMODE", "PGCONNECT_TIMEOUT")
_PR_SET_PDEATHSIG = 1
_TAIL_LINES = 40


def env_for(url: DatabaseUrl, connect_timeout: int = 10) -> dict[str, str]:
    """The environment of a child that connects to ``url``: the password travels here only."""
    env = {k: v for k, v in os.environ.items() if k not in _INHERITED_CONNECTION}
    env["PGCONNECT_TIMEOUT"] = str(connect_timeout)
    env["PGAPPNAME"] = "pgshift"
    env.update(url.env())
    return env


def _prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


# Resolved once, here: the hook below runs in the child between fork and exec, where it must not
# import or load anything (another thread may hold the import lock at the moment of the fork).
_PRCTL = _prctl()


def _die_with(parent: int) -> Callable[[], None]:
    """The child's hook: die with ``parent``. If the parent died between the fork and this call, the
    signal would never come (it is armed too late), so the child checks and ends at once."""

    def hook() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:
                os._exit(1)

    return hook


class Child:
    """One running program with its stderr drained in a thread."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], *, stdin: int | IO[bytes] | None = None,
                 stdout: int | IO[bytes] | None = None, on_line: Callable[[str], None] | None = None) -> None:
        self.name = os.path.basename(argv[0])
        self.tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._on_line = on_line
        try:
            self.proc = subprocess.Popen(
                list(argv), env=env, stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=subprocess.DEVNULL if stdout is None else stdout, stderr=subprocess.PIPE,
                preexec_fn=_die_with(os.getpid()) if _PRCTL is not None else None, close_fds=True)
        except OSError as exc:
            raise ToolError(f"could not start {self.name}: {exc.strerror}") from None
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self.tail.append(line)
                if self._on_line is not None:
                    self._on_line(line)

    def finished(self) -> bool:
        return self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)

    def wait(self) -> int:
        code = self.proc.wait()
        self._reader.join(5)
        return code

    def explain(self) -> str:
        """The lines of the stderr tail that say what went wrong, on one line."""
        lines = [ln.removeprefix(f"{self.name}: ") for ln in self.tail]
        picked = [ln for ln in lines if any(w in ln for w in ("error", "ERROR", "FATAL", "DETAIL", "Command was",
                                                                "No space", "fatal"))]
        text = " | ".join(" ".join(ln.split()) for ln in (picked or lines or ["no error output"])[-3:])
        return redact(text)[:600]


def supervise(children: Sequence[Child], what: str, watch: Callable[[], None] | None = None,
              tick: float = 0.5) -> None:
    """Wait for every child; stop them all if one fails or we are interrupted.

    ``children`` is in pipeline order: when several fail, the last one's complaint is the cause (an
    upstream program then only reports the broken pipe)."""
    culprit: Child | None = None
    next_watch = time.monotonic() + tick
    try:
        while running := [c for c in children if not c.finished()]:
            failing = [c for c in children if c.finished() and c.proc.returncode != 0]
            if failing:
                culprit = failing[-1]
                break
            # Wake the moment the last program of the pipeline ends; look at the others every 0.1 s.
            with contextlib.suppress(subprocess.TimeoutExpired):
                running[-1].proc.wait(0.1)
            if watch is not None and time.monotonic() >= next_watch:
                next_watch += tick
                watch()
    except BaseException:
        for child in children:
            child.stop()
        raise
    for child in children:
        child.stop()
    if culprit is None:
        failed = [c for c in children if c.wait() != 0]
        culprit = failed[-1] if failed else None
    if culprit is not None:
        raise ToolError(f"{what} failed: {culprit.name}: {culprit.explain()}")
