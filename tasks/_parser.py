"""Optional positional arguments, which Invoke's parser lacks: ``inv dev.migrate`` and ``inv dev.migrate NAME``.

A task lists an argument in both ``positional`` and ``optional`` (``@task(positional=["name"],
optional=["name"])``), with ``None`` as its default. Invoke's parser fills a positional argument
from the next token that is not a flag, and fails when a task's arguments end with one still
unfilled. The machine below adds one rule to Invoke's own: an optional positional is given only by
the token right after the task name, when that token is neither a flag (so ``--help`` and an unknown
``--frobnicate`` get Invoke's usual handling) nor the name of another task; otherwise it is left out,
and the task receives ``""``. A required positional never takes a flag as its value either, so
``inv rollback.restore --help`` shows the help. A command line that does not parse exits 2 (a usage error) instead of 1.

Invoke builds its parse machine from the class ``invoke.parser.parser.ParseMachine`` each time it
parses; ``install`` puts this subclass there (Invoke itself has no other hook for it).
"""

from __future__ import annotations

from invoke.exceptions import Exit
from invoke.parser import parser
from invoke.parser.argument import Argument


class OptionalPositionalMachine(parser.ParseMachine):
    def handle(self, token: str) -> None:
        if token.startswith("-") or token in self.contexts:
            self._leave_out_optional()
        if token.startswith("-") and self._flag_for_a_positional(token):
            # Invoke would take it as the value of a positional still missing: ``--help`` and typos are
            # flags, the one Invoke knows is handled as it is everywhere else, any other is unknown.
            core = self.initial.flags[token] if self.initial and token in self.initial.flags else None
            if core is None:
                self.error(f"No idea what {token!r} is!")
            elif core.name == "help":
                core.value = self.context.name if self.context else None
            else:
                self.switch_to_flag(token)
            return
        super().handle(token)

    def _flag_for_a_positional(self, token: str) -> bool:
        context = self.context
        return (context is not None and bool(context.missing_positional_args) and not self.waiting_for_flag_value
                and token not in context.flags and token not in context.inverse_flags)

    def complete_context(self) -> None:
        self._leave_out_optional()
        asked = self.initial.args.get("help") if self.initial else None
        if asked is not None and asked.value and self.context is not None:  # only the help is wanted
            for arg in self.context.missing_positional_args:
                _leave_out(arg)
        super().complete_context()

    def error(self, msg: str) -> None:
        """A command line that does not parse is a usage error: exit 2, as documented (Invoke says 1)."""
        raise Exit(msg, code=2)

    def _leave_out_optional(self) -> None:
        if self.context is None:
            return
        for arg in self.context.positional_args:
            if arg.optional and arg.value is None:
                _leave_out(arg)


# Invoke's state machine library gives each class its own (empty) state table: share the parent's.
OptionalPositionalMachine._class_states = parser.ParseMachine._class_states
OptionalPositionalMachine._class_transitions = parser.ParseMachine._class_transitions


def _leave_out(arg: Argument) -> None:
    arg.set_value("", cast=False)


def install() -> None:
    parser.ParseMachine = OptionalPositionalMachine  # type: ignore[misc]
