"""Finding ``inv ...`` command lines in text and checking them against the real task collection."""

from __future__ import annotations

import re
import shlex
from functools import cache

from invoke.parser import ParserContext

INV_LINE = re.compile(r"(?:^|[\s`$(;|&])(?:\S*/)?inv\s+([^`\n#|;&>)]*)")


@cache
def contexts() -> dict[str, ParserContext]:
    """Every task's parser context (name and aliases), from the collection tasks.py builds."""
    import tasks

    found: dict[str, ParserContext] = {}
    for context in tasks.ns.to_contexts():
        for name in (context.name, *context.aliases):
            found[name] = context
    return found


def commands(text: str) -> list[str]:
    """The argument part of every ``inv`` command line in ``text``."""
    found = (match.group(1).strip().rstrip("\\").strip() for match in INV_LINE.finditer(text))
    return [command for command in found if command]  # ("\|" in a Markdown table ends a command too)


def problems(command: str) -> list[str]:
    """What is wrong with one ``inv`` command line: unknown tasks or flags. Empty when it resolves."""
    known = contexts()
    try:
        words = shlex.split(command)
    except ValueError:
        return [f"cannot split {command!r}"]
    found: list[str] = []
    current: ParserContext | None = None
    skip = False
    for word in (w.strip("[]") for w in words):  # "[--json]" in a synopsis is the flag --json
        if not word or word == "...":
            continue
        if skip:  # the value of the previous flag
            skip = False
            continue
        if word.startswith("-"):
            flag = word.split("=", 1)[0]
            if flag in ("--help", "-h", "--list", "-l"):
                skip = flag in ("--help", "-h") and current is None  # "inv --help TASK" names a task
                continue
            if current is not None and flag in current.inverse_flags:  # --no-X of a flag on by default
                continue
            if current is None or flag not in current.flags:
                found.append(f"{command!r}: unknown flag {flag} for {current.name if current else 'inv'}")
                continue
            skip = current.flags[flag].takes_value and "=" not in word
        elif word in known or word == "TASK":
            current = known.get(word)
        elif current is None or not current.positional_args:
            found.append(f"{command!r}: unknown task {word!r}")
    return found
