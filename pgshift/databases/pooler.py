"""Connection poolers between pgshift and PostgreSQL: a migration needs one server session.

The migration lock is a session advisory lock, and the limits and the journal of a statement-by-statement
migration live in the session. Behind PgBouncer in transaction or statement pooling, consecutive
transactions of one client may run on different server sessions, so the lock would stay on a pooled
session and the limits would reach the wrong one. Such a URL is refused before the lock is taken, with
the fix: a direct URL, or a session-pooled one.

Detection costs one query: the server reports the TCP port it sees us come from, which equals our
socket's own port only on a direct link (a pooler that reaches the server by its unix socket shows as
no port at all). Only when they differ is PgBouncer's console asked for its pool mode (a plain TCP
proxy, which keeps one session per client, passes). A pooler reached by a unix socket is not seen.
"""

from __future__ import annotations

from pgshift.databases.db import Database, pgbouncer_pool_mode, seen_from_elsewhere
from pgshift.errors import ConfigError


def require_session(db: Database) -> None:
    """Raise ConfigError when ``db`` goes through a pooler that does not keep one server session."""
    if not seen_from_elsewhere(db):
        return
    mode = pgbouncer_pool_mode(db.url)
    if mode in (None, "session"):
        return
    where = f"{db.url.host}:{db.url.port}" if db.url.port else str(db.url.host)
    how = (f"in {mode} pooling" if mode != "unknown"
           else "whose pool mode it will not tell this user (add the user to its stats_users to let it)")
    raise ConfigError(
        f"DATABASE_URL reaches PostgreSQL through PgBouncer at {where} {how}; a migration needs one server "
        "session for its lock and limits: point DATABASE_URL at the server itself or at a session-pooled "
        "PgBouncer port")
