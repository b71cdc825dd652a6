"""Running and printing deploys; shared by ``deploy`` (with rehearsal) and ``prod.deploy``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pgshift.errors import ExitCode
from tasks import _prompts
from tasks._cli import emit_json, finish, out, progress_out, table
from tasks._progress import BackfillBar
from tasks._status import show_drift

if TYPE_CHECKING:
    from pgshift.api import DeployReport, DeployState, Plan
    from pgshift.questions import Question
    from pgshift.settings import Settings


def show_plan(plan: Plan, dry_run: bool) -> None:
    head = "plan (dry run: nothing is changed)" if dry_run else "plan"
    out(f"{head}: deploy to {plan.target} ({plan.environment})")
    out(f"applied: {plan.applied}; pending: {len(plan.pending)}"
        + (f"; empty, skipped: {', '.join(plan.empty)}" if plan.empty else ""))
    for m in plan.pending:
        rollback = m.rollback_file or "NO ROLLBACK FILE"
        out(f"  {m.file}  ({m.mode}; rollback: {rollback})")
        if dry_run:
            for line in m.sql.rstrip().splitlines():
                out(f"      {line}")
    out(table(["step", "runs", "detail"], [(s.name, "yes" if s.runs else "skip", s.note) for s in plan.steps]))
    for line in plan.lint:
        out(f"lint: {line}")
    for line in plan.warnings:
        out(f"warning: {line}")
    for line in plan.problems:
        out(f"problem: {line}")


def verdict(plan: Plan) -> str:
    if not plan.proceed:
        return f"a deploy would NOT proceed: {plan.problems[0]}"
    if not plan.pending:
        return "a deploy would proceed: nothing to apply (up to date)"
    return f"a deploy would proceed: {len(plan.pending)} migration(s)"


def run(config: Settings, *, rehearse: bool, dry_run: bool, yes: bool, on_failure: str, json: bool) -> None:
    """The body of ``deploy`` and ``prod.deploy``."""
    from pgshift import api

    if dry_run:
        plan = api.plan(config, rehearse=rehearse, on_failure=on_failure)
        if json:
            emit_json(plan.as_json())
        else:
            show_plan(plan, dry_run=True)
            out(verdict(plan))
        finish(plan.exit_code)
        return

    def confirm(question: Question[Plan]) -> bool:
        if question.about is not None:
            show_plan(question.about, dry_run=False)
        return _prompts.ask(question, yes=yes)

    bar = BackfillBar()
    try:
        report = api.deploy(config, rehearse=rehearse, on_failure=on_failure,
                            confirm=confirm if config.is_production else None,
                            progress=None if json else bar.lines(progress_out()), watch=None if json else bar)
    finally:
        bar.clear()
    if json:
        emit_json(report.as_json())
    else:
        show_report(report)
    finish(report.exit_code)


def show_report(report: DeployReport) -> None:
    if report.rehearsal is not None:
        out(report.rehearsal.summary())
        out(table(["migration", "apply", "rollback", "re-apply", "locks on existing tables", "rewrote"],
                  [(t.id, f"{t.apply_ms} ms", _ms(t.rollback_ms), _ms(t.reapply_ms),
                    "; ".join(t.locks) or "-", ", ".join(t.rewrote) or "-") for t in report.rehearsal.timings]))
    if report.applied:
        out(table(["migration", "took", "attempts"],
                  [(a.id, f"{a.duration_ms} ms", a.attempts) for a in report.applied]))
    deploy = f"deploy #{report.deploy_id}" if report.deploy_id is not None else "deploy"
    if report.exit_code == ExitCode.OK and report.outcome == "up to date":
        out(f"{deploy}: nothing to apply; up to date")
    else:
        out(f"{deploy} {report.outcome}: {len(report.applied)} migration(s) in {report.total_s:.1f} s")
    if report.backup is not None:
        out(f"backup: {report.backup} (inv rollback.restore {report.backup.name} returns to it)")
    for line in report.recovered:
        out(f"recovered: {line}")
    for line in report.warnings:
        out(f"warning: {line}")
    out(f"log: {report.log}")


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms"


def show_state(state: DeployState, json: bool) -> None:
    if json:
        emit_json(state.as_json())
        if state.drift is not None and state.drift.items:
            finish(ExitCode.FAILED)
        return
    out(f"{state.environment}: {state.target}")
    if state.deploys:
        out(table(["#", "started (UTC)", "took", "outcome", "migrations", "by", "backup"], [
            (d.id, f"{d.started_at:%Y-%m-%d %H:%M:%S}", f"{d.duration_s:.1f} s" if d.duration_s is not None else "",
             d.outcome + (" (process died)" if d.id in state.interrupted else ""),
             ", ".join(d.migrations) or "-", f"{d.who}@{d.host}", d.backup or "-") for d in state.deploys]))
    else:
        out("no deploys yet")
    if state.deploy_running:
        out("a deploy (or migration) is running now: it holds the migration lock")
    if state.maintenance.enabled:
        why = (" -- LEFT ON by a deploy that died; the next deploy turns it off, or inv prod.maintenance off"
               if state.maintenance_left_by_crash else "")
        out(f"{state.maintenance.describe()}{why}")
    out(f"pending: {', '.join(state.pending)}" if state.pending else "pending: none")
    show_windows(state)
    if state.drift is not None:
        show_drift(state.drift)
        if state.drift.items:
            finish(ExitCode.FAILED)


def show_windows(state: DeployState) -> None:
    """Phased migrations: expanded (waiting for deploy.complete) or completed, and their backfills."""
    for w in state.windows:
        forced = f" (forced: {w.forced_reason})" if w.forced_reason else ""
        what = "expanded: inv deploy.complete contracts it, inv deploy.abort undoes it" if w.phase == "expanded" \
            else "completed"
        out(f"phase {w.id}: {what}{forced}")
        for f in w.backfills:
            share = f" ({min(100, 100 * f.rows_scanned // f.rows_total)}%)" if f.rows_total else ""
            eta = f", ETA {f.eta_s:.0f} s" if f.eta_s is not None else ""
            held = " PAUSED" if f.paused else ""
            held += f"; held: {f.throttled}" if f.throttled else ""
            out(f"  backfill {f.step} ({f.table}): {f.state}, {f.rows_scanned:,} of ~{f.rows_total:,} rows{share}, "
                f"{f.rows_done:,} changed, {f.rate:,.0f} rows/s{eta}{held}")
