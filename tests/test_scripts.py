"""Every runnable script in experiments/ answers --help (run.py and quality.py have their own tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SCRIPTS = (
    "train_trm.py",
    "train_agent.py",
    "compare_halting.py",
    "tune_rl.py",
    "gpu_check.py",
    "benchmark.py",
    "bench_ray.py",
    "early_exit_digits.py",
)


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_exits_zero(script: str) -> None:
    done = subprocess.run([sys.executable, str(EXPERIMENTS / script), "--help"], capture_output=True, text=True,
                          timeout=120, cwd=EXPERIMENTS.parent)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "--" in done.stdout


@pytest.mark.slow  # three fresh processes that import torch and SB3, two of them start Ray: about a minute
def test_ray_stage_benchmark_row(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(EXPERIMENTS / "benchmark.py"), "--quick", "--only", "ray_rl_stage", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=EXPERIMENTS.parent)
    assert done.returncode == 0, done.stderr
    row = json.loads(out.read_text())["results"]["ray_rl_stage"]
    for side in ("serial", "ray_2cpu"):
        run = row["runs"][side][0]  # cold counts from the process's start: only its exit is left out
        assert 0 <= run["process_s"] - (run["cold_s"] + run["warm_s"] + run["close_s"]) < 2.0, run
        assert row[f"{side}_cold_s"] > row[f"{side}_warm_s"] > 0
    assert row["ratio"] == pytest.approx(row["serial_warm_s"] / row["ray_2cpu_warm_s"])
    assert "warm (inside a run)" in done.stdout
