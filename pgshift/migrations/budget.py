"""The lock budget: how long a migration's statement may queue for a table lock, and its retries.

A statement waiting for a lock holds up every query queued behind it, so the wait is short
(``lock_timeout``, 500 ms by default, as pgroll does) and is retried after a jittered, growing pause in
which the application's queries run. The pause doubles from ``retry_backoff`` up to ``BACKOFF_CAP``
seconds; the jitter keeps several migrators (or shards of a fleet) from retrying in step. While it
retries, a watcher names the sessions that block it, for the message when it gives up.

A phased (zero-downtime) migration's statements, its expand, contract and abort sections and its
backfill batches, run under a tighter budget (``for_phases``: ``phase_lock_timeout``, 100 ms by
default, and ``phase_lock_retries``): the application's queries that queue behind them then wait at
most that long, and the retries make up for the shorter tries.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from pgshift.databases.db import Database, SqlFailure
from pgshift.errors import LockTimeout
from pgshift.migrations.blockers import BlockerWatch
from pgshift.settings import Settings

T = TypeVar("T")
BACKOFF_CAP = 10.0


class Limits(NamedTuple):
    lock_timeout: float = 0.5
    statement_timeout: float = 0.0
    lock_wait: float = 30.0
    lock_retries: int = 10
    retry_backoff: float = 0.5
    # A backfill's pace (pgshift.migrations.backfill): its target batch time, and what throttles it.
    batch_seconds: float = 0.1
    max_replay_lag: float = 10.0
    max_xact_seconds: float = 60.0
    max_active: int = 0
    concurrent_wait: float = 30.0  # a concurrent index build's wait for older transactions, each try
    progress_seconds: float = 5.0   # a backfill's progress report this often
    phase_lock_timeout: float = 0.1
    phase_lock_retries: int = 20

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(lock_timeout=settings.lock_timeout, statement_timeout=settings.statement_timeout,
                   lock_wait=settings.lock_wait, lock_retries=settings.lock_retries,
                   retry_backoff=settings.retry_backoff, batch_seconds=settings.backfill_batch_seconds,
                   max_replay_lag=settings.backfill_max_replay_lag,
                   max_xact_seconds=settings.backfill_max_xact_seconds, max_active=settings.backfill_max_active,
                   concurrent_wait=settings.concurrent_wait_timeout,
                   progress_seconds=settings.backfill_progress_seconds,
                   phase_lock_timeout=settings.phase_lock_timeout, phase_lock_retries=settings.phase_lock_retries)

    def for_phases(self) -> Limits:
        """The budget of a phased migration's statements: the tighter lock wait, more retries."""
        return self._replace(lock_timeout=min(self.lock_timeout, self.phase_lock_timeout),
                             lock_retries=max(self.lock_retries, self.phase_lock_retries))


def pause(limits: Limits, tries: int) -> float:
    """Seconds to wait before retry number ``tries`` (1 = the first retry): doubling, capped, jittered."""
    return float(min(BACKOFF_CAP, limits.retry_backoff * 2 ** (tries - 1)) * random.uniform(0.5, 1.0))


def settings_sql(limits: Limits, local: bool) -> str:
    scope = "SET LOCAL" if local else "SET"
    return (f"{scope} lock_timeout = '{int(limits.lock_timeout * 1000)}ms'; "
            f"{scope} statement_timeout = '{int(limits.statement_timeout * 1000)}ms';")


def retrying(db: Database, limits: Limits, what: str, attempt: Callable[[], T]) -> tuple[T, int]:
    """Run ``attempt``; on a lock timeout pause and retry, up to ``limits.lock_retries`` times. Returns
    its result and the number of attempts. Gives up with LockTimeout naming ``what`` and the blockers."""
    watch: BlockerWatch | None = None
    tries = 0
    try:
        while True:
            tries += 1
            try:
                return attempt(), tries
            except SqlFailure as failure:
                if not failure.lock_timeout:
                    raise
                if tries > limits.lock_retries:
                    who = watch.describe() if watch else "another session"
                    raise LockTimeout(
                        f"{what}: could not get a table lock within {limits.lock_timeout:g}s, {tries} attempts; "
                        f"blocked by {who}. End that session or retry when it is done") from None
                if watch is None:
                    watch = BlockerWatch(db.url, db.pid)
                time.sleep(pause(limits, tries))
    finally:
        if watch is not None:
            watch.stop()
