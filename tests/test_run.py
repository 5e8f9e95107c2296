"""The main job ``experiments/run.py`` end to end on a tiny config: artifacts, resume, --force, bad input,
failed stages, and the notebook executed against the tiny run."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
import torch

from agents.curves import CURVE_COLUMNS
from agents.evaluation import EPISODE_COLUMNS
from agents.rl import RLHaltingPolicy
from trm_env.model import TinyRecursiveModel

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
NOTEBOOK = EXPERIMENTS / "halting_curves.ipynb"
TASK = "regime-chain"
TINY = {"tasks": [TASK], "step_costs": [0.01], "seeds": [0], "total_timesteps": 1024, "n_envs": 8}
PLOTS = ("accuracy", "mean_pnl", "profit_weighted_ce", "halting_steps", "difficulty")
FAMILIES = {"halt_head", "rl_ppo", "fixed_depth", "confidence", "oracle", "random"}


def _load_run_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("experiments_run", EXPERIMENTS / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run_module() -> ModuleType:
    return _load_run_module()


def _config(folder: Path, **overrides: object) -> Path:
    path = folder / "tiny.json"
    path.write_text(json.dumps({**TINY, **overrides}))
    return path


def _rl_zip(out: Path) -> Path:
    (path,) = sorted((out / "rl" / TASK).glob("*.zip"))
    return path


@pytest.fixture(scope="module")
def tiny_run(run_module: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny run shared by the tests below (which must not change it; they copy it when they would)."""
    folder = tmp_path_factory.mktemp("tiny")
    out = folder / "run"
    assert run_module.main(["--config", str(_config(folder)), "--out", str(out)]) == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def test_tiny_run_writes_every_artifact(tiny_run: Path) -> None:
    expected = ["config.json", "curves.csv", "episodes.csv", "summary.csv", "report.md",
                f"episodes/{TASK}.csv", *[f"{TASK}_{plot}.png" for plot in PLOTS]]  # fmt: skip
    for name in expected:
        path = tiny_run / name
        assert path.is_file() and path.stat().st_size > 0, name
    for name in PLOTS:
        assert (tiny_run / f"{TASK}_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    agent = _rl_zip(tiny_run)
    assert agent.with_suffix(".json").is_file()
    assert RLHaltingPolicy.load(agent).name == "rl_ppo"
    assert not list(tiny_run.rglob(".*.tmp*")), "atomic writes left temp files behind"
    config = json.loads((tiny_run / "config.json").read_text())
    assert {key: config[key] for key in TINY} == TINY
    report = (tiny_run / "report.md").read_text()
    for name in PLOTS:
        assert f"({TASK}_{name}.png)" in report


def test_tiny_run_tables(tiny_run: Path) -> None:
    curves = pd.read_csv(tiny_run / "curves.csv")
    assert list(curves.columns) == list(CURVE_COLUMNS)
    assert set(curves["policy"]) == FAMILIES and set(curves["task"]) == {TASK}
    assert (curves["accuracy_lo"] <= curves["accuracy"] + 1e-12).all()
    assert (curves["accuracy"] <= curves["accuracy_hi"] + 1e-12).all()
    oracle = curves.loc[curves["policy"] == "oracle", "mean_return"].max()
    assert (curves["mean_return"] <= oracle + 1e-12).all()
    episodes = pd.read_csv(tiny_run / "episodes.csv")
    assert list(episodes.columns) == ["task", "policy", "param", "seed", *EPISODE_COLUMNS, "difficulty"]
    assert set(episodes["policy"]) == FAMILIES
    per_point = episodes.groupby(["policy", "param", "seed"], dropna=False)["index"]
    assert per_point.nunique().eq(per_point.size()).all()  # every sample once per policy point
    assert per_point.size().nunique() == 1
    pd.testing.assert_frame_equal(pd.read_csv(tiny_run / "episodes" / f"{TASK}.csv"), episodes)
    summary = pd.read_csv(tiny_run / "summary.csv").set_index("policy")
    assert set(summary.index) == FAMILIES
    assert summary.loc["oracle", "oracle_gain_share"] == pytest.approx(1.0)


def test_resume_skips_finished_stages(tiny_run: Path, run_module: ModuleType,
                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    agent, stage = _rl_zip(tiny_run), tiny_run / "episodes" / f"{TASK}.csv"
    before = {path: path.stat().st_mtime_ns for path in (agent, agent.with_suffix(".json"), stage)}
    capsys.readouterr()
    assert run_module.main(["--config", str(_config(tiny_run.parent)), "--out", str(tiny_run)]) == 0
    assert "stages run now: 0" in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in before} == before


def test_force_redoes_stages(tiny_run: Path, run_module: ModuleType, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = _copy(tiny_run, tmp_path)
    agent, stage = _rl_zip(out), out / "episodes" / f"{TASK}.csv"
    for path in (agent, stage):
        os.utime(path, ns=(10**9, 10**9))  # 1970: any rewrite shows
    capsys.readouterr()
    assert run_module.main(["--config", str(_config(tmp_path)), "--out", str(out), "--force"]) == 0
    assert "stages run now: 2" in capsys.readouterr().out
    assert agent.stat().st_mtime_ns != 10**9 and stage.stat().st_mtime_ns != 10**9
    assert RLHaltingPolicy.load(agent).name == "rl_ppo"


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("training failed")


def test_failed_stage_keeps_finished_artifacts(tiny_run: Path, run_module: ModuleType, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    out = _copy(tiny_run, tmp_path)
    agent = _rl_zip(out)
    saved = {path: path.read_bytes() for path in (agent, agent.with_suffix(".json"), out / "episodes.csv")}
    monkeypatch.setattr(run_module, "train_rl_policy", _boom)
    with pytest.raises(RuntimeError, match="training failed"):
        run_module.main(["--config", str(_config(tmp_path)), "--out", str(out), "--force"])
    assert {path: path.read_bytes() for path in saved} == saved
    assert RLHaltingPolicy.load(agent).name == "rl_ppo"
    assert not list(out.rglob(".*.tmp*"))


def test_changed_config_refused_unless_force(tiny_run: Path, run_module: ModuleType, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    out = _copy(tiny_run, tmp_path)
    recorded = (out / "config.json").read_bytes()
    changed = ["--config", str(_config(tmp_path, step_costs=[0.03])), "--out", str(out)]
    with pytest.raises(ValueError, match="different config"):
        run_module.main(changed)
    assert (out / "config.json").read_bytes() == recorded
    monkeypatch.setattr(run_module, "train_rl_policy", _boom)  # --force gets past the check, to the RL stage
    with pytest.raises(RuntimeError, match="training failed"):
        run_module.main([*changed, "--force"])
    assert (out / "config.json").read_bytes() == recorded  # written last: the forced run never finished


def test_interrupted_forced_run_leaves_no_stale_stage(tiny_run: Path, run_module: ModuleType, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Defect 2: a forced run with a new config dies midway. config.json still holds the old config, so a plain
    rerun with the new one is refused, and a plain rerun with the old one redoes the stage the dead run replaced
    instead of reporting "stages run now: 0" over an agent trained under the other config."""
    out = _copy(tiny_run, tmp_path)
    changed = ["--config", str(_config(tmp_path, total_timesteps=512)), "--out", str(out)]
    monkeypatch.setattr(run_module, "evaluate_policies", _boom)  # dies after the RL stage, before episodes
    with pytest.raises(RuntimeError, match="training failed"):
        run_module.main([*changed, "--force"])
    monkeypatch.undo()
    agent = _rl_zip(out)
    assert json.loads(agent.with_name(f"{agent.name}.key.json").read_text())["total_timesteps"] == 512
    with pytest.raises(ValueError, match="different config"):
        run_module.main(changed)
    (tmp_path / "old").mkdir()
    capsys.readouterr()
    assert run_module.main(["--config", str(_config(tmp_path / "old")), "--out", str(out)]) == 0
    assert "stages run now: 2" in capsys.readouterr().out  # the RL agent and, since it changed, the episodes
    assert json.loads(agent.with_name(f"{agent.name}.key.json").read_text())["total_timesteps"] == 1024
    key = json.loads((out / "episodes" / f"{TASK}.csv.key.json").read_text())
    assert key["rl"] == [run_module.sha256_file(agent)]


def test_retrain_is_keyed_on_the_training_config(run_module: ModuleType, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 2: with retrain, a changed training config redoes the TRM (and so everything after it)."""
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / f"{TASK}.json").write_text(json.dumps({"task": TASK, "epochs": 1}))
    trained: list[int] = []

    def fake_train(config: object, out_dir: Path) -> None:  # the shipped model stands in for a trained one
        trained.append(config.epochs)
        shutil.copytree(run_module.CHECKPOINT_DIR / TASK, out_dir, dirs_exist_ok=True)

    monkeypatch.setattr(run_module, "CONFIG_DIR", configs)
    monkeypatch.setattr(run_module, "train", fake_train)
    args = ["--config", str(_config(tmp_path, total_timesteps=256)), "--out", str(tmp_path / "run"), "--retrain"]
    assert run_module.main(args) == 0 and run_module.main(args) == 0
    assert trained == [1]
    (configs / f"{TASK}.json").write_text(json.dumps({"task": TASK, "epochs": 2}))
    assert run_module.main(args) == 0
    assert trained == [1, 2]


def test_a_changed_checkpoint_redoes_rl_and_episodes(tiny_run: Path, run_module: ModuleType, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Defect 2: stages are keyed on the TRM's content; another checkpoint redoes both, the same one neither."""
    out = _copy(tiny_run, tmp_path / "copy")
    shipped = tmp_path / "checkpoints"
    shutil.copytree(run_module.CHECKPOINT_DIR / TASK, shipped / TASK)
    monkeypatch.setattr(run_module, "CHECKPOINT_DIR", shipped)
    config = ["--config", str(_config(tmp_path)), "--out", str(out)]
    capsys.readouterr()
    assert run_module.main(config) == 0
    assert "stages run now: 0" in capsys.readouterr().out
    model = TinyRecursiveModel.load(shipped / TASK)
    with torch.no_grad():
        model.task_head.bias += 0.5
    model.save(shipped / TASK / "model.pt")
    assert run_module.main(config) == 0
    assert "stages run now: 2" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"step_costs": []}, "step_costs"),
        ({"step_costs": [0.01, -0.01]}, "step_costs"),
        ({"step_costs": ["cheap"]}, "step_costs"),
        ({"algo": "a2c"}, "algo"),
        ({"learning_rate": 0.1}, "unknown config keys"),
        ({"tasks": ["nasdaq"]}, r"shipped checkpoint; \['nasdaq'\] lack one"),
        ({"tasks": []}, "non-empty list of tasks"),
    ],
)
def test_bad_config_refused_before_any_work(overrides: dict[str, object], match: str, run_module: ModuleType,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(run_module, "train_rl_policy", _boom)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        run_module.main(["--config", str(_config(tmp_path, **overrides)), "--out", str(out)])
    assert not out.exists()


def test_unknown_named_config(run_module: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--config"):
        run_module.main(["--config", "nope", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_help_exits_zero() -> None:
    result = subprocess.run([sys.executable, str(EXPERIMENTS / "run.py"), "--help"], capture_output=True, text=True,
                            timeout=120, cwd=ROOT)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--force" in result.stdout and "--config" in result.stdout


@pytest.mark.skipif(not NOTEBOOK.is_file(), reason="no notebook yet")
def test_notebook_executes(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), "stored with outputs"
    monkeypatch.setenv("RUN_DIR", str(tiny_run))
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(EXPERIMENTS)}})  # fmt: skip
    client.execute()
    text = "\n".join(output.get("text", "") for cell in nb.cells for output in cell.get("outputs", []))
    assert str(tiny_run.resolve()) in text
    images = [o for cell in nb.cells for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= len(PLOTS)
