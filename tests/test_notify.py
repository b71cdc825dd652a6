"""Slack notifications against a local HTTP server standing in for Slack.

A post is delivered, retried once on a server error, not retried on a refusal, bounded by its timeout,
and never raises; after a failure the rest of a run's messages are skipped except its outcome. The
webhook URL (a credential) and passwords appear in no warning and no payload.
"""

from __future__ import annotations

from pgshift.deploy.events import Event
from pgshift.deploy.notify import Slack
from pgshift.deploy.redaction import Redactor
from tests.slack import TOKEN, SlackStub

PASSWORD = "pw-Secret-4711"


def event(kind: str = "success", detail: str = "") -> Event:
    return Event(kind=kind, environment="production", database="app", who="alice@build1", deploy_id=7,
                 migrations=["20250101000000_a"], durations={"20250101000000_a": 12}, backup="backup_x.dump",
                 detail=detail, total_s=1.5)


def slack(url: str, timeout: float = 2.0) -> Slack:
    return Slack(url, timeout, Redactor([url, PASSWORD, url.rsplit("/services/", 1)[1]]))


def test_a_message_carries_environment_migrations_durations_backup_and_who(stub: SlackStub) -> None:
    assert slack(stub.url)(event()) is None
    (payload,) = stub.received
    assert payload["text"] == "deploy #7 to production (app) succeeded"
    body = payload["attachments"][0]["text"]
    for fragment in ("20250101000000_a (12 ms)", "took 1.5 s", "backup: backup_x.dump", "by alice@build1"):
        assert fragment in body


def test_a_server_error_is_retried_once_then_a_warning_without_the_url() -> None:
    server = SlackStub(status=500)
    try:
        warning = slack(server.url)(event())
    finally:
        server.close()
    assert len(server.received) == 2
    assert warning is not None and "HTTP 500" in warning and "goes on" in warning
    assert TOKEN not in warning and "127.0.0.1" not in warning


def test_a_refusal_is_not_retried() -> None:
    server = SlackStub(status=404)
    try:
        warning = slack(server.url)(event())
    finally:
        server.close()
    assert len(server.received) == 1
    assert warning is not None and "HTTP 404" in warning and TOKEN not in warning


def test_a_hanging_slack_costs_one_timeout_then_only_the_outcome_is_tried() -> None:
    server = SlackStub(delay=3.0)
    post = slack(server.url, timeout=0.3)
    try:
        first = post(event("start"))
        skipped = post(event("maintenance on"))
        outcome = post(event("success"))
    finally:
        server.close()
    assert first is not None and "no answer within 0.3s" in first
    assert skipped is not None and "skipped" in skipped
    assert outcome is not None and "not delivered" in outcome
    # start once (a timeout is not retried), the outcome once; the maintenance message was never sent
    assert [m["text"] for m in server.received] == ["deploy #7 to production (app) started by alice@build1",
                                                    "deploy #7 to production (app) succeeded"]


def test_an_unreachable_slack_is_a_warning_not_an_exception() -> None:
    probe = SlackStub()
    url = probe.url
    probe.close()  # nothing listens on that port any more
    warning = slack(url, timeout=0.5)(event("failure"))
    assert warning is not None and "cannot reach Slack" in warning
    assert TOKEN not in warning and url not in warning


def test_secrets_in_a_message_are_redacted_before_sending(stub: SlackStub) -> None:
    detail = (f"could not connect to postgresql://app:{PASSWORD}@db1/app; webhook {stub.url} said no; "
              f"bare {PASSWORD}")
    assert slack(stub.url)(event("failure", detail)) is None
    assert stub.paths == [f"/services/T0AAA/B0BBB/{TOKEN}"]
    assert PASSWORD not in stub.raw[0] and TOKEN not in stub.raw[0]
    assert "postgresql://app:***@db1/app" in stub.received[0]["attachments"][0]["text"]
