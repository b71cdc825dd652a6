"""How a migration or rollback file runs: in one transaction, or statement by statement, and why.

One rule for ``apply``, its rollbacks, the deploy plan and status. A file runs in one transaction
unless a ``-- transactional: false`` header says otherwise, one of its statements refuses a transaction
block (``CREATE INDEX CONCURRENTLY``, ...), it adds an enum value and then uses it, which needs a
commit between the two, or it validates a constraint it adds ``NOT VALID`` (alone, the validation
takes SHARE UPDATE EXCLUSIVE; after the ``ADD CONSTRAINT`` in its transaction, it would scan the table
under that statement's ACCESS EXCLUSIVE lock). Statement by statement, each statement commits with its journal step.
"""

from __future__ import annotations

from typing import NamedTuple

from pgshift.migrations import sqltext
from pgshift.migrations.source import transactional_header


class Mode(NamedTuple):
    statements: list[sqltext.Statement] | None  # None: one transaction
    why: str = ""                                # why statement by statement

    @property
    def transactional(self) -> bool:
        return self.statements is None


def of(sql: str, origin: str, *, may_need_parse: bool | None = None) -> Mode:
    """The mode of ``sql`` (named ``origin`` in errors). Raises MigrationError when it must be parsed
    and does not parse."""
    header = transactional_header(sql)
    if header is True:
        return Mode(None)
    if header is False:
        return Mode(sqltext.statements(sql, origin), "its header says '-- transactional: false'")
    if not (sqltext.may_need_parse(sql) if may_need_parse is None else may_need_parse):
        return Mode(None)
    statements = sqltext.statements(sql, origin)
    refusing = next((s for s in statements if not s.transactional), None)
    if refusing is not None:
        return Mode(statements, f"line {refusing.line} cannot run in a transaction block")
    used = sqltext.used_before_commit(statements)
    if used is not None:
        added, later = used
        return Mode(statements, f"line {later.line} uses the enum value {added.adds_value!r} that line "
                                f"{added.line} adds, so that value is committed first")
    validated = sqltext.validated_with_add(statements)
    if validated is not None:
        added, later = validated
        return Mode(statements, f"line {later.line} validates the constraint line {added.line} adds NOT VALID, "
                                "so that it scans under SHARE UPDATE EXCLUSIVE only, not the ACCESS EXCLUSIVE "
                                "lock of the ADD")
    return Mode(None)
