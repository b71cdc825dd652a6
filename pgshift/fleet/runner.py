"""A fleet deploy: the single-database deploy (``pgshift.deploy.workflow.deploy``) per target, in
worker threads, wave after wave.

* The first target of the run goes alone, with the rehearsal (on a clone of it): the migrations are
  tried once, not once per target. The other canaries (``wave = 0``) follow in parallel, and all of
  them must succeed before wave 1 starts.
* Then each wave, at most ``parallel`` targets at once. Once more than ``max_failures`` targets have
  failed, no target is started any more: those running finish, the rest are left untouched and the
  report (and the journal) says which.
* One confirmation for the whole fleet; each target's own deploy then goes ahead without asking.
  Slack hears one digest per wave, not one message per target.
* Every target's state goes to the journal before and after its deploy, so ``resume`` after a crash
  of the runner skips the targets done and deploys the rest once more: a target caught mid-deploy is
  recovered by its own deploy (its lock died with the runner; the history says what committed).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from pgshift.databases.pids import alive
from pgshift.dburl import redact
from pgshift.deploy import workflow
from pgshift.deploy.events import Event, Notify
from pgshift.deploy.run import who
from pgshift.errors import Aborted, ConfigError, ExitCode, PgShiftError, Refused
from pgshift.fleet import journal as journal_module
from pgshift.fleet import waves as waves_module
from pgshift.fleet.journal import Journal
from pgshift.fleet.report import Board, FleetReport, TargetResult, WaveSummary
from pgshift.fleet.targets import Fleet, Target
from pgshift.interrupt import terminate_as_interrupt
from pgshift.questions import Confirm, Question
from pgshift.settings import Settings

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Digest(Event):
    """A wave's Slack message: its own lines instead of a single deploy's."""

    text: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        return list(self.text)


@dataclass
class _Run:
    settings: Settings
    fleet: Fleet
    journal: Journal
    run_id: str
    rehearse: bool
    on_failure: str
    parallel: int
    report: FleetReport
    say: Progress
    done_before: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    total: int = 0
    board: Callable[[Board], None] | None = None
    running: dict[str, float] = field(default_factory=dict)

    def show(self) -> None:
        """Hand the board its snapshot (the caller holds ``lock``)."""
        if self.board is None:
            return
        now = time.monotonic()
        finished = [r for r in self.report.results if r.outcome != "untouched"]
        slowest = max(finished, key=lambda r: r.seconds, default=None)
        self.board(Board(self.total, sum(1 for r in finished if not r.failed), sum(1 for r in finished if r.failed),
                         tuple(sorted(((n, now - t) for n, t in self.running.items()), key=lambda x: -x[1])),
                         (slowest.name, slowest.seconds) if slowest is not None else None))

    def failures(self) -> int:
        with self.lock:
            return len(self.report.failed)

    def over_threshold(self, wave: waves_module.Wave) -> bool:
        failed = self.failures()
        return failed > 0 if wave.canaries else failed > self.fleet.max_failures

    def one(self, target: Target, wave: int, rehearse: bool) -> TargetResult:
        """Deploy one target; never raises a PgShiftError (it becomes the target's failure)."""
        self.journal.append("target", self.run_id, target=target.name, state="running", wave=wave)
        started = time.monotonic()
        with self.lock:
            self.running[target.name] = started
            self.show()
        lines: list[str] = []
        try:
            report = workflow.deploy(target.settings(self.settings), rehearse=rehearse, on_failure=self.on_failure,
                                     confirm=lambda _question: True, notify=None, progress=lines.append)
        except PgShiftError as error:
            result = TargetResult(target.name, str(target.url), wave, "failed", list(error.applied_before),
                                  error=redact(str(error)), seconds=time.monotonic() - started, rehearsed=rehearse)
        except Exception as error:  # a bug in one target's deploy must not end the others' unrecorded
            result = TargetResult(target.name, str(target.url), wave, "failed", error=redact(
                f"{type(error).__name__}: {error}"), seconds=time.monotonic() - started, rehearsed=rehearse)
        else:
            outcome = report.outcome if report.exit_code == ExitCode.OK else "failed"
            result = TargetResult(target.name, str(target.url), wave, outcome, [a.id for a in report.applied],
                                  error=report.error, seconds=time.monotonic() - started, log=str(report.log),
                                  rehearsed=rehearse)
        self.journal.append("target", self.run_id, target=target.name, state="failed" if result.failed else "done",
                            wave=wave, outcome=result.outcome, applied=result.applied, error=result.error,
                            seconds=round(result.seconds, 3))
        with self.lock:
            self.running.pop(target.name, None)
            self.report.results.append(result)
            self.say(_line(result))
            self.show()
        return result


def _line(result: TargetResult) -> str:
    if result.failed:
        return f"{result.name}: FAILED after {result.seconds:.1f} s: {result.error}"
    applied = f", {len(result.applied)} applied" if result.applied else ""
    return f"{result.name}: {result.outcome}{applied} in {result.seconds:.1f} s"


def deploy(settings: Settings, fleet: Fleet, *, parallel: int | None = None, shard: waves_module.Shard | None = None,
           rehearse: bool = True, on_failure: str = "stop", resume: bool = False, confirm: Confirm | None = None,
           notify: Notify | None = None, progress: Progress | None = None,
           board: Callable[[Board], None] | None = None) -> FleetReport:
    """Deploy every target of ``fleet`` (this ``shard`` of it) in waves; see the module's docstring.
    ``board`` gets a snapshot of the run at every start and end of a target."""
    width = parallel if parallel is not None else fleet.parallel
    if width < 1:
        raise ConfigError(f"--parallel {width}: deploy at least one target at a time (--parallel 1 or more)")
    targets = waves_module.select(fleet, shard)
    journal = Journal(journal_module.path_for(settings.logs_dir, fleet.name))
    shard_text = str(shard) if shard is not None else None
    done_before: set[str] = set()
    _refuse_a_live_runner(journal, shard_text)
    if resume:
        run_id, done_before = _take_over(journal, shard_text, fleet)
    _confirm(settings, fleet, targets, shard_text, confirm, resume)
    if resume:
        journal.append("resume", run_id, shard=shard_text, by=who())
    else:
        run_id = journal_module.new_run_id()
        journal.append("run", run_id, shard=shard_text, fleet=str(fleet.path), targets=[t.name for t in targets],
                       environment=settings.environment, parallel=width, by=who())
    report = FleetReport(fleet=fleet.name, run=run_id, environment=settings.environment, shard=shard_text,
                         parallel=width, journal=str(journal.path))
    lock, printing = threading.Lock(), threading.Lock()

    def say(text: str) -> None:
        if progress is not None:
            with printing:
                progress(text)

    run = _Run(settings, fleet, journal, run_id, rehearse and not done_before, on_failure, width, report, say,
               done_before, lock, total=len([t for t in targets if t.name not in done_before]), board=board)
    started = time.monotonic()
    try:
        with terminate_as_interrupt():
            _waves(run, waves_module.plan(fleet, targets), notify)
    except BaseException as error:
        why = "interrupted" if isinstance(error, KeyboardInterrupt) else redact(f"{type(error).__name__}: {error}")
        report.halted = report.halted or why
        journal.append("halt", run_id, reason=why)
        raise
    finally:
        report.total_s = time.monotonic() - started
    journal.append("end", run_id, outcome=report.outcome, halted=report.halted, untouched=report.untouched)
    return report


def _refuse_a_live_runner(journal: Journal, shard: str | None) -> None:
    """Two runners of one shard on one machine would race for the same targets."""
    state = journal.latest(shard)
    if state is None or state.ended is not None or state.pid == os.getpid():
        return
    if state.host == socket.gethostname() and alive(state.pid):
        which = f" of shard {shard}" if shard else ""
        raise Refused(f"fleet run {state.run}{which} is still going (pid {state.pid}); wait for it to end, "
                      "or stop it and run inv fleet.resume")


def _take_over(journal: Journal, shard: str | None, fleet: Fleet) -> tuple[str, set[str]]:
    state = journal.latest(shard)
    if state is None:
        which = f" of shard {shard}" if shard else ""
        raise ConfigError(f"no fleet run{which} to resume in {journal.path}; start one with inv fleet.deploy")
    known = {t.name for t in fleet.targets}
    return state.run, {name for name in state.targets if name in known and state.done(name)}


def _confirm(settings: Settings, fleet: Fleet, targets: list[Target], shard: str | None, confirm: Confirm | None,
             resume: bool) -> None:
    if not settings.is_production or not targets:
        return
    verb = "resuming the deploy of" if resume else "deploying to"
    if confirm is None:
        raise Refused(f"{verb} a production fleet needs a confirmation: run it at a terminal, or pass --yes")
    count = str(len(targets))
    where = f" (shard {shard})" if shard else ""
    question = Question(f"{verb} PRODUCTION: {count} target(s) of {fleet.name}{where}; type the number of "
                        f"targets ({count}) to go ahead", expected=count, about=targets)
    if not confirm(question):
        raise Aborted("fleet deploy cancelled; nothing was done")


def _waves(run: _Run, planned: list[waves_module.Wave], notify: Notify | None) -> None:
    first = True
    for wave in planned:
        todo = [t for t in wave.targets if t.name not in run.done_before]
        for t in wave.targets:
            if t.name in run.done_before:
                run.report.results.append(TargetResult(t.name, str(t.url), wave.number, "done before"))
        if run.report.halted:
            run.report.results.extend(TargetResult(t.name, str(t.url), wave.number, "untouched") for t in todo)
            continue
        if not todo:
            continue
        kind = " (canaries: all must succeed)" if wave.canaries else ""
        run.say(f"wave {wave.number}{kind}: {len(todo)} target(s), {min(run.parallel, len(todo))} at a time")
        started, before = time.monotonic(), len(run.report.results)
        queue = iter(todo)
        if first:
            lone = next(queue)
            if run.rehearse:
                run.say(f"{lone.name}: first, alone, with a rehearsal on a clone of it")
            if run.one(lone, wave.number, run.rehearse).failed:
                run.report.halted = f"the first target, {lone.name}, failed; no other target was started"
        first = False
        if not run.report.halted:
            _spread(run, wave, queue)
        left = list(queue)
        if not run.report.halted and run.over_threshold(wave):
            run.report.halted = (f"a canary failed ({', '.join(r.name for r in run.report.failed)}); wave 1 and "
                                 "later were not started") if wave.canaries else (
                f"{run.failures()} target(s) failed, more than max_failures = {run.fleet.max_failures}")
        run.report.results.extend(TargetResult(t.name, str(t.url), wave.number, "untouched") for t in left)
        summary = _summary(run, wave.number, before, started)
        run.say(summary.describe())
        if run.report.halted:
            run.say(f"halted: {run.report.halted}")
            run.journal.append("halt", run.run_id, reason=run.report.halted)
        _digest(run, summary, notify)


def _spread(run: _Run, wave: waves_module.Wave, queue: Iterator[Target]) -> None:
    """Up to ``parallel`` deploys at once; no new one once the wave's threshold is passed."""
    with ThreadPoolExecutor(max_workers=run.parallel, thread_name_prefix="fleet") as pool:
        running: set[Future[TargetResult]] = set()
        while True:
            while len(running) < run.parallel and not run.over_threshold(wave):
                target = next(queue, None)
                if target is None:
                    break
                running.add(pool.submit(run.one, target, wave.number, False))
            if not running:
                return
            _finished, running = wait(running, return_when=FIRST_COMPLETED)


def _summary(run: _Run, number: int, before: int, started: float) -> WaveSummary:
    mine = [r for r in run.report.results[before:] if r.wave == number]
    counts = {o: sum(1 for r in mine if r.outcome == o) for o in ("succeeded", "up to date", "failed", "untouched")}
    summary = WaveSummary(number, counts, time.monotonic() - started)
    run.report.waves.append(summary)
    return summary


def _digest(run: _Run, summary: WaveSummary, notify: Notify | None) -> None:
    if notify is None:
        return
    failed = [r for r in run.report.results if r.failed and r.wave == summary.number]
    text = [f"fleet {run.fleet.name} ({run.settings.environment}): {summary.describe()}"]
    text += [f"{r.name}: FAILED: {r.error}" for r in failed[:10]]
    if len(failed) > 10:
        text.append(f"{len(failed) - 10} more failed; see the journal")
    if run.report.halted:
        text.append(f"halted: {run.report.halted}; {len(run.report.untouched)} target(s) left untouched")
    text.append(f"by {who()}")
    kind = "failure" if failed or run.report.halted else "success"
    problem = notify(Digest(kind=kind, environment=run.settings.environment, database=run.fleet.name, who=who(),
                            text=tuple(text)))
    if problem:
        run.report.warnings.append(problem)
        run.say(f"warning: {problem}")
