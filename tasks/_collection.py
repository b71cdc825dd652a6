"""The task collection: the root tasks, one namespace per team script group, and the config defaults."""

from invoke.collection import Collection

from tasks import _parser, deploy, dev, fleet, prod, rollback, root, test
from tasks._cli import CONFIG_DEFAULTS

_parser.install()

ns = Collection(root.status, root.backup)
for module in (dev, prod, test, rollback, deploy, fleet):
    ns.add_collection(Collection.from_module(module))
ns.configure(CONFIG_DEFAULTS)
