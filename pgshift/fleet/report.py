"""What a fleet deploy returns: one result per target, one summary per wave, why it halted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgshift.errors import ExitCode

OUTCOMES = ("succeeded", "up to date", "failed", "done before", "untouched")


@dataclass(frozen=True)
class TargetResult:
    name: str
    target: str              # the redacted URL
    wave: int
    outcome: str             # one of OUTCOMES
    applied: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    log: str | None = None
    rehearsed: bool = False

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "wave": self.wave, "outcome": self.outcome,
                "applied": self.applied, "error": self.error, "seconds": round(self.seconds, 3), "log": self.log,
                "rehearsed": self.rehearsed}


@dataclass(frozen=True)
class WaveSummary:
    number: int
    counts: dict[str, int]
    seconds: float

    def describe(self) -> str:
        kind = " (canaries)" if self.number == 0 else ""
        parts = ", ".join(f"{n} {o}" for o, n in self.counts.items() if n)
        return f"wave {self.number}{kind}: {parts or 'nothing to do'} in {self.seconds:.1f} s"


@dataclass
class FleetReport:
    fleet: str
    run: str
    environment: str
    shard: str | None
    parallel: int
    results: list[TargetResult] = field(default_factory=list)
    waves: list[WaveSummary] = field(default_factory=list)
    halted: str | None = None  # why the run stopped before the end
    warnings: list[str] = field(default_factory=list)
    journal: str = ""
    total_s: float = 0.0

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def failed(self) -> list[TargetResult]:
        return [r for r in self.results if r.failed]

    @property
    def untouched(self) -> list[str]:
        return [r.name for r in self.results if r.outcome == "untouched"]

    @property
    def outcome(self) -> str:
        if self.halted:
            return "halted"
        return "failed" if self.failed else "succeeded"

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.outcome == "succeeded" else ExitCode.FAILED

    def summary(self) -> str:
        counts = ", ".join(f"{self.count(o)} {o}" for o in OUTCOMES if self.count(o))
        return f"fleet deploy {self.outcome}: {counts or 'no targets'} in {self.total_s:.1f} s"

    def as_json(self) -> dict[str, Any]:
        return {"fleet": self.fleet, "run": self.run, "environment": self.environment, "shard": self.shard,
                "parallel": self.parallel, "outcome": self.outcome, "exit_code": int(self.exit_code),
                "halted": self.halted, "untouched": self.untouched, "journal": self.journal,
                "waves": [{"number": w.number, "counts": w.counts, "seconds": round(w.seconds, 3)} for w in self.waves],
                "targets": [r.as_json() for r in self.results], "warnings": self.warnings,
                "total_s": round(self.total_s, 3)}


@dataclass(frozen=True)
class Board:
    """Where a fleet run stands, handed to a ``board`` callback at every start and end of a target: a
    terminal redraws one line from it."""

    total: int                           # targets of this run (those a resumed run finished excluded)
    done: int
    failed: int
    running: tuple[tuple[str, float], ...]  # name, seconds so far; the longest first
    slowest: tuple[str, float] | None     # the slowest finished target so far

    @property
    def waiting(self) -> int:
        return self.total - self.done - self.failed - len(self.running)

    def line(self) -> str:
        parts = [f"{self.done} done", f"{len(self.running)} running", f"{self.failed} failed",
                 f"{self.waiting} waiting of {self.total}"]
        if self.running:
            name, seconds = self.running[0]
            parts.append(f"longest running: {name} {seconds:.0f} s")
        if self.slowest is not None:
            parts.append(f"slowest: {self.slowest[0]} {self.slowest[1]:.1f} s")
        return ", ".join(parts)
