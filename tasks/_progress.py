"""A backfill's progress bar at a terminal: one self-overwriting line on stderr with rate and ETA."""

from __future__ import annotations

import shutil
import sys
import time
from typing import TYPE_CHECKING, Any

from tasks._cli import tty

if TYPE_CHECKING:
    from pgshift.api import BackfillTick, Progress

EVERY = 0.2  # seconds between redraws at most


class BackfillBar:
    """``[#####.....] 42% 1,234,567 of ~3,000,000 rows, 180,000 rows/s, ETA 9 s`` while a backfill runs.

    Silent without a terminal: there the engine's periodic lines (every ``backfill_progress_seconds``)
    say the same in the output and the log. At a terminal ``lines`` drops those periodic lines, which
    the bar shows, and passes every other line on (clearing the bar first)."""

    def __init__(self) -> None:
        self.enabled = tty() and sys.stderr.isatty()
        self._last = 0.0
        self._tick: BackfillTick | None = None
        self._shown = False

    def __call__(self, tick: BackfillTick) -> None:
        self._tick = tick
        if not self.enabled:
            return
        now = time.monotonic()
        if tick.event in ("done", "held", "going"):
            self.clear()
            return
        if now - self._last < EVERY:
            return
        self._last = now
        sys.stderr.write("\r" + render(tick, shutil.get_terminal_size((100, 20)).columns) + "\033[K")
        sys.stderr.flush()
        self._shown = True

    def lines(self, say: Progress) -> Progress:
        return _Lines(self, say)

    def clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
            self._shown = False


def render(tick: BackfillTick, columns: int = 100) -> str:
    """The bar's line for ``tick``, fitted to ``columns``."""
    share = tick.share
    eta = tick.eta_s
    tail = (f" {share * 100:.0f}%" if share is not None else "") + \
        f" {tick.scanned:,} of ~{tick.total:,} rows, {tick.rate:,.0f} rows/s" + \
        (f", ETA {eta:.0f} s" if eta is not None else "")
    head = f"backfill {tick.label} "
    width = max(10, min(40, columns - len(head) - len(tail) - 3))
    filled = round(width * (share or 0.0))
    return (head + "[" + "#" * filled + "." * (width - filled) + "]" + tail)[:max(columns - 1, 20)]


class _Lines:
    """``say`` without the periodic lines the bar shows; any other attribute of it (``live``) passes."""

    def __init__(self, bar: BackfillBar, say: Progress) -> None:
        self._bar, self._say = bar, say

    def __call__(self, text: str = "") -> None:
        tick = self._bar._tick
        if self._bar.enabled and tick is not None and tick.event == "batch" and text == tick.line():
            return
        self._bar.clear()
        self._say(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._say, name)
