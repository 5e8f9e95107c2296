"""Print the issue-4 quality bars of the Tiny Recursive Model (and optionally write them as JSON).

    python experiments/quality.py                      # evaluate the shipped checkpoints
    python experiments/quality.py --retrain            # retrain both from experiments/configs/*.json, timed
    python experiments/quality.py --out quality.json   # also write the results (atomically)

a. regime-chain depth bar (test split): last-step accuracy >= step-1 accuracy + 15 points, and the
   hardest difficulty reaches 90% of its final accuracy at a later step than the easiest.
b. sp500 test split (2015-2018): the TRM next to three baselines fit on the train split and tuned on
   val by profit-weighted CE: the train class prior (argmax = the majority class), multinomial
   logistic regression and HistGradientBoostingClassifier (both fit with the TRM's per-sample
   profit weight ``1 - tanh(pnl / pnl_scale)`` as sample weight, i.e. the same objective).
   Profit-weighted CE uses ``trm_env.loss.profit_weighted_ce`` on clipped log-probabilities.
c. training wall time (bars: sp500 < 60 s, regime-chain < 5 min on 2 cores), measured with --retrain.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from trm_env import TinyRecursiveModel
from trm_env.io import write_json_atomic
from trm_env.loss import profit_weight, profit_weighted_ce
from trm_env.rollouts import shipped_checkpoint
from trm_env.tasks import Task, load_task
from trm_env.training import TrainConfig, evaluate_steps, train

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "experiments" / "configs"
TASKS = ("sp500", "regime-chain")
TIME_BARS = {"sp500": 60.0, "regime-chain": 300.0}
DEPTH_GAIN_BAR = 0.15
PROB_FLOOR = 1e-7
LOGREG_C = (0.001, 0.01, 0.1, 1.0)
HGB_GRID = ({"max_depth": 2, "learning_rate": 0.05}, {"max_depth": 3, "learning_rate": 0.05})
HGB_MAX_ITER = 200


# ---- models -------------------------------------------------------------------------------------


def load_shipped(name: str) -> tuple[TinyRecursiveModel, Task, float]:
    """The shipped checkpoint of ``name``, its task and the pnl scale it was trained with."""
    config = json.loads((shipped_checkpoint(name) / "config.json").read_text())["train"]
    task = load_task(config["task"], **config["task_kwargs"])
    model = TinyRecursiveModel.load(shipped_checkpoint(name), input_dim=task.num_features)
    return model, task, config["pnl_scale"]


def retrain(name: str) -> tuple[TinyRecursiveModel, Task, float, float]:
    """Train ``name`` from ``experiments/configs/<name>.json``; also return the wall time in seconds."""
    config = TrainConfig.from_json(CONFIGS / f"{name}.json")
    start = time.perf_counter()
    model, _ = train(config, progress=False, tensorboard=False)
    seconds = time.perf_counter() - start
    return model, load_task(config.task, **config.task_kwargs), config.pnl_scale, seconds


# ---- a. depth bar -------------------------------------------------------------------------------


def step_predictions(model: TinyRecursiveModel, task: Task, split: str = "test") -> np.ndarray:
    """Per-sample, per-step predicted class (N, K)."""
    model.eval()
    task_logits, _ = model.rollout(task.tensors(split)[0])
    return task_logits.argmax(-1).numpy()


def first_step_reaching(accuracy: np.ndarray, fraction: float = 0.9) -> int:
    """The first 1-based step whose accuracy reaches ``fraction`` of the last step's."""
    return int(np.argmax(accuracy >= fraction * accuracy[-1])) + 1


def depth_bar(model: TinyRecursiveModel, task: Task, split: str = "test") -> dict[str, Any]:
    """Step-1 vs last-step accuracy and, per difficulty, the first step reaching 90% of its final accuracy."""
    index = task.split(split)
    if task.difficulty is None:
        raise ValueError(f"task {task.name!r} has no difficulty")
    correct = step_predictions(model, task, split) == task.labels[index][:, None]
    difficulty = task.difficulty[index]
    accuracy = correct.mean(0)
    per_difficulty = {
        int(d): {
            "n": int((difficulty == d).sum()),
            "step1_accuracy": float(correct[difficulty == d].mean(0)[0]),
            "final_accuracy": float(correct[difficulty == d].mean(0)[-1]),
            "step_to_90pct": first_step_reaching(correct[difficulty == d].mean(0)),
        }
        for d in np.unique(difficulty)
    }
    easiest, hardest = per_difficulty[min(per_difficulty)], per_difficulty[max(per_difficulty)]
    gain = float(accuracy[-1] - accuracy[0])
    return {
        "accuracy_by_step": accuracy.tolist(),
        "step1_accuracy": float(accuracy[0]),
        "last_accuracy": float(accuracy[-1]),
        "gain": gain,
        "gain_pass": gain >= DEPTH_GAIN_BAR,
        "per_difficulty": per_difficulty,
        "ordering_pass": hardest["step_to_90pct"] > easiest["step_to_90pct"],
    }


# ---- b. sp500 vs baselines ----------------------------------------------------------------------


def score_probs(probs: np.ndarray, task: Task, split: str, pnl_scale: float = 0.05) -> dict[str, float]:
    """Accuracy, profit-weighted CE (clipped, renormalised probabilities) and realized mean pnl of the argmax."""
    index = task.split(split)
    probs = np.clip(probs, PROB_FLOOR, 1.0)
    log_probs = torch.from_numpy(np.log(probs / probs.sum(1, keepdims=True)))
    _, labels, pnl = task.tensors(split)
    pwce = profit_weighted_ce(log_probs, labels, pnl.double(), pnl_scale)
    pred = probs.argmax(1)
    return {
        "accuracy": float((pred == task.labels[index]).mean()),
        "profit_weighted_ce": float(pwce.mean()),
        "mean_pnl": float(task.pnl_matrix[index, pred].astype(np.float64).mean()),
    }


def _xy(task: Task, split: str) -> tuple[np.ndarray, np.ndarray]:
    index = task.split(split)
    return task.features[index], task.labels[index]


def _sample_weight(task: Task, pnl_scale: float) -> np.ndarray:
    return profit_weight(torch.from_numpy(task.pnl[task.split("train")]).double(), pnl_scale).numpy()


def _full_probs(model: Any, probs: np.ndarray, num_classes: int) -> np.ndarray:
    """Class probabilities in all ``num_classes`` columns (a class absent from train gets 0)."""
    out = np.zeros((len(probs), num_classes))
    out[:, model.classes_] = probs
    return out


def prior_baseline(task: Task) -> np.ndarray:
    """Test probabilities of the train class prior; its argmax is always the majority class."""
    prior = np.bincount(task.labels[task.split("train")], minlength=task.num_classes) / len(task.split("train"))
    return np.tile(prior, (len(task.split("test")), 1))


def logreg_baseline(task: Task, pnl_scale: float = 0.05) -> tuple[np.ndarray, dict[str, Any]]:
    """Multinomial logistic regression; C and class weighting chosen on val profit-weighted CE."""
    from sklearn.linear_model import LogisticRegression  # imported here: sklearn is slow to import (--help)

    (x, y), (xv, _), (xt, _) = (_xy(task, s) for s in ("train", "val", "test"))
    best: tuple[float, Any, dict[str, Any]] = (np.inf, None, {})
    for c in LOGREG_C:
        for class_weight in (None, "balanced"):
            model = LogisticRegression(C=c, class_weight=class_weight, max_iter=2000)
            model.fit(x, y, sample_weight=_sample_weight(task, pnl_scale))
            val = score_probs(_full_probs(model, model.predict_proba(xv), task.num_classes), task, "val", pnl_scale)
            if val["profit_weighted_ce"] < best[0]:
                best = (val["profit_weighted_ce"], model, {"C": c, "class_weight": class_weight})
    return _full_probs(best[1], best[1].predict_proba(xt), task.num_classes), best[2]


def hgb_baseline(task: Task, pnl_scale: float = 0.05, seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """HistGradientBoosting; depth and the number of boosting rounds (early stopping) chosen on val pwCE."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    (x, y), (xv, _), (xt, _) = (_xy(task, s) for s in ("train", "val", "test"))
    best: tuple[float, Any, dict[str, Any]] = (np.inf, None, {})
    for params in HGB_GRID:
        model = HistGradientBoostingClassifier(max_iter=HGB_MAX_ITER, early_stopping=False, random_state=seed, **params)
        with threadpool_limits(1):
            model.fit(x, y, sample_weight=_sample_weight(task, pnl_scale))
            for rounds, probs in enumerate(model.staged_predict_proba(xv), 1):
                loss = score_probs(_full_probs(model, probs, task.num_classes), task, "val", pnl_scale)
                if loss["profit_weighted_ce"] < best[0]:
                    best = (loss["profit_weighted_ce"], model, {**params, "max_iter": rounds})
    with threadpool_limits(1):
        staged = best[1].staged_predict_proba(xt)
        probs = next(p for rounds, p in enumerate(staged, 1) if rounds == best[2]["max_iter"])
    return _full_probs(best[1], probs, task.num_classes), best[2]


def market_comparison(model: TinyRecursiveModel, task: Task, pnl_scale: float = 0.05) -> dict[str, Any]:
    """TRM (last step and halt head) and three baselines on the test split, plus reference pnls."""
    trm = evaluate_steps(model, task, "test", pnl_scale)
    rows = {
        "trm_last_step": {k: trm[k][-1] for k in ("accuracy", "profit_weighted_ce", "mean_pnl")},
        "trm_halt_head": {k: trm["halt_head"][k] for k in ("accuracy", "profit_weighted_ce", "mean_pnl")},
        "majority_class": score_probs(prior_baseline(task), task, "test", pnl_scale),
    }
    chosen = {}
    for name, fit in (("logistic_regression", logreg_baseline), ("hist_gradient_boosting", hgb_baseline)):
        probs, chosen[name] = fit(task, pnl_scale)
        rows[name] = score_probs(probs, task, "test", pnl_scale)
    index = task.split("test")
    trm_row = rows["trm_last_step"]
    beats = {
        name: {
            "profit_weighted_ce": trm_row["profit_weighted_ce"] < row["profit_weighted_ce"],
            "mean_pnl": trm_row["mean_pnl"] > row["mean_pnl"],
        }
        for name, row in rows.items()
        if not name.startswith("trm")
    }
    return {
        "n": len(index),
        "rows": rows,
        "chosen_hyperparameters": chosen,
        "trm_beats": beats,
        "halt_mean_steps": trm["halt_head"]["mean_steps"],
        "oracle_mean_pnl": float(task.pnl[index].astype(np.float64).mean()),
        "buy_and_hold_mean_pnl": float(
            task.pnl_matrix[index, task.strategy_names.index("buy_and_hold")].astype(np.float64).mean()
        ),
    }


# ---- printing -----------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_depth(result: dict[str, Any]) -> None:
    print("a. regime-chain depth bar (test split)")
    print(f"   accuracy at step 1     {result['step1_accuracy']:.4f}")
    print(f"   accuracy at last step  {result['last_accuracy']:.4f}")
    gain, verdict = 100 * result["gain"], _verdict(result["gain_pass"])
    print(f"   gain                   {gain:+.1f} points  (bar >= +15)  {verdict}")
    print("   difficulty      n  step-1 acc  final acc  first step >= 90% of final")
    for d, row in result["per_difficulty"].items():
        print(f"   {d:>10}  {row['n']:>5}  {row['step1_accuracy']:>10.3f}  {row['final_accuracy']:>9.3f}  "
              f"{row['step_to_90pct']:>26}")  # fmt: skip
    steps = result["per_difficulty"]
    lo, hi = min(steps), max(steps)
    print(f"   hardest (d={hi}) step {steps[hi]['step_to_90pct']} > easiest (d={lo}) step "
          f"{steps[lo]['step_to_90pct']}  {_verdict(result['ordering_pass'])}\n")  # fmt: skip


def print_market(result: dict[str, Any]) -> None:
    print(f"b. sp500 test split 2015-2018 (n={result['n']})")
    print(f"   {'model':<24} {'accuracy':>9} {'pwCE':>8} {'mean pnl':>10}")
    for name, row in result["rows"].items():
        print(f"   {name:<24} {row['accuracy']:>9.4f} {row['profit_weighted_ce']:>8.4f} {row['mean_pnl']:>10.5f}")
    print(f"   {'oracle (label pnl)':<24} {'':>9} {'':>8} {result['oracle_mean_pnl']:>10.5f}")
    print(f"   {'buy_and_hold':<24} {'':>9} {'':>8} {result['buy_and_hold_mean_pnl']:>10.5f}")
    print(f"   halt head mean steps {result['halt_mean_steps']:.2f}")
    print(f"   baselines chosen on val: {result['chosen_hyperparameters']}")
    for name, beats in result["trm_beats"].items():
        print(f"   TRM (last step) vs {name}: pwCE {'beats' if beats['profit_weighted_ce'] else 'does NOT beat'}, "
              f"pnl {'beats' if beats['mean_pnl'] else 'does NOT beat'}")  # fmt: skip
    print()


def print_timing(timing: dict[str, float | None]) -> None:
    print("c. training wall time (default configs, 2 cores)")
    for name, seconds in timing.items():
        if seconds is None:
            print(f"   {name:<13} not measured (use --retrain)")
        else:
            verdict = _verdict(seconds < TIME_BARS[name])
            print(f"   {name:<13} {seconds:7.1f} s  (bar < {TIME_BARS[name]:.0f} s)  {verdict}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the results JSON here (atomically)")
    parser.add_argument("--retrain", action="store_true", help="retrain both models from experiments/configs, timed")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    models, timing = {}, dict.fromkeys(TASKS)
    for name in TASKS:
        if args.retrain:
            model, task, scale, timing[name] = retrain(name)
            models[name] = (model, task, scale)
        else:
            models[name] = load_shipped(name)
    results = {
        "source": "retrained" if args.retrain else "shipped",
        "depth_bar": depth_bar(*models["regime-chain"][:2]),
        "sp500": market_comparison(*models["sp500"]),
        "training_seconds": timing,
    }
    print_depth(results["depth_bar"])
    print_market(results["sp500"])
    print_timing(timing)
    if args.out is not None:
        write_json_atomic(args.out, results)
    return results


if __name__ == "__main__":
    main()
