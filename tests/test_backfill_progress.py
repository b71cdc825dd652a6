"""A backfill's progress: a bar at a terminal, lines without one, Slack at its start, intervals and end."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from pgshift import api
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.deploy import workflow
from pgshift.deploy.notify import Slack
from pgshift.migrations.backfill import Paced, Tick
from tests.commands import cli_env, inv_here
from tests.conftest import write_migration
from tests.slack import SlackStub

ROWS = 3000
# Each row's write sleeps a little, so the backfill runs long enough for several reports.
TABLE_SQL = f"""
CREATE TABLE items (id bigint PRIMARY KEY, a integer NOT NULL);
CREATE FUNCTION items_slow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(0.001);
    RETURN NEW;
END $$;
CREATE TRIGGER items_slow BEFORE UPDATE ON items FOR EACH ROW EXECUTE FUNCTION items_slow();
INSERT INTO items SELECT g, g FROM generate_series(1, {ROWS}) g;
"""
FILL_ID = "20250102000000_fill_b"
FILL = """-- pgshift: expand
ALTER TABLE items ADD COLUMN b bigint;
-- pgshift: backfill items SET b = a + 7
-- pgshift: abort
ALTER TABLE items DROP COLUMN b;
"""
PERIODIC = re.compile(rf"backfill {FILL_ID} step 1 \(items\): [\d,]+ of ~[\d,]+ rows \(\d+%\), [\d,]+ rows/s"
                      r"(, ETA \d+ s)?$")


def _tick(event: str, scanned: int = 0) -> Tick:
    return Tick(event, "m step 1 (users)", scanned, 1000, scanned, scanned, 2.0)


def test_paced_passes_every_event_and_a_batch_per_interval() -> None:
    now = [0.0]
    seen: list[str] = []
    paced = Paced(lambda t: seen.append(f"{t.event}:{t.scanned}"), every=10.0, clock=lambda: now[0])
    paced(_tick("start"))
    for second in range(1, 26):  # a batch a second
        now[0] = float(second)
        paced(_tick("batch", second))
    paced(_tick("held"))
    paced(_tick("done", 1000))
    assert seen == ["start:0", "batch:10", "batch:20", "held:0", "done:1000"]
    quiet: list[str] = []
    never = Paced(lambda t: quiet.append(t.event), every=0.0, clock=lambda: now[0])
    for event in ("start", "batch", "batch", "done"):
        never(_tick(event))
    assert quiet == ["start", "done"]  # 0: no messages between


def test_the_bar_at_a_terminal_shows_share_rate_and_eta_and_takes_the_periodic_lines(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import _progress

    bar = _progress.BackfillBar()
    bar.enabled = True  # as at a terminal
    monkeypatch.setattr(_progress.time, "monotonic", iter([10.0, 10.05, 11.0, 12.0]).__next__)
    monkeypatch.setattr(_progress.shutil, "get_terminal_size", lambda *_a: os.terminal_size((120, 40)))
    printed: list[str] = []
    say = bar.lines(printed.append)
    first = Tick("batch", "m step 1 (users)", 250_000, 1_000_000, 250_000, 200_000, 2.0)
    bar(first)
    bar(first._replace(scanned=260_000))  # within the redraw interval: not drawn
    say(first._replace(scanned=260_000).line())  # the engine's periodic line: the bar shows it
    bar(first._replace(scanned=500_000, here=450_000, seconds=4.5))
    say("applied something else")
    bar(first._replace(event="done", scanned=1_000_000))
    err = capsys.readouterr().err
    drawn = re.search(r"\rbackfill m step 1 \(users\) \[(#*)(\.*)\] 25% 250,000 of ~1,000,000 rows, "
                      r"100,000 rows/s, ETA 8 s\033\[K", err)
    assert drawn is not None, err
    assert len(drawn.group(1)) == round(0.25 * (len(drawn.group(1)) + len(drawn.group(2)))), err
    assert "260,000" not in err
    assert " 50% 500,000 of ~1,000,000 rows" in err
    assert printed == ["applied something else"]
    assert err.endswith("\r\033[K")
    assert len(_progress.render(first, 60)) <= 59


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_without_a_terminal_the_output_has_periodic_lines_and_no_bar(task_db_url: DatabaseUrl,
                                                                     migrations_dir: Path) -> None:
    write_migration(migrations_dir, "20250101000000_items", TABLE_SQL)
    write_migration(migrations_dir, FILL_ID, FILL)
    env = cli_env(task_db_url, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations_dir),
                  INVOKE_PGSHIFT_BACKFILL_BATCH_SECONDS="0.05", INVOKE_PGSHIFT_BACKFILL_PROGRESS_SECONDS="0.3")
    done = inv_here("dev.migrate", env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    periodic = [line for line in lines if PERIODIC.match(line)]
    assert len(periodic) >= 2, done.stdout
    assert any(f"backfill {FILL_ID} step 1 (items): starting, ~" in line for line in lines), done.stdout
    assert any(f"backfill {FILL_ID} step 1 (items): done, {ROWS:,} rows changed" in line for line in lines)
    assert "\r" not in done.stdout + done.stderr and "\033[K" not in done.stdout + done.stderr
    with Database.connect(task_db_url) as db:
        batches = db.one("SELECT batches FROM pgshift.backfills WHERE id = %s", [FILL_ID])
    assert batches is not None and len(periodic) < batches[0], "a line per batch, not per interval"


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_a_deploy_tells_slack_at_the_start_at_intervals_and_at_the_end(
        task_db_url: DatabaseUrl, migrations_dir: Path, make_settings: Any, stub: SlackStub) -> None:
    settings = make_settings(task_db_url, slack_webhook_url=stub.url, environment="staging", skip_backup=True,
                             skip_maintenance=True, backfill_batch_seconds=0.05, backfill_notify_seconds=0.8,
                             backfill_progress_seconds=0.3)
    write_migration(migrations_dir, "20250101000000_items", TABLE_SQL)
    api.migrate(settings)
    write_migration(migrations_dir, FILL_ID, FILL)
    said: list[str] = []
    slack = Slack.from_settings(settings)
    assert slack is not None
    try:
        report = workflow.deploy(settings, rehearse=False, notify=slack, progress=said.append)
    finally:
        slack.close()
    assert report.exit_code == 0, said
    fills = [m for m in stub.received if "backfill" in m["text"]]
    details = [m["attachments"][0]["text"] for m in fills]
    assert fills and all(m["text"].endswith(f": backfill {FILL_ID} step 1 (items)") for m in fills), fills
    assert "starting, ~" in details[0].splitlines()[0], details
    assert f"done, {ROWS:,} rows changed" in details[-1].splitlines()[0], details
    between = [d for d in details[1:-1] if "rows/s" in d]
    assert between, details
    with Database.connect(task_db_url) as db:
        batches = db.one("SELECT batches FROM pgshift.backfills WHERE id = %s", [FILL_ID])
    assert batches is not None and len(fills) < batches[0], "a message per batch, not per interval"
    texts = stub.texts()
    assert texts.index(fills[0]["text"]) > 0 and any("succeeded" in t for t in texts[texts.index(fills[-1]["text"]):])
    log = report.log.read_text()
    assert len([line for line in log.splitlines() if PERIODIC.search(line)]) >= 2, log
