"""Every runnable script in experiments/ answers --help (run.py and quality.py have their own tests)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SCRIPTS = ("train_trm.py", "train_agent.py", "compare_halting.py", "tune_rl.py", "gpu_check.py", "benchmark.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help_exits_zero(script: str) -> None:
    done = subprocess.run([sys.executable, str(EXPERIMENTS / script), "--help"], capture_output=True, text=True,
                          timeout=120, cwd=EXPERIMENTS.parent)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "usage:" in done.stdout and "--" in done.stdout
