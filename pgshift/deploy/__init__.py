"""Deploying migrations to a shared database (staging, production).

``plan`` builds, without writing anything, the value ``--dry-run`` prints and a real run executes;
``workflow`` runs it (preflight, backup, maintenance on, apply, verify, maintenance off, notify,
log); ``rehearsal`` first runs the pending migrations on a scratch clone of the target;
``maintenance`` is the flag the application reads; ``history`` keeps every deploy in the target;
``runlog`` writes the log a person reads afterwards.
"""
