"""Every target read at once, in worker threads: its status (``fleet.status``) or its deploy plan
(``fleet.deploy --dry-run``). Nothing is written; a target that cannot be read is a row with the error."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from pgshift.databases import target as target_module
from pgshift.dburl import redact
from pgshift.deploy import workflow
from pgshift.errors import ExitCode, PgShiftError
from pgshift.fleet import journal as journal_module
from pgshift.fleet import waves as waves_module
from pgshift.fleet.targets import Fleet, Target
from pgshift.migrations import history, source
from pgshift.migrations.status import collect
from pgshift.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class TargetStatus:
    name: str
    target: str
    wave: int | None
    labels: tuple[str, ...]
    head: str | None = None
    pending: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # modified, missing or failed migrations
    error: str | None = None                          # the target could not be read
    journal: str | None = None                         # its last state in the fleet journal

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "wave": self.wave, "labels": list(self.labels),
                "head": self.head, "pending": self.pending, "problems": self.problems, "error": self.error,
                "journal": self.journal}


@dataclass(frozen=True)
class FleetStatus:
    fleet: str
    environment: str
    shard: str | None
    targets: list[TargetStatus]

    @property
    def exit_code(self) -> ExitCode:
        if any(t.error or t.problems for t in self.targets):
            return ExitCode.FAILED
        return ExitCode.PENDING if any(t.pending for t in self.targets) else ExitCode.OK

    def heads(self) -> dict[str, int]:
        """How many targets stand at each head: more than one means the fleet is skewed."""
        found: dict[str, int] = {}
        for t in self.targets:
            if t.error is None:
                found[t.head or "(none)"] = found.get(t.head or "(none)", 0) + 1
        return found

    def as_json(self) -> dict[str, Any]:
        return {"fleet": self.fleet, "environment": self.environment, "shard": self.shard,
                "exit_code": int(self.exit_code), "heads": self.heads(), "targets": [t.as_json() for t in self.targets]}


@dataclass(frozen=True)
class TargetPlan:
    name: str
    target: str
    wave: int
    pending: list[str] = field(default_factory=list)
    proceed: bool = True
    problems: list[str] = field(default_factory=list)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "wave": self.wave, "pending": self.pending,
                "proceed": self.proceed, "problems": self.problems, "error": self.error}


@dataclass(frozen=True)
class FleetPlan:
    fleet: str
    environment: str
    shard: str | None
    parallel: int
    max_failures: int
    waves: list[tuple[int, list[str]]]  # (number, target names), wave by wave; number 0: the canaries
    targets: list[TargetPlan]

    @property
    def proceed(self) -> bool:
        return all(t.proceed and t.error is None for t in self.targets)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.proceed else ExitCode.FAILED

    def common(self) -> list[str]:
        """The pending list most targets share; the others are named as differences."""
        counts: dict[tuple[str, ...], int] = {}
        for t in self.targets:
            if t.error is None:
                counts[tuple(t.pending)] = counts.get(tuple(t.pending), 0) + 1
        return list(max(counts.items(), key=lambda item: item[1])[0]) if counts else []

    def differences(self) -> list[TargetPlan]:
        common = self.common()
        return [t for t in self.targets if t.error is not None or t.pending != common or not t.proceed]

    def as_json(self) -> dict[str, Any]:
        return {"fleet": self.fleet, "environment": self.environment, "shard": self.shard,
                "parallel": self.parallel, "max_failures": self.max_failures,
                "waves": [{"number": n, "targets": names} for n, names in self.waves], "proceed": self.proceed,
                "exit_code": int(self.exit_code),
                "common_pending": self.common(), "targets": [t.as_json() for t in self.targets]}


def _each(items: list[Target], parallel: int, read: Callable[[Target], T]) -> list[T]:
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(items) or 1)), thread_name_prefix="fleet") as pool:
        return list(pool.map(read, items))


def status(settings: Settings, fleet: Fleet, shard: waves_module.Shard | None, parallel: int | None) -> FleetStatus:
    migrations = source.of(settings)
    states = journal_module.Journal(journal_module.path_for(settings.logs_dir, fleet.name)).last_states()

    def read(t: Target) -> TargetStatus:
        last = states.get(t.name)
        journal = f"{last.get('state')} at {last.get('at')}" if last else None
        base = TargetStatus(t.name, str(t.url), t.wave, t.labels, journal=journal)
        config = t.settings(settings)
        try:
            with target_module.connect(config) as db:
                found = collect(db, migrations, config.describe_target(), config.environment, history.records(db))
        except PgShiftError as error:
            return replace(base, error=redact(str(error)))
        problems = [f"{m.id}: {m.state}" for m in found.migrations if m.state in ("modified", "missing", "failed")]
        return replace(base, head=found.head, problems=problems,
                       pending=[m.id for m in found.migrations if m.state == "pending" and not m.empty])

    targets = waves_module.select(fleet, shard)
    return FleetStatus(fleet.name, settings.environment, str(shard) if shard else None,
                       _each(targets, parallel or fleet.parallel, read))


def plan(settings: Settings, fleet: Fleet, shard: waves_module.Shard | None, parallel: int | None,
         rehearse: bool, on_failure: str = "stop") -> FleetPlan:
    targets = waves_module.select(fleet, shard)
    planned = waves_module.plan(fleet, targets)
    wave_of = {t.name: w.number for w in planned for t in w.targets}
    first = planned[0].targets[0].name if planned else None

    def read(t: Target) -> TargetPlan:
        try:
            found = workflow.plan(t.settings(settings), rehearse=rehearse and t.name == first, on_failure=on_failure)
        except PgShiftError as error:
            return TargetPlan(t.name, str(t.url), wave_of[t.name], proceed=False, error=redact(str(error)))
        return TargetPlan(t.name, str(t.url), wave_of[t.name], [m.id for m in found.pending], found.proceed,
                          [redact(p) for p in found.problems])

    width = parallel or fleet.parallel
    return FleetPlan(fleet.name, settings.environment, str(shard) if shard else None, width, fleet.max_failures,
                     [(w.number, [t.name for t in w.targets]) for w in planned],
                     _each(targets, width, read))
