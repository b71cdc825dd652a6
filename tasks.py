"""Invoke entry point: the collection is composed in ``tasks/_collection.py``; this file only hands it over.

Invoke loads this file by path as the module ``tasks``, which hides the ``tasks/`` package beside it.
Giving the module a ``__path__`` makes it that package to the import system, so ``tasks.dev`` and
friends load from ``tasks/`` under Invoke too (a plain ``import tasks`` finds the package itself).
"""

import sys
from pathlib import Path

# Invoke switches bytecode caching off before it imports this file (unless given --write-pyc), so every
# command would compile tasks/ and pgshift/ from source again: about 25 ms of a 270 ms status. Their
# caches land in git-ignored __pycache__ folders, so caching goes back on, unless Python itself was
# told not to write them (-B or PYTHONDONTWRITEBYTECODE).
sys.dont_write_bytecode = bool(sys.flags.dont_write_bytecode)

__path__ = [str(Path(__file__).resolve().with_name("tasks"))]

from tasks._collection import ns  # noqa: E402  (after the switch above: this compiles the task modules)

__all__ = ["ns"]
