"""Questions the engine asks before it does something that cannot be undone.

The engine never prompts: a workflow that needs a yes takes a ``Confirm`` callback and hands it a
``Question``. The caller decides how to answer (a terminal prompt, ``--yes``, a script's own policy);
no callback means "nobody can be asked", which each workflow turns into a refusal where it matters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Question(Generic[T]):
    text: str                    # one line, ending with "?" (or saying what to type)
    expected: str | None = None  # the answer to type (a database name) instead of a yes
    about: T | None = None       # the value the question is about (a deploy or restore plan), to show first


Confirm = Callable[[Question[Any]], bool]
