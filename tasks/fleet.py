"""fleet: one migration set deployed across many databases (fleet.toml), in waves, with a journal."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from invoke.context import Context
from invoke.tasks import task

from pgshift import settings as settings_module
from pgshift.settings import Settings
from tasks import _prompts
from tasks._cli import ROOT, boundary, emit_json, finish, out, table

if TYPE_CHECKING:
    from pgshift.api import Board, FleetPlan, FleetReport
    from pgshift.questions import Question

_COMMON = {
    "fleet": "the fleet file (default: fleet.toml beside tasks.py)",
    "shard": "K/N: only this shard of the fleet (by a hash of each target's name), for a CI matrix of N jobs",
    "parallel": "how many targets at once (default: [fleet] parallel in the file, else 4)",
    "json": "print one JSON object instead of text",
}
_DEPLOY = {
    **_COMMON,
    "yes": "do not ask for the number of targets (production otherwise asks for it)",
    "dry_run": "print the fleet's plan (waves, pending per target, the targets that differ); changes nothing",
    "rehearse": "rehearse on a clone of the first target before any target is touched (--no-rehearse: not)",
}


def settings(c: Context) -> Settings:
    """The settings of the run, in any environment. The fleet file names the databases, so no
    DATABASE_URL is needed (one that is set is ignored): each target's deploy gets its own URL."""
    env = {**os.environ, "DATABASE_URL": "postgresql://fleet/see-the-fleet-file"}
    return replace(settings_module.load(ROOT, dict(c.config.get("pgshift", {})), env), url=None)


@task(help=_COMMON)
@boundary
def status(c: Context, fleet: str = "", shard: str = "", parallel: int = 0, json: bool = False) -> None:
    """Every target of the fleet: head, pending migrations, last state in the journal.

    Exit codes: 0 all up to date, 3 pending migrations only, 1 a target unreadable or wrong, 2 usage error.
    """
    from pgshift import api

    found = api.fleet_status(settings(c), fleet=fleet or None, shard=shard or None, parallel=parallel or None)
    if json:
        emit_json(found.as_json())
    else:
        out(f"fleet {found.fleet} ({found.environment})" + (f", shard {found.shard}" if found.shard else ""))
        out(table(["target", "url", "wave", "head", "pending", "journal"], [
            (t.name, t.target, "" if t.wave is None else t.wave, t.head or "-",
             f"ERROR: {t.error}" if t.error else "; ".join(t.problems) or str(len(t.pending)), t.journal or "-")
            for t in found.targets]))
        heads = found.heads()
        out(f"heads: {', '.join(f'{h} on {n}' for h, n in heads.items())}" + (" (skewed)" if len(heads) > 1 else ""))
    finish(found.exit_code)


@task(default=True, help=_DEPLOY)
@boundary
def deploy(c: Context, fleet: str = "", shard: str = "", parallel: int = 0, dry_run: bool = False, yes: bool = False,
           rehearse: bool = True, json: bool = False) -> None:
    """Deploy pending migrations to every target: canaries first, then waves, in parallel."""
    from pgshift import api

    config = settings(c)
    if dry_run:
        plan = api.fleet_plan(config, fleet=fleet or None, shard=shard or None, parallel=parallel or None,
                              rehearse=rehearse)
        if json:
            emit_json(plan.as_json())
        else:
            _show_plan(plan)
        finish(plan.exit_code)
        return
    _run(config, fleet=fleet, shard=shard, parallel=parallel, rehearse=rehearse, resume=False, yes=yes, json=json)


@task(help={**_COMMON, "yes": _DEPLOY["yes"]})
@boundary
def resume(c: Context, fleet: str = "", shard: str = "", parallel: int = 0, yes: bool = False,
           json: bool = False) -> None:
    """Continue the last fleet deploy (of this shard): skip the targets it finished, deploy the rest."""
    _run(settings(c), fleet=fleet, shard=shard, parallel=parallel, rehearse=True, resume=True, yes=yes, json=json)


def _run(config: Settings, *, fleet: str, shard: str, parallel: int, rehearse: bool, resume: bool, yes: bool,
         json: bool) -> None:
    from pgshift import api

    def confirm(question: Question[Any]) -> bool:
        return _prompts.ask(question, yes=yes)

    live = not json and sys.stdout.isatty()
    board = _LiveLine() if live else None
    report = api.fleet_deploy(config, fleet=fleet or None, shard=shard or None, parallel=parallel or None,
                              rehearse=rehearse, resume=resume, confirm=confirm if config.is_production else None,
                              progress=None if json else (board.line if board else out),
                              board=board.redraw if board else None)
    if board is not None:
        board.clear()
    if json:
        emit_json(report.as_json())
    else:
        _show_report(report)
    finish(report.exit_code)


class _LiveLine:
    """On a terminal: the run's lines scroll above one status line that is redrawn in place (done,
    running, failed, waiting, the longest running and the slowest target)."""

    def __init__(self) -> None:
        self.last = ""

    def line(self, text: str) -> None:
        sys.stdout.write("\r\x1b[K" + text + "\n" + self.last)
        sys.stdout.flush()

    def redraw(self, board: Board) -> None:
        self.last = board.line()[: shutil.get_terminal_size().columns - 1]
        sys.stdout.write("\r\x1b[K" + self.last)
        sys.stdout.flush()

    def clear(self) -> None:
        sys.stdout.write("\r\x1b[K")
        sys.stdout.flush()


def _show_plan(plan: FleetPlan) -> None:
    out(f"plan (dry run: nothing is changed): fleet {plan.fleet} ({plan.environment})"
        + (f", shard {plan.shard}" if plan.shard else ""))
    for number, names in plan.waves:
        out(f"wave {number}{' (canaries)' if number == 0 else ''}: {', '.join(names)}")
    out(f"at most {plan.parallel} at once; halts once more than {plan.max_failures} target(s) failed")
    common = plan.common()
    out(f"pending on most targets: {', '.join(common) if common else 'nothing'}")
    for t in plan.differences():
        what = f"ERROR: {t.error}" if t.error else "; ".join(t.problems) if not t.proceed else \
            f"pending {', '.join(t.pending) or 'nothing'}"
        out(f"  differs: {t.name} ({t.target}): {what}")
    out("a fleet deploy would proceed" if plan.proceed else "a fleet deploy would NOT proceed: see the targets above")


def _show_report(report: FleetReport) -> None:
    for r in report.failed:
        out(f"failed: {r.name} ({r.target}): {r.error}")
    if report.halted:
        untouched = report.untouched
        out(f"{len(untouched)} target(s) left untouched"
            + (f": {', '.join(untouched[:20])}" + (" ..." if len(untouched) > 20 else "") if untouched else ""))
        out("fix the cause, then inv fleet.resume deploys the targets not done")
    for line in report.warnings:
        out(f"warning: {line}")
    out(report.summary())
    out(f"journal: {report.journal}")
