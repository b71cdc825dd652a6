"""Fleet deploys: the single-database deploy run across many targets, in waves, with a journal.

``targets`` reads ``fleet.toml``; ``waves`` orders the targets and splits them by shard; ``journal``
records each target's state under ``logs/``; ``runner`` deploys them (canaries first, a failure
threshold, a Slack digest per wave); ``survey`` reads every target's status and plan.
"""
