"""The Invoke layer: thin tasks over ``pgshift.api``. ``tasks.py`` beside this folder is what Invoke loads."""

from tasks._collection import ns

__all__ = ["ns"]
