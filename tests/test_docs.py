"""The documents cannot drift from the tool: every ``inv`` command they show resolves to a real task
and real flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.invocations import commands, problems

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("document", DOCUMENTS, ids=[d.name for d in DOCUMENTS])
def test_every_command_in_the_document_exists(document: Path) -> None:
    shown = commands(document.read_text())
    assert shown, f"{document.name} shows no inv command"
    assert [p for command in shown for p in problems(command)] == []


def test_the_readme_quick_start_has_exactly_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh", 1)[1].split("```", 1)[0]
    lines = [line for line in block.strip().splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].endswith("inv dev.migrate") and lines[1].endswith("pytest")


def test_the_ci_script_runs_the_readme_test_command() -> None:
    text = (ROOT / "README.md").read_text()
    test_command = text.split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0].strip().splitlines()[1]
    assert test_command.strip() in (ROOT / ".ci" / "run").read_text()
