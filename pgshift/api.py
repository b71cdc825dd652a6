"""The engine's public API: one function per user command, each taking ``Settings`` and returning a value.

Every Invoke task is a thin wrapper over one of these; a script or another tool calls them the same
way (see docs/api.md). They never print and never prompt: progress goes to an optional ``progress``
callback (one line per call), questions to a ``confirm`` callback (``pgshift.questions``), and errors
are ``pgshift.errors.PgShiftError`` subclasses carrying the exit code a command line should end with.

Each function imports the machinery it needs when it is called, so importing this module costs
nothing: ``inv --list`` imports it and must stay fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pgshift.errors import ConfigError
from pgshift.questions import Confirm
from pgshift.settings import Settings

if TYPE_CHECKING:  # the result types, re-exported for callers' annotations
    from pgshift.backups.inventory import Backup as Backup
    from pgshift.backups.restore import RestorePlan as RestorePlan
    from pgshift.backups.restore import RestoreResult as RestoreResult
    from pgshift.backups.retention import CleanupPlan as CleanupPlan
    from pgshift.checks.backward import BackwardReport as BackwardReport
    from pgshift.checks.constraints import ConstraintsReport as ConstraintsReport
    from pgshift.checks.forward import ForwardReport as ForwardReport
    from pgshift.checks.lint import LintReport as LintReport
    from pgshift.checks.performance import PerformanceReport as PerformanceReport
    from pgshift.checks.suite import NotRun as NotRun
    from pgshift.databases.dump import DumpProgress as DumpProgress
    from pgshift.databases.dump import OnProgress as OnDumpProgress
    from pgshift.deploy.maintenance import Maintenance as Maintenance
    from pgshift.deploy.plan import Plan as Plan
    from pgshift.deploy.run import DeployReport as DeployReport
    from pgshift.deploy.state import DeployState as DeployState
    from pgshift.migrations.apply import ApplyResult as ApplyResult
    from pgshift.migrations.backfill import BackfillTick as BackfillTick
    from pgshift.migrations.drift import Drift as Drift
    from pgshift.migrations.source import Migration as Migration
    from pgshift.migrations.status import Status as Status
    from pgshift.schema.autogen import Generated as Generated
    from pgshift.schema.generate import GenerateResult as GenerateResult
    from pgshift.schema.reset import ResetResult as ResetResult

Progress = Callable[[str], None]
BackfillWatch = Callable[["BackfillTick"], None]  # a backfill's progress, batch by batch (a progress bar)

__all__ = [  # the functions; the result types above are for annotations (import them under TYPE_CHECKING)
    "MigrateResult", "Progress", "Report", "backup", "backups", "backward", "baseline", "checks", "cleaned_up",
    "cleanup", "constraints", "deploy", "deploy_abort", "deploy_complete", "deploy_pause", "deploy_status",
    "fleet_deploy", "fleet_plan", "fleet_status", "forward", "generate_models", "import_migrations", "lint",
    "lock_notes", "maintenance", "mark", "migrate", "order", "performance", "plan", "rebase", "redact", "repair",
    "reset", "reset_allowed", "restore", "rollback_to", "schema", "squash", "status", "stop_server",
    "switch_maintenance",
]


# -- migrations ------------------------------------------------------------------------------------

def status(settings: Settings, *, drift: bool = True) -> Status:
    """Where every migration stands on the target, and (unless ``drift=False``) how the live schema
    differs from what the applied migrations make: one query against the stored reference."""
    from pgshift.databases import target
    from pgshift.deploy import tables
    from pgshift.migrations import history, source
    from pgshift.migrations.status import collect

    migrations = source.of(settings)
    with target.connect(settings) as db:
        records = history.records(db)
        found = collect(db, migrations, settings.describe_target(), settings.environment, records)
        present = tables(db)
        if any(present):  # the last deploy, a maintenance flag left on
            from pgshift.deploy.state import status_extra

            found = replace(found, extra={**found.extra, **status_extra(db, present)})
        if drift:
            from pgshift.migrations.apply import Limits
            from pgshift.schema import drift as schema_drift

            found = replace(found, drift=schema_drift.check(settings, db, migrations, Limits.of(settings), records))
    return found


@dataclass(frozen=True)
class MigrateResult:
    created: Migration | None
    result: ApplyResult
    generated: Generated | None = None  # set when the migration was generated from schema.sql
    remaining: list[str] = field(default_factory=list)  # what still differs from schema.sql afterwards
    models: Path | None = None  # the models module, regenerated after the change
    findings: list[str] = field(default_factory=list)  # lint and constraints on the migration just written


def migrate(settings: Settings, name: str | None = None, *, create_only: bool = False, upto: str | None = None,
            empty: bool = False, allow_data_loss: bool = False, progress: Progress | None = None,
            confirm: Confirm | None = None, allow_out_of_order: bool = False,
            expand_contract: bool = False, watch: BackfillWatch | None = None) -> MigrateResult:
    """Create a migration pair named ``name`` (if given), then apply every pending migration.

    With ``schema.sql`` present the new migration is generated from the difference between it and the
    migrated database; ``empty`` asks for the hand-written template instead. ``expand_contract`` writes
    a zero-downtime rename instead, for the first column (else table) schema.sql marks ``-- renamed from
    OLD`` whose old name the database still has (expand, backfill and contract phases; see docs/migrations.md); run
    it once per rename. A backfill reports each batch to ``watch`` too (a progress bar), when given."""
    from pgshift.databases import target
    from pgshift.migrations import apply, drift, source
    from pgshift.schema import declared_path

    allowed = allow_out_of_order or settings.allow_out_of_order
    if expand_contract:
        return _migrate_rename(settings, name, create_only=create_only, progress=progress, allowed=allowed,
                               watch=watch)
    if name and not empty and declared_path(settings).exists():
        return _migrate_to_schema(settings, name, create_only=create_only, upto=upto, progress=progress,
                                  allow_data_loss=allow_data_loss, confirm=confirm, allow_out_of_order=allowed)
    migrations = source.of(settings)
    created = source.create(settings.migrations_dir, name, existing=migrations) if name else None
    if created is not None:
        _new_head(settings, created)
    if create_only:
        return MigrateResult(created, apply.ApplyResult([], []))
    if created is not None:
        migrations.append(created)
    with target.connect(settings) as db, drift.kept(db, migrations):
        late = _in_order(db, migrations, allowed)
        result = apply.apply(db, migrations, apply.Limits.of(settings), upto=upto, progress=progress, watch=watch)
        _record_late(db, late, result)
    return MigrateResult(created, result)


def _migrate_rename(settings: Settings, name: str | None, *, create_only: bool, progress: Progress | None,
                    allowed: bool, watch: BackfillWatch | None = None) -> MigrateResult:
    """``migrate`` with ``expand_contract``: the rename template filled in from schema.sql's hint."""
    import functools

    from pgshift.databases import target
    from pgshift.migrations import apply, drift, rename, source
    from pgshift.schema import declared_path

    path = declared_path(settings)
    if not name or not path.exists():
        raise ConfigError("--expand-contract needs NAME and a schema.sql whose renamed column says "
                          "'-- renamed from OLD'; or write the migration by hand (docs/migrations.md, Zero-downtime)")
    hints = rename.hints(path.read_text())
    migrations = source.read(settings.migrations_dir)
    source.check_name(name, migrations)
    with target.connect(settings) as db, drift.kept(db, migrations):
        late = _in_order(db, migrations, allowed)
        before = apply.apply(db, migrations, apply.Limits.of(settings), progress=progress)
        _record_late(db, late, before)
        outstanding = [h for h in hints if _has_column(db, h.table, h.old) and not _has_column(db, h.table, h.new)]
        tables = [t for t in rename.table_hints(path.read_text()) if _is_table(db, t.old) and not _is_table(db, t.new)]
        computed = [c for c in rename.computed_hints(path.read_text())
                    if _is_table(db, c.table) and not _has_column(db, c.table, c.column)]
        splits = [sp for sp in rename.split_hints(path.read_text()) if _has_column(db, sp.table, sp.old)
                  and not any(_has_column(db, sp.table, p.column) for p in sp.parts)]
        if not outstanding and not tables and not computed and not splits:
            raise ConfigError(f"{path.name} declares no rename the database still needs: mark the column (or the "
                              "table's CREATE TABLE line) '-- renamed from OLD' while the database still has OLD, "
                              "a new NOT NULL column '-- computed from EXPRESSION', or columns "
                              "'-- split from OLD: EXPRESSION' with a line '-- OLD joined from EXPRESSION'")
        render: Callable[[str], tuple[str, str]]
        if outstanding:
            hint = outstanding[0]
            row = db.one("SELECT format_type(a.atttypid, a.atttypmod), a.atttypid = to_regtype(%s), a.attnotnull "
                         "FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attname = %s",
                         [hint.type, hint.table, hint.old.strip('"')])
            if row is not None and not row[1]:  # a type change as well: cast both ways
                hint = hint._replace(old_type=str(row[0]))
            hint = hint._replace(old_not_null=bool(row and row[2]))
            render = functools.partial(rename.render, rename=hint)
        elif tables:
            render = functools.partial(rename.render_table, rename=tables[0])
        elif splits:
            row = db.one("SELECT format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a "
                         "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s",
                         [splits[0].table, splits[0].old.strip('"')])
            split = splits[0]._replace(old_type=str(row[0]), old_not_null=bool(row[1])) if row else splits[0]
            render = functools.partial(rename.render_split, split=split)
        else:
            render = functools.partial(rename.render_computed, computed=computed[0])
        created = source.create(settings.migrations_dir, name, existing=migrations, render=render)
        _new_head(settings, created)
        if create_only:
            return MigrateResult(created, before)
        after = apply.apply(db, [*migrations, created], apply.Limits.of(settings), progress=progress, watch=watch)
    return MigrateResult(created, apply.ApplyResult(before.applied + after.applied, after.empty))


def _is_table(db: Any, name: str) -> bool:
    row = db.one("SELECT count(*) FROM pg_class WHERE oid = to_regclass(%s) AND relkind IN ('r', 'p')", [name])
    return bool(row and row[0])


def _has_column(db: Any, table: str, column: str) -> bool:
    row = db.one("SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s "
                 "AND NOT attisdropped AND attnum > 0", [table, column.strip('"')])
    return bool(row and row[0])


def _new_head(settings: Settings, created: Migration) -> None:
    from pgshift.migrations import order

    order.write_head(settings.migrations_dir, created.id)


def _in_order(db: Any, migrations: list[Migration], allowed: bool) -> list[tuple[str, str]]:
    """Refuse a pending migration older than the newest applied (unless ``allowed``); return them."""
    from pgshift.migrations import history, order

    late = order.late(migrations, history.records(db))
    if not allowed:
        order.refuse(late)
    return late


def _record_late(db: Any, late: list[tuple[str, str]], result: ApplyResult) -> None:
    from pgshift.migrations import audit

    newest = dict(late)
    for done in result.applied:
        if done.id in newest:
            audit.write(db, "out of order", done.id, detail=f"applied after {newest[done.id]} (--allow-out-of-order)")


def _migrate_to_schema(settings: Settings, name: str, *, create_only: bool, upto: str | None,
                       progress: Progress | None, allow_data_loss: bool, confirm: Confirm | None,
                       allow_out_of_order: bool = False) -> MigrateResult:
    """Apply what is pending, write the difference to schema.sql as migration ``name`` and its
    rollback, and apply it (unless ``create_only``). In sync: nothing is written."""
    from pgshift.databases import target
    from pgshift.migrations import apply, drift, source
    from pgshift.migrations.lock import migration_lock
    from pgshift.schema import autogen, declared_path, models_path, shadow

    if upto:
        raise ConfigError("--to cannot be combined with NAME while schema.sql exists: the new migration is "
                          "the difference from the fully migrated database; run inv dev.migrate --to ID first")
    migrations = source.of(settings)
    source.check_name(name, migrations)
    declared = declared_path(settings)
    source.normalise(declared.read_bytes(), declared)  # not UTF-8: refused before any work
    limits = apply.Limits.of(settings)
    say = progress or (lambda _msg: None)
    # One lock over apply, compare, write and apply: a second generator waits, then finds it done.
    # (Advisory locks stack within a session, so apply() taking it again inside is fine.)
    with target.connect(settings) as db, migration_lock(db, settings.lock_wait), \
            drift.kept(db, migrations, always=True):
        late = _in_order(db, migrations, allow_out_of_order)
        before = apply.apply(db, migrations, limits, progress=progress)
        _record_late(db, late, before)
        from pgshift.checks import constraints

        smells = {f.id for f in constraints.inspect(db, settings.sequence_limit).findings}
        say("comparing the database with schema.sql")
        generated = autogen.generate(settings, db, name, migrations, allow_data_loss=allow_data_loss,
                                     confirm=confirm)
        if generated.migration is not None:
            _new_head(settings, generated.migration)
        if generated.migration is None or create_only:
            shadow.finish()
            return MigrateResult(generated.migration, before, generated)
        after = apply.apply(db, [*migrations, generated.migration], limits, progress=progress)
        remaining = [c.sql for c in autogen.remaining(db, generated.desired).changes]
        findings = _findings_of(db, [*migrations, generated.migration], generated.migration, smells)
        models = models_path(settings)
        refreshed = None
        from pgshift.schema import generate

        if models.exists() and generate.ours(models):  # the team uses generated models: keep them in step
            refreshed = generate.write(db, models).path
    shadow.finish()
    done = apply.ApplyResult(before.applied + after.applied, after.empty)
    return MigrateResult(generated.migration, done, generated, remaining, refreshed, findings)


def _findings_of(db: Any, migrations: list[Migration], written: Migration, smells: set[str]) -> list[str]:
    """What lint and the constraints check find in the migration just written and applied: a foreign key
    declared in schema.sql without an index is said here, not first by a deploy's rehearsal."""
    from pgshift.checks import constraints, lint

    found = [f"lint: {f.file}, line {f.line}: {f.message} [{f.rule}]"
             for f in lint.lint(migrations, only={written.id}).findings]
    found += [f"constraints: {f.table}: {f.problem}; fix: {f.fix}" for f in constraints.inspect(db).findings
              if f.id not in smells and constraints.accepted_by(f, [written]) is None]
    return found


def reset(settings: Settings, *, confirm: Confirm) -> ResetResult:
    """Drop the development database, create it again, apply every migration, run the seed.
    Refuses (before connecting) anything but a development database on a local server."""
    from pgshift.migrations.apply import Limits
    from pgshift.schema import reset as schema_reset

    return schema_reset.reset(settings, confirm, Limits.of(settings))


def reset_allowed(settings: Settings) -> None:
    """Raise ``Refused`` unless ``reset`` may run here: a caller checks before it asks anything."""
    from pgshift.schema import reset as schema_reset

    schema_reset.guard(settings)


def generate_models(settings: Settings, output: Path | None = None) -> GenerateResult:
    """Write typed SQLAlchemy models of the target's schema (default: models.py beside schema.sql)."""
    from pgshift.schema import generate

    return generate.run(settings, output)


def redact(text: str) -> str:
    """``text`` as it may be shown: passwords of URLs (parseable or not) and SQL password literals masked."""
    from pgshift.dburl import redact as redact_text

    return redact_text(text)


def cleaned_up() -> list[str]:
    """The throwaway databases killed runs had left that this process dropped (every command that makes
    one first drops those), since the last call: a caller says so once the command is done."""
    import sys

    module = sys.modules.get("pgshift.databases.throwaway")  # not loaded: nothing was made, nothing swept
    return module.swept() if module is not None else []


def lock_notes() -> list[str]:
    """What taking the migration lock did about orphaned sessions (ended one whose client is gone),
    when the command that took it had no progress callback to say it to, since the last call."""
    import sys

    module = sys.modules.get("pgshift.migrations.lock")
    return module.notes() if module is not None else []


def stop_server(settings: Settings) -> bool:
    """Stop the embedded development server; False when it was not running."""
    from pgshift.databases import embedded

    return embedded.stop(settings.embedded_dir)


# -- checks ----------------------------------------------------------------------------------------

class Report(Protocol):
    """What every check returns."""

    @property
    def ok(self) -> bool: ...

    def summary(self) -> str: ...

    def as_json(self) -> dict[str, Any]: ...


if TYPE_CHECKING:
    from pgshift.checks.inputs import Inputs


def _inputs(settings: Settings, given: Inputs | None, scratch_databases: bool = True) -> Inputs:
    from pgshift.checks import inputs

    return given or inputs.gather(settings, scratch_databases)


def forward(settings: Settings, given: Inputs | None = None) -> ForwardReport:
    """Apply every migration to an empty scratch database, each one timed."""
    from pgshift.checks import forward as check

    i = _inputs(settings, given)
    return check.forward(i.admin, i.migrations, i.limits)


def backward(settings: Settings, given: Inputs | None = None, *, strict_order: bool = False) -> BackwardReport:
    """Up, down, up for every migration on a scratch database: the schema must round-trip. Columns are
    compared by name, their order a note; ``strict_order`` fails a changed order too."""
    from pgshift.checks import backward as check

    i = _inputs(settings, given)
    return check.run(i.admin, i.migrations, i.limits, strict_order)


def constraints(settings: Settings, given: Inputs | None = None) -> ConstraintsReport:
    """Missing indexes, keys and other schema smells of the fully migrated schema, each with its fix."""
    from pgshift.checks import constraints as check

    i = _inputs(settings, given)
    return check.run(i.admin, i.migrations, i.limits, settings.sequence_limit, i.accept)


def lint(settings: Settings, every: bool = False, given: Inputs | None = None) -> LintReport:
    """Statements unsafe on a live database, in the migrations the target lacks (``every``: all)."""
    from pgshift.checks import lint as check

    i = _inputs(settings, given, scratch_databases=False)
    return check.lint(i.migrations, None if every else i.pending, existing=set() if every else i.tables,
                      sizes=None if every else i.sizes)


def performance(settings: Settings, rows: int, given: Inputs | None = None,
                progress: Progress | None = None) -> PerformanceReport:
    """The pending migrations applied over ``rows`` of generated data: time, locks and rewrites."""
    from pgshift.checks import performance as check

    i = _inputs(settings, given)
    return check.run(i.admin, i.migrations, i.limits, rows, check.Thresholds.of(settings), i.applied, progress)


def checks(settings: Settings, rows: int | None = None) -> Iterator[tuple[str, Report]]:
    """forward, backward, constraints, lint, a small performance run (``rows``, default the config's
    ``quick_rows``; 0 skips it), order and schema (skipped without schema.sql), each yielded as it finishes."""
    from pgshift.checks import inputs, suite

    i = inputs.gather(settings)
    quick = settings.quick_rows if rows is None else rows
    steps: list[tuple[str, Callable[[], Report]]] = [
        ("forward", lambda: forward(settings, i)),
        ("backward", lambda: backward(settings, i)),
        ("constraints", lambda: constraints(settings, i)),
        ("lint", lambda: lint(settings, given=i)),
    ]
    if quick > 0:
        steps.append(("performance", lambda: performance(settings, quick, i)))
    steps.append(("order", lambda: order(settings)))
    steps.append(("schema", lambda: schema(settings, i)))
    for name, step in steps:
        yield name, suite.guarded(name, step)


# -- backups ---------------------------------------------------------------------------------------

def backup(settings: Settings, *, progress: OnDumpProgress | None = None) -> Backup:
    """Back up the target into the backups folder: complete and verified, or absent."""
    from pgshift.backups import files

    return files.take(settings, progress=progress)


def backups(settings: Settings) -> list[Backup]:
    """Every backup in the backups folder, newest first."""
    from pgshift.backups import files

    return files.list_backups(settings)


def restore(settings: Settings, file: str | Path, *, confirm: Confirm | None = None,
            progress: OnDumpProgress | None = None, force: bool = False,
            on_restored: Callable[[RestoreResult], None] | None = None) -> RestoreResult:
    """Replace the target with a backup, all or nothing. Without ``confirm`` production is refused; an
    archive with no manifest that was dumped from another database is refused unless ``force``.
    ``on_restored`` hears the result once the restored database is in place, before the replaced
    copy is dropped (that drop waits for a checkpoint)."""
    from pgshift.backups import restore as backups_restore

    return backups_restore.restore(settings, file, confirm=confirm, progress=progress, force=force,
                                   on_restored=on_restored)


def cleanup(settings: Settings, *, dry_run: bool = False) -> CleanupPlan:
    """Remove backups beyond the retention policy and what interrupted backups left."""
    from pgshift.backups import retention

    return retention.cleanup(settings, dry_run=dry_run)


# -- deploys ---------------------------------------------------------------------------------------

def plan(settings: Settings, *, rehearse: bool, on_failure: str = "stop") -> Plan:
    """What a deploy would do (the dry run), built over a read-only session: nothing is written."""
    from pgshift.deploy import workflow

    return workflow.plan(settings, rehearse=rehearse, on_failure=on_failure)


def deploy(settings: Settings, *, rehearse: bool, on_failure: str = "stop", confirm: Confirm | None = None,
           progress: Progress | None = None, watch: BackfillWatch | None = None) -> DeployReport:
    """Deploy every pending migration: (rehearsal on a clone), lock, backup, maintenance, apply,
    verify, Slack (when ``SLACK_WEBHOOK_URL`` is set), log. Production needs ``confirm``. A backfill
    reports each batch to ``watch`` (a progress bar), and to Slack at its start, every
    ``backfill_notify_seconds`` and at its end."""
    from pgshift.deploy import notify, workflow

    slack = notify.Slack.from_settings(settings)
    try:
        return workflow.deploy(settings, rehearse=rehearse, on_failure=on_failure, confirm=confirm,
                               notify=slack, progress=progress, watch=watch)
    finally:
        if slack is not None:
            slack.close()


def deploy_status(settings: Settings, limit: int = 10, *, drift: bool = True) -> DeployState:
    """Recent deploys, what is pending, the maintenance flag, a deploy that died, and (unless
    ``drift=False``) drift, as ``status`` finds it."""
    from pgshift.deploy import state

    return state.collect(settings, limit, drift=drift)


def deploy_pause(settings: Settings, *, resume: bool = False) -> int:
    """Pause every unfinished backfill through its control row (``resume=True`` lets it go on): the
    running backfill sees it before its next batch. Returns how many backfills it set."""
    from pgshift.databases import target
    from pgshift.migrations import window

    with target.connect(settings) as db:
        return window.pause(db, not resume)


def deploy_complete(settings: Settings, *, migration: str | None = None, force: bool = False,
                    reason: str | None = None, progress: Progress | None = None) -> list[str]:
    """Run the contract phase of every expanded migration (or ``migration``), under the migration lock.
    Refused while its backfill is unfinished, or while there is evidence of the old release: its sessions
    (``old_release``, an ``application_name`` LIKE pattern), statements naming an old name in
    pg_stat_statements since the last look, or the generated models module mapping one; ``force`` with a
    ``reason`` overrides the latter, recorded. Returns the ids completed."""
    from pgshift.databases import target
    from pgshift.migrations import source, window
    from pgshift.migrations.budget import Limits
    from pgshift.schema import models_path

    migrations = source.read(settings.migrations_dir)
    with target.connect(settings) as db:
        return window.complete(db, migrations, Limits.of(settings).for_phases(), old_release=settings.old_release,
                               force=force, reason=reason, only=migration, models=models_path(settings), say=progress)


def deploy_abort(settings: Settings, *, migration: str | None = None,
                 progress: Progress | None = None) -> list[str]:
    """Undo every expanded migration not completed (or ``migration``), newest first: its abort section or
    else its rollback file, with its record, in one transaction each. Returns the ids aborted."""
    from pgshift.databases import target
    from pgshift.migrations import source, window
    from pgshift.migrations.budget import Limits

    migrations = source.read(settings.migrations_dir)
    with target.connect(settings) as db:
        return window.abort(db, migrations, Limits.of(settings).for_phases(), only=migration, say=progress)


def maintenance(settings: Settings) -> tuple[Maintenance, bool]:
    """The maintenance flag, and whether a deploy that died left it on."""
    from pgshift.deploy import manual

    return manual.state(settings)


def switch_maintenance(settings: Settings, on: bool, *, reason: str | None = None,
                       progress: Progress | None = None) -> tuple[Maintenance, list[str]]:
    """Turn maintenance mode on or off by hand (flag, hooks, log, Slack); returns it and any warnings."""
    from pgshift.deploy import manual, notify

    slack = notify.Slack.from_settings(settings)
    try:
        return manual.switch(settings, on, reason=reason, notify=slack, progress=progress)
    finally:
        if slack is not None:
            slack.close()


# -- adopting and repairing (baseline, import, mark, repair, rollback to, order, squash) ----------------

if TYPE_CHECKING:
    from pgshift.deploy.rollback import RollbackReport as RollbackReport
    from pgshift.migrations.order import OrderReport as OrderReport
    from pgshift.migrations.repair import Repaired as Repaired
    from pgshift.schema.adopt import Imported as Imported
    from pgshift.schema.baseline import Baseline as Baseline

IMPORT_TOOLS = ("prisma", "yoyo")


def import_migrations(settings: Settings, tool: str, folder: Path, *, reason: str | None = None) -> Imported:
    """Convert another tool's migrations folder into ours and adopt its records on the target
    (``tool``: prisma or yoyo). The tool's own table is left untouched."""
    from pgshift.databases import target

    if tool not in IMPORT_TOOLS:
        raise ConfigError(f"--from {tool!r} is not supported; use one of: {', '.join(IMPORT_TOOLS)}")
    with target.connect(settings) as db:
        if tool == "prisma":
            from pgshift.schema import adopt

            return adopt.import_prisma(settings, db, folder, reason=reason)
        from pgshift.schema.adopt_yoyo import import_yoyo

        return import_yoyo(settings, db, folder, reason=reason)


def baseline(settings: Settings, *, confirm: Confirm | None = None, reason: str | None = None) -> Baseline:
    """Write the target's live schema as ``<timestamp>_baseline.sql`` (rollback refused) and record it
    applied; no data is touched. Production needs ``confirm``. Refused when migrations exist already."""
    from pgshift.databases import target
    from pgshift.migrations import source
    from pgshift.schema import baseline as schema_baseline

    schema_baseline.guard(settings, source.of(settings))  # before connecting
    with target.connect(settings) as db:
        return schema_baseline.baseline(settings, db, confirm=confirm, reason=reason)


def rollback_to(settings: Settings, to: str, *, dry_run: bool = False, confirm: Confirm | None = None,
                progress: Progress | None = None, reason: str | None = None) -> RollbackReport:
    """Run the rollback files of every migration applied after ``to``, newest first, under the lock.
    A missing or refused rollback stops it before anything runs. Beyond development: the plan confirmed
    (production needs ``confirm``), a backup first unless SKIP_BACKUP, maintenance, Slack, log, history."""
    from pgshift.deploy import notify
    from pgshift.deploy import rollback as deploy_rollback

    slack = notify.Slack.from_settings(settings)
    try:
        return deploy_rollback.run(settings, to, dry_run=dry_run, confirm=confirm, notify=slack, progress=progress,
                                   reason=reason)
    finally:
        if slack is not None:
            slack.close()


def rebase(settings: Settings, ident: str, *, reason: str | None = None) -> str:
    """Give migration ``ident`` the next timestamp (files renamed, the development record with them);
    returns its new id."""
    from pgshift.databases import target
    from pgshift.migrations import rebase as migrations_rebase

    with target.connect(settings) as db:
        return migrations_rebase.rebase(settings, db, ident, reason=reason)


def order(settings: Settings) -> OrderReport:
    """``inv test``'s order check: the branch's new migrations sort after the main branch's, and
    ``migrations/pgshift.head`` names the newest (no database needed)."""
    from pgshift.migrations import order as migrations_order
    from pgshift.migrations import source

    return migrations_order.check(settings.migrations_dir, source.of(settings),
                                  settings.main_branch)


def _guard_production(settings: Settings, confirm: Confirm | None, what: str) -> None:
    """Production: the database name typed (``confirm``), else refused."""
    from pgshift.errors import Aborted, Refused
    from pgshift.questions import Question

    if not settings.is_production:
        return
    if confirm is None:
        raise Refused(f"{what} on production needs a confirmation: run it at a terminal, or pass --yes")
    name = settings.url.dbname if settings.url is not None else settings.embedded_database
    if not confirm(Question(f"{what} on PRODUCTION: type the database name ({name}) to go ahead", expected=name)):
        raise Aborted(f"{what} cancelled; nothing was changed")


def mark(settings: Settings, ident: str, *, applied: bool, confirm: Confirm | None = None,
         reason: str | None = None) -> str:
    """Record migration ``ident`` as applied, or as not applied, by hand (logged with ``reason``);
    returns what was done. Production needs ``confirm``."""
    from pgshift.databases import target
    from pgshift.migrations import repair as migrations_repair
    from pgshift.migrations import source

    _guard_production(settings, confirm, f"marking {ident} {'applied' if applied else 'reverted'}")
    migrations = source.of(settings)
    with target.connect(settings) as db:
        return migrations_repair.mark(db, migrations, ident, applied=applied, lock_wait=settings.lock_wait,
                                      reason=reason)


def repair(settings: Settings, *, accept_edit: list[str] | None = None, confirm: Confirm | None = None,
           reason: str | None = None) -> Repaired:
    """Clear failed or interrupted records whose effect is absent; accept deliberately edited applied
    files (``accept_edit``). Records whose effect is present are kept. Production needs ``confirm``."""
    from pgshift.databases import target
    from pgshift.migrations import repair as migrations_repair
    from pgshift.migrations import source

    _guard_production(settings, confirm, "repairing the migration record")
    migrations = source.of(settings)
    with target.connect(settings) as db:
        return migrations_repair.repair(db, migrations, accept_edit=accept_edit or [], lock_wait=settings.lock_wait,
                                        reason=reason)


if TYPE_CHECKING:
    from pgshift.schema.gate import SchemaReport as SchemaReport
    from pgshift.schema.squash import Squashed as Squashed


def squash(settings: Settings, upto: str, *, force: bool = False, reason: str | None = None) -> Squashed:
    """Replace the migrations up to ``upto`` with one that builds the same schema (proved on two shadow
    databases first) and whose rollback drops it; the replaced files are deleted. The development
    database records the squash in their place if it applied them all. Data changes in the replaced
    files are refused unless ``force`` (then left out, named in the squash's header)."""
    from pgshift.databases import target
    from pgshift.schema import squash as schema_squash

    schema_squash.chosen(settings, upto)  # an unknown id is refused before connecting
    with target.connect(settings) as db:
        return schema_squash.squash(settings, db, upto, force=force, reason=reason)


def schema(settings: Settings, given: Inputs | None = None) -> SchemaReport:
    """``schema.sql`` and the migrations built on two scratch databases and compared, each difference
    named; skipped (``ok``, ``skipped``) when there is no schema.sql."""
    from pgshift.schema import declared_path, gate

    path = declared_path(settings)
    if not path.exists():
        return gate.SchemaReport("")
    i = _inputs(settings, given)
    return gate.run(i.admin, i.migrations, i.limits, gate.read(path), path.name)


__all__ += ["baseline", "import_migrations", "mark", "order", "rebase", "repair", "rollback_to", "schema", "squash"]
__all__ += ["baseline", "import_migrations", "mark", "order", "rebase", "repair", "rollback_to"]


# -- fleets ----------------------------------------------------------------------------------------

if TYPE_CHECKING:
    from pgshift.fleet.report import Board as Board
    from pgshift.fleet.report import FleetReport as FleetReport
    from pgshift.fleet.survey import FleetPlan as FleetPlan
    from pgshift.fleet.survey import FleetStatus as FleetStatus


def fleet_status(settings: Settings, *, fleet: str | Path | None = None, shard: str | None = None,
                 parallel: int | None = None) -> FleetStatus:
    """Every target of the fleet file (``fleet.toml`` beside ``tasks.py`` unless ``fleet``), or of
    ``shard`` ("K/N") of it: its head, what is pending, what is wrong, its last state in the journal."""
    from pgshift.fleet import survey, targets, waves

    fleet_file = targets.load(targets.path_of(settings, fleet))
    return survey.status(settings, fleet_file, waves.Shard.parse(shard), parallel)


def fleet_plan(settings: Settings, *, fleet: str | Path | None = None, shard: str | None = None,
               parallel: int | None = None, rehearse: bool = True) -> FleetPlan:
    """The fleet deploy's plan, read over read-only sessions: the waves, and each target's pending
    migrations (``FleetPlan.differences()`` names the targets that differ from the rest)."""
    from pgshift.fleet import survey, targets, waves

    fleet_file = targets.load(targets.path_of(settings, fleet))
    return survey.plan(settings, fleet_file, waves.Shard.parse(shard), parallel, rehearse)


def fleet_deploy(settings: Settings, *, fleet: str | Path | None = None, shard: str | None = None,
                 parallel: int | None = None, rehearse: bool = True, resume: bool = False,
                 confirm: Confirm | None = None, progress: Progress | None = None,
                 board: Callable[[Board], None] | None = None) -> FleetReport:
    """Deploy every target of the fleet (or of ``shard``), each with the single-database deploy: the
    first target alone with the rehearsal, the other canaries (``wave = 0``), then the waves, at most
    ``parallel`` at once; halts once more than ``max_failures`` targets failed. ``resume`` continues
    the journal's last run, skipping the targets it finished. Production needs ``confirm`` (once for
    the fleet); Slack hears one digest per wave. ``board`` gets a snapshot of the run (done, running,
    failed, waiting, the slowest) at every start and end of a target, for a live display."""
    from pgshift.deploy import notify
    from pgshift.fleet import runner, targets, waves

    fleet_file = targets.load(targets.path_of(settings, fleet))
    part = waves.Shard.parse(shard)
    slack = notify.Slack.from_settings(settings)
    try:
        return runner.deploy(settings, fleet_file, parallel=parallel, shard=part, rehearse=rehearse, resume=resume,
                             confirm=confirm, notify=slack, progress=progress, board=board)
    finally:
        if slack is not None:
            slack.close()


__all__ += ["fleet_deploy", "fleet_plan", "fleet_status"]
