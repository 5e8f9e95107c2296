"""README's promises: the quick start names exactly the two commands, and its Python example runs."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_quick_start_is_exactly_make_run_and_make_test():
    quick_start = _blocks("bash")[0]
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines() if line.strip()]
    assert commands == ["make run", "make test"]


def test_readme_python_example_runs():
    (example,) = _blocks("python")
    namespace: dict = {}
    exec(compile(example, str(README), "exec"), namespace)  # the assertions live in the example
    assert namespace["parts"]["lambda_halt"] == 0.01
