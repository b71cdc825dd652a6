"""``test.schema``: ``schema.sql`` and the migrations produce the same schema (a CI gate).

Each is built on a scratch database of its own on the same server (every migration applied to one,
``schema.sql`` loaded into the other) and the two are compared by the differ that generates
migrations, so the gate fails exactly when ``inv dev.migrate NAME`` would write something. Each
difference is named. Without a ``schema.sql`` the check is skipped, and says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgshift.databases import throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.errors import MigrationError
from pgshift.migrations import apply, source
from pgshift.migrations.source import Migration
from pgshift.schema import autogen, diff
from pgshift.schema.shadow import load

_SAID = {"unexpected": "made by the migrations, not declared in schema.sql",
         "missing": "declared in schema.sql, no migration makes it"}


@dataclass(frozen=True)
class Difference:
    kind: str
    name: str
    change: str  # unexpected: only the migrations make it; missing: only schema.sql declares it; changed
    detail: str = ""

    def describe(self) -> str:
        said = _SAID.get(self.change, f"differs: {self.detail}" if self.detail else "differs")
        return f"{self.kind} {self.name}".rstrip() + f": {said}"


@dataclass(frozen=True)
class SchemaReport:
    """The shape of every check's report (``pgshift.api.Report``)."""

    declared: str                 # the schema.sql compared ("" when there is none: skipped)
    migrations: int = 0
    differences: list[Difference] = field(default_factory=list)
    warnings: tuple[str, ...] = ()  # statements of schema.sql the differ does not compare

    @property
    def ok(self) -> bool:
        return not self.differences

    @property
    def skipped(self) -> bool:
        return not self.declared

    def summary(self) -> str:
        if self.skipped:
            return "skipped: no schema.sql beside the migrations folder"
        if self.differences:
            return (f"schema.sql and the migrations differ in {len(self.differences)} object(s); first: "
                    f"{self.differences[0].describe()}")
        return f"schema.sql and the {self.migrations} migration(s) produce the same schema"

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "skipped": self.skipped, "summary": self.summary(), "declared": self.declared,
                "migrations": self.migrations, "differences": [asdict(d) for d in self.differences],
                "warnings": list(self.warnings)}


def run(admin: DatabaseUrl, migrations: list[Migration], limits: apply.Limits, declared: str,
        origin: str) -> SchemaReport:
    """Build ``migrations`` and ``declared`` (schema.sql's text) on two scratch databases; compare."""
    with throwaway.empty(admin) as migrated_url, Database.connect(migrated_url) as migrated:
        try:
            apply.apply(migrated, migrations, limits)
        except MigrationError as error:
            raise MigrationError(f"the migrations do not apply to an empty database, so schema.sql cannot be "
                                 f"compared: {error}") from None
        made = diff.inspect(migrated)
        with throwaway.empty(admin) as declared_url, Database.connect(declared_url) as scratch:
            load(scratch, declared, origin)
            wanted = diff.inspect(scratch)
    found = [Difference(d.kind, d.name, d.change, d.detail) for d in diff.differences(wanted, made)]
    if not found:  # what the object lists miss but a generated migration would still carry
        found = [Difference("statement", "", "changed", c.sql.strip().splitlines()[0])
                 for c in diff.plan(made, wanted).changes]
    applied = sum(1 for m in migrations if not m.empty)
    return SchemaReport(origin, applied, found, autogen.not_compared(declared, origin))


def read(path: Path) -> str:
    """schema.sql's text, normalised as migrations are."""
    return source.normalise(path.read_bytes())
