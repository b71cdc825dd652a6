"""Invoke entry point: composes the task namespaces and nothing else.

Invoke imports this file as the module ``tasks``, which hides the ``tasks/`` folder beside it. Giving
the module a ``__path__`` is what makes any Python module a package (the import system looks for
submodules in ``__path__``), so ``tasks.dev`` and friends load from ``tasks/`` both under Invoke and
under a plain ``import tasks``, with no sys.path edits and no second name for the folder.
"""

from pathlib import Path

__path__ = [str(Path(__file__).resolve().with_name("tasks"))]

from invoke import Collection

from tasks import deploy, dev, prod, rollback, root, test
from tasks._cli import CONFIG_DEFAULTS

ns = Collection(root.status, root.backup)
ns.add_collection(Collection.from_module(dev))
ns.add_collection(Collection.from_module(prod))
ns.add_collection(Collection.from_module(test))
ns.add_collection(Collection.from_module(rollback))
ns.add_collection(Collection.from_module(deploy))
ns.configure(CONFIG_DEFAULTS)
