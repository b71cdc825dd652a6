"""Generated migrations: what the migrated database lacks to match ``schema.sql``, as a migration
and its rollback.

``schema.sql`` is loaded into a shadow database; the forward plan turns the database into it, the
rollback plan turns it back. Nothing is written when they already match, or when the change would
destroy data and that was neither allowed (``--allow-data-loss``) nor confirmed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pgshift.databases.db import Database
from pgshift.errors import Aborted, MigrationError, Refused
from pgshift.migrations import source, sqltext
from pgshift.questions import Confirm, Question
from pgshift.schema import declared_path, diff
from pgshift.schema.shadow import Prepared, Shadow, load
from pgshift.settings import Settings

# Statements of schema.sql whose effect the differ does not compare: they would be silently left
# out of every generated migration, so each is named in a warning instead.
_NOT_COMPARED = {
    "GrantStmt": "GRANT/REVOKE", "GrantRoleStmt": "GRANT of a role", "AlterDefaultPrivilegesStmt":
    "ALTER DEFAULT PRIVILEGES", "CreateStatsStmt": "CREATE STATISTICS", "CreatePublicationStmt":
    "CREATE PUBLICATION", "CreateSubscriptionStmt": "CREATE SUBSCRIPTION", "CreateEventTrigStmt":
    "CREATE EVENT TRIGGER", "CreateCastStmt": "CREATE CAST", "CreateForeignTableStmt": "CREATE FOREIGN TABLE",
    "CreateForeignServerStmt": "CREATE SERVER", "CreateUserMappingStmt": "CREATE USER MAPPING",
    "CreateFdwStmt": "CREATE FOREIGN DATA WRAPPER", "RuleStmt": "CREATE RULE", "CreateRoleStmt": "CREATE ROLE",
    "CreateOpClassStmt": "CREATE OPERATOR CLASS", "CreateOpFamilyStmt": "CREATE OPERATOR FAMILY",
    "CreateConversionStmt": "CREATE CONVERSION", "CreateTransformStmt": "CREATE TRANSFORM",
    "CreateRangeStmt": "CREATE TYPE ... AS RANGE", "AlterOwnerStmt": "ALTER ... OWNER",
}
_DEFINE_COMPARED = ("CREATE COLLATION",)  # DefineStmt is also CREATE AGGREGATE, OPERATOR, base TYPE


@dataclass(frozen=True)
class Generated:
    migration: source.Migration | None  # None: the database matches schema.sql; nothing written
    forward: diff.Plan
    rollback: diff.Plan
    desired: diff.Schema  # schema.sql as loaded, to check the result against after applying
    shadow: str           # where schema.sql was loaded
    not_compared: tuple[str, ...] = ()  # warnings: statements of schema.sql the differ ignores

    @property
    def in_sync(self) -> bool:
        return self.migration is None


def generate(settings: Settings, db: Database, name: str, existing: list[source.Migration], *,
             allow_data_loss: bool = False, confirm: Confirm | None = None) -> Generated:
    """Diff the (migrated) database ``db`` against schema.sql and write the migration pair after
    ``existing`` (the folder as read)."""
    source.check_name(name, existing)
    path = declared_path(settings)
    declared = source.normalise(path.read_bytes(), path)

    def loaded(scratch: Shadow) -> diff.Schema:
        load(scratch.db, declared, path.name)
        return diff.inspect(scratch.db)

    prepared = Prepared(settings, db.url, loaded)  # schema.sql loads while the database is read
    current = diff.inspect(db)
    desired = prepared.result()
    forward = diff.plan(current, desired)
    ignored = not_compared(declared, path.name)
    if forward.empty:
        return Generated(None, forward, diff.Plan([]), desired, prepared.where, ignored)
    backward = diff.plan(current=desired, desired=current)
    if forward.data_loss and not allow_data_loss:
        what = "; ".join(str(c.data_loss) for c in forward.data_loss)
        if confirm is None:
            raise Refused(f"the change to schema.sql loses data ({what}); nothing was written. Check that this "
                          "is meant, then run again with --allow-data-loss")
        if not confirm(Question(f"The change loses data: {what}. Write and apply it?")):
            raise Aborted("nothing was written: the change loses data and was not confirmed")
    migration = write(settings.migrations_dir, name, forward, backward, existing)
    return Generated(migration, forward, backward, desired, prepared.where, ignored)


def not_compared(sql: str, origin: str) -> tuple[str, ...]:
    """One warning per statement of ``sql`` whose effect no generated migration would carry."""
    found = []
    try:
        statements = sqltext.statements(sql, origin)
    except MigrationError:  # syntax newer than the parser's (the server accepted it): no warnings
        return ()
    for statement in statements:
        what = _NOT_COMPARED.get(statement.kind)
        if statement.kind == "DefineStmt" and not statement.text.upper().startswith(_DEFINE_COMPARED):
            what = " ".join(statement.text.split()[:2]).upper()
        if statement.kind == "AlterTableStmt" and " OWNER TO " in " ".join(statement.text.upper().split()):
            what = "ALTER TABLE ... OWNER TO"
        if what:
            found.append(f"{origin}, line {statement.line}: {what} is not compared, so no generated migration "
                         "carries it; write it in a migration by hand (inv dev.migrate NAME --empty)")
    return tuple(found)


def remaining(db: Database, desired: diff.Schema) -> diff.Plan:
    """What still differs from schema.sql after the generated migration ran (empty when right)."""
    return diff.plan(diff.inspect(db), desired)


def write(folder: Path, name: str, forward: diff.Plan, backward: diff.Plan,
          existing: list[source.Migration]) -> source.Migration:
    return source.create(folder, name, existing=existing,
                         render=lambda ident: (_forward_text(ident, name, forward), _rollback_text(ident, backward)))


def _forward_text(ident: str, name: str, plan: diff.Plan) -> str:
    lines = [f"-- {ident}: generated by `inv dev.migrate {name}` from schema.sql.",
             "-- Review it (edit it if needed) and commit it with its .rollback.sql."]
    if any(c.concurrent for c in plan.changes):
        lines += ["-- It builds or drops indexes CONCURRENTLY, so writes go on meanwhile: it runs outside a",
                  "-- transaction, statement by statement, and resumes where it stopped after a failure."]
    if plan.data_loss:
        lines.append("-- Statements marked DATA LOSS destroy data.")
    return "\n".join(lines) + "\n\n" + plan.sql()


def _rollback_text(ident: str, plan: diff.Plan) -> str:
    lines = [f"-- Rollback of {ident}, generated with it: restores the schema as it was before."]
    if plan.data_loss:
        lines.append("-- Statements marked DATA LOSS destroy data (what was stored after the migration).")
    return "\n".join(lines) + "\n\n" + plan.sql()
