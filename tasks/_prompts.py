"""Prompts as a policy: the one module that imports questionary.

Three questions, one set of rules:

- ``yes=True`` (a task's ``--yes``) answers every question with yes, or with the default choice;
- without a terminal (stdin or stdout not a TTY) and without ``--yes`` we never prompt: the call
  raises ``Refused`` with a message naming ``--yes``, so CI fails fast instead of hanging;
- answering no returns False (``select``: None), which the caller turns into ``Aborted`` (exit 2);
- Ctrl-C at a prompt raises ``KeyboardInterrupt`` (questionary's ``unsafe_ask``: its ``ask`` would print
  a message of its own and return None), which the exit boundary ends with one line and exit 130.

    ask(Question(...), yes=yes)                          -> bool (a pgshift.questions.Question)
    confirm("restore over app_dev?", yes=yes)            -> bool
    confirm_typed("app", "type the database name", yes=yes) -> bool (True only if 'app' was typed)
    select("backup", [("title", value), ...], default=value, yes=yes, header=None) -> value | None

questionary is imported inside each function: ``inv --list`` must not pay for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from pgshift.errors import Refused
from pgshift.questions import Question
from tasks._cli import tty

T = TypeVar("T")


def _require_terminal(question: str, yes: bool) -> bool:
    """True when the answer is given by ``--yes``; raises Refused when we may not ask."""
    if yes:
        return True
    if not tty():
        raise Refused(f"{question}: no terminal to ask at; pass --yes to go ahead without asking")
    return False


def ask(question: Question[Any], *, yes: bool = False) -> bool:
    """The engine's question: typed (``question.expected``) or yes/no."""
    if question.expected is not None:
        return confirm_typed(question.expected, question.text, yes=yes)
    return confirm(question.text, yes=yes)


def confirm(question: str, *, yes: bool = False) -> bool:
    """A yes/no question (default no)."""
    if _require_terminal(question, yes):
        return True
    import questionary

    return bool(questionary.confirm(question, default=False).unsafe_ask())


def confirm_typed(expected: str, question: str | None = None, *, yes: bool = False) -> bool:
    """Ask the user to type ``expected`` (a database name) to go ahead; anything else is a no."""
    prompt = question or f"type the database name ({expected}) to go ahead"
    if _require_terminal(prompt, yes):
        return True
    import questionary

    answer: Any = questionary.text(prompt).unsafe_ask()
    return isinstance(answer, str) and answer.strip() == expected


def select(question: str, choices: Sequence[tuple[str, T]], default: T | None = None, *,
           yes: bool = False, header: str | None = None) -> T | None:
    """Pick one of ``choices`` (title, value); ``yes`` picks ``default``. None on Ctrl-C.

    ``header`` is shown above the choices, unselectable (column names for titles laid out as a table)."""
    if not choices:
        return None
    if _require_terminal(question, yes):
        return default
    import questionary

    options = [questionary.Choice(title, value=index) for index, (title, _) in enumerate(choices)]
    start = next((options[i] for i, (_, value) in enumerate(choices) if value == default), None)
    shown: list[Any] = [questionary.Separator(header), *options] if header else list(options)
    picked: Any = questionary.select(question, choices=shown, default=start).unsafe_ask()
    return None if picked is None else choices[picked][1]
