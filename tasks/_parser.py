"""Optional positional arguments, which Invoke's parser lacks: ``inv dev.migrate`` and ``inv dev.migrate NAME``.

A task lists an argument in both ``positional`` and ``optional`` (``@task(positional=["name"],
optional=["name"])``), with ``None`` as its default. Invoke's parser fills a positional argument
from the next token that is not a flag, and fails when a task's arguments end with one still
unfilled. The machine below adds one rule to Invoke's own: an optional positional is given only by
the token right after the task name, when that token is neither a flag (so ``--help`` and an unknown
``--frobnicate`` get Invoke's usual handling) nor the name of another task; otherwise it is left out,
and the task receives ``""``. A required positional never takes a flag as its value either, so
``inv rollback.restore --help`` shows the help. A command line that does not parse exits 2 (a usage error) instead of 1,
with the way to a right one (the task's usage, or where its options are listed).

Config files that do not parse are usage errors as well: ``install`` also puts a YAML loader on Invoke's
``Config`` that names the file, line and column in one line (Invoke shows the parser's traceback), and
hands ``INVOKE_PGSHIFT_*`` strings to the config untouched, for ``pgshift.settings`` to check.

Invoke builds its parse machine from the class ``invoke.parser.parser.ParseMachine`` each time it
parses; ``install`` puts this subclass there (Invoke itself has no other hook for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any

from invoke.config import Config
from invoke.env import Environment
from invoke.exceptions import Exit
from invoke.parser import parser
from invoke.parser.argument import Argument
from invoke.parser.context import ParserContext
from invoke.util import yaml  # type: ignore[attr-defined]  # Invoke's own (maybe vendored) PyYAML


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

    def see_value(self, value: Any) -> None:
        try:
            super().see_value(value)
        except ValueError:  # Invoke casts a typed flag's value with no check (int("abc")): a traceback
            flag = self.flag
            name = _shown(flag.name).lower().replace("_", "-") if flag is not None else "flag"
            kind: type = flag.kind if flag is not None else str
            self.error(f"--{name} {value!r} is not {'a whole number' if kind is int else f'a {kind.__name__}'}")

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
        """A command line that does not parse is a usage error: exit 2, as documented (Invoke says 1), with
        the way to a right one."""
        raise Exit(f"{msg}{_next_step(self.context)}", code=2)

    def _leave_out_optional(self) -> None:
        if self.context is None:
            return
        for arg in self.context.positional_args:
            if arg.optional and arg.value is None:
                _leave_out(arg)


# Invoke's state machine library gives each class its own (empty) state table: share the parent's.
OptionalPositionalMachine._class_states = parser.ParseMachine._class_states
OptionalPositionalMachine._class_transitions = parser.ParseMachine._class_transitions


def _next_step(context: ParserContext | None) -> str:
    if context is None or not context.name:
        return " (inv --list shows the tasks, inv --help the core options)"
    missing = context.missing_positional_args
    if missing:
        names = " ".join(_shown(arg.name) for arg in missing)
        about = "; ".join(f"{_shown(arg.name)} is {arg.help}" for arg in missing if arg.help)
        return f"; usage: inv {context.name} {names}" + (f", where {about}" if about else "")
    return f" (inv --help {context.name} shows its options)"


def _shown(name: str | None) -> str:
    """An argument's name as usage shows it: ``id_`` is ID."""
    return (name or "").rstrip("_").upper()


def _load_yaml(self: Config, path: PathLike[str]) -> Any:
    """Invoke's YAML loader for config files, with a file that does not parse as a usage error naming the
    file, line and column (Invoke shows the YAML parser's traceback)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)  # type: ignore[no-untyped-call]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise Exit(f"error: {path}{where}: not valid YAML ({exc.problem or exc.context}); fix the file",
                   code=2) from None
    except yaml.YAMLError as exc:
        raise Exit(f"error: {path}: not valid YAML ({exc}); fix the file", code=2) from None
    except UnicodeDecodeError as exc:
        raise Exit(f"error: {path}: byte 0x{exc.object[exc.start]:02x} at offset {exc.start} is not UTF-8; "
                   "save the file as UTF-8", code=2) from None
    if data is not None and not isinstance(data, dict):
        raise Exit(f"error: {path} holds a {type(data).__name__}, not a mapping of settings; write it as "
                   "key: value lines (pgshift's under pgshift:)", code=2)
    if isinstance(data, dict) and data.get("pgshift") is not None and not isinstance(data["pgshift"], dict):
        raise Exit(f"error: {path}: pgshift must hold key: value lines (e.g. lock_timeout: 10), "
                   f"not {data['pgshift']!r}", code=2)
    return data


_invoke_path_set = Environment._path_set


def _path_set(self: Environment, key_path: Sequence[str], value: str) -> None:
    """Invoke's setter for a config value from the environment, except that a ``pgshift`` key gets the string
    as it is: Invoke casts it to the type of the value it replaces (one from a config file, say), so "false"
    over a YAML ``true`` stayed true and "abc" over a number was a traceback; pgshift.settings checks it."""
    if not key_path or key_path[0] != "pgshift":
        _invoke_path_set(self, key_path, value)
        return
    data = self.data
    for key in key_path[:-1]:
        data = data.setdefault(key, {})
    data[key_path[-1]] = value


def _leave_out(arg: Argument) -> None:
    arg.set_value("", cast=False)


def install() -> None:
    parser.ParseMachine = OptionalPositionalMachine  # type: ignore[misc]
    Config._load_yaml = _load_yaml  # type: ignore[method-assign]
    Config._load_yml = _load_yaml
    Environment._path_set = _path_set  # type: ignore[method-assign]
