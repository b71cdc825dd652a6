"""Invoke entry point: composes the task namespaces and nothing else.

Invoke imports this file as the module ``tasks``, which hides the ``tasks/`` folder beside it. Giving
the module a ``__path__`` is what makes any Python module a package (the import system looks for
submodules in ``__path__``), so ``tasks.dev`` and friends load from ``tasks/`` both under Invoke and
under a plain ``import tasks``, with no sys.path edits and no second name for the folder.
"""

import sys
from pathlib import Path

# Invoke switches bytecode caching off before it imports this file (unless given --write-pyc), so every
# command would compile tasks/ and pgshift/ from source again: about 25 ms of a 270 ms status. Their
# caches land in git-ignored __pycache__ folders, so caching goes back on, unless Python itself was
# told not to write them (-B or PYTHONDONTWRITEBYTECODE).
sys.dont_write_bytecode = bool(sys.flags.dont_write_bytecode)

__path__ = [str(Path(__file__).resolve().with_name("tasks"))]

from invoke import Collection  # noqa: E402  (after the switch above: these compile the task modules)

from tasks import deploy, dev, prod, rollback, root, test  # noqa: E402
from tasks._cli import CONFIG_DEFAULTS  # noqa: E402

ns = Collection(root.status, root.backup)
ns.add_collection(Collection.from_module(dev))
ns.add_collection(Collection.from_module(prod))
ns.add_collection(Collection.from_module(test))
ns.add_collection(Collection.from_module(rollback))
ns.add_collection(Collection.from_module(deploy))
ns.configure(CONFIG_DEFAULTS)
