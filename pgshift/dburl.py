"""Database URLs: parsing, redaction, and the connection arguments built from them.

A password never leaves this module in text form except through ``DatabaseUrl.password`` (for the
driver's keyword argument) and ``DatabaseUrl.env()`` (for ``PGPASSWORD`` in a child's environment);
``str()`` and ``repr()`` show it as ``***``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from pgshift.errors import ConfigError

SCHEMES = ("postgres", "postgresql", "postgresql+psycopg", "postgresql+psycopg2")
# Any URL in a text (whatever its scheme, parseable or not): its user part is everything between "//"
# and the last "@" before the next white space. A user name alone (no ":") is kept; everything after
# the user's ":" is masked, so a password holding "/", "?", "#" or "@" is masked whole.
_URL_IN_TEXT = re.compile(r"(\b[A-Za-z][\w+.-]*://)(\S*)@")
_PLAIN_USER = re.compile(r"[\w.%-]*")
# SQL that sets a password: CREATE/ALTER ROLE/USER ... PASSWORD '...', a user mapping's
# OPTIONS (password '...'), and E'' or dollar-quoted spellings of the literal.
_SQL_PASSWORD = re.compile(
    r"""(\bpassword\s*(?:=\s*)?)(E'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|(\$\w*\$).*?\3)""", re.IGNORECASE | re.DOTALL)
# A password given as a key/value: in a URL's query (?password=...) or a libpq conninfo string.
_KEY_PASSWORD = re.compile(r"(\bpassword\s*=\s*)(?!['$])([^\s&'\"]+)", re.IGNORECASE)
_ENCODE = "percent-encode the user and password (/ ? # @ : as %2F %3F %23 %40 %3A)"


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed ``postgresql://`` URL."""

    host: str | None
    port: int | None
    dbname: str
    user: str | None
    password: str | None = field(default=None, repr=False)
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str) -> DatabaseUrl:
        text = url.strip()
        scheme, sep, _ = text.partition("://")
        if not sep or scheme not in SCHEMES:
            raise ConfigError(
                f"DATABASE_URL must start with postgresql:// (got {redact_url(text)[:60]!r}); "
                "example: postgresql://user:password@localhost:5432/app"
            )
        parts = urlsplit("postgresql://" + text.split("://", 1)[1])
        if "@" in parts.path + parts.query + parts.fragment:  # a "/", "?" or "#" in the password
            raise ConfigError(f"DATABASE_URL does not parse ({redact_url(text)!r}); {_ENCODE}")
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"DATABASE_URL is malformed: its port is not a number ({redact_url(text)!r}); "
                              f"check the host and port, and {_ENCODE}") from None
        dbname = unquote(parts.path.lstrip("/"))
        params = tuple(parse_qsl(parts.query, keep_blank_values=True))
        host = unquote(parts.hostname) if parts.hostname else dict(params).get("host")
        if not dbname:
            raise ConfigError("DATABASE_URL names no database; add it after the host, e.g. .../app")
        password = unquote(parts.password) if parts.password is not None else dict(params).get("password")
        return cls(
            host=host,
            port=port,
            dbname=dbname,
            user=unquote(parts.username) if parts.username else dict(params).get("user"),
            password=password,
            params=tuple((k, v) for k, v in params if k not in ("host", "password", "user")),
        )

    def with_dbname(self, dbname: str) -> DatabaseUrl:
        return replace(self, dbname=dbname)

    def connect_kwargs(self) -> dict[str, str]:
        """Keyword arguments for libpq (psycopg.connect); the password is one of them."""
        kw: dict[str, str] = {"dbname": self.dbname}
        if self.host:
            kw["host"] = self.host
        if self.port:
            kw["port"] = str(self.port)
        if self.user:
            kw["user"] = self.user
        if self.password:
            kw["password"] = self.password
        kw.update(dict(self.params))
        return kw

    def env(self) -> dict[str, str]:
        """libpq environment variables for a child process: nothing secret goes on its command line."""
        names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE",
                 "password": "PGPASSWORD", "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT",
                 "connect_timeout": "PGCONNECT_TIMEOUT", "application_name": "PGAPPNAME",
                 "options": "PGOPTIONS", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY"}
        return {names[k]: v for k, v in self.connect_kwargs().items() if k in names}

    def is_local(self) -> bool:
        """True for a Unix socket or a loopback address."""
        return self.host is None or self.host.startswith("/") or self.host in (
            "localhost", "127.0.0.1", "::1")

    def __str__(self) -> str:
        auth = ""
        if self.user:
            auth = quote(self.user, safe="") + (":***" if self.password else "") + "@"
        host = self.host or ""
        query = ""
        if host.startswith("/"):
            query, host = "?" + urlencode({"host": host}), ""
        netloc = auth + (f"[{host}]" if ":" in host else host) + (f":{self.port}" if self.port else "")
        rest = urlencode(self.params)
        if rest:
            query = (query + "&" if query else "?") + rest
        return f"postgresql://{netloc}/{quote(self.dbname, safe='')}{query}"


def redact(text: str) -> str:
    """``text`` as it may be shown: the password of every URL in it (parseable or not) and every
    string literal SQL gives as a password (``PASSWORD '...'``) replaced with ``***``."""
    return mask_sql_passwords(_URL_IN_TEXT.sub(_mask_userinfo, text))


def redact_url(text: str) -> str:
    """A URL that may not parse, as it may be shown: everything between ``//`` and the last ``@``
    is masked (a user name alone is kept)."""
    head, sep, rest = text.partition("//")
    user, at, host = rest.rpartition("@")
    if not sep or not at:
        return redact(text)
    return head + sep + _userinfo(user) + "@" + host


def mask_sql_passwords(text: str) -> str:
    """Mask the literal after every ``PASSWORD`` (roles, user mappings) in SQL or in a message."""
    if "password" not in text.lower():
        return text
    text = _SQL_PASSWORD.sub(lambda m: m.group(1) + "'***'", text)
    return _KEY_PASSWORD.sub(r"\1***", text)


def _mask_userinfo(match: re.Match[str]) -> str:
    return match.group(1) + _userinfo(match.group(2)) + "@"


def _userinfo(text: str) -> str:
    user, colon, _ = text.partition(":")
    if _PLAIN_USER.fullmatch(user) is None:
        return "***"
    return user + ":***" if colon else user
