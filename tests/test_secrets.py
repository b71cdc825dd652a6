"""No password anywhere: every task runs with one in DATABASE_URL (valid, and malformed in the ways a
person mistypes it) over migrations that set passwords in SQL, and the output, the logs, the plans,
the manifests, the JSON and the Slack payloads are searched for them."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from pgshift.dburl import DatabaseUrl, mask_sql_passwords, redact, redact_url
from tests.commands import cli_env, full_url, inv_here
from tests.conftest import write_migration
from tests.slack import SlackStub

URL_PASSWORD = "Url-Secret-8842"
ROLE_PASSWORD = "R0le-Secret-5531"
MAPPING_PASSWORD = "Fdw-Secret-7719"
SECRETS = (URL_PASSWORD, ROLE_PASSWORD, MAPPING_PASSWORD)

FIRST = "20250101000000_items"
ROLE = "20250102000000_role_password"
MAPPING = "20250103000000_user_mapping"
AGAIN = "20250104000000_role_again"
FAILING = "20250105000000_role_missing"
NO_ROLE = "no_such_role_5531"


def write_set(folder: Path) -> None:
    write_migration(folder, FIRST, "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);\n",
                    "DROP TABLE items;\n")
    # Only the session's role, on the tests' own cluster, which trusts every connection: the password
    # changes nothing, and a role made per run would outlive the scratch databases the checks drop.
    write_migration(folder, ROLE, f"ALTER ROLE CURRENT_USER WITH PASSWORD '{ROLE_PASSWORD}';\n",
                    "ALTER ROLE CURRENT_USER WITH PASSWORD NULL;\n")
    write_migration(folder, MAPPING,
                    "CREATE FOREIGN DATA WRAPPER secrets_fdw;\n"
                    "CREATE SERVER secrets_server FOREIGN DATA WRAPPER secrets_fdw;\n"
                    "CREATE USER MAPPING FOR CURRENT_USER SERVER secrets_server\n"
                    f"    OPTIONS (user 'app', password '{MAPPING_PASSWORD}');\n",
                    "DROP SERVER secrets_server CASCADE;\nDROP FOREIGN DATA WRAPPER secrets_fdw;\n")


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def files_text(folder: Path) -> str:
    """Everything written under ``folder`` (logs, manifests, models, plans) but the migrations and the
    backups themselves: a dump holds the user mapping as it is, or its restore would lose it."""
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "migrations" not in p.parts
                       and p.suffix not in (".dump", ".sql")):
        data = path.read_bytes()
        found.append(f"--- {path}\n" + data.decode("utf-8", "replace"))
    return "\n".join(found)


@pytest.fixture
def world(tmp_path: Path, task_db_url: DatabaseUrl, stub: SlackStub) -> dict[str, str]:
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    write_set(migrations)
    return cli_env(replace(task_db_url, password=URL_PASSWORD), SLACK_WEBHOOK_URL=stub.url,
                   INVOKE_PGSHIFT_MIGRATIONS_DIR=str(migrations),
                   INVOKE_PGSHIFT_BACKUPS_DIR=str(tmp_path / "backups"),
                   INVOKE_PGSHIFT_LOGS_DIR=str(tmp_path / "logs"), INVOKE_PGSHIFT_LOCK_WAIT="1",
                   INVOKE_PGSHIFT_PREFLIGHT_DRIFT="no", INVOKE_PGSHIFT_QUICK_ROWS="50")


DEVELOPMENT = [
    ("dev.status",), ("dev.status", "--json"), ("status",), ("test.lint",), ("deploy", "--dry-run"),
    ("deploy", "--dry-run", "--json"), ("test.forward",), ("test.backward",), ("test.constraints",),
    ("test.performance", "--rows", "50", "--json"), ("test",), ("dev.migrate",), ("dev.status", "--json"),
    ("dev.backup",), ("backup",), ("rollback.list",), ("dev.generate", "--output", "{tmp}/models.py"),
    ("deploy.status",), ("dev.reset", "--yes"),
]
PRODUCTION = [
    ("prod.status", "--json"), ("prod.backup",), ("prod.cleanup", "--dry-run", "--json"), ("prod.cleanup",),
    ("prod.maintenance",), ("prod.maintenance", "--action", "on", "--yes", "--reason", "secrets test"),
    ("prod.maintenance", "--action", "off", "--yes"), ("deploy.status", "--json"), ("rollback.list",),
]


@pytest.mark.slow  # a second or more: left out of the fast tier
def test_no_task_shows_writes_or_posts_a_password(world: dict[str, str], tmp_path: Path,
                                                   stub: SlackStub) -> None:
    said: list[str] = []

    def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        done = inv_here(*(a.replace("{tmp}", str(tmp_path)) for a in args), env=env)
        said.append(f"$ inv {' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}")
        return done

    for args in DEVELOPMENT:
        run(world, *args)
    assert "ALTER ROLE CURRENT_USER WITH PASSWORD '***'" in "".join(said)  # the dry run shows the SQL, masked
    production = {**world, "ENVIRONMENT": "production"}
    run(world, "dev.reset", "--yes")
    # Pending for the deploys, so Slack hears of them: one that sets a password, one that fails on it.
    migrations = Path(world["INVOKE_PGSHIFT_MIGRATIONS_DIR"])
    write_migration(migrations, AGAIN, f"ALTER ROLE CURRENT_USER WITH PASSWORD '{ROLE_PASSWORD}';\n",
                    "ALTER ROLE CURRENT_USER WITH PASSWORD NULL;\n")
    first = run(production, "prod.deploy", "--dry-run")
    assert first.returncode == 0, first.stdout + first.stderr
    deployed = run(production, "prod.deploy", "--yes")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    for args in PRODUCTION:
        run(production, *args)
    write_migration(migrations, FAILING, f"ALTER ROLE {NO_ROLE} WITH PASSWORD '{ROLE_PASSWORD}';\n",
                    "SELECT 1;\n")
    failed = run(production, "prod.deploy", "--yes")
    assert failed.returncode == 1 and NO_ROLE in failed.stderr, failed.stdout + failed.stderr
    (migrations / f"{FAILING}.sql").unlink()
    posted = "\n".join(stub.raw)
    assert AGAIN in posted and NO_ROLE in posted, posted  # the payloads searched below say what happened
    assert f"ALTER ROLE {NO_ROLE} WITH PASSWORD '***'" in posted  # the failed statement is quoted, masked
    newest = sorted((tmp_path / "backups").rglob("*.dump"))[-1]
    run(production, "rollback.restore", str(newest), "--yes")
    logs = list((tmp_path / "logs").glob("migration_*.log"))
    assert logs, "the deploy wrote a log"
    everything = "\n".join(said) + files_text(tmp_path) + "\n".join(stub.raw)
    assert leaks(everything) == [], [chunk for chunk in said if leaks(chunk)][:2]


MALFORMED = [
    f"postgress://app:{URL_PASSWORD}@127.0.0.1/app",              # scheme typo
    f"postgresql://app:{URL_PASSWORD}/x@127.0.0.1/app",           # an unencoded "/"
    f"postgresql://app:{URL_PASSWORD}?x@127.0.0.1/app",           # an unencoded "?"
    f"postgresql://app:{URL_PASSWORD}#x@127.0.0.1/app",           # an unencoded "#"
    f"postgresql://app:{URL_PASSWORD}@127.0.0.1:54x32/app",       # a bad port
    f"postgresql://app:{URL_PASSWORD}@",                          # no host, no database
    f"mysql://app:{URL_PASSWORD}@127.0.0.1/app",
    f"host=127.0.0.1 password={URL_PASSWORD} dbname=app",         # a conninfo string, not a URL
]
EVERY_TASK = [("status",), ("dev.status", "--json"), ("dev.migrate",), ("deploy", "--dry-run"), ("backup",),
              ("test.lint",), ("rollback.list",), ("deploy.status",), ("dev.generate",), ("test",)]


@pytest.mark.parametrize("url", MALFORMED)
def test_a_malformed_url_is_refused_without_showing_its_password(url: str) -> None:
    for args in EVERY_TASK:
        done = inv_here(*args, env=cli_env(DATABASE_URL=url))
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert done.stderr.startswith("error: DATABASE_URL") and done.stderr.count("\n") == 1, done.stderr
        assert URL_PASSWORD not in done.stdout + done.stderr
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize("url", MALFORMED[1:4])
def test_a_password_with_a_reserved_character_is_told_to_be_percent_encoded(url: str) -> None:
    done = inv_here("status", env=cli_env(DATABASE_URL=url))
    assert "percent-encode" in done.stderr and "%2F" in done.stderr, done.stderr


def test_the_percent_encoded_password_is_the_fix(task_db_url: DatabaseUrl) -> None:
    encoded = full_url(replace(task_db_url, password="PW")).replace(":PW@", f":{URL_PASSWORD}%2Fx%3Fy%23z@")
    parsed = DatabaseUrl.parse(encoded)
    assert parsed.password == f"{URL_PASSWORD}/x?y#z" and URL_PASSWORD not in str(parsed)
    done = inv_here("status", env=cli_env(DATABASE_URL=encoded))
    assert done.returncode in (0, 3), done.stderr


@pytest.mark.parametrize(("text", "shown"), [
    ("postgress://u:pw@h/db", "postgress://u:***@h/db"),
    ("see postgresql://u:a/b?c#d@e@h:5432/db now", "see postgresql://u:***@h:5432/db now"),
    ("postgresql://u/x@h/db", "postgresql://***@h/db"),
    ("postgresql://bob@h/db", "postgresql://bob@h/db"),
    ("postgresql:///db?host=/tmp&password=pw", "postgresql:///db?host=/tmp&password=***"),
    ("host=h password=pw dbname=x", "host=h password=*** dbname=x"),
])
def test_redaction_masks_urls_that_do_not_parse(text: str, shown: str) -> None:
    assert redact(text) == shown
    assert redact_url(text) == shown


@pytest.mark.parametrize("sql", [
    "CREATE ROLE app LOGIN PASSWORD 'se''cret-1'",
    "create user app with encrypted password 'se''cret-1' valid until 'infinity'",
    "ALTER ROLE app PASSWORD E'se\\'cret-1'",
    "ALTER USER app WITH PASSWORD $pw$se'cret-1$pw$",
    "CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'app', password 'se''cret-1')",
    "ALTER USER MAPPING FOR app SERVER s OPTIONS (SET password 'se''cret-1')",
])
def test_sql_password_literals_are_masked(sql: str) -> None:
    masked = mask_sql_passwords(sql)
    assert "cret-1" not in masked and "'***'" in masked, masked
    assert "valid until 'infinity'" in mask_sql_passwords(sql) or "infinity" not in sql
