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


@pytest.mark.parametrize("heading", ["What halting saves", "Exits with a guarantee"])
def test_section_examples_run(heading: str) -> None:
    examples = _blocks("python", _section(heading))
    assert examples, f"README's '{heading}' section has no Python example"
    for example in examples:
        _run(example)


def test_bring_your_own_model_section_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both paths of the section: an .npz of per-step logits through ``Rollouts.from_arrays``, and a stepper live."""
    (example,) = _blocks("python", _section("Bring your own model"))
    code = [line for line in example.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) <= 10, f"the section promises at most ten lines of Python, it has {len(code)}"
    monkeypatch.chdir(tmp_path)  # the example writes its .npz to the working directory
    namespace = _run(example)
    assert (tmp_path / "exits.npz").is_file() and "np.load(" in example and ".npz" in example
    table, frame = namespace["table"], namespace["frame"]
    assert type(table).__name__ == "Rollouts" and table.max_steps >= 2
    assert "checkpoint=" in example and frame["halt_step"].between(1, table.max_steps).all()
    assert frame.attrs["compute"]["sample_steps"] == frame["halt_step"].sum()
