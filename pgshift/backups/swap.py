"""Database-level work for a restore: a scratch database shaped like the target, and the swap.

A restore never writes into the target. It fills a scratch database created with the target's owner,
encoding, locale, settings, privileges and comment, then swaps the names in one transaction (both
``ALTER DATABASE ... RENAME`` in a single commit), so at every instant the target's name belongs to
either the old database, untouched, or the fully restored one. Both the new copy and the replaced one
are throwaway databases (``pgshift.databases.throwaway``, kinds ``new`` and ``old``, labelled with the
target's name): ones a killed restore left are dropped by the next command that makes one.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from pgshift.databases import throwaway
from pgshift.databases.db import Database, SqlFailure
from pgshift.errors import ToolError

_LIST_SETTINGS = {"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries"}
_IN_USE = "55006"  # object_in_use: other sessions are connected
_SWAP_ATTEMPTS = 5


def shape(db: Database, name: str) -> dict[str, Any]:
    """What CREATE DATABASE needs to make a twin of ``name``, plus its settings, privileges and comment."""
    row = db.one(
        "SELECT to_jsonb(d), pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), "
        "(SELECT spcname FROM pg_tablespace WHERE oid = d.dattablespace), "
        "shobj_description(d.oid, 'pg_database') FROM pg_database d WHERE datname = %s", [name])
    if row is None:
        raise ToolError(f"database {name!r} is gone from the server")
    info: dict[str, Any] = dict(row[0])
    info.update(owner=row[1], encoding_name=row[2], tablespace=row[3], comment=row[4])
    info["settings"] = db.rows(
        "SELECT CASE WHEN setrole = 0 THEN NULL ELSE pg_get_userbyid(setrole) END, setconfig "
        "FROM pg_db_role_setting WHERE setdatabase = %s", [int(info["oid"])])
    info["grants"] = db.rows(
        "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type, "
        "a.is_grantable FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s", [name])
    return info


def create_like(db: Database, name: str, info: dict[str, Any]) -> None:
    q, lit = db.identifier, db.literal
    options = [f"TEMPLATE template0 OWNER {q(info['owner'])} ENCODING {lit(info['encoding_name'])}",
               f"LC_COLLATE {lit(info['datcollate'])} LC_CTYPE {lit(info['datctype'])}",
               f"CONNECTION LIMIT {int(info['datconnlimit'])}"]
    provider, locale = info.get("datlocprovider"), info.get("datlocale") or info.get("daticulocale")
    if provider == "i":
        options.append(f"LOCALE_PROVIDER icu ICU_LOCALE {lit(locale)}")
        if info.get("daticurules"):
            options.append(f"ICU_RULES {lit(info['daticurules'])}")
    elif provider == "b":
        options.append(f"LOCALE_PROVIDER builtin BUILTIN_LOCALE {lit(locale)}")
    if info["tablespace"] not in (None, "pg_default"):
        options.append(f"TABLESPACE {q(info['tablespace'])}")
    try:
        db.execute(f"CREATE DATABASE {q(name)} " + " ".join(options))
    except SqlFailure as exc:
        if exc.sqlstate != "42501":  # insufficient_privilege
            raise
        raise ToolError(f"restoring needs to create a database ({exc}): the backup goes into a new database "
                        "that replaces the old one at the end. Grant it: ALTER ROLE <user> CREATEDB; nothing "
                        "was changed") from None


def copy_extras(db: Database, name: str, info: dict[str, Any]) -> None:
    """Per-database settings, privileges and comment: pg_dump without --create leaves them out."""
    q, lit = db.identifier, db.literal
    script = []
    for role, config in info["settings"]:
        who = f"ROLE {q(role)} IN DATABASE {q(name)}" if role else f"DATABASE {q(name)}"
        for item in config or []:
            key, _, value = item.partition("=")
            shown = value if key.lower() in _LIST_SETTINGS else lit(value)
            script.append(f"ALTER {who} SET {q(key)} = {shown}")
    if info["datacl"] is not None:
        script.append(f"REVOKE ALL ON DATABASE {q(name)} FROM PUBLIC")
        for grantee, privilege, grantable in info["grants"]:
            script.append(f"GRANT {privilege} ON DATABASE {q(name)} TO {q(grantee) if grantee else 'PUBLIC'}"
                          + (" WITH GRANT OPTION" if grantable else ""))
    if info["comment"] is not None:
        script.append(f"COMMENT ON DATABASE {q(name)} IS {lit(info['comment'])}")
    if script:
        db.execute(";\n".join(script))


def swap(db: Database, target: str, replacement: str) -> str:
    """Give ``replacement`` the name ``target`` in one commit; returns the name the old database now has."""
    q = db.identifier
    old = throwaway.name("old", label=target)
    for attempt in range(1, _SWAP_ATTEMPTS + 1):
        try:
            db.rows("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", [target])
        except SqlFailure as exc:
            raise ToolError(f"cannot end the other sessions on {target} ({exc}); stop the application "
                            "and run the restore again; nothing was changed") from None
        try:
            db.execute(f"BEGIN; ALTER DATABASE {q(target)} RENAME TO {q(old)}; "
                       f"ALTER DATABASE {q(replacement)} RENAME TO {q(target)}; COMMIT;")
            break
        except SqlFailure as exc:
            if exc.sqlstate != _IN_USE or attempt == _SWAP_ATTEMPTS:
                raise ToolError(f"could not put the restored database in place of {target}: {exc}; "
                                "nothing was changed") from None
            time.sleep(0.2 * attempt)
    return old


def drop_replaced(db: Database, old: str) -> None:
    """Drop the database a swap replaced. PostgreSQL checkpoints on every DROP DATABASE, so this costs
    about as long as flushing what the restore wrote; a failure leaves it for the next restore."""
    with contextlib.suppress(SqlFailure):
        db.execute(f"DROP DATABASE IF EXISTS {db.identifier(old)} WITH (FORCE)")
