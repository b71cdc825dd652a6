"""The fleet journal: one JSON object a line in ``logs/<fleet>.journal.jsonl``, appended under an
exclusive ``fcntl`` lock (several runners, one per shard, share the file), each line flushed and
fsynced before the run goes on (lines that the runner's threads append at once share one fsync).

Records: ``run`` (a deploy started: its id, shard, targets, pid and host), ``resume`` (a runner took
the run over), ``target`` (a target's state: ``running``, ``done`` or ``failed``, with what it applied
or the error), ``halt`` and ``end``. A line torn by ``kill -9`` mid-write is skipped on reading.
A target's state is its last ``target`` record in the run.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgshift.errors import ToolError

STATES = ("running", "done", "failed")


def path_for(logs_dir: Path, fleet_name: str) -> Path:
    return logs_dir / f"{fleet_name}.journal.jsonl"


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%d%H%M%S}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class RunState:
    """One run as the journal tells it."""

    run: str
    shard: str | None
    targets: list[str]
    states: dict[str, dict[str, Any]]  # target -> its last record
    pid: int                           # the runner that last took the run (started or resumed it)
    host: str
    ended: str | None                  # the outcome of its ``end`` record, if any

    def state(self, name: str) -> str:
        return str(self.states.get(name, {}).get("state", "waiting"))

    def done(self, name: str) -> bool:
        return self.state(name) == "done"


class Journal:
    """Appends from the runner's threads share a write and an fsync: the first of them to arrive writes
    every line queued by then, and each ``append`` returns once its own line is on disk (or raises)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._turn = threading.Condition()
        self._queue: list[bytes] = []
        self._queued = 0    # lines handed to append so far
        self._durable = 0   # of those, the lines written and fsynced (or failed: see _failed)
        self._writing = False
        self._failed: list[tuple[int, int, ToolError]] = []  # (first, last) line numbers a write lost

    def append(self, kind: str, run: str, **values: Any) -> None:
        record = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "kind": kind, "run": run,
                  "pid": os.getpid(), "host": socket.gethostname(), **values}
        line = (json.dumps(record, default=str) + "\n").encode()
        with self._turn:
            self._queue.append(line)
            self._queued += 1
            mine = self._queued
            while self._durable < mine:
                if self._writing:
                    self._turn.wait()
                    continue
                batch, self._queue, first, last = self._queue, [], self._durable + 1, self._queued
                self._writing = True
                self._turn.release()
                lost: ToolError | None = ToolError(f"the fleet journal {self.path} was not written: interrupted")
                try:
                    self._write(b"".join(batch))
                    lost = None
                except ToolError as failure:
                    lost = failure
                    raise
                finally:
                    self._turn.acquire()
                    if lost is not None:
                        self._failed = [*self._failed[-15:], (first, last, lost)]
                    self._writing = False
                    self._durable = last
                    self._turn.notify_all()
            for low, high, gone in self._failed:
                if low <= mine <= high:
                    raise gone

    def _write(self, lines: bytes) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as exc:
            raise ToolError(f"cannot write the fleet journal {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, lines)
            os.fsync(fd)
        except OSError as exc:
            raise ToolError(f"cannot write the fleet journal {self.path}: {exc.strerror}") from None
        finally:
            os.close(fd)  # closing releases the lock

    def records(self) -> list[dict[str, Any]]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            with os.fdopen(os.dup(fd), "rb") as handle:
                data = handle.read()
        finally:
            os.close(fd)
        found = []
        for raw in data.splitlines():
            try:
                record = json.loads(raw)
            except ValueError:
                continue  # a line torn by a kill mid-write
            if isinstance(record, dict):
                found.append(record)
        return found

    def latest(self, shard: str | None) -> RunState | None:
        """The newest run of this shard (None: the whole fleet), or None when there is none."""
        records = self.records()
        starts = [r for r in records if r.get("kind") == "run" and r.get("shard") == shard]
        if not starts:
            return None
        start = starts[-1]
        run = start["run"]
        mine = [r for r in records if r.get("run") == run]
        taken = max(i for i, r in enumerate(mine) if r.get("kind") in ("run", "resume"))
        owner = mine[taken]
        states = {r["target"]: r for r in mine if r.get("kind") == "target"}
        ends = [r for r in mine[taken:] if r.get("kind") == "end"]
        return RunState(run=run, shard=shard, targets=list(start.get("targets", [])), states=states,
                        pid=int(owner.get("pid", 0)), host=str(owner.get("host", "")),
                        ended=str(ends[-1].get("outcome")) if ends else None)

    def last_states(self) -> dict[str, dict[str, Any]]:
        """Every target's last record over all runs (for ``fleet.status``)."""
        return {r["target"]: r for r in self.records() if r.get("kind") == "target"}
