"""lint: statements that are unsafe on a live database, found in the migrations' SQL.

Rules work on PostgreSQL's own parse tree (libpg_query through pglast) and know two things a plain
pattern match cannot: whether the table a statement touches exists already (created by an earlier
migration, or named in ``existing``; a table created earlier in the same migration is new and
exempt), and whether the migration runs in one transaction (locks are then held until its end).

A rule is silenced for one statement by a comment naming it in or just before the statement:
``-- pgshift: ignore changing-column-type``; for a whole file: ``-- pgshift: ignore-file <rule>``.

Why not squawk: it cannot know which tables earlier migrations created or whether our runner wraps a
file in a transaction (we decide per file), and it adds a second binary; these rules are few.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pgshift.errors import MigrationError
from pgshift.migrations import sqltext
from pgshift.migrations.source import Migration

RULES: dict[str, str] = {
    "require-concurrent-index-creation": "CREATE INDEX without CONCURRENTLY blocks writes to {table} while it builds; "
                                         "use CREATE INDEX CONCURRENTLY (the file then runs outside a transaction)",
    "require-concurrent-index-deletion": "DROP INDEX without CONCURRENTLY blocks reads and writes of the table; "
                                         "use DROP INDEX CONCURRENTLY",
    "concurrently-in-transaction": "CONCURRENTLY cannot run inside a transaction, and this file forces one "
                                   "('-- transactional: true'); remove that header",
    "adding-required-field": "adding NOT NULL column {column} without a DEFAULT to {table} fails as soon as the "
                             "table has rows; add a DEFAULT, or add it nullable, backfill, then set NOT NULL",
    "adding-field-with-volatile-default": "adding column {column} to {table} with a volatile default ({what}) "
                                          "rewrites the whole table under an ACCESS EXCLUSIVE lock; add it "
                                          "without the default, set the default, then backfill in batches",
    "changing-column-type": "changing the type of {table}.{column} rewrites the table and its indexes under an "
                            "ACCESS EXCLUSIVE lock (unless the change is binary-compatible, e.g. varchar(n) to "
                            "text); add a new column and backfill instead",
    "setting-not-null": "SET NOT NULL on {table}.{column} scans the whole table under an ACCESS EXCLUSIVE lock; add "
                        "CONSTRAINT c CHECK ({column} IS NOT NULL) NOT VALID, then VALIDATE CONSTRAINT c in a "
                        "transaction of its own (a later migration, or a '-- pgshift: validate' section), then SET "
                        "NOT NULL (PostgreSQL 12+ uses the validated check and skips the scan) and DROP CONSTRAINT c",
    "constraint-missing-not-valid": "adding {what} to {table} checks every row under a lock that blocks writes; add "
                                    "it NOT VALID, then VALIDATE CONSTRAINT in a transaction of its own (a later "
                                    "migration, or a '-- pgshift: validate' section): that takes only SHARE UPDATE "
                                    "EXCLUSIVE",
    "adding-unique-constraint": "adding {what} to {table} builds its index under a lock that blocks writes; "
                                "CREATE UNIQUE INDEX CONCURRENTLY first, then ADD CONSTRAINT ... USING INDEX",
    "renaming-column": "renaming {table}.{column} breaks code that still uses the old name while it deploys; add "
                       "the new column, move the code, drop the old one later",
    "renaming-table": "renaming {table} breaks code that still uses the old name while it deploys; create a view "
                      "with the old name, or move the code first",
    "ban-drop-column": "dropping {table}.{column} breaks code that still reads it while it deploys; stop using it "
                       "in one release, drop it in a later one",
    "ban-drop-table": "dropping {table} breaks code that still uses it while it deploys; stop using it first",
    "backfill-under-lock": "this migration runs in one transaction, so the lock {lock_statement} takes on {table} "
                           "is held while this {verb} runs over the table; move the data change to its own migration",
}

VOLATILE = frozenset({"random", "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4",
                      "uuidv4", "uuidv7", "clock_timestamp", "timeofday", "nextval", "txid_current",
                      "statement_timestamp", "random_normal", "gen_random_bytes", "setseed"})
SERIAL = frozenset({"serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"})
_IGNORE = re.compile(r"--\s*pgshift:\s*ignore(?P<file>-file)?\s+(?P<rules>[a-z0-9\-, ]+)", re.IGNORECASE)


@dataclass(frozen=True)
class LintFinding:
    migration: str
    file: str
    line: int
    rule: str
    message: str


@dataclass(frozen=True)
class LintReport:
    findings: list[LintFinding] = field(default_factory=list)
    linted: list[str] = field(default_factory=list)
    silenced: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        if self.findings:
            first = self.findings[0]
            return f"{len(self.findings)} unsafe statement(s); first: {first.file}:{first.line} {first.rule}"
        if not self.linted:
            return "nothing to lint: the target has applied every migration (--every lints them all)"
        silenced = f" ({self.silenced} silenced by comments)" if self.silenced else ""
        return f"{len(self.linted)} migration(s) linted, no unsafe statements{silenced}"

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "summary": self.summary(), "linted": self.linted, "silenced": self.silenced,
                "findings": [asdict(f) for f in self.findings]}


def _parse(migration: Migration) -> list[tuple[sqltext.Statement, dict[str, Any]]]:
    """Each statement with its parse node; the same parse ``sqltext.statements`` makes."""
    from pglast.parser import parse_sql_json

    statements = sqltext.statements(migration.sql, migration.path.name)
    nodes = [item["stmt"] for item in json.loads(parse_sql_json(migration.sql)).get("stmts", [])]
    return list(zip(statements, nodes, strict=True))


def _name(rel: dict[str, Any]) -> str:
    return str(rel.get("relname", "")).lower()


def _shown(rel: dict[str, Any]) -> str:
    return ".".join(p for p in (rel.get("schemaname"), rel.get("relname")) if p)


def _funcs(node: Any) -> set[str]:
    """Names of every function called anywhere in ``node``."""
    found: set[str] = set()
    if isinstance(node, dict):
        call = node.get("FuncCall")
        if isinstance(call, dict):
            names = [p["String"]["sval"] for p in call.get("funcname", []) if "String" in p]
            if names:
                found.add(names[-1].lower())
        for value in node.values():
            found |= _funcs(value)
    elif isinstance(node, list):
        for value in node:
            found |= _funcs(value)
    return found


def _type_name(column: dict[str, Any]) -> str:
    names = column.get("typeName", {}).get("names", [])
    return str(names[-1]["String"]["sval"]).lower() if names and "String" in names[-1] else ""


def _ignored(sql: str, statement: sqltext.Statement, previous_end: int) -> set[str]:
    lines = sql.split("\n")
    last = statement.line + statement.text.count("\n")
    found: set[str] = set()
    for text in lines[previous_end:last]:
        for match in _IGNORE.finditer(text):
            if not match.group("file"):
                found |= {r.strip().lower() for r in re.split(r"[,\s]+", match.group("rules")) if r.strip()}
    return found


def _file_ignored(sql: str) -> set[str]:
    found: set[str] = set()
    for match in _IGNORE.finditer(sql):
        if match.group("file"):
            found |= {r.strip().lower() for r in re.split(r"[,\s]+", match.group("rules")) if r.strip()}
    return found


class _Linter:
    def __init__(self, existing: set[str], every: bool = False, sizes: dict[str, str] | None = None) -> None:
        self.every = every
        self.sizes = sizes or {}  # bare table name -> its size on the target
        self.existing = {name.rsplit(".", 1)[-1].lower() for name in existing}
        self.indexes: dict[str, str] = {}  # index -> its table, for the indexes the migrations create
        self.checks: dict[str, tuple[str, str]] = {}  # CHECK (col IS NOT NULL) constraint -> (table, column)
        self.validated: set[tuple[str, str]] = set()  # (table, column) a validated such check proves not null

    def migration(self, m: Migration, check: bool) -> tuple[list[LintFinding], int]:
        try:
            parsed = _parse(m)
        except MigrationError as error:
            return [LintFinding(m.id, m.path.name, 0, "syntax", str(error))], 0
        forced = m.forced_transactional
        transactional = forced if forced is not None else all(s.transactional for s, _ in parsed)
        created: set[str] = set()
        locked: dict[str, tuple[str, int]] = {}  # table -> (statement kind, line) that took a strong lock
        found: list[LintFinding] = []
        silenced = 0
        file_ignored = _file_ignored(m.sql)
        previous_end = 0
        for statement, node in parsed:
            hits = self._statement(node, created, locked, statement.line, transactional, forced)
            ignored = _ignored(m.sql, statement, previous_end) | file_ignored
            previous_end = statement.line + statement.text.count("\n")
            for rule, fields in hits:
                if rule in ignored:
                    silenced += 1
                elif check:
                    found.append(LintFinding(m.id, m.path.name, statement.line, rule,
                                             RULES[rule].format_map(_Blank(fields)) + self._size(fields, created)))
            self._track(node, created)
        if not check or self.every:  # applied already (or --every): its tables exist; a pending run's do not
            self.existing |= created
        return found, silenced

    def _size(self, fields: dict[str, str], created: set[str]) -> str:
        """The size on the target of the table a finding is about, when it existed before the run, so a
        team can judge the risk: a rewrite of 40 rows is not one of 40 million."""
        name = fields.get("table", "").rsplit(".", 1)[-1].strip('"').lower()
        size = self.sizes.get(name) if name and name not in created else None
        return f" ({name} on the target: {size})" if size else ""

    def _is_old(self, rel: dict[str, Any], created: set[str]) -> bool:
        name = _name(rel)
        return name in self.existing and name not in created

    def _index_on_old(self, obj: dict[str, Any], created: set[str]) -> bool:
        """Whether a dropped index may be on a table that existed before this run: yes unless a
        migration made it, on a table made in this run."""
        items = obj.get("List", {}).get("items", [])
        table = self.indexes.get(str(items[-1]["String"]["sval"]).lower()) if items else None
        return table is None or (table in self.existing and table not in created)

    def _track(self, node: dict[str, Any], created: set[str]) -> None:
        (kind, body), = node.items()
        if kind == "IndexStmt" and body.get("idxname"):
            self.indexes[str(body["idxname"]).lower()] = _name(body.get("relation", {}))
        if kind in ("CreateStmt", "CreateTableAsStmt"):
            rel = body.get("relation") or body.get("into", {}).get("rel", {})
            created.add(_name(rel))
        elif kind == "DropStmt" and body.get("removeType") == "OBJECT_TABLE":
            for obj in body.get("objects", []):
                items = obj.get("List", {}).get("items", [])
                if items:
                    name = str(items[-1]["String"]["sval"]).lower()
                    created.discard(name)
                    self.existing.discard(name)
        elif kind == "RenameStmt" and body.get("renameType") == "OBJECT_TABLE":
            old = _name(body.get("relation", {}))
            if old in created or old in self.existing:
                created.add(str(body.get("newname", "")).lower())

    def _statement(self, node: dict[str, Any], created: set[str], locked: dict[str, tuple[str, int]], line: int,
                   transactional: bool, forced: bool | None) -> list[tuple[str, dict[str, str]]]:
        (kind, body), = node.items()
        hits: list[tuple[str, dict[str, str]]] = []
        rel = body.get("relation", {}) if isinstance(body, dict) else {}
        old = self._is_old(rel, created) if rel else False
        table = _shown(rel)
        if kind == "IndexStmt":
            if body.get("concurrent") and forced:
                hits.append(("concurrently-in-transaction", {}))
            elif not body.get("concurrent") and old:
                hits.append(("require-concurrent-index-creation", {"table": table}))
                locked.setdefault(_name(rel), ("CREATE INDEX", line))
        elif kind == "DropStmt":
            remove = body.get("removeType")
            if remove == "OBJECT_INDEX":
                if body.get("concurrent") and forced:
                    hits.append(("concurrently-in-transaction", {}))
                elif not body.get("concurrent") and any(self._index_on_old(obj, created)
                                                        for obj in body.get("objects", [])):
                    hits.append(("require-concurrent-index-deletion", {}))
            elif remove == "OBJECT_TABLE":
                for obj in body.get("objects", []):
                    items = obj.get("List", {}).get("items", [])
                    name = str(items[-1]["String"]["sval"]).lower() if items else ""
                    if name in self.existing and name not in created:
                        hits.append(("ban-drop-table", {"table": name}))
        elif kind == "RenameStmt" and old:
            if body.get("renameType") == "OBJECT_COLUMN":
                hits.append(("renaming-column", {"table": table, "column": body.get("subname", "")}))
            elif body.get("renameType") == "OBJECT_TABLE":
                hits.append(("renaming-table", {"table": table}))
        elif kind == "AlterTableStmt" and old:
            for cmd in body.get("cmds", []):
                hits.extend(self._alter(cmd.get("AlterTableCmd", {}), table))
            locked.setdefault(_name(rel), ("ALTER TABLE", line))
        elif kind in ("UpdateStmt", "DeleteStmt") and old and transactional:
            earlier = locked.get(_name(rel))
            if earlier is not None:
                hits.append(("backfill-under-lock", {"table": table, "verb": kind[:-4].upper(),
                                                     "lock_statement": f"{earlier[0]} (line {earlier[1]})"}))
        return hits

    def _alter(self, cmd: dict[str, Any], table: str) -> list[tuple[str, dict[str, str]]]:
        sub = cmd.get("subtype")
        definition = cmd.get("def", {})
        if sub == "AT_AddColumn":
            column = definition.get("ColumnDef", {})
            name = column.get("colname", "")
            kinds = {c.get("Constraint", {}).get("contype"): c.get("Constraint", {})
                     for c in column.get("constraints", [])}
            default = kinds.get("CONSTR_DEFAULT")
            volatile = sorted(_funcs(default.get("raw_expr")) & VOLATILE) if default else []
            what = (f"{volatile[0]}()" if volatile else "a serial type" if _type_name(column) in SERIAL
                    else "an identity" if "CONSTR_IDENTITY" in kinds
                    else "a stored generated column" if "CONSTR_GENERATED" in kinds else "")
            if what:
                return [("adding-field-with-volatile-default", {"table": table, "column": name, "what": what})]
            if "CONSTR_NOTNULL" in kinds and default is None:
                return [("adding-required-field", {"table": table, "column": name})]
            return []
        if sub == "AT_AlterColumnType":
            return [("changing-column-type", {"table": table, "column": cmd.get("name", "")})]
        if sub == "AT_SetNotNull":
            if (table.rsplit(".", 1)[-1].lower(), str(cmd.get("name", "")).lower()) in self.validated:
                return []  # the validated check proves it: no scan
            return [("setting-not-null", {"table": table, "column": cmd.get("name", "")})]
        if sub == "AT_ValidateConstraint" and str(cmd.get("name", "")).lower() in self.checks:
            self.validated.add(self.checks[str(cmd.get("name", "")).lower()])
            return []
        if sub == "AT_DropColumn":
            return [("ban-drop-column", {"table": table, "column": cmd.get("name", "")})]
        if sub == "AT_AddConstraint":
            constraint = definition.get("Constraint", {})
            contype = constraint.get("contype")
            column = _not_null_column(constraint) if contype == "CONSTR_CHECK" else None
            if column is not None and constraint.get("conname"):
                key = (table.rsplit(".", 1)[-1].lower(), column)
                self.checks[str(constraint["conname"]).lower()] = key
                if not constraint.get("skip_validation"):
                    self.validated.add(key)
            if contype in ("CONSTR_FOREIGN", "CONSTR_CHECK") and not constraint.get("skip_validation"):
                what = "a foreign key" if contype == "CONSTR_FOREIGN" else "a check constraint"
                return [("constraint-missing-not-valid", {"table": table, "what": what})]
            if contype in ("CONSTR_UNIQUE", "CONSTR_PRIMARY") and not constraint.get("indexname"):
                what = "a unique constraint" if contype == "CONSTR_UNIQUE" else "a primary key"
                return [("adding-unique-constraint", {"table": table, "what": what})]
        return []


def _not_null_column(constraint: dict[str, Any]) -> str | None:
    """The column of a ``CHECK (column IS NOT NULL)``; None for any other check."""
    test = constraint.get("raw_expr", {}).get("NullTest", {})
    fields = test.get("arg", {}).get("ColumnRef", {}).get("fields", [])
    if test.get("nulltesttype") != "IS_NOT_NULL" or len(fields) != 1 or "String" not in fields[0]:
        return None
    return str(fields[0]["String"]["sval"]).lower()


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"


def lint(migrations: list[Migration], only: set[str] | None = None, existing: set[str] | None = None,
         sizes: dict[str, str] | None = None) -> LintReport:
    """Lint ``only`` these migration ids (default: all); the others are read for the tables they create.
    ``sizes``: the target's tables' sizes, named in findings on them."""
    linter = _Linter(existing or set(), every=only is None, sizes=sizes)
    found: list[LintFinding] = []
    linted: list[str] = []
    silenced = 0
    for m in migrations:
        if m.empty:
            continue
        check = only is None or m.id in only
        hits, quiet = linter.migration(m, check)
        if check:
            linted.append(m.id)
            found.extend(hits)
            silenced += quiet
    return LintReport(found, linted, silenced)
