"""Train a Tiny Recursive Model with deep supervision and write a run directory.

    python experiments/train_trm.py --config experiments/configs/regime-chain.json --out runs/trm-regime-chain
    python experiments/train_trm.py --task sp500 --epochs 20 --seed 1 --out runs/trm-sp500-seed1
    python experiments/train_trm.py --task csv --path prices.csv --seed 0 --out runs/my-trm

Any flag that is not a training setting is a ``load_task`` override of the task (``--path``, ``--horizon``,
``--train-end``, ...), stored in the config's ``task_kwargs``. The run directory gets ``model.pt``,
``config.json``, ``metrics.json`` and TensorBoard scalars (``tensorboard --logdir <out>/tensorboard``).
``--ship`` writes into the package's shipped checkpoint folder ``trm_env/checkpoints/<task>/seed<seed>/``
instead (without TensorBoard files); a joint ``--halting`` objective's into ``<task>-<halting>/seed<seed>/``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path

from trm_env.rollouts import shipped_checkpoint
from trm_env.tasks import overrides_from_args
from trm_env.training import TrainConfig, train


def _bool(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return text.lower() in ("true", "1", "yes")


_PARSERS = {"int": int, "float": float, "str": str, "bool": _bool}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="a JSON file of TrainConfig fields (or a run's config.json)")
    parser.add_argument("--out", type=Path, help="run directory (default runs/trm-<task>)")
    parser.add_argument("--ship", action="store_true", help="write into trm_env/checkpoints/<task>/seed<seed>/")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    for f in fields(TrainConfig):
        if f.type in _PARSERS:
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=_PARSERS[f.type], help=f"TrainConfig.{f.name}")
    args, extra = parser.parse_known_args(argv)
    try:
        args.task_overrides = overrides_from_args(extra)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    config = TrainConfig.from_json(args.config) if args.config else TrainConfig()
    config.task_kwargs = {**config.task_kwargs, **args.task_overrides}
    for f in fields(TrainConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(config, f.name, value)
    out = shipped_checkpoint(config.task, config.seed, config.halting) if args.ship else \
        args.out or Path("runs") / f"trm-{config.task}"  # fmt: skip
    start = time.perf_counter()
    _, metrics = train(config, out_dir=out, progress=not args.no_progress, tensorboard=not args.ship)
    elapsed = time.perf_counter() - start
    test = metrics["test"]
    print(f"trained {config.task} in {elapsed:.1f} s ({metrics['epochs_run']} epochs) -> {out}")
    print(f"test accuracy by step: {' '.join(f'{a:.3f}' for a in test['accuracy'])}")
    print(f"test profit-weighted CE at the last step: {test['profit_weighted_ce'][-1]:.4f}")
    halt = test.get("halt_rule", test["halt_head"])
    print(f"halt rule of {config.halting}: mean steps {halt['mean_steps']:.2f}, accuracy {halt['accuracy']:.3f}")


if __name__ == "__main__":
    main()
