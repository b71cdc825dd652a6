"""test: check the team's migrations on scratch databases (never the working database).

``inv test`` runs every check but the slow ones; each check has its own task. Exit 0 when all pass,
1 when any fails, 2 on a usage or configuration error.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from invoke.context import Context
from invoke.tasks import task

from pgshift import api
from pgshift.errors import ConfigError, ExitCode
from tasks._cli import boundary, emit_json, finish, out, settings, table

if TYPE_CHECKING:
    from pgshift.api import BackwardReport, ConstraintsReport, ForwardReport, LintReport, PerformanceReport, Report

_JSON = "print one JSON object instead of tables"


def _show(name: str, report: Report) -> None:
    """A check's table, then its details: failures, differences, fixes."""
    out(f"== {name}")
    if not getattr(report, "not_run", False):  # a check that could not run has only its summary
        _DETAILS[name](report)
    out(("ok: " if report.ok else "FAILED: ") + report.summary())
    out()


def _show_forward(report: ForwardReport) -> None:
    out(table(["migration", "result", "took", "transaction"],
              [(s.id, s.state, _ms(s.duration_ms), _transaction(s.transactional)) for s in report.steps]))
    if report.failure is not None:
        out(f"  {report.failure.error}")


def _show_backward(report: BackwardReport) -> None:
    out(table(["migration", "result", "rollback", "re-apply"],
              [(f"{t.id} ({t.phase})" if t.phase else t.id, t.state, _ms(t.rollback_ms), _ms(t.reapply_ms))
               for t in report.trips]))
    for trip in report.trips:
        if trip.state == "ok" and trip.problem:
            out(f"  note: {trip.file}: {trip.problem}")
        if trip.state == "failed":
            out(f"  {trip.file}: {trip.problem}")
            for line in trip.diff:
                out(f"      {line}")


def _show_performance(report: PerformanceReport) -> None:
    if report.fill is not None:
        fill = report.fill
        out(f"generated {fill.rows:,} rows in {fill.seconds:.1f}s ({fill.rows_per_second:,.0f} rows/s with indexes"
            f"; largest table {fill.largest:,}) on the schema up to {report.base or 'nothing'}")
        for t in fill.tables:
            if t.note:
                out(f"  {t.table}: {t.note}")
    out(table(["migration", "result", "took", "locks on existing tables", "rewrote"],
              [(m.id, m.state, _ms(m.duration_ms), _locks(m.locks), ", ".join(m.rewrote))
               for m in report.measured]))
    for m in report.measured:
        for problem in m.problems:
            out(f"  {m.file}: {problem}")


def _show_constraints(report: ConstraintsReport) -> None:
    if report.findings:
        out(table(["table", "problem", "fix", "id (to accept it)"],
                  [(f.table, f.problem, f.fix, f.id) for f in report.findings]))
    for f in report.accepted:
        out(f"  accepted in {f.accepted_in}: {f.id}: {f.problem}")


def _show_lint(report: LintReport) -> None:
    if report.findings:
        out(table(["where", "rule", "why"], [(f"{f.file}:{f.line}", f.rule, f.message) for f in report.findings]))


def _show_order(report: Any) -> None:
    for problem in report.problems:
        out(f"  {problem}")


def _show_schema(report: Any) -> None:
    for difference in report.differences:
        out(f"  {difference.describe()}")
    for warning in report.warnings:
        out(f"  warning: {warning}")


_DETAILS: dict[str, Callable[[Any], None]] = {
    "forward": _show_forward, "backward": _show_backward, "performance": _show_performance,
    "large-dataset": _show_performance, "constraints": _show_constraints, "lint": _show_lint,
    "order": _show_order, "schema": _show_schema,
}


def _transaction(value: bool | None) -> str:
    return "" if value is None else "one transaction" if value else "statement by statement"


def _rows(rows: int) -> int:
    if rows < 0:
        raise ConfigError(f"--rows {rows} is negative; give a number of rows, e.g. --rows 100000")
    return rows


def _progress(message: str) -> None:
    """Where a long check says what it is doing: stderr, so stdout stays a table or one JSON object."""
    sys.stderr.write(f"{message}\n")
    sys.stderr.flush()


def _ms(value: int | None) -> str:
    return "" if value is None else f"{value} ms"


def _locks(locks: Iterable[Any]) -> str:
    return "; ".join(f"{lock.mode.removesuffix('Lock')} {lock.table} {lock.ms} ms" for lock in locks)


def _finish(reports: list[tuple[str, Report]], as_json: bool, target: str = "") -> None:
    ok = all(r.ok for _, r in reports)
    if as_json:
        emit_json({"ok": ok, "checks": {name: r.as_json() for name, r in reports}})
    elif len(reports) > 1:
        out(f"== summary ({target})" if target else "== summary")
        out(table(["check", "result", "detail"], [(n, "ok" if r.ok else "FAILED", r.summary()) for n, r in reports]))
    finish(ExitCode.OK if ok else ExitCode.FAILED)


def _single(name: str, report: Report, as_json: bool) -> None:
    if not as_json:
        _show(name, report)
    _finish([(name, report)], as_json)


@task(name="all", default=True, help={
    "json": _JSON,
    "rows": "rows for the performance run (default: config quick_rows, 10,000; 0 skips it)",
})
@boundary
def all_checks(c: Context, json: bool = False, rows: int = -1) -> None:
    """Run forward, backward, constraints, lint, a quick performance check, order and schema."""
    config = settings(c)
    reports: list[tuple[str, Report]] = []
    for name, report in api.checks(config, None if rows == -1 else _rows(rows)):
        if not json:
            _show(name, report)
        reports.append((name, report))
    _finish(reports, json, config.describe_target())


@task(help={"json": _JSON})
@boundary
def forward(c: Context, json: bool = False) -> None:
    """Apply every migration to an empty scratch database, timed."""
    _single("forward", api.forward(settings(c)), json)


@task(help={"json": _JSON, "strict_order": "fail a round trip that changes the order of a table's columns "
                                           "(by default a note: columns are compared by name)"})
@boundary
def backward(c: Context, json: bool = False, strict_order: bool = False) -> None:
    """Up, down, up for every migration; the schema must round-trip."""
    _single("backward", api.backward(settings(c), strict_order=strict_order), json)


@task(help={"json": _JSON, "rows": "rows in each table nothing references (default: config perf_rows, 100,000)"})
@boundary
def performance(c: Context, json: bool = False, rows: int = 0) -> None:
    """Apply pending migrations over generated data: time, locks."""
    config = settings(c)
    _single("performance", api.performance(config, _rows(rows) or config.perf_rows, progress=_progress), json)


@task(help={"json": _JSON, "rows": "rows in the largest tables (default: config large_rows, 10,000,000)"})
@boundary
def large_dataset(c: Context, json: bool = False, rows: int = 0) -> None:
    """The performance check at large scale (10 million rows)."""
    config = settings(c)
    _single("large-dataset", api.performance(config, _rows(rows) or config.large_rows, progress=_progress), json)


@task(help={"json": _JSON})
@boundary
def constraints(c: Context, json: bool = False) -> None:
    """Missing indexes, keys and other schema smells, with fixes."""
    _single("constraints", api.constraints(settings(c)), json)


@task(help={"json": _JSON, "every": "lint every migration, not only those the target has not applied"})
@boundary
def lint(c: Context, json: bool = False, every: bool = False) -> None:
    """Unsafe statements in the migrations the target lacks."""
    _single("lint", api.lint(settings(c), every), json)


@task(help={"json": _JSON})
@boundary
def order(c: Context, json: bool = False) -> None:
    """New migrations sort after the main branch's, and migrations/pgshift.head names the newest."""
    _single("order", api.order(settings(c)), json)


@task(help={"json": _JSON})
@boundary
def schema(c: Context, json: bool = False) -> None:
    """schema.sql and the migrations produce the same schema (skipped without schema.sql)."""
    _single("schema", api.schema(settings(c)), json)
