"""What a migration's SQL contains: statements, their lines, and whether they need a transaction.

Two levels. ``words`` is a small lexer that skips comments, strings, quoted identifiers and
dollar-quoted bodies and returns the bare words; it is enough to tell an empty file and to know that a
file *cannot* contain a statement that refuses to run in a transaction (none of the keywords such a
statement needs appears). Only when one might, ``statements`` asks PostgreSQL's own parser (libpg_query,
through pglast) for the exact answer. pglast is imported only then: it costs ~40 ms.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pgshift.errors import MigrationError

_TOKEN = re.compile(
    r"""(?P<line>--[^\n]*)
      | (?P<block>/\*)
      | (?P<estr>[Ee]'(?:[^'\\]|\\.|'')*')
      | (?P<str>'(?:[^']|'')*')
      | (?P<ident>"(?:[^"]|"")*")
      | (?P<dollar>\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$)
      | (?P<word>[A-Za-z_][A-Za-z0-9_$]*)
      | (?P<other>\S)""",
    re.VERBOSE | re.DOTALL,
)

# Every statement that cannot run inside a transaction block, or that ends one, has one of these words;
# so does ``ALTER TYPE ... ADD VALUE``, whose new value cannot be used before a commit, and
# ``VALIDATE CONSTRAINT``, which must not share a transaction with the ``ADD CONSTRAINT ... NOT VALID``.
NEEDS_PARSE = frozenset({
    "CONCURRENTLY", "VACUUM", "DATABASE", "SYSTEM", "TABLESPACE", "SUBSCRIPTION", "CLUSTER",
    "BEGIN", "COMMIT", "ROLLBACK", "START", "END", "ABORT", "SAVEPOINT", "RELEASE", "PREPARE", "VALUE",
    "VALIDATE",
})


def words(sql: str) -> tuple[set[str], bool]:
    """Upper-cased bare words outside comments, strings and bodies; and whether any token exists."""
    found: set[str] = set()
    any_token = False
    pos, end = 0, len(sql)
    while pos < end:
        match = _TOKEN.search(sql, pos)
        if match is None:
            break
        kind = match.lastgroup
        pos = match.end()
        if kind == "line":
            continue
        if kind == "block":
            pos = _skip_block_comment(sql, pos)
            continue
        any_token = True
        if kind == "dollar":
            close = sql.find(match.group(), pos)
            pos = end if close < 0 else close + len(match.group())
        elif kind == "word":
            found.add(match.group().upper())
    return found, any_token


def _skip_block_comment(sql: str, pos: int) -> int:
    depth = 1
    while depth and pos < len(sql):
        opening, closing = sql.find("/*", pos), sql.find("*/", pos)
        if closing < 0:
            return len(sql)
        if 0 <= opening < closing:
            depth, pos = depth + 1, opening + 2
        else:
            depth, pos = depth - 1, closing + 2
    return pos


def is_empty(sql: str) -> bool:
    """True when ``sql`` has no statement, only comments and blanks."""
    if "/*" not in sql:
        # Without block comments a token starts every line that is neither blank nor a -- comment
        # (a line inside a multi-line string follows the token that opened it), so no lexing is needed.
        return all(not line or line.startswith("--") for line in map(str.lstrip, sql.split("\n")))
    return not words(sql)[1]


def may_need_parse(sql: str) -> bool:
    """False when no statement in ``sql`` can refuse a transaction (see ``NEEDS_PARSE``)."""
    upper = sql.upper()
    if not any(word in upper for word in NEEDS_PARSE):  # not even inside a comment or a longer word
        return False
    return bool(words(sql)[0] & NEEDS_PARSE)


@dataclass(frozen=True)
class Statement:
    text: str
    line: int           # line of the statement's first token in the file
    kind: str           # the parse node, e.g. "IndexStmt"
    transactional: bool  # False: must run outside a transaction block
    indexes: tuple[str, ...] = ()  # for CREATE/DROP INDEX CONCURRENTLY: the index names it names
    reindex: str = ""   # REINDEX: what it rebuilds ("index", "table", "schema", ...); indexes holds its name
    adds_value: str | None = None  # ALTER TYPE ... ADD VALUE: the new value (usable only once committed)


def statements(sql: str, origin: str = "migration") -> list[Statement]:
    """Split and classify with PostgreSQL's parser. Raises MigrationError on a syntax error."""
    from pglast.parser import ParseError, parse_sql_json

    try:
        tree = json.loads(parse_sql_json(sql))
    except ParseError as exc:
        location = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else 0
        line = sql.encode()[: max(location - 1, 0)].count(b"\n") + 1
        raise MigrationError(f"{origin}, line {line}: {exc.args[0]}") from None
    raw = sql.encode()
    found: list[Statement] = []
    for item in tree.get("stmts", []):
        start = item.get("stmt_location", 0)
        length = item.get("stmt_len", 0) or len(raw) - start
        text = raw[start:start + length].decode()
        lead = len(text) - len(text.lstrip())
        line = raw[: start].count(b"\n") + text[:lead].count("\n") + 1
        (kind, node), = item["stmt"].items()
        if kind == "TransactionStmt" and node.get("kind") not in (
                "TRANS_STMT_SAVEPOINT", "TRANS_STMT_RELEASE", "TRANS_STMT_ROLLBACK_TO"):
            raise MigrationError(
                f"{origin}, line {line}: {text.strip().split()[0].upper()} is not allowed in a migration; "
                "each migration runs in its own transaction already (write '-- transactional: false' "
                "at the top to run statements one by one)")
        added = node.get("newVal") if kind == "AlterEnumStmt" and "oldVal" not in node else None
        found.append(Statement(text=text.strip(), line=line, kind=kind,
                               transactional=not _outside_transaction(kind, node),
                               indexes=_index_names(kind, node), adds_value=added,
                               reindex=node["kind"].removeprefix("REINDEX_OBJECT_").lower()
                               if kind == "ReindexStmt" else ""))
    return found


def used_before_commit(statements: list[Statement]) -> tuple[Statement, Statement] | None:
    """An ``ADD VALUE`` and a later statement of the same file that uses the new value (names it as a
    string literal): in one transaction the use fails ("unsafe use of new value"), so a commit must
    come between them."""
    for n, statement in enumerate(statements):
        if statement.adds_value is None:
            continue
        literal = "'" + statement.adds_value.replace("'", "''") + "'"
        for later in statements[n + 1:]:
            if literal in later.text:
                return statement, later
    return None


_NAME = r'(?P<name>"(?:[^"]|"")+"|[^\s"(;]+)'
_ADD_NOT_VALID = re.compile(rf"\bADD\s+CONSTRAINT\s+{_NAME}.*\bNOT\s+VALID\b", re.IGNORECASE | re.DOTALL)
_VALIDATE = re.compile(rf"\bVALIDATE\s+CONSTRAINT\s+{_NAME}", re.IGNORECASE)


def _constraint(raw: str) -> str:
    return raw[1:-1].replace('""', '"') if raw.startswith('"') else raw.lower()


def validated_with_add(statements: list[Statement]) -> tuple[Statement, Statement] | None:
    """An ``ADD CONSTRAINT c ... NOT VALID`` and a later ``VALIDATE CONSTRAINT c`` of the same file: in
    one transaction the validation's scan runs under the ACCESS EXCLUSIVE lock the first one took (so
    nothing reads or writes the table meanwhile), alone it takes only SHARE UPDATE EXCLUSIVE."""
    added: dict[str, Statement] = {}
    for statement in statements:
        if statement.kind != "AlterTableStmt":
            continue
        if (found := _VALIDATE.search(statement.text)) is not None and _constraint(found["name"]) in added:
            return added[_constraint(found["name"])], statement
        if (found := _ADD_NOT_VALID.search(statement.text)) is not None:
            added[_constraint(found["name"])] = statement
    return None


def _outside_transaction(kind: str, node: dict[str, Any]) -> bool:
    if kind in ("CreatedbStmt", "DropdbStmt", "AlterSystemStmt", "CreateTableSpaceStmt",
                "DropTableSpaceStmt", "CreateSubscriptionStmt", "DropSubscriptionStmt"):
        return True
    if kind in ("IndexStmt", "DropStmt"):
        return bool(node.get("concurrent"))
    if kind == "ReindexStmt":
        return any(p.get("DefElem", {}).get("defname") == "concurrently" for p in node.get("params", []))
    if kind == "VacuumStmt":
        return bool(node.get("is_vacuumcmd"))
    if kind == "ClusterStmt":
        return "relation" not in node
    if kind == "AlterTableStmt":
        for cmd in node.get("cmds", []):
            sub = cmd.get("AlterTableCmd", {})
            if sub.get("subtype") == "AT_DetachPartition" and sub.get("def", {}).get(
                    "PartitionCmd", {}).get("concurrent"):
                return True
    return False


def _index_names(kind: str, node: dict[str, Any]) -> tuple[str, ...]:
    if kind == "IndexStmt" and node.get("idxname"):
        schema = node.get("relation", {}).get("schemaname")
        return (f'"{schema}"."{node["idxname"]}"' if schema else f'"{node["idxname"]}"',)
    if kind == "ReindexStmt" and node.get("relation"):
        relation = node["relation"]
        schema = relation.get("schemaname")
        return (f'"{schema}"."{relation["relname"]}"' if schema else f'"{relation["relname"]}"',)
    if kind == "ReindexStmt" and node.get("name"):
        return (f'"{node["name"]}"',)
    if kind == "DropStmt" and node.get("removeType") == "OBJECT_INDEX":
        names = []
        for obj in node.get("objects", []):
            parts = [item["String"]["sval"] for item in obj.get("List", {}).get("items", [])]
            names.append(".".join(f'"{p}"' for p in parts))
        return tuple(names)
    return ()


def line_of(sql: str, position: int) -> int:
    """Line number of a 1-based character position in ``sql``."""
    return sql[: max(position - 1, 0)].count("\n") + 1
