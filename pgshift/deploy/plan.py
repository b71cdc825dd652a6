"""The deploy plan: what a deploy would do, built without writing anything to the target.

``--dry-run`` prints it and exits 0 when ``proceed`` (non-zero with the reasons otherwise); a real
deploy builds the same value, asks for confirmation with it, and executes it. Building it reads the
target over a session set to ``default_transaction_read_only`` by the caller (``workflow.dry_run``), so
that it writes nothing is enforced by the server, not only by this code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pgshift.backups import files as backup_files
from pgshift.checks import lint
from pgshift.databases import dump
from pgshift.databases.db import Database
from pgshift.dburl import mask_sql_passwords
from pgshift.deploy import deploys, maintenance
from pgshift.errors import ExitCode, MigrationError
from pgshift.migrations import apply, history, lock, order, txmode
from pgshift.migrations.source import Migration
from pgshift.settings import Settings

ON_FAILURE = ("stop", "rollback")


@dataclass(frozen=True)
class PlannedMigration:
    id: str
    file: str
    sql: str
    transactional: bool | None  # None: the file does not parse (a problem says why)
    rollback_file: str | None
    why: str = ""               # why statement by statement

    @property
    def mode(self) -> str:
        if self.transactional is False:
            return f"statement by statement ({self.why})" if self.why else "statement by statement (no transaction)"
        return {True: "in one transaction", None: "unknown (does not parse)"}[self.transactional]


@dataclass(frozen=True)
class PlannedStep:
    name: str
    runs: bool
    note: str = ""


@dataclass(frozen=True)
class Plan:
    target: str            # redacted
    environment: str
    database: str
    pending: list[PlannedMigration]
    empty: list[str]       # pending files with no statement yet: skipped
    applied: int           # migrations already applied
    steps: list[PlannedStep]
    backup: str | None     # the backup a deploy would take (a name pattern), None when skipped
    on_failure: str
    rehearse: bool
    maintenance: maintenance.Maintenance = maintenance.OFF
    interrupted: list[deploys.Deploy] = field(default_factory=list)
    lint: list[str] = field(default_factory=list)       # findings, one line each
    problems: list[str] = field(default_factory=list)   # why a deploy would not proceed
    warnings: list[str] = field(default_factory=list)   # worth knowing, not blocking
    # The folder as the plan read it: the rehearsal and the deploy run exactly these (never read again).
    migrations: list[Migration] = field(default_factory=list, repr=False, compare=False)

    @property
    def proceed(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.proceed else ExitCode.FAILED

    @property
    def ids(self) -> list[str]:
        return [m.id for m in self.pending]

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target, "environment": self.environment, "database": self.database,
            "proceed": self.proceed, "exit_code": int(self.exit_code), "problems": self.problems,
            "warnings": self.warnings, "applied": self.applied, "on_failure": self.on_failure,
            "rehearse": self.rehearse, "backup": self.backup, "lint": self.lint, "empty": self.empty,
            "maintenance": self.maintenance.as_json(),
            "interrupted_deploys": [d.as_json() for d in self.interrupted],
            "pending": [{"id": m.id, "file": m.file, "transactional": m.transactional, "mode": m.mode,
                         "rollback_file": m.rollback_file, "sql": m.sql} for m in self.pending],
            "steps": [{"name": s.name, "runs": s.runs, "note": s.note} for s in self.steps],
        }


def mode(m: Migration) -> txmode.Mode:
    """How ``apply`` runs the migration (the same rule it uses)."""
    return txmode.of(m.sql, m.path.name, may_need_parse=m.may_need_parse)


def _plan_migration(m: Migration, problems: list[str]) -> PlannedMigration:
    transactional: bool | None
    why = ""
    try:
        found = mode(m)
        transactional, why = found.transactional, found.why
    except MigrationError as error:
        problems.append(str(error))
        transactional = None
    # The SQL is shown (dry run, JSON, the deploy's confirmation): never with a password in it.
    rollback = m.rollback_path.name if m.rollback_path else None
    return PlannedMigration(m.id, m.path.name, mask_sql_passwords(m.sql), transactional, rollback, why)


# Findings by the migrations' text: a fleet run plans every target against the same files, and parsing them
# once per target was the most CPU its threads spent under the one interpreter lock.
_LINTED: dict[tuple[object, ...], list[lint.LintFinding]] = {}


def _lint(migrations: list[Migration], planned: list[PlannedMigration]) -> list[lint.LintFinding]:
    key = (tuple((m.id, m.path.name, m.sql, m.empty) for m in migrations), frozenset(m.id for m in planned))
    found = _LINTED.get(key)
    if found is None:
        found = lint.lint(migrations, only={m.id for m in planned}).findings
        if len(_LINTED) >= 16:
            _LINTED.clear()
        _LINTED[key] = found
    return list(found)


def backup_name(settings: Settings, database_bytes: int | None = None) -> str:
    """The name a backup would get; its extension from the format a database this size is backed up in."""
    ext = dump.FORMATS[backup_files.chosen_format(settings, database_bytes)]
    return str(settings.backups_dir / f"backup_{settings.environment}_<UTC YYYYMMDD_HHMMSS>{ext}")


def _database_bytes(db: Database) -> int | None:
    row = db.one("SELECT pg_database_size(current_database())")
    return int(row[0]) if row else None


def build(settings: Settings, db: Database, migrations: list[Migration], *, rehearse: bool,
          on_failure: str = "stop", dry_run: bool = True, extra_warnings: list[str] | None = None) -> Plan:
    """Preflight and plan. Reads the target only.

    Lint findings on the pending migrations block a deploy with rehearsal (``inv deploy``, the
    strict path) and are warnings for ``prod.deploy``."""
    problems: list[str] = []
    warnings = list(extra_warnings or [])
    if on_failure not in ON_FAILURE:
        problems.append(f"--on-failure={on_failure!r} is not one of: {', '.join(ON_FAILURE)}")
    records = history.records(db)
    shared = None if records else history.shared_record_instead(db)
    if shared:
        problems.append(shared)
    try:
        pending = apply.verify(migrations, records)
    except MigrationError as error:
        problems.append(str(error))
        pending = []
    applied = sum(1 for r in records.values() if r.state == "applied")
    runnable = [p.migration for p in pending if not p.migration.empty]
    planned = [_plan_migration(m, problems) for m in runnable]
    for p in pending:
        if p.record is not None and p.record.state == "failed":
            warnings.append(f"{p.migration.id} failed before ({(p.record.error or 'interrupted')[:200]}); "
                            "this deploy tries it again")
    if on_failure == "rollback":
        missing = [m.id for m in planned if m.rollback_file is None]
        one_way = [m for m in runnable if m.forward_only]
        if one_way:
            problems.append(f"--on-failure=rollback cannot undo {one_way[0].id}: it is forward-only "
                            f"({one_way[0].forward_only_because}), it has no rollback by design; use --on-failure=stop")
        elif missing:
            problems.append(f"--on-failure=rollback needs a rollback file for every pending migration; "
                            f"{missing[0]}.rollback.sql is missing (write it, or use --on-failure=stop)")
    late = order.late(migrations, records)
    if late and not settings.allow_out_of_order:
        try:
            order.refuse(late)
        except MigrationError as error:
            problems.append(str(error).replace("--allow-out-of-order", "allow_out_of_order: true in the config"))
    elif late:
        warnings.append(f"{', '.join(i for i, _ in late)} sort(s) before {late[0][1]}, applied already: applied out "
                        "of order (allow_out_of_order is set)")
    if not lock.is_free(db):
        held = f"another migration holds the lock: {lock.holder(db)}"
        if dry_run:  # a pipeline asking "would a deploy proceed now?": not while another one runs
            problems.append(f"{held}; wait for it to finish, or if that process is gone, end its session with "
                            "SELECT pg_terminate_backend(pid)")
        else:  # a real deploy waits for it (lock_wait), then gives up naming the holder
            warnings.append(f"{held}; this deploy waits up to {settings.lock_wait:g}s for it")
    flag = maintenance.state(db)
    interrupted = deploys.stale(db)
    for d in interrupted:
        warnings.append(f"{d.describe()}; the next deploy marks it interrupted and finishes the job")
    if flag.left_on_by_crash(deploy_running=not lock.is_free(db)):
        warnings.append(f"{flag.describe()}, left on by a deploy that died; the next deploy turns it off "
                        "(or now: inv prod.maintenance off)")
    elif flag.enabled:
        warnings.append(f"{flag.describe()}; a deploy leaves it on (turn it off with inv prod.maintenance off)")
    try:
        found = _lint(migrations, planned) if planned and not problems else []
    except MigrationError as error:
        found = []
        problems.append(f"lint could not read the migrations: {error}")
    findings = [f"{f.file}:{f.line} {f.rule}: {f.message}" for f in found]
    broken = [f for f in found if f.rule == "syntax"]
    if broken:  # a file that does not parse fails whichever deploy runs it
        problems.append(f"{broken[0].message}; fix the file")
    elif findings and rehearse:
        problems.append(f"lint: {len(findings)} unsafe statement(s) block a deploy with testing; first: "
                        f"{findings[0]}. Fix it, or if it is safe here silence it with a comment "
                        "-- pgshift: ignore <rule>")
    nothing = not planned
    by_hand = flag.enabled and flag.deploy_id is None
    left_by_dead = flag.enabled and flag.deploy_id is not None
    skip_backup = settings.skip_backup or nothing
    backup = None if skip_backup else backup_name(
        settings, _database_bytes(db) if settings.backup_format == "custom" else None)
    skip_maint = settings.skip_maintenance or nothing
    steps = [
        PlannedStep("preflight", True, "configuration, connection, checksums, lock free"
                    + (", drift" if any(w.startswith("drift") for w in warnings) else "")),
        PlannedStep("rehearse", rehearse and not nothing,
                    "apply, roll back and re-apply on a scratch clone of the target; lint and constraints"
                    if rehearse else "not asked (inv deploy rehearses; prod.deploy does not)"),
        PlannedStep("lock", True, f"migration lock (wait up to {settings.lock_wait:g}s)"),
        PlannedStep("backup", not skip_backup,
                    "nothing to deploy" if nothing else "SKIP_BACKUP is set" if settings.skip_backup
                    else f"pg_dump, verified: {backup}"),
        PlannedStep("maintenance on", not skip_maint and not by_hand,
                    "nothing to deploy" if nothing else "on already, by hand: left as it is" if by_hand
                    else "SKIP_MAINTENANCE is set" if settings.skip_maintenance
                    else f"{maintenance.query(db)} turns true" + (" (+ hook)" if settings.maintenance_on_hook else "")),
        PlannedStep("apply", not nothing,
                    f"{len(planned)} migration(s); lock_timeout {settings.lock_timeout:g}s, "
                    f"{settings.lock_retries} retries, statement_timeout "
                    + (f"{settings.statement_timeout:g}s" if settings.statement_timeout else "off")
                    + f"; on failure: {on_failure}"),
        PlannedStep("verify", not nothing, "status clean: nothing pending, failed or modified"),
        PlannedStep("maintenance off", (not skip_maint and not by_hand) or left_by_dead,
                    "the flag a dead deploy left on" if left_by_dead else "set by hand: it stays on" if by_hand
                    else "always, whatever happened" if not skip_maint else "not turned on"),
        PlannedStep("notify", bool(settings.slack_webhook_url),
                    "Slack: start, success or failure" if settings.slack_webhook_url else "no SLACK_WEBHOOK_URL"),
        PlannedStep("log", True, str(Path(settings.logs_dir) /
                                     f"migration_{settings.environment}_<UTC YYYYMMDD_HHMMSS>.log")),
    ]
    return Plan(target=settings.describe_target(), environment=settings.environment, database=db.url.dbname,
                pending=planned, empty=[p.migration.id for p in pending if p.migration.empty], applied=applied,
                steps=steps, backup=backup, on_failure=on_failure,
                rehearse=rehearse, maintenance=flag, interrupted=interrupted, lint=findings,
                problems=problems, warnings=warnings, migrations=migrations)
