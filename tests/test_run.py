"""The main job ``experiments/run.py`` end to end on a tiny config: artifacts, the protocol, resume, --force,
bad input, failed stages, and the notebook executed against the tiny run."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import load_script
from scipy import stats

from agents.evaluation import EPISODE_COLUMNS
from agents.measure import TIMED
from agents.rl import RLHaltingPolicy
from agents.rundir import LOCK_NAME, run_lock
from agents.study import CURVE_COLUMNS, SUMMARY_COLUMNS
from trm_env.io import atomic_dir, atomic_path
from trm_env.model import TinyRecursiveModel
from trm_env.rollouts import shipped_checkpoint

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
NOTEBOOK = EXPERIMENTS / "halting_curves.ipynb"
TASK = "regime-chain"
TINY = {"tasks": [TASK], "trm_seeds": [0, 1], "step_costs": [0.01], "rl_seeds": [0], "total_timesteps": 1024,
        "n_envs": 8, "n_resamples": 200, "learners": ["fitted_q", "continuation_head"], "timing_samples": 300,
        "timing_rounds": 1, "latency_samples": 5, "live_all_seeds": True, "joint": ["ponder_joint"],
        "joint_seeds": [0, 1]}  # fmt: skip
PLOTS = ("forest", "mean_return", "accuracy", "halting_steps", "difficulty", "wall_time", "joint_steps")
CALIBRATED = {"calibrated_halt_head_a0.01", "calibrated_halt_head_a0.05", "calibrated_fitted_q_a0.01",
              "calibrated_fitted_q_a0.05"}  # fmt: skip
FAMILIES = {"halt_head", "rl_ppo", "fixed_depth", "confidence", "kl_exit", "entropy_exit", "patience", "oracle",
            "random", "fitted_q", "continuation_head", "privileged_at_difficulty", "privileged_final_flag",
            "ponder_joint", *CALIBRATED}  # fmt: skip
GROUPS = ("rules", "rl", "fitted_q", "continuation_head", "ponder_joint")  # ponder_joint: on its own TRMs
SERIAL = ("--backend", "serial")  # run.py defaults to Ray (faster for the real configs); tiny runs need no start-up
PER_SEED = 1 + len(GROUPS)  # per TRM seed: one RL agent and its evaluation groups
STAGES = 2 * PER_SEED + 1  # and the task's live stage
CHILD_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # a subprocess runs this checkout's code


def assert_same_summary(run: Path, other: Path) -> None:
    """The summaries are identical but for the measured wall times (which no seed fixes)."""
    ours, theirs = (pd.read_csv(folder / "summary.csv").drop(columns=list(TIMED)) for folder in (run, other))
    pd.testing.assert_frame_equal(ours, theirs, check_exact=True)


@pytest.fixture(scope="module")
def run_module() -> ModuleType:
    return load_script("run")


def _config(folder: Path, **overrides: object) -> Path:
    path = folder / "tiny.json"
    path.write_text(json.dumps({**TINY, **overrides}))
    return path


def _rl_agent(out: Path, seed: int = 0) -> Path:
    (path,) = sorted((out / "rl" / TASK / f"trm{seed}").glob("*.pt"))
    return path


def _key(artifact: Path) -> dict:
    return json.loads(artifact.with_name(f"{artifact.name}.key.json").read_text())


@pytest.fixture(scope="module")
def tiny_run(run_module: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny run shared by the tests below (which must not change it; they copy it when they would)."""
    folder = tmp_path_factory.mktemp("tiny")
    out = folder / "run"
    assert run_module.main(["--config", str(_config(folder)), "--out", str(out), *SERIAL]) == 0
    return out


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def _main(run_module: ModuleType, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert run_module.main([*args, *SERIAL]) == 0
    return capsys.readouterr().out


def test_tiny_run_writes_every_artifact(tiny_run: Path) -> None:
    expected = ["config.json", "curves.csv", "episodes.csv", "summary.csv", "report.md", "calibration.csv",
                "ltt_coverage.csv", "ltt_coverage.png",
                *[f"{TASK}_{plot}.png" for plot in PLOTS],
                *[f"episodes/{TASK}/trm{s}/{g}.npz" for s in (0, 1) for g in GROUPS], f"live/{TASK}.json"]  # fmt: skip
    for name in expected:
        path = tiny_run / name
        assert path.is_file() and path.stat().st_size > 0, name
    for name in PLOTS:
        assert (tiny_run / f"{TASK}_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    agent = _rl_agent(tiny_run)
    assert agent.with_suffix(".json").is_file() and RLHaltingPolicy.load(agent).name == "rl_ppo"
    assert json.loads(agent.with_suffix(".json").read_text())["split"] == "halt"
    assert not list(tiny_run.rglob(".*.tmp*")), "atomic writes left temp files behind"
    config = json.loads((tiny_run / "config.json").read_text())
    assert {key: config[key] for key in TINY} == TINY
    report = (tiny_run / "report.md").read_text()
    assert "`halt`, which the TRM never saw" in report and "made on `val`" in report
    for name in PLOTS:
        assert f"({TASK}_{name}.png)" in report


def test_curves_hold_every_point_on_val_and_test(tiny_run: Path) -> None:
    curves = pd.read_csv(tiny_run / "curves.csv")
    assert list(curves.columns) == list(CURVE_COLUMNS)
    assert set(curves["policy"]) == FAMILIES and set(curves["split"]) == {"val", "test"}
    per_split = curves.groupby("split").size()
    assert per_split["val"] == per_split["test"] > 60
    for metric in ("accuracy", "mean_return"):
        assert (curves[f"{metric}_lo"] <= curves[metric] + 1e-12).all()
        assert (curves[metric] <= curves[f"{metric}_hi"] + 1e-12).all()
    assert (curves["n_trm_seeds"] == 2).all()
    for split, frame in curves.groupby("split"):
        oracle = frame.loc[frame["policy"] == "oracle", "mean_return"].max()
        assert (frame["mean_return"] <= oracle + 1e-12).all(), split


def test_summary_is_chosen_on_val_and_reported_on_test(tiny_run: Path) -> None:
    curves, summary = pd.read_csv(tiny_run / "curves.csv"), pd.read_csv(tiny_run / "summary.csv")
    assert list(summary.columns)[: len(SUMMARY_COLUMNS)] == list(SUMMARY_COLUMNS)
    assert set(summary["policy"]) == FAMILIES
    assert (summary["selected_on"] == summary["policy"].map(lambda f: "val (LTT)" if f in CALIBRATED else "val")).all()
    val, test = (curves[curves["split"] == s] for s in ("val", "test"))
    for _, row in summary.iterrows():
        family_val = val[val["policy"] == row["policy"]]
        best = family_val.loc[family_val["mean_return"].idxmax(), "param"]
        assert best == row["param"] or (pd.isna(best) and pd.isna(row["param"])), row["policy"]
        point = test[(test["policy"] == row["policy"]) & ((test["param"] == row["param"]) | test["param"].isna())]
        assert point["mean_return"].iloc[0] == pytest.approx(row["mean_return"])
    rows = summary.set_index("policy")
    assert rows.loc["fixed_depth", "gain"] == 0.0 and rows.loc["oracle", "oracle_gain_share"] == pytest.approx(1.0)
    assert (rows["n_trm_seeds"] == 2).all() and rows.loc["rl_ppo", "n_rl_seeds"] == 1


def test_calibrated_exits_in_the_run(tiny_run: Path) -> None:
    """The calibrated families: per TRM seed a knob from the base's grid (or none), their summary rows the mean of
    their calibrations on test, run live with the rest; the report opens with the task, then the exits, the
    re-split check, the figures and the details."""
    calibration, summary = pd.read_csv(tiny_run / "calibration.csv"), pd.read_csv(tiny_run / "summary.csv")
    curves = pd.read_csv(tiny_run / "curves.csv")
    assert set(calibration["family"]) == CALIBRATED and len(calibration) == 2 * len(CALIBRATED)
    assert calibration["guarantee"].all() and (calibration["calibrated_on"] == "val").all()
    for _, row in calibration.dropna(subset=["threshold"]).iterrows():
        assert row["threshold"] in set(curves.loc[curves["policy"] == row["base"], "param"])
    rows = summary.set_index("policy")
    means = calibration.groupby("family")["test_mean_steps"].mean()
    np.testing.assert_allclose(rows.loc[means.index, "mean_steps"], means)
    assert (rows.loc[sorted(CALIBRATED), "live_mismatches"] == 0).all()
    assert (rows.loc[sorted(CALIBRATED), "speedup"] > 0).all()
    coverage = pd.read_csv(tiny_run / "ltt_coverage.csv")
    assert len(coverage) == 2 * 2 * 2 * 200 and set(coverage["task"]) == {TASK}
    text = (tiny_run / "report.md").read_text()
    order = [f"## {TASK}", "| family | knob |", f"({TASK}_forest.png)", "### Calibrated exits", "## Does the guarantee",
             "## Figures", "## Details", "#### Verdicts", "#### Live halting"]  # fmt: skip
    assert [text.index(part) for part in order] == sorted(text.index(part) for part in order)


def test_summary_measures_what_each_family_saves_live(tiny_run: Path) -> None:
    """Every deployable chosen point ran live: equal to the table on both TRM seeds, timed against full depth."""
    rows = pd.read_csv(tiny_run / "summary.csv").set_index("policy")
    live = json.loads((tiny_run / "live" / f"{TASK}.json").read_text())
    deployable = FAMILIES - {"oracle", "privileged_at_difficulty", "privileged_final_flag"}
    assert set(live["timing"]) == deployable | {"full_depth"} and live["trm_seeds"] == [0, 1]
    assert (rows.loc[sorted(deployable), "live_mismatches"] == 0).all()
    assert rows.loc[["oracle", "privileged_at_difficulty"], "wall_ms_per_1k"].isna().all()
    measured = rows.loc[sorted(deployable)]
    assert (measured["wall_ms_per_1k"] > 0).all() and measured["policy_share"].between(0, 1).all()
    np.testing.assert_allclose(measured.loc["fixed_depth", "ideal_speedup"], 16 / measured.loc["fixed_depth", "param"])
    assert measured.loc["fixed_depth", "policy_share"] < 0.5 and set(live["latency"]) >= {"full_depth", "halt_head"}
    report = (tiny_run / "report.md").read_text()
    assert f"[{TASK}] live halting equals the table: 0 samples differ" in report


def test_episodes_are_the_chosen_points_on_test(tiny_run: Path) -> None:
    episodes, summary = pd.read_csv(tiny_run / "episodes.csv"), pd.read_csv(tiny_run / "summary.csv")
    assert list(episodes.columns) == ["task", "trm_seed", "policy", "param", "seed", *EPISODE_COLUMNS, "difficulty"]
    assert set(episodes["policy"]) == FAMILIES and set(episodes["trm_seed"]) == {0, 1}
    per_point = episodes.groupby(["trm_seed", "policy", "seed"])["index"]
    assert per_point.nunique().eq(per_point.size()).all() and per_point.size().nunique() == 1
    means = episodes.groupby("policy")["episode_return"].mean()
    pd.testing.assert_series_equal(means.sort_index(), summary.set_index("policy")["mean_return"].sort_index(),
                                   check_names=False)  # fmt: skip


def test_report_gives_the_difficulty_spearman_of_each_halting_family(tiny_run: Path) -> None:
    """Every learned family and the oracle: Spearman(difficulty, halting step) over its chosen test episodes."""
    episodes, report = pd.read_csv(tiny_run / "episodes.csv"), (tiny_run / "report.md").read_text()
    for family in ("oracle", "halt_head", "fitted_q", "continuation_head", "rl_ppo"):
        group = episodes[episodes["policy"] == family]
        varies = group["halt_step"].nunique() > 1
        rho = stats.spearmanr(group["difficulty"], group["halt_step"]).statistic if varies else float("nan")
        assert f"[{TASK}] Spearman(difficulty, halting step) of {family}'s val-chosen point: {rho:.3f}" in report


def test_resume_skips_finished_stages(tiny_run: Path, run_module: ModuleType,
                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    agent, stage = _rl_agent(tiny_run), tiny_run / "episodes" / TASK / "trm0" / "rl.npz"
    before = {path: path.stat().st_mtime_ns for path in (agent, agent.with_suffix(".json"), stage)}
    out = _main(run_module, capsys, "--config", str(_config(tiny_run.parent)), "--out", str(tiny_run))
    assert "stages run now: 0" in out
    assert {path: path.stat().st_mtime_ns for path in before} == before


def test_force_redoes_stages(tiny_run: Path, run_module: ModuleType, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = _copy(tiny_run, tmp_path)
    agent, stage = _rl_agent(out), out / "episodes" / TASK / "trm1" / "rules.npz"
    for path in (agent, stage):
        os.utime(path, ns=(10**9, 10**9))  # 1970: any rewrite shows
    assert f"stages run now: {STAGES}" in _main(run_module, capsys, "--config", str(_config(tmp_path)), "--out",
                                                  str(out), "--force")  # fmt: skip
    assert agent.stat().st_mtime_ns != 10**9 and stage.stat().st_mtime_ns != 10**9
    assert RLHaltingPolicy.load(agent).name == "rl_ppo"
    for seed in (0, 1):  # a redone agent's TensorBoard logs replace the old ones
        assert [p.name for p in (out / "tensorboard" / TASK / f"trm{seed}").iterdir()] == ["ppo_cost0.01_seed0_1"]


def _boom(*args: object, **kwargs: object) -> None:
    raise RuntimeError("stage failed")


def test_failed_stage_keeps_finished_artifacts(tiny_run: Path, run_module: ModuleType, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    out = _copy(tiny_run, tmp_path)
    agent = _rl_agent(out)
    saved = {path: path.read_bytes() for path in (agent, agent.with_suffix(".json"), out / "summary.csv")}
    monkeypatch.setattr(run_module, "train_rl_stage", _boom)
    with pytest.raises(RuntimeError, match="stage failed"):
        run_module.main(["--config", str(_config(tmp_path)), "--out", str(out), "--force", *SERIAL])
    assert {path: path.read_bytes() for path in saved} == saved
    assert not list(out.rglob(".*.tmp*"))


def test_changed_config_refused_unless_force(tiny_run: Path, run_module: ModuleType, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    out = _copy(tiny_run, tmp_path)
    recorded = (out / "config.json").read_bytes()
    changed = ["--config", str(_config(tmp_path, step_costs=[0.03])), "--out", str(out), *SERIAL]
    with pytest.raises(ValueError, match="different config"):
        run_module.main(changed)
    assert (out / "config.json").read_bytes() == recorded
    monkeypatch.setattr(run_module, "train_rl_stage", _boom)  # --force gets past the check, to the RL stage
    with pytest.raises(RuntimeError, match="stage failed"):
        run_module.main([*changed, "--force"])
    assert (out / "config.json").read_bytes() == recorded  # written last: the forced run never finished


def test_interrupted_forced_run_leaves_no_stale_stage(tiny_run: Path, run_module: ModuleType, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """A forced run with a new config dies midway. config.json still holds the old config, so a plain rerun
    with the new one is refused, and a plain rerun with the old one redoes what the dead run replaced."""
    out = _copy(tiny_run, tmp_path)
    changed = ["--config", str(_config(tmp_path, total_timesteps=512)), "--out", str(out), *SERIAL]
    monkeypatch.setattr(run_module, "evaluate_stage", _boom)  # dies after the RL stages
    with pytest.raises(RuntimeError, match="stage failed"):
        run_module.main([*changed, "--force"])
    monkeypatch.undo()
    agent = _rl_agent(out)
    assert _key(agent)["total_timesteps"] == 512
    with pytest.raises(ValueError, match="different config"):
        run_module.main(changed)
    (tmp_path / "old").mkdir()
    text = _main(run_module, capsys, "--config", str(_config(tmp_path / "old")), "--out", str(out))
    # both RL agents, and the evaluation that had started when the run died (a stage's key goes when it starts);
    # the other evaluations were made under the old keys, untouched
    assert "stages run now: 3" in text
    assert _key(agent)["total_timesteps"] == 1024
    assert [key["total_timesteps"] for key in _key(out / "episodes" / TASK / "trm0" / "rl.npz")["rl"]] == [1024]


def test_retrain_is_keyed_on_the_training_config(run_module: ModuleType, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With retrain, a changed training config redoes the TRMs (and so everything after them)."""
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / f"{TASK}.json").write_text(json.dumps({"task": TASK, "epochs": 1}))
    trained: list[tuple[int, int]] = []

    def fake_train(task: str, seed: int, config_path: Path, out_dir: Path) -> None:
        trained.append((json.loads(config_path.read_text())["epochs"], seed))
        shutil.copytree(shipped_checkpoint(task, seed), out_dir, dirs_exist_ok=True)  # the shipped model stands in

    monkeypatch.setattr(run_module, "CONFIG_DIR", configs)
    monkeypatch.setattr(run_module, "train_trm_stage", fake_train)
    args = ["--config", str(_config(tmp_path, total_timesteps=256, joint=[])), "--out", str(tmp_path / "run"),
            "--retrain", *SERIAL]  # the BCE TRMs only (the joint ones retrain from their own configs)
    assert run_module.main(args) == 0 and run_module.main(args) == 0
    assert trained == [(1, 0), (1, 1)]
    (configs / f"{TASK}.json").write_text(json.dumps({"task": TASK, "epochs": 2}))
    assert run_module.main(args) == 0
    assert trained == [(1, 0), (1, 1), (2, 0), (2, 1)]


def test_a_changed_checkpoint_redoes_its_stages(tiny_run: Path, run_module: ModuleType, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """Stages are keyed on the TRM's content: changing seed 1's checkpoint redoes its five stages and the live one."""
    out = _copy(tiny_run, tmp_path / "copy")
    shipped = tmp_path / "checkpoints"
    for seed in (0, 1):
        shutil.copytree(shipped_checkpoint(TASK, seed), shipped / TASK / f"seed{seed}")
    monkeypatch.setattr(run_module, "shipped_checkpoint", lambda task, seed, halting="bce": (
        shipped / task / f"seed{seed}" if halting == "bce" else shipped_checkpoint(task, seed, halting)))  # joint: same
    config = ["--config", str(_config(tmp_path)), "--out", str(out)]
    assert "stages run now: 0" in _main(run_module, capsys, *config)
    model = TinyRecursiveModel.load(shipped / TASK / "seed1")
    with torch.no_grad():
        model.task_head.bias += 0.5
    model.save(shipped / TASK / "seed1" / "model.pt")
    redone = PER_SEED - 1 + 1  # its agent and groups but its joint TRM's (unchanged), and the live stage
    assert f"stages run now: {redone}" in _main(run_module, capsys, *config)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"step_costs": []}, "step_costs"),
        ({"step_costs": [0.01, -0.01]}, "step_costs"),
        ({"step_costs": ["cheap"]}, "step_costs"),
        ({"trm_seeds": [0.5]}, "trm_seeds"),
        ({"rl_seeds": []}, "rl_seeds"),
        ({"algo": "a2c"}, "algo"),
        ({"learners": ["fitted_q", "magic"]}, "unknown: \\['magic'\\]"),
        ({"learning_rate": 0.1}, "unknown config keys"),
        ({"tasks": ["nasdaq"]}, r"a checkpoint per TRM seed; \[.nasdaq.\] lack one"),
        ({"checkpoints": {"sp500": ["x"]}}, "checkpoints must map tasks"),
        ({"checkpoints": {TASK: ["x"]}}, "one run directory per TRM seed"),
        ({"trm_seeds": [0, 42], "joint_seeds": [0, 42]},
         r"\['regime-chain', 'regime-chain \(ponder\)'\] lack one \(\"joint\": \[\] runs"),
        ({"joint": ["pondernet"]}, r"joint must be a list of \['ponder_joint', 'act_joint', 'q_halt_joint'\]"),
        ({"joint_seeds": [0, 2]}, r"joint_seeds must be among trm_seeds \[0, 1\]"),
        ({"joint_seeds": []}, "joint_seeds must be a non-empty list of integers"),
        ({"tasks": []}, "non-empty list of tasks"),
    ],
)
def test_bad_config_refused_before_any_work(overrides: dict[str, object], match: str, run_module: ModuleType,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(run_module, "train_rl_stage", _boom)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        run_module.main(["--config", str(_config(tmp_path, **overrides)), "--out", str(out), *SERIAL])
    assert not out.exists()


def test_unknown_named_config(run_module: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--config"):
        run_module.main(["--config", "nope", "--out", str(tmp_path / "run"), *SERIAL])
    assert not (tmp_path / "run").exists()


def test_ray_backend_gives_the_same_bytes_as_serial(tiny_run: Path, run_module: ModuleType, tmp_path: Path) -> None:
    """A local Ray with 2 CPUs, same config and seeds: the same RL agents, halting steps and tables."""
    out = tmp_path / "ray"
    assert run_module.main(["--config", str(_config(tmp_path)), "--out", str(out), "--backend", "ray",
                            "--num-cpus", "2"]) == 0  # fmt: skip
    for name in ("curves.csv", "episodes.csv"):
        assert (out / name).read_bytes() == (tiny_run / name).read_bytes(), name
    assert_same_summary(out, tiny_run)
    for seed in (0, 1):
        ours, theirs = RLHaltingPolicy.load(_rl_agent(out, seed)), RLHaltingPolicy.load(_rl_agent(tiny_run, seed))
        for a, b in zip(ours.policy.parameters(), theirs.policy.parameters(), strict=True):
            assert torch.equal(a, b)
        for group in GROUPS:
            path = Path("episodes") / TASK / f"trm{seed}" / f"{group}.npz"
            with np.load(out / path) as a, np.load(tiny_run / path) as b:
                assert all(np.array_equal(a[k], b[k]) for k in a.files), path


# ---- a killed run, the lock, the leftovers -----------------------------------------------------------------

# experiments/run.py, except that the RL agent of TRM seed 1 stalls once started (as a long training would), so the
# test can kill the run while that stage runs and after the first agent is done, whatever the machine's speed
STALLING_RUN = f"""
import runpy, sys, time
from pathlib import Path
import agents.stages

STARTED, real = Path(sys.argv[1]), agents.stages.train_rl_stage

def stalling_rl_stage(**kwargs):
    if kwargs["out"].parent.name == "trm1":
        STARTED.touch()
        time.sleep(600)
    real(**kwargs)

agents.stages.train_rl_stage = stalling_rl_stage
sys.argv = [sys.argv[0], *sys.argv[2:]]
runpy.run_path({str(EXPERIMENTS / "run.py")!r}, run_name="__main__")
"""


def _stages(out: Path) -> dict[str, Path]:
    """The tiny run's stages, by the name run.py gives them, and their artifacts."""
    agents = {f"rl/{TASK}/trm{s}/ppo_cost0.01_seed0": out / "rl" / TASK / f"trm{s}" / "ppo_cost0.01_seed0.pt"
              for s in (0, 1)}  # fmt: skip
    return {**agents, **{f"episodes/{TASK}/trm{s}/{g}": out / "episodes" / TASK / f"trm{s}" / f"{g}.npz"
                         for s in (0, 1) for g in GROUPS}}  # fmt: skip


def _kill_during_second_agent(tmp_path: Path, backend: tuple[str, ...]) -> Path:
    """Start a tiny run in a subprocess; SIGKILL its whole process group once the first RL agent's key is on disk
    and the second agent's stage has started."""
    out, started, script = tmp_path / "run", tmp_path / "started", tmp_path / "stalling_run.py"
    script.write_text(STALLING_RUN)
    first = _stages(out)[f"rl/{TASK}/trm0/ppo_cost0.01_seed0"]
    command = [sys.executable, str(script), str(started), "--config", str(_config(tmp_path)), "--out", str(out),
               *backend]  # fmt: skip
    child = subprocess.Popen(command, cwd=ROOT, env=CHILD_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (started.exists() and first.with_name(f"{first.name}.key.json").exists()):
            assert child.poll() is None, child.communicate()[1][-3000:].decode()
            assert time.monotonic() < deadline, "no key for the first RL agent while the second one ran"
            time.sleep(0.01)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
    return out


@pytest.mark.parametrize("backend", [pytest.param(SERIAL, id="serial"),
                                     pytest.param(("--backend", "ray", "--num-cpus", "2"), id="ray",
                                                  marks=pytest.mark.slow)])  # Ray: about 30 s  # fmt: skip
def test_a_killed_run_resumes_where_it_died(backend: tuple[str, ...], tiny_run: Path, run_module: ModuleType,
                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """SIGKILL in the middle of the RL stage: the rerun redoes exactly the stages without a key file (the
    second agent at least; the first agent and any other finished stage are kept untouched), removes the temp
    files left behind, and gives the same bytes as an uninterrupted run."""
    out = _kill_during_second_agent(tmp_path, backend)
    stages = _stages(out)
    finished = {name: path.stat().st_mtime_ns for name, path in stages.items()
                if path.with_name(f"{path.name}.key.json").is_file()}  # fmt: skip
    assert f"rl/{TASK}/trm0/ppo_cost0.01_seed0" in finished and f"rl/{TASK}/trm1/ppo_cost0.01_seed0" not in finished
    writes = [atomic_path(out / "summary.csv"), atomic_dir(out / "rl" / TASK / "trm1" / "table")]
    temps = [write.__enter__() for write in writes]  # writes a kill interrupted, under atomic_*'s temp names
    (temps[1] / "part.npy").write_bytes(b"x")
    text = _main(run_module, capsys, "--config", str(_config(tmp_path)), "--out", str(out))
    assert f"stages run now: {len(stages) - len(finished) + 1}" in text  # + the live stage, after the analysis
    assert {name: stages[name].stat().st_mtime_ns for name in finished} == finished
    for name in ("curves.csv", "episodes.csv"):
        assert (out / name).read_bytes() == (tiny_run / name).read_bytes(), name
    assert_same_summary(out, tiny_run)
    assert not any(temp.exists() for temp in temps) and not list(out.rglob(".*.tmp*"))
    for seed in (0, 1):
        assert [p.name for p in (out / "tensorboard" / TASK / f"trm{seed}").iterdir()] == ["ppo_cost0.01_seed0_1"]


def test_a_second_run_on_the_same_out_stops_at_once(tiny_run: Path, run_module: ModuleType, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    out = _copy(tiny_run, tmp_path)
    lock = out / LOCK_NAME
    assert lock.read_text().strip().isdigit()  # the tiny run's PID: it wrote it once it held the lock
    monkeypatch.setattr(run_module, "train_rl_stage", _boom)
    monkeypatch.setattr(run_module, "evaluate_stage", _boom)
    with run_lock(out):  # this process holds it, as a running run.py would
        with pytest.raises(ValueError, match=rf"{out} is in use by another run \(PID {os.getpid()}, lock "):
            run_module.main(["--config", str(_config(tmp_path)), "--out", str(out), "--force", *SERIAL])
    with open(lock) as handle:  # released: the tiny run's, and ours
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_help_exits_zero() -> None:
    result = subprocess.run([sys.executable, str(EXPERIMENTS / "run.py"), "--help"], capture_output=True, text=True,
                            timeout=120, cwd=ROOT, env=CHILD_ENV)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--force" in result.stdout and "--config" in result.stdout


def test_notebook_executes(tiny_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbclient
    import nbformat

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
