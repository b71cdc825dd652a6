"""The checks as the command line runs them: from Settings to reports.

Every check runs on scratch databases on the target's server (the embedded one in development
without a DATABASE_URL). The target itself is only read: which migrations it has applied
(performance measures the ones it lacks, lint checks those; ``every`` lints all) and which tables it
has (a table made outside the migrations exists all the same, for lint).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pgshift import core
from pgshift.checks import backward as backward_check
from pgshift.checks import constraints as constraints_check
from pgshift.checks import forward as forward_check
from pgshift.checks import lint as lint_check
from pgshift.checks import performance as performance_check
from pgshift.databases import scratch, target
from pgshift.databases.db import Database, DatabaseMissing
from pgshift.dburl import DatabaseUrl
from pgshift.errors import Refused
from pgshift.migrations import apply, history, source
from pgshift.migrations.source import Migration
from pgshift.settings import Settings


class Report(Protocol):
    @property
    def ok(self) -> bool: ...

    def summary(self) -> str: ...

    def as_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Plan:
    admin: DatabaseUrl            # where scratch databases are made
    migrations: list[Migration]
    limits: apply.Limits
    applied: set[str]             # ids the target has applied
    target: str                   # for printing
    tables: set[str] = field(default_factory=set)  # the target's tables (schema.name), for lint


def plan(settings: Settings, scratch_databases: bool = True) -> Plan:
    """What the checks need; ``scratch_databases=False`` (lint) only reads the target."""
    if scratch_databases and settings.is_production:
        raise Refused("inv test makes scratch databases on the target's server and fills them with generated "
                      "data, which production's server must not carry; point DATABASE_URL at a development "
                      "or CI server, or use inv deploy, which rehearses on a clone")
    migrations = source.read(settings.migrations_dir)
    url = target.url(settings)
    applied, tables = _read_target(url, settings.connect_timeout)
    admin = scratch.server_of(url, settings.connect_timeout) if scratch_databases else url
    return Plan(admin, migrations, core.limits(settings), applied, settings.describe_target(), tables)


_TARGET_TABLES = """
SELECT format('%s.%s', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift')
AND n.nspname NOT LIKE 'pg\\_%'"""


def _read_target(url: DatabaseUrl, connect_timeout: int) -> tuple[set[str], set[str]]:
    """The target's applied migrations and its tables, read only; a database not created yet has none."""
    try:
        with Database.connect(url, connect_timeout) as db:
            applied = {r.id for r in history.records(db).values() if r.state == "applied"}
            return applied, {str(r[0]) for r in db.rows(_TARGET_TABLES)}
    except DatabaseMissing:
        return set(), set()


def thresholds(settings: Settings) -> performance_check.Thresholds:
    return performance_check.Thresholds(max_migration_seconds=settings.max_migration_seconds,
                                        max_lock_seconds=settings.max_lock_seconds)


def forward(settings: Settings, p: Plan | None = None) -> forward_check.ForwardReport:
    p = p or plan(settings)
    return forward_check.forward(p.admin, p.migrations, p.limits)


def backward(settings: Settings, p: Plan | None = None) -> backward_check.BackwardReport:
    p = p or plan(settings)
    return backward_check.run(p.admin, p.migrations, p.limits)


def performance(settings: Settings, rows: int, p: Plan | None = None,
                progress: Callable[[str], None] | None = None) -> performance_check.PerformanceReport:
    p = p or plan(settings)
    return performance_check.run(p.admin, p.migrations, p.limits, rows, thresholds(settings), p.applied, progress)


def constraints(settings: Settings, p: Plan | None = None) -> constraints_check.ConstraintsReport:
    p = p or plan(settings)
    return constraints_check.run(p.admin, p.migrations, p.limits, settings.sequence_limit)


def lint(settings: Settings, every: bool = False, p: Plan | None = None) -> lint_check.LintReport:
    p = p or plan(settings, scratch_databases=False)
    only = None if every else {m.id for m in p.migrations if m.id not in p.applied}
    return lint_check.lint(p.migrations, only, existing=set() if every else p.tables)


def everything(settings: Settings, rows: int | None = None) -> Iterator[tuple[str, Report]]:
    """forward, backward, constraints, lint and a small performance run, each as it finishes."""
    p = plan(settings)
    quick = settings.quick_rows if rows is None else rows
    steps: list[tuple[str, Callable[[], Report]]] = [
        ("forward", lambda: forward(settings, p)),
        ("backward", lambda: backward(settings, p)),
        ("constraints", lambda: constraints(settings, p)),
        ("lint", lambda: lint(settings, p=p)),
    ]
    if quick > 0:
        steps.append(("performance", lambda: performance(settings, quick, p)))
    for name, step in steps:
        yield name, step()
