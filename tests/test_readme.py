"""README's promises: the quick start names exactly the two commands, and its Python examples run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str, text: str | None = None) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text() if text is None else text, flags=re.DOTALL)


def _section(heading: str) -> str:
    """The text of README's ``## heading`` section (up to the next ``## ``); fails if there is none."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", README.read_text(), flags=re.DOTALL | re.M)
    assert match is not None, f"README has no section '## {heading}'"
    return match.group(1)


def _run(example: str) -> dict:
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)  # the assertions live in the example
    return namespace


def test_quick_start_is_exactly_make_run_and_make_test():
    quick_start = _blocks("bash")[0]
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]


def test_readme_python_example_runs():
    (example,) = _blocks("python", _section("Use it"))
    assert _run(example)["parts"]["lambda_halt"] == 0.01


@pytest.mark.parametrize("heading", ["What halting saves"])
def test_section_examples_run(heading: str) -> None:
    examples = _blocks("python", _section(heading))
    assert examples, f"README's '{heading}' section has no Python example"
    for example in examples:
        _run(example)
