"""Checks on a team's migrations, each on scratch databases the checks create and drop themselves.

forward (apply from empty), backward (up, down, up: the schema must round-trip), performance
(apply over generated data: time, locks, rewrites), constraints (schema smells, each with its fix)
and lint (unsafe statements). Each check is a plain function returning a dataclass report with
``ok``, ``summary()`` and ``as_json()``; ``suite`` runs them for the command line.
"""
