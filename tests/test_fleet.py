"""Fleet deploys across three real servers: the embedded 18, the local 15, and a second PostgreSQL 15
cluster started here on a free port.

Every migration writes its id into a ``ledger`` table, so a migration applied twice on a target shows
as two rows: "each target applied exactly once" is read from the databases themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pgshift.databases import throwaway
from pgshift.databases.db import Database
from pgshift.dburl import DatabaseUrl
from pgshift.fleet import targets as fleet_targets
from pgshift.fleet import waves
from tests.commands import INV, ROOT, cli_env, inv_here
from tests.conftest import write_migration
from tests.slack import SlackStub

PG15_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "pw-Fleet-8812"


def _as_postgres(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def pg15b() -> Iterator[DatabaseUrl]:
    """A second PostgreSQL 15 cluster of our own, on a free local port, stopped and removed after."""
    if not (PG15_BIN / "initdb").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{PG15_BIN}/initdb must exist under CI for the fleet tests")
        pytest.skip(f"no PostgreSQL 15 binaries in {PG15_BIN}")
    folder = Path(tempfile.mkdtemp(prefix="pgshift-fleet-", dir="/tmp"))
    folder.chmod(0o755)
    data, port = folder / "data", _free_port()
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    subprocess.run(_as_postgres([str(PG15_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                 "--no-sync"]), check=True, capture_output=True)
    subprocess.run(_as_postgres([str(PG15_BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
                                 "-o", f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off "
                                 "-c max_connections=200", "start"]), check=True, capture_output=True)
    try:
        yield DatabaseUrl(host="127.0.0.1", port=port, dbname="postgres", user="postgres")
    finally:
        subprocess.run(_as_postgres([str(PG15_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class FleetSetup:
    root: Path
    file: Path
    migrations: Path
    urls: dict[str, DatabaseUrl]  # target name -> its database
    ids: list[str]
    env: dict[str, str]
    schema: str = "public"

    def inv(self, *args: str) -> subprocess.CompletedProcess[str]:
        return inv_here(*args, "--fleet", str(self.file), env=self.env)

    def ledger(self, name: str) -> list[str]:
        with Database.connect(self.urls[name]) as db:
            if not db.has_relation(f"{self.schema}.ledger"):
                return []
            return [row[0] for row in db.rows(f"SELECT m FROM {self.schema}.ledger ORDER BY m")]

    def poison(self, name: str) -> None:
        """The third migration's table exists already there: that target's deploy fails."""
        with Database.connect(self.urls[name]) as db:
            db.execute("CREATE TABLE t_3 (id int)")

    def journal(self) -> list[dict[str, object]]:
        path = self.root / "logs" / f"{self.file.stem}.journal.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_migrations(folder: Path, count: int) -> list[str]:
    ids = []
    for n in range(1, count + 1):
        ident = f"202501{n:02d}000000_step_{n}"
        first = "CREATE TABLE ledger (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, m text NOT NULL);\n" \
            if n == 1 else ""
        write_migration(folder, ident, f"{first}CREATE TABLE t_{n} (id int PRIMARY KEY);\n"
                        f"INSERT INTO ledger (m) VALUES ('{ident}');\n",
                        f"DROP TABLE t_{n};\n" + ("DROP TABLE ledger;\n" if n == 1 else
                                                  f"DELETE FROM ledger WHERE m = '{ident}';\n"))
        ids.append(ident)
    return ids


def build_fleet(root: Path, servers: list[DatabaseUrl], count: int, migrations: int, canaries: int = 2,
                wave_size: int = 4, max_failures: int = 0, parallel: int = 4,
                schema: str | None = None) -> Iterator[FleetSetup]:
    folder = root / "migrations"
    folder.mkdir(parents=True)
    ids = write_migrations(folder, migrations)
    urls: dict[str, DatabaseUrl] = {}
    lines = [f"[fleet]\nwave_size = {wave_size}\nmax_failures = {max_failures}\nparallel = {parallel}\n"]
    for i in range(count):
        server = servers[i % len(servers)]
        name = throwaway.name("test", "fleet")
        with Database.connect(server) as admin:
            throwaway.create(admin, name)
        if schema is not None:
            with Database.connect(server.with_dbname(name)) as db:
                db.execute(f"CREATE SCHEMA {schema}")
        target = f"t{i:03d}"
        urls[target] = server.with_dbname(name)
        where = f"host={server.host}" if server.host and server.host.startswith("/") else ""
        host = "" if where else f"{server.host}:{server.port}"
        query = f"?{where}&port={server.port}" if where else ""
        url = f"postgresql://{server.user}:${{FLEET_PASSWORD}}@{host}/{name}{query}"
        wave = "wave = 0\n" if i < canaries else ""
        extra = f'schema = "{schema}"\n' if schema else ""
        lines.append(f'[[targets]]\nname = "{target}"\nurl = "{url}"\nlabels = ["s{i % len(servers)}"]\n{wave}{extra}')
    file = root / "fleet.toml"
    file.write_text("\n".join(lines))
    env = cli_env(ENVIRONMENT="production", FLEET_PASSWORD=PASSWORD, INVOKE_PGSHIFT_MIGRATIONS_DIR=str(folder),
                  INVOKE_PGSHIFT_BACKUPS_DIR=str(root / "backups"), INVOKE_PGSHIFT_LOGS_DIR=str(root / "logs"),
                  INVOKE_PGSHIFT_PREFLIGHT_DRIFT="false")
    try:
        yield FleetSetup(root, file, folder, urls, ids, env, schema or "public")
    finally:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(_drop, urls.values()))


def _drop(url: DatabaseUrl) -> None:
    with Database.connect(url.with_dbname("postgres")) as admin:
        throwaway.drop(admin, url.dbname)


@pytest.fixture
def servers(pg18: DatabaseUrl, pg15: DatabaseUrl, pg15b: DatabaseUrl) -> list[DatabaseUrl]:
    return [pg18, pg15, pg15b]


@pytest.fixture
def fleet(tmp_path: Path, servers: list[DatabaseUrl]) -> Iterator[FleetSetup]:
    """12 databases over the three servers, 5 pending migrations each: 2 canaries, then waves of 4."""
    yield from build_fleet(tmp_path, servers, 12, 5)


def test_fleet_deploy_applies_every_migration_to_every_target_once(fleet: FleetSetup, stub: SlackStub) -> None:
    fleet.env["SLACK_WEBHOOK_URL"] = stub.url
    done = fleet.inv("fleet.deploy", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "12 succeeded" in done.stdout
    for name in fleet.urls:
        assert fleet.ledger(name) == fleet.ids
    # One Slack digest per wave (canaries, then 4 + 4 + 2), not one message per target.
    assert len(stub.received) == 4
    assert "wave 0 (canaries): 2 succeeded" in stub.received[0]["text"] + stub.received[0]["attachments"][0]["text"]
    assert PASSWORD not in done.stdout + done.stderr + "".join(stub.raw)
    again = fleet.inv("fleet.status", "--json")
    status = json.loads(again.stdout)
    assert again.returncode == 0
    assert status["heads"] == {fleet.ids[-1]: 12}
    assert all(t["pending"] == [] and t["journal"].startswith("done") for t in status["targets"])


def test_the_dry_run_plans_every_target_and_names_the_one_that_differs(fleet: FleetSetup) -> None:
    first = fleet.inv("fleet.status")
    assert first.returncode == 3, first.stderr  # pending everywhere
    plan = fleet.inv("fleet.deploy", "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "wave 0 (canaries): t000, t001" in plan.stdout
    assert f"pending on most targets: {', '.join(fleet.ids)}" in plan.stdout
    assert "differs" not in plan.stdout
    assert all(fleet.ledger(name) == [] for name in fleet.urls)  # nothing changed


def test_a_failed_canary_stops_the_run_before_wave_1(fleet: FleetSetup) -> None:
    fleet.poison("t001")
    done = fleet.inv("fleet.deploy", "--yes")
    assert done.returncode == 1
    assert "halted: a canary failed (t001)" in done.stdout
    assert "10 target(s) left untouched" in done.stdout
    assert fleet.ledger("t000") == fleet.ids
    assert all(fleet.ledger(f"t{i:03d}") == [] for i in range(2, 12))  # wave 1 never started


def test_a_failure_in_a_later_wave_counts_towards_the_threshold(tmp_path: Path, servers: list[DatabaseUrl]) -> None:
    for fleet in build_fleet(tmp_path, servers, 12, 5, max_failures=1, parallel=1):
        fleet.poison("t003")  # wave 1: under the threshold of one, the run goes on
        done = fleet.inv("fleet.deploy", "--yes")
        assert done.returncode == 1
        assert "halted" not in done.stdout
        assert "11 succeeded, 1 failed" in done.stdout
        assert fleet.ledger("t011") == fleet.ids

    for fleet in build_fleet(tmp_path / "second", servers, 12, 5, max_failures=1, parallel=1):
        fleet.poison("t003")
        fleet.poison("t006")  # the second failure, in wave 2: more than one, so the run halts there
        done = fleet.inv("fleet.deploy", "--yes")
        assert done.returncode == 1
        assert "halted: 2 target(s) failed, more than max_failures = 1" in done.stdout
        assert "wave 3" not in done.stdout
        assert fleet.ledger("t005") == fleet.ids
        untouched = [f"t{i:03d}" for i in range(7, 12)]
        assert all(fleet.ledger(name) == [] for name in untouched)
        assert f"5 target(s) left untouched: {', '.join(untouched)}" in done.stdout


@pytest.mark.process
def test_kill_9_of_the_runner_then_resume_finishes_every_target_exactly_once(
        tmp_path: Path, servers: list[DatabaseUrl]) -> None:
    tmp_path.mkdir(exist_ok=True)
    for fleet in build_fleet(tmp_path, servers, 12, 5, parallel=2):
        runner, journal = _runner_mid_wave(fleet)
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        states = _states(journal)
        done_then = {name for name, state in states.items() if state == "done"}
        assert 4 <= len(done_then) < 12
        assert "running" in states.values()

        resumed = fleet.inv("fleet.resume", "--yes")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"{len(done_then)} done before" in resumed.stdout
        for name in fleet.urls:
            assert fleet.ledger(name) == fleet.ids  # every migration once: a second run would add a row
        records = fleet.journal()
        assert len({r["run"] for r in records}) == 1  # the resume continued the killed run
        finished = [r["target"] for r in records if r.get("state") == "done"]
        assert sorted(finished) == sorted(fleet.urls)  # each target done exactly once, none twice
        assert fleet.inv("fleet.resume", "--yes").stdout.count("done before") == 1  # nothing left to do


@pytest.mark.process
def test_sigterm_lets_the_running_targets_finish_and_starts_no_more(tmp_path: Path,
                                                                    servers: list[DatabaseUrl]) -> None:
    for fleet in build_fleet(tmp_path, servers, 12, 5, parallel=2):
        runner, journal = _runner_mid_wave(fleet)
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=60) == 130
        states = _states(journal)
        assert "running" not in states.values()  # each deploy under way was finished, not cut off
        assert 4 <= len(states) < 12
        assert any(r.get("kind") == "halt" and r.get("reason") == "interrupted" for r in fleet.journal())
        for name in fleet.urls:
            assert fleet.ledger(name) == (fleet.ids if states.get(name) == "done" else [])
        resumed = fleet.inv("fleet.resume", "--yes")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert all(fleet.ledger(name) == fleet.ids for name in fleet.urls)


def _runner_mid_wave(fleet: FleetSetup) -> tuple[subprocess.Popen[bytes], Path]:
    """``inv fleet.deploy`` as a real process, once some targets are done and one is mid-deploy."""
    runner = subprocess.Popen([INV, "fleet.deploy", "--yes", "--fleet", str(fleet.file)], cwd=ROOT, env=fleet.env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = fleet.root / "logs" / "fleet.journal.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and runner.poll() is None:
        states = _states(journal)
        if list(states.values()).count("done") >= 4 and "running" in states.values():
            return runner, journal  # mid-wave: some targets done, at least one in the middle of its deploy
        time.sleep(0.02)
    runner.kill()
    runner.wait()
    raise AssertionError("the runner ended (or stalled) before it was mid-wave")


def _states(journal: Path) -> dict[str, str]:
    """Each target's last state in the journal (a line the runner is still writing is skipped)."""
    found: dict[str, str] = {}
    for line in (journal.read_text() if journal.exists() else "").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("kind") == "target":
            found[record["target"]] = record["state"]
    return found


def test_four_shards_are_disjoint_and_cover_the_fleet(fleet: FleetSetup) -> None:
    shards = []
    for k in range(1, 5):
        found = fleet.inv("fleet.status", "--json", "--shard", f"{k}/4")
        shards.append({t["name"] for t in json.loads(found.stdout)["targets"]})
    assert set().union(*shards) == set(fleet.urls)
    assert sum(len(s) for s in shards) == len(fleet.urls)
    one = fleet.inv("fleet.deploy", "--yes", "--shard", "1/4")
    two = fleet.inv("fleet.deploy", "--yes", "--shard", "2/4")
    assert one.returncode == 0 and two.returncode == 0, one.stdout + two.stdout
    for name in fleet.urls:
        applied = fleet.ledger(name) == fleet.ids
        assert applied == (name in shards[0] | shards[1]), name


def test_a_target_with_a_schema_is_migrated_inside_it(tmp_path: Path, servers: list[DatabaseUrl]) -> None:
    for fleet in build_fleet(tmp_path, servers, 3, 3, canaries=1, schema="app"):
        done = fleet.inv("fleet.deploy", "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        for name, url in fleet.urls.items():
            assert fleet.ledger(name) == fleet.ids
            with Database.connect(url) as db:
                assert not db.has_relation("public.ledger")


def test_a_literal_password_in_the_fleet_file_is_refused_in_one_line(tmp_path: Path) -> None:
    file = tmp_path / "fleet.toml"
    file.write_text('[[targets]]\nname = "a"\nurl = "postgresql://app:hunter2@db1/a"\n')
    done = inv_here("fleet.status", "--fleet", str(file), env=cli_env())
    assert done.returncode == 2
    assert "hunter2" not in done.stdout + done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "${VAR}" in done.stderr


@pytest.mark.parametrize(("url", "fragment"), [
    ("postgresql://app@db1/a?password=hunter2", "${VAR}"),
    ("postgresql://app:${NOT_SET_ANYWHERE}@db1/a", "export NOT_SET_ANYWHERE"),
])
def test_a_password_in_a_query_or_a_missing_variable_is_one_line_naming_the_fix(tmp_path: Path, url: str,
                                                                                 fragment: str) -> None:
    file = tmp_path / "fleet.toml"
    file.write_text(f'[[targets]]\nname = "a"\nurl = "{url}"\n')
    done = inv_here("fleet.deploy", "--dry-run", "--fleet", str(file), env=cli_env())
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert fragment in done.stderr and "hunter2" not in done.stderr


def test_a_production_fleet_deploy_without_a_terminal_or_yes_is_refused(fleet: FleetSetup) -> None:
    done = fleet.inv("fleet.deploy")
    assert done.returncode == 2
    assert "--yes" in done.stderr
    assert all(fleet.ledger(name) == [] for name in fleet.urls)
    assert not (fleet.root / "logs" / "fleet.journal.jsonl").exists()


def test_shards_and_waves_follow_the_names_and_the_file(tmp_path: Path) -> None:
    file = tmp_path / "fleet.toml"
    entries = [f'[[targets]]\nname = "n{i}"\nurl = "postgresql://u@h/d{i}"\n' + ("wave = 0\n" if i < 2 else "")
               for i in range(40)]
    file.write_text("[fleet]\nwave_size = 10\n" + "\n".join(entries))
    loaded = fleet_targets.load(file, env={})
    parts = [waves.select(loaded, waves.Shard(k, 4)) for k in range(1, 5)]
    names = [t.name for part in parts for t in part]
    assert sorted(names) == sorted(t.name for t in loaded.targets)
    assert len(set(names)) == len(names)
    planned = waves.plan(loaded, loaded.targets)
    assert [(w.number, len(w.targets)) for w in planned] == [(0, 2), (1, 10), (2, 10), (3, 10), (4, 8)]
    with pytest.raises(Exception, match="K/N"):
        waves.Shard.parse("5/4")


@pytest.mark.slow
def test_a_fleet_of_100_databases_with_20_migrations_each(tmp_path: Path, servers: list[DatabaseUrl]) -> None:
    for fleet in build_fleet(tmp_path, servers, 100, 20, canaries=3, wave_size=25, parallel=8):
        done = fleet.inv("fleet.deploy", "--yes")
        assert done.returncode == 0, done.stdout[-2000:]
        assert "100 succeeded" in done.stdout
        assert all(fleet.ledger(name) == fleet.ids for name in fleet.urls)


def test_a_source_query_on_a_control_database_gives_the_targets(fleet: FleetSetup, pg18: DatabaseUrl) -> None:
    listed = fleet_targets.load(fleet.file, env=fleet.env)
    control = throwaway.name("test", "control")
    with Database.connect(pg18) as admin:
        throwaway.create(admin, control)
    try:
        with Database.connect(pg18.with_dbname(control)) as db:
            db.execute("CREATE TABLE tenants (name text, url text, schema text, labels text[], wave int, "
                       "active boolean DEFAULT true)")
            for t in listed.targets:  # the URLs live in the database, passwords and all
                url = str(t.url).replace(":***@", f":{PASSWORD}@")
                db.execute("INSERT INTO tenants (name, url, labels, wave) VALUES (%s, %s, %s, %s)",
                           [t.name, url, list(t.labels), t.wave])
            db.execute("INSERT INTO tenants (name, url, active) VALUES ('gone', 'postgresql://x@nowhere/x', false)")
        socket_dir = pg18.host or ""
        source = fleet.root / "fleet-source.toml"
        source.write_text('[fleet]\nwave_size = 4\nmax_failures = "50%"\n\n[source]\n'
                          f'url = "postgresql://postgres@/{control}?host={socket_dir}&port={pg18.port}"\n'
                          'query = "SELECT name, url, schema, labels, wave FROM tenants WHERE active ORDER BY name"\n')
        loaded = fleet_targets.load(source, env=fleet.env)
        assert [t.name for t in loaded.targets] == [t.name for t in listed.targets]
        assert loaded.max_failures == 6 and [t.name for t in loaded.targets if t.canary] == ["t000", "t001"]
        done = inv_here("fleet.deploy", "--yes", "--fleet", str(source), env=fleet.env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert PASSWORD not in done.stdout + done.stderr
        assert all(fleet.ledger(name) == fleet.ids for name in fleet.urls)
    finally:
        with Database.connect(pg18) as admin:
            throwaway.drop(admin, control)


def test_a_failed_source_query_is_one_line_naming_the_fix(tmp_path: Path, pg18: DatabaseUrl) -> None:
    source = tmp_path / "fleet.toml"
    source.write_text(f'[source]\nurl = "postgresql://postgres@/postgres?host={pg18.host}&port={pg18.port}"\n'
                      'query = "SELECT name, url FROM no_such_table"\n')
    with pytest.raises(Exception, match=r"fleet.toml \[source\]: the query failed on .*no_such_table.*; fix the query"):
        fleet_targets.load(source, env={})


def test_the_live_board_counts_every_target_through_the_run(fleet: FleetSetup) -> None:
    from pgshift import api
    from pgshift.settings import load

    boards: list[Any] = []
    config = load(fleet.root, {"migrations_dir": str(fleet.migrations), "backups_dir": str(fleet.root / "backups"),
                               "logs_dir": str(fleet.root / "logs"), "preflight_drift": False},
                  env={"FLEET_PASSWORD": PASSWORD, "DATABASE_URL": "postgresql://fleet/none"})
    os.environ["FLEET_PASSWORD"] = PASSWORD
    try:
        report = api.fleet_deploy(config, fleet=fleet.file, parallel=3, board=boards.append)
    finally:
        del os.environ["FLEET_PASSWORD"]
    assert report.outcome == "succeeded"
    assert all(b.total == 12 and b.done + b.failed + len(b.running) + b.waiting == 12 for b in boards)
    assert all(b.waiting >= 0 and len(b.running) <= 3 for b in boards)
    assert max(len(b.running) for b in boards) > 1  # the waves ran in parallel
    last = boards[-1]
    assert (last.done, last.failed, last.running, last.waiting) == (12, 0, (), 0) and last.slowest is not None
    assert "12 done, 0 running, 0 failed, 0 waiting of 12" in last.line()
