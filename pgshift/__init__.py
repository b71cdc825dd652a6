"""pgshift: PostgreSQL migrations, crash-safe, tested, backed up and deployed.

The commands are functions of ``pgshift.api``, re-exported here (docs/api.md shows a script)::

    import pgshift
    from pgshift.settings import load

    settings = load(Path("."))
    print(pgshift.migrate(settings).result.applied)

Plain Python: it knows nothing of Invoke or questionary, raises ``pgshift.errors`` exceptions and
returns data. Importing it is cheap; heavy libraries are imported when a command first needs them.
"""

from pgshift.api import (
    MigrateResult,
    Progress,
    Report,
    backup,
    backups,
    backward,
    baseline,
    checks,
    cleanup,
    constraints,
    deploy,
    deploy_status,
    forward,
    generate_models,
    import_migrations,
    lint,
    maintenance,
    mark,
    migrate,
    order,
    performance,
    plan,
    rebase,
    repair,
    reset,
    reset_allowed,
    restore,
    rollback_to,
    status,
    stop_server,
    switch_maintenance,
)

__version__ = "0.1.0"  # the same as pyproject.toml's (a test keeps them equal)

__all__ = [
    "MigrateResult",
    "Progress",
    "Report",
    "__version__",
    "backup",
    "backups",
    "backward",
    "baseline",
    "checks",
    "cleanup",
    "constraints",
    "deploy",
    "deploy_status",
    "forward",
    "generate_models",
    "import_migrations",
    "lint",
    "maintenance",
    "mark",
    "migrate",
    "order",
    "performance",
    "plan",
    "rebase",
    "repair",
    "reset",
    "reset_allowed",
    "restore",
    "rollback_to",
    "status",
    "stop_server",
    "switch_maintenance",
]
