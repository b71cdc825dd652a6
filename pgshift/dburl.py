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
_URL_IN_TEXT = re.compile(r"(postgres(?:ql)?(?:\+\w+)?://[^:/@\s]*:)([^@\s]*)(@)")


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
                f"DATABASE_URL must start with postgresql:// (got {redact(text)[:40]!r}); "
                "example: postgresql://user:password@localhost:5432/app"
            )
        try:
            parts = urlsplit("postgresql://" + text.split("://", 1)[1])
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"DATABASE_URL is malformed ({exc}); check the host and port") from None
        dbname = unquote(parts.path.lstrip("/"))
        params = tuple(parse_qsl(parts.query, keep_blank_values=True))
        host = unquote(parts.hostname) if parts.hostname else dict(params).get("host")
        if not dbname:
            raise ConfigError("DATABASE_URL names no database; add it after the host, e.g. .../app")
        return cls(
            host=host,
            port=port,
            dbname=dbname,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            params=tuple((k, v) for k, v in params if k != "host"),
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
    """Replace the password of every URL found in ``text`` with ``***``."""
    return _URL_IN_TEXT.sub(r"\1***\3", text)
