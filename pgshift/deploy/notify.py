"""Slack notifications: the one module that imports requests.

A post uses one session and a short timeout (``slack_timeout``). A refused connection or a server
error is retried once; a post that timed out is not (a hanging Slack would only make us wait twice).
It never raises: a failure becomes a warning string the deploy logs, and after one failed post the
rest of the run's messages are skipped except the outcome, tried once with a one-second timeout. A
hanging Slack so costs a deploy ``slack_timeout`` + 1 s (3 s by default), a refusing one almost
nothing. The webhook URL is a credential: it never appears in a warning, and every text sent goes
through the redactor.
"""

from __future__ import annotations

import time
from typing import Any

import requests

from pgshift.deploy.events import Event
from pgshift.deploy.redaction import Redactor
from pgshift.settings import Settings

COLORS = {"start": "#439FE0", "success": "good", "failure": "danger", "rollback": "warning",
          "maintenance on": "warning", "maintenance off": "good", "backfill": "#439FE0"}
RETRY_PAUSE = 0.2
LAST_TRY_TIMEOUT = 1.0  # seconds: the outcome's one try after Slack failed earlier in the run


class Slack:
    def __init__(self, webhook_url: str, timeout: float, redactor: Redactor) -> None:
        self._url = webhook_url
        self._timeout = max(timeout, 0.1)
        self._redact = redactor
        self._session = requests.Session()
        self._down = False
        self.sent = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> Slack | None:
        if not settings.slack_webhook_url:
            return None
        return cls(settings.slack_webhook_url, settings.slack_timeout, Redactor.for_settings(settings))

    def payload(self, event: Event) -> dict[str, Any]:
        lines = [self._redact(line) for line in event.lines()]
        return {"text": lines[0],
                "attachments": [{"color": COLORS.get(event.kind, "#cccccc"), "text": "\n".join(lines[1:]),
                                 "fallback": " | ".join(lines)}]}

    def __call__(self, event: Event) -> str | None:
        """Post ``event``; None when delivered, else a warning (which never contains the webhook URL)."""
        if self._down and not event.final:
            return f"Slack message '{event.kind}' skipped: Slack failed earlier in this run"
        attempts = 1 if self._down else 2
        timeout = min(self._timeout, LAST_TRY_TIMEOUT) if self._down else self._timeout
        problem = "no answer"
        for attempt in range(attempts):
            if attempt:
                time.sleep(RETRY_PAUSE)
            try:
                response = self._session.post(self._url, json=self.payload(event),
                                              timeout=(min(timeout, 1.0), timeout))
            except requests.Timeout:
                problem = f"no answer within {timeout:g}s"
                break
            except requests.RequestException as exc:
                problem = f"cannot reach Slack ({type(exc).__name__})"
                continue
            if response.status_code < 300:
                self.sent += 1
                return None
            problem = f"Slack answered HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break  # a refusal (bad webhook, bad payload) is not worth a retry
        self._down = True
        return f"Slack message '{event.kind}' not delivered: {problem}; the deploy goes on"

    def close(self) -> None:
        self._session.close()
