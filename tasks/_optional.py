"""Optional positional arguments, which Invoke lacks: ``inv dev.migrate`` and ``inv dev.migrate NAME``.

Invoke's parser takes the next token as a positional argument while the task still "misses" one,
and fails when the task's arguments are completed if one is still missing; both times it asks
whether the argument's value is None. An optional positional answers "missing" while tokens are
read, and "given" (its default) when the parser completes the task, so leaving it out just keeps
the default. Use ``@task(klass=OptionalPositionals, positional=[...], optional_positional=[...])``.
"""

from __future__ import annotations

import sys
from typing import Any

from invoke import Task
from invoke.parser import Argument


def _completing() -> bool:
    frame = sys._getframe(2)
    for _ in range(6):
        if frame is None:
            return False
        if frame.f_code.co_name == "complete_context":
            return True
        frame = frame.f_back
    return False


class _OptionalPositional(Argument):
    @property
    def value(self) -> Any:
        if self._value is None and _completing():
            return "" if self.default is None else self.default
        return super().value

    @value.setter
    def value(self, arg: str) -> None:
        self.set_value(arg, cast=True)


class OptionalPositionals(Task[Any]):
    def __init__(self, *args: Any, optional_positional: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.optional_positional = frozenset(optional_positional)

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        args = super().get_arguments(ignore_unknown_help=ignore_unknown_help)
        for arg in args:
            if arg.name in self.optional_positional:
                arg.__class__ = _OptionalPositional
        return args
