"""experiments/tune_joint.py on hand-made grid rows: the chosen config carries the best point's fields (the q_halt
exploration too), the best point's saved TRM is shipped as it was saved, and the table marks the choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_script


def _point(folder: Path, tag: bytes) -> Path:
    folder.mkdir(parents=True)
    for name in ("model.pt", "config.json", "metrics.json"):
        (folder / name).write_bytes(tag + name.encode())
    return folder


@pytest.fixture
def tune(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    module = load_script("tune_joint")
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "sp500.json").write_text(json.dumps({"task": "sp500", "epochs": 30, "seed": 0}))
    monkeypatch.setattr(module, "CONFIG_DIR", configs)
    ship = tmp_path / "ship"
    monkeypatch.setattr(module, "shipped_checkpoint", lambda task, seed, objective: ship / f"{task}-{objective}"
                        / f"seed{seed}")  # fmt: skip
    return module


def _row(halting: str, value: float, folder: Path | None, **fields: float) -> dict:
    row = {"task": "sp500", "halting": halting, **fields, "seed": 0, "epochs": 30, "epochs_run": 12,
           "train_seconds": 10.0, "cpu_seconds": 9.0, "val_mean_return": value, "best_knob": 0.5,
           "val_mean_steps": 2.0, "val_accuracy_at_knob": 0.6}  # fmt: skip
    return row if folder is None else {**row, "model_dir": str(folder)}


def test_choose_writes_the_best_fields_and_ships_the_best_points_model(tune, tmp_path: Path) -> None:
    models = tmp_path / "models"
    low = _point(tune.point_dir(models, "sp500", "q_halt", {"q_weight": 0.5, "exploration": 0.1}, 0), b"low-")
    high = _point(tune.point_dir(models, "sp500", "q_halt", {"q_weight": 0.5, "exploration": 0.6}, 0), b"high-")
    assert high.name == "q_weight=0.5,exploration=0.6-seed0"
    grid = tmp_path / "grid.jsonl"
    rows = [_row("q_halt", -0.5, low, q_weight=0.5, exploration=0.1),
            _row("q_halt", -0.3, high, q_weight=0.5, exploration=0.6),
            _row("ponder", -0.1, None, ponder_lambda_p=0.2, ponder_beta=0.01)]  # better, but another objective
    grid.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tune.choose("sp500", "q_halt", grid, ship=True)
    assert json.loads(path.read_text()) == {"task": "sp500", "epochs": 30, "seed": 0, "halting": "q_halt",
                                            "q_weight": 0.5, "exploration": 0.6}  # fmt: skip
    shipped = tmp_path / "ship" / "sp500-q_halt" / "seed0"
    assert {f.name: f.read_bytes() for f in shipped.iterdir()} == {
        name: b"high-" + name.encode() for name in ("model.pt", "config.json", "metrics.json")}
    with pytest.raises(ValueError, match="exists already"):
        tune.choose("sp500", "q_halt", grid, ship=True)
    with pytest.raises(ValueError, match="has no saved TRM"):
        tune.choose("sp500", "ponder", grid, ship=True)
    with pytest.raises(ValueError, match="holds no grid point of sp500 act"):
        tune.choose("sp500", "act", grid)
    table = tune.markdown(grid).splitlines()
    assert "| sp500 | q_halt | q_weight=0.5, exploration=0.6 | 30 (12) | -0.3000 |" in table[3]
    assert table[3].endswith("| yes |") and table[2].endswith("|  |") and table[4].endswith("| yes |")
