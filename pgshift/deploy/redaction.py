"""Keeping secrets out of everything a deploy writes: the log, the console, Slack messages.

``Redactor`` replaces every known secret (the database password, the Slack webhook URL and its
path, which is the webhook's credential) with ``***``, and any password inside a database URL.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from pgshift.dburl import redact
from pgshift.settings import Settings

MASK = "***"


class Redactor:
    def __init__(self, secrets: list[str]) -> None:
        found: set[str] = set()
        for secret in secrets:
            if len(secret) >= 3:  # a one- or two-character "secret" would mask ordinary text
                found.update({secret, quote(secret, safe="")})
        self._secrets = sorted(found, key=len, reverse=True)  # longest first: a URL before its path

    @classmethod
    def for_settings(cls, settings: Settings) -> Redactor:
        secrets = []
        if settings.url is not None and settings.url.password:
            secrets.append(settings.url.password)
        if settings.slack_webhook_url:
            secrets.append(settings.slack_webhook_url)
            path = urlsplit(settings.slack_webhook_url).path.strip("/")
            if path:
                secrets.append(path)
        return cls(secrets)

    def __call__(self, text: str) -> str:
        text = redact(text)
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        return text
