"""The main job: every halting family on every task, over several TRM seeds, chosen on val, reported on test.

    python experiments/run.py                      # quick config -> runs/quick/  (what `make run` does)
    python experiments/run.py --config full        # + pointer-extrapolate, 3 RL/learner seeds -> runs/full/
    python experiments/run.py --config my.json --out runs/mine --retrain

The protocol, enforced here: the TRM trains on ``train``; every halting learner (RL, fitted-Q, the post-hoc heads)
trains on ``halt``, which the TRM never saw; every choice (each family's knob, the RL training cost, the
fixed-depth reference) is made on ``val``; ``test`` only reports.

Stages (each writes its artifact atomically, then the key it was made under, ``<artifact>.key.json``, as soon as
it is done, on whichever backend; a rerun redoes exactly the stages whose key changed or is missing, so a killed
run loses only the stages that were running; ``--force`` redoes all; ``config.json`` comes last):
1. per task and TRM seed: the shipped checkpoint, or with ``--retrain`` a fresh one in ``trm/<task>/seed<k>/``;
2. per task, TRM seed, RL training cost and RL seed: an agent trained on ``halt``: ``rl/<task>/trm<k>/*.pt`` (its
   weights) with its settings (``.json``) and an SB3 zip export beside it; TensorBoard logs in
   ``tensorboard/<task>/trm<k>/`` (a redone agent's replace the old ones);
3. per task, TRM seed and policy group: halting steps on val and test: ``episodes/<task>/trm<k>/<group>.npz``
   (a joint family, ``joint``, on the val and test tables of its own TRM seed k for k in ``joint_seeds``: a TRM
   trained with its halting objective, shipped for ``agents.joint_study.JOINT_TASKS``, or retrained from
   ``experiments/configs/<task>-<objective>.json``; analysed on those seeds, docs/joint_halting.md);
4. the analysis: every point on val and test, each family's knob chosen on val;
5. per task: every deployable val-chosen point run live (``agents.measure``): live equals the table on every
   TRM seed, wall time against full depth, latency at batch 1: ``live/<task>.json``;
6. the outputs: ``curves.csv`` (every point, val and test), ``summary.csv`` (val-chosen points on test, with
   the measured compute), ``episodes.csv`` (their test episodes), the plots and ``report.md``.

Any other model joins as saved tables (``agents.sources``): ``"tables": {task: [{"halt": path, "val": path, "test":
path}, ...]}`` names, per task, one entry per TRM seed (several models count as seeds) of ``.npz`` files of per-step
outputs (``Rollouts.from_arrays``' arguments) or ``Rollouts.save`` folders. Such a task runs stages 2-4 and 6 as
any other (the halt-head family only where halt logits are given); it has no model to run, so no live stage.

Stages 1-3 (and 5) are independent tasks; by default they run on a local Ray with the machine's cores
(``--backend ray``, measured faster than ``--backend serial`` for ``make run`` on 2 cores), or on a cluster with
``--address``. A run holds an exclusive lock on ``--out`` (``.run.lock``): a second run there stops at once,
naming the first's PID. It starts by deleting the temp files that a killed run's atomic writes left under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from agents.backend import BACKENDS, make_backend
from agents.curves import DEFAULT_PARAMS
from agents.joint import JOINT_FAMILIES, JOINT_GRIDS
from agents.joint_study import JOINT_CHECKPOINTS, JOINT_TASKS
from agents.learners import GRIDS, LEARNERS, PONDER_VARIANTS
from agents.measure import deployable_choices, live_stage
from agents.report import add_compute, analyse, write_outputs
from agents.rl import HYPERPARAMETERS, N_ENVS
from agents.rundir import is_fresh, remove_temp_files, run_keyed, run_lock
from agents.sources import ModelSource, check_tables, source_digest
from agents.stages import evaluate_stage, train_rl_stage, train_trm_stage
from trm_env.core import DEFAULT_STEP_COST
from trm_env.io import write_json_atomic
from trm_env.resolve import JOINT_SEEDS
from trm_env.rollouts import SHIPPED_SEEDS, shipped_checkpoint
from trm_env.training import TrainConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_BACKEND = "ray"  # make run, quick config, 2 cores: 239 s on Ray vs 315 s serial (README)
COMMON = dict(tasks=["sp500", "regime-chain", "pointer"], trm_seeds=[0, 1, 2, 3, 4], retrain=False,
              eval_step_cost=DEFAULT_STEP_COST, learners=list(LEARNERS), task_kwargs={}, checkpoints={}, tables={},
              algo="ppo", n_envs=N_ENVS["ppo"], hyperparameters={}, joint=list(JOINT_FAMILIES),
              joint_seeds=list(JOINT_SEEDS))
CONFIGS: dict[str, dict[str, Any]] = {
    "quick": dict(COMMON, step_costs=[DEFAULT_STEP_COST], rl_seeds=[0], random_seeds=[0], learner_seeds=[0],
                  total_timesteps=200_000, ponder_variants=[[0.2, 0.01], [0.4, 0.01]], act_taus=[0.001, 0.01, 0.03],
                  n_resamples=1000, timing_samples=2048, timing_rounds=3, latency_samples=100, live_all_seeds=False),
    # full: the extrapolation split too; three RL and learner seeds; PPO for 500k steps with its learning rate decayed
    # to 0 (docs/rl_tuning.md); every PonderNet variant and ACT cost. RL trains at the evaluation cost only (a
    # list of costs makes the training cost a knob chosen on val, at one RL training per cost and seed).
    "full": dict(COMMON, tasks=[*COMMON["tasks"], "pointer-extrapolate"], trm_seeds=list(SHIPPED_SEEDS),
                 step_costs=[DEFAULT_STEP_COST],
                 rl_seeds=[0, 1, 2], random_seeds=[0, 1, 2], learner_seeds=[0, 1, 2], total_timesteps=500_000,
                 hyperparameters={"learning_rate_end": 0.0}, ponder_variants=[list(v) for v in PONDER_VARIANTS],
                 act_taus=list(GRIDS["act"]), n_resamples=2000, timing_samples=4096, timing_rounds=5,
                 latency_samples=300, live_all_seeds=True),
}  # fmt: skip
CHECKED = {"step_costs": "a non-empty list of numbers >= 0", "trm_seeds": "a non-empty list of integers",
           "rl_seeds": "a non-empty list of integers", "random_seeds": "a non-empty list of integers",
           "learner_seeds": "a non-empty list of integers",
           "joint_seeds": "a non-empty list of integers"}  # fmt: skip
POSITIVE = ("timing_samples", "timing_rounds", "latency_samples")


def load_config(name_or_path: str, retrain: bool) -> dict[str, Any]:
    """A named config (``quick``/``full``) or a JSON file overriding the quick one; refused before any work."""
    if name_or_path in CONFIGS:
        config = dict(CONFIGS[name_or_path], name=name_or_path)
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ValueError(f"--config must be one of {sorted(CONFIGS)} or a JSON file; got {name_or_path!r}")
        overrides = json.loads(path.read_text())
        unknown = set(overrides) - set(CONFIGS["quick"])
        if unknown:
            raise ValueError(f"{path}: unknown config keys {sorted(unknown)}")
        config = {**CONFIGS["quick"], **overrides, "name": path.stem}
    config["retrain"] = bool(config["retrain"] or retrain)
    for key, what in CHECKED.items():
        values = config[key]
        numbers = isinstance(values, list) and values and all(isinstance(v, int | float) and v >= 0 for v in values)
        if not numbers or (key != "step_costs" and not all(isinstance(v, int) for v in values)):
            raise ValueError(f"{key} must be {what}, got {values!r}")
    for key in POSITIVE:
        if isinstance(config[key], bool) or not isinstance(config[key], int) or config[key] < 1:
            raise ValueError(f"{key} must be an integer >= 1, got {config[key]!r}")
    if not isinstance(config["live_all_seeds"], bool):
        raise ValueError(f"live_all_seeds must be true or false, got {config['live_all_seeds']!r}")
    for key, valid in (("learners", LEARNERS), ("joint", JOINT_FAMILIES)):
        unknown = sorted(set(config[key]) - set(valid))
        if unknown:
            raise ValueError(f"{key} must be a list of {list(valid)}; unknown: {unknown}")
    if config["algo"] not in HYPERPARAMETERS:
        raise ValueError(f"algo must be one of {sorted(HYPERPARAMETERS)}, got {config['algo']!r}")
    for key in ("task_kwargs", "checkpoints", "tables"):
        if not isinstance(config[key], dict) or not set(config[key]) <= set(config["tasks"]):
            raise ValueError(f"{key} must map tasks of the config to their values, got {config[key]!r}")
    both = sorted(set(config["checkpoints"]) & set(config["tables"]))
    if both:
        raise ValueError(f"give a task checkpoints or tables, not both: {both}")
    for task, entries in config["tables"].items():
        check_tables(task, entries, config["trm_seeds"])
    joint = any(len(_haltings(config, t)) > 1 for t in config["tasks"] if t not in config["tables"])
    if joint and not set(config["joint_seeds"]) <= set(config["trm_seeds"]):
        raise ValueError(f"joint_seeds must be among trm_seeds {config['trm_seeds']} (joint TRM seed k is paired with "
                         f"the BCE TRM's seed k; \"joint\": [] runs without the joint families), got "
                         f"{config['joint_seeds']!r}")  # fmt: skip
    for task, folders in config["checkpoints"].items():
        if not isinstance(folders, list) or len(folders) != len(config["trm_seeds"]):
            raise ValueError(f"checkpoints[{task!r}] must list one run directory per TRM seed {config['trm_seeds']}")
    missing = sorted({t if h == "bce" else f"{t} ({h})" for t in config["tasks"] if t not in config["tables"]
                      for h in _haltings(config, t) for s in _seeds(config, h)
                      if not _source(config, t, s, h).is_file()})  # fmt: skip
    if not config["tasks"] or missing:
        what = "a training config in experiments/configs" if config["retrain"] else "a checkpoint per TRM seed"
        hint = " (\"joint\": [] runs without the joint families)" if any("(" in m for m in missing) else ""
        raise ValueError(f"tasks must be a non-empty list of tasks with {what}; {missing or 'none'} lack one{hint}")
    return config


def _haltings(config: dict[str, Any], task: str) -> list[str]:
    """The training objectives of ``task``'s TRMs: "bce", and the joint families' on ``JOINT_TASKS``."""
    return ["bce", *(JOINT_FAMILIES[f] for f in config["joint"] if task in JOINT_TASKS)]


def _seeds(config: dict[str, Any], halting: str) -> list[int]:
    """The TRM seeds of a training objective: ``trm_seeds`` for "bce", ``joint_seeds`` for a joint objective."""
    return config["trm_seeds"] if halting == "bce" else config["joint_seeds"]


def _source(config: dict[str, Any], task: str, seed: int, halting: str = "bce") -> Path:
    """What a TRM seed needs before any work: its training config (retrain) or its checkpoint."""
    name = task if halting == "bce" else f"{task}-{halting}"
    if config["retrain"]:
        return CONFIG_DIR / f"{name}.json"
    given = config["checkpoints"].get(task) if halting == "bce" else None
    folder = Path(given[config["trm_seeds"].index(seed)]) if given else shipped_checkpoint(task, seed, halting)
    return folder / "model.pt"


class Run:
    """A run directory: stage keys, atomic artifacts, the log of what ran, and the backend that runs stages.

    Every stage records the key it was made under (the config entries it depends on and the digests
    or keys of its inputs) in ``<artifact>.key.json``, written by the stage itself right after the artifact
    (``agents.rundir.run_keyed``); a stage is redone when its key changed or the key file is missing.
    ``config.json`` is written last, when every stage is done. Make it with ``out``'s lock held (``run_lock``):
    it deletes the temp files of interrupted writes there.
    """

    def __init__(self, out: Path, config: dict[str, Any], force: bool, backend: Any) -> None:
        self.out, self.config, self.force, self.backend = out, config, force, backend
        self.ran: list[str] = []
        self.pending: list[tuple[Any, ...]] = []
        remove_temp_files(out)
        recorded = out / "config.json"
        if recorded.is_file() and not force:
            previous = json.loads(recorded.read_text())
            if previous != json.loads(json.dumps(config)):
                raise ValueError(f"{out} holds a run with a different config; use another --out or pass --force")
        self.bar = tqdm(desc="stages", unit="stage", total=0, dynamic_ncols=True)
        backend.on_done = self._progress

    def fresh(self, artifact: Path, key: dict[str, Any]) -> bool:
        """Whether ``artifact`` exists and was made under ``key`` (never with ``--force``)."""
        return not self.force and is_fresh(artifact, key)

    def stage(self, name: str, artifact: Path, key: dict[str, Any], fn: Any, after: tuple[int | None, ...] = (),
              **kwargs: Any) -> int | None:  # fmt: skip
        """Plan ``fn(**kwargs)`` unless ``artifact`` is fresh under ``key``: a handle for ``after``, or None.

        Planned stages run at the next ``flush``, after the stages named in ``after``; each records its key as
        soon as its artifact is written."""
        if self.fresh(artifact, key):
            return None
        self.pending.append((name, artifact, key, fn, kwargs, tuple(a for a in after if a is not None)))
        return len(self.pending) - 1

    def _progress(self, name: str, seconds: float) -> None:
        """One stage finished (its key already on disk): log it; the bar names it with its wall time (since
        submission on Ray)."""
        self.ran.append(name)
        self.bar.update(1)
        self.bar.set_postfix_str(f"{name} {seconds:.1f} s")

    def flush(self) -> None:
        """Run every planned stage on the backend and raise the first failure.

        Each stage writes its own key as it finishes (``run_keyed``), in whichever process runs it, so nothing is
        left to record here: an error, a Ctrl-C or a kill, while submitting or gathering, keeps every finished
        stage."""
        pending, self.pending = self.pending, []
        self.bar.total += len(pending)
        self.bar.refresh()
        jobs: list[Any] = []
        for name, artifact, key, fn, kwargs, after in pending:
            job = dict(fn=fn, kwargs=kwargs, artifact=artifact, key=key)
            jobs.append(self.backend.submit(run_keyed, job, tuple(jobs[a] for a in after), name))
        failed = self.backend.gather()[1]
        if failed is not None:
            raise failed

    def checkpoint(self, task: str, seed: int, halting: str = "bce") -> ModelSource:
        """Stage 1: the TRM folder of ``task``, ``seed`` and training objective (shipped, given in the config, or
        retrained), or the model's saved tables per split."""
        if task in self.config["tables"]:
            return check_tables(task, self.config["tables"][task], self.config["trm_seeds"])[
                self.config["trm_seeds"].index(seed)]
        source = _source(self.config, task, seed, halting)
        if not self.config["retrain"]:
            return source.parent
        folder = self.out / "trm" / source.stem / f"seed{seed}"
        config = TrainConfig.from_json(source)
        config.seed = seed
        self.stage(f"trm/{source.stem}/seed{seed}", folder / "model.pt", {"stage": "trm", "train": asdict(config)},
                   train_trm_stage, task=task, seed=seed, config_path=source, out_dir=folder)
        return folder

    def joint_checkpoints(self, task: str, seed: int) -> dict[str, Path]:
        """Stage 1 for the joint families of ``task``: family -> the folder of its own TRM seed ``seed`` (none for
        a seed outside ``joint_seeds`` or a task of saved tables)."""
        if task in self.config["tables"] or seed not in self.config["joint_seeds"]:
            return {}
        return {family: self.checkpoint(task, seed, JOINT_FAMILIES[family]) for family in self.config["joint"]
                if task in JOINT_TASKS}  # fmt: skip

    def rl_agents(self, task: str, seed: int, checkpoint: ModelSource
                  ) -> tuple[list[Path], list[dict[str, Any]], list[int | None]]:  # fmt: skip
        """Stage 2: one agent per RL training cost and RL seed, trained on the halt split: paths, keys, jobs."""
        c = self.config
        settings = {k: c[k] for k in ("algo", "total_timesteps", "n_envs", "hyperparameters")}
        paths, keys, jobs = [], [], []
        for cost in c["step_costs"]:
            for rl_seed in c["rl_seeds"]:
                path = self.out / "rl" / task / f"trm{seed}" / f"{c['algo']}_cost{cost:g}_seed{rl_seed}.pt"
                key = {"stage": "rl", "task": task, "task_kwargs": self._task_kwargs(task),
                       "checkpoint": source_digest(checkpoint), "cost": cost, "seed": rl_seed, **settings,
                       "defaults": HYPERPARAMETERS[c["algo"]]}  # fmt: skip
                jobs.append(self.stage(f"rl/{task}/trm{seed}/{path.stem}", path, key, train_rl_stage, task=task,
                                       task_kwargs=self._task_kwargs(task), checkpoint=checkpoint, step_cost=cost,
                                       seed=rl_seed, settings=settings, out=path,
                                       tensorboard=self.out / "tensorboard" / task / f"trm{seed}"))  # fmt: skip
                paths.append(path)
                keys.append(key)
        return paths, keys, jobs

    def evaluations(self, task: str, seed: int, checkpoint: ModelSource,
                    rl: tuple[list[Path], list[dict], list[int | None]], joint: dict[str, Path] | None = None
                    ) -> dict[str, Path]:  # fmt: skip
        """Stage 3: every policy group's halting steps on val and test (the RL group after its agents; a joint
        family on its own TRM, ``joint``)."""
        settings = self._settings()
        paths, keys, jobs = rl
        out = {}
        groups = [*((g, checkpoint) for g in ("rules", "rl", *self.config["learners"])), *(joint or {}).items()]
        for group, folder in groups:
            path = self.out / "episodes" / task / f"trm{seed}" / f"{group}.npz"
            key = {"stage": "evaluate", "group": group, "task_kwargs": self._task_kwargs(task),
                   "checkpoint": source_digest(folder), "settings": settings,
                   "grids": {"rules": DEFAULT_PARAMS, "learners": GRIDS, "joint": JOINT_GRIDS},
                   "rl": keys if group == "rl" else []}  # fmt: skip
            self.stage(f"episodes/{task}/trm{seed}/{group}", path, key, evaluate_stage,
                       after=tuple(jobs) if group == "rl" else (), task=task, task_kwargs=self._task_kwargs(task),
                       checkpoint=folder, group=group, settings=settings, out=path,
                       rl_paths=paths if group == "rl" else ())  # fmt: skip
            out[group] = path
        return out

    def live(self, task: str, checkpoints: dict[int, Path], chosen: dict[str, float],
             rl: dict[int, tuple[list[Path], list[dict], list[int | None]]],
             joint: dict[int, dict[str, Path]] | None = None) -> Path:  # fmt: skip
        """Stage 5: every deployable val-chosen point of ``task`` run live: equality on every TRM seed (the first
        one only unless ``live_all_seeds``: each seed refits the learned families; a joint family on its own TRMs,
        ``joint``: seed -> family -> folder), wall time and latency."""
        c, joint = self.config, joint or {}
        if not c["live_all_seeds"]:
            first = min(checkpoints)
            checkpoints, rl = {first: checkpoints[first]}, {first: rl[first]}
            joint = {seed: joint[seed] for seed in sorted(joint)[:1]}
        settings = {**self._settings(), **{key: c[key] for key in POSITIVE}}
        path = self.out / "live" / f"{task}.json"
        key = {"stage": "live", "task_kwargs": self._task_kwargs(task), "chosen": chosen, "settings": settings,
               "checkpoints": {seed: source_digest(folder) for seed, folder in checkpoints.items()},
               "rl": {seed: keys for seed, (_, keys, _) in rl.items()},
               "joint": {seed: {f: source_digest(d) for f, d in folders.items()} for seed, folders in joint.items()}}
        self.stage(f"live/{task}", path, key, live_stage, task=task, task_kwargs=self._task_kwargs(task),
                   checkpoints=checkpoints, chosen=chosen, settings=settings,
                   rl_paths={seed: paths for seed, (paths, _, _) in rl.items()}, out=path, joint=joint)  # fmt: skip
        return path

    def _settings(self) -> dict[str, Any]:
        c = self.config
        return {"step_cost": c["eval_step_cost"], "random_seeds": c["random_seeds"],
                "learner_seeds": c["learner_seeds"], "ponder_variants": c["ponder_variants"],
                "act_taus": c["act_taus"]}  # fmt: skip

    def _task_kwargs(self, task: str) -> dict[str, Any]:
        return dict(self.config["task_kwargs"].get(task, {}))

    def finish(self) -> None:
        self.bar.close()
        write_json_atomic(self.out / "config.json", self.config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="quick", help="quick (default), full, or a JSON file of overrides")
    parser.add_argument("--out", type=Path, help="run directory (default runs/<config name>)")
    parser.add_argument("--retrain", action="store_true", help="train the TRMs instead of using shipped checkpoints")
    parser.add_argument("--force", action="store_true", help="redo every stage (and accept a changed config)")
    parser.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                        help=f"run independent stages one by one or as Ray tasks (default {DEFAULT_BACKEND})")
    parser.add_argument("--address", help="with --backend ray: join this Ray cluster ('auto' or host:port)")
    parser.add_argument("--num-cpus", type=int, help="with --backend ray and no address: CPUs of the local Ray")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.retrain)
    out = args.out or Path("runs") / config["name"]
    with run_lock(out):
        backend = make_backend(args.backend, args.address, args.num_cpus)
        try:
            return _main(Run(out, config, args.force, backend))
        finally:
            backend.close()


def _main(run: Run) -> int:
    config, start = run.config, time.perf_counter()
    pairs = [(task, seed) for task in config["tasks"] for seed in config["trm_seeds"]]
    checkpoints = {pair: run.checkpoint(*pair) for pair in pairs}
    joint = {pair: run.joint_checkpoints(*pair) for pair in pairs}
    run.flush()  # the TRMs first: every later key holds their digests
    rl = {pair: run.rl_agents(*pair, checkpoints[pair]) for pair in pairs}
    evaluations = {pair: run.evaluations(*pair, checkpoints[pair], rl[pair], joint[pair]) for pair in pairs}
    run.flush()
    artifacts = {task: {seed: {"checkpoint": checkpoints[(task, seed)], JOINT_CHECKPOINTS: joint[(task, seed)],
                               **evaluations[(task, seed)]}
                        for seed in config["trm_seeds"]} for task in config["tasks"]}  # fmt: skip
    agents = {task: {seed: rl[(task, seed)][0] for seed in config["trm_seeds"]} for task in config["tasks"]}
    analysis = analyse(artifacts, agents, config)
    live = {t.task: run.live(t.task, {seed: checkpoints[(t.task, seed)] for seed in config["trm_seeds"]},
                             deployable_choices(t.chosen), {seed: rl[(t.task, seed)] for seed in config["trm_seeds"]},
                             {seed: joint[(t.task, seed)] for seed in config["trm_seeds"] if joint[(t.task, seed)]})
            for t in analysis.tasks if t.task not in config["tables"]}  # fmt: skip
    run.flush()
    add_compute(analysis, live)
    write_outputs(run.out, analysis, config)
    run.finish()
    print(f"\nrun directory: {run.out}  (stages run now: {len(run.ran)}; {time.perf_counter() - start:.1f} s)")
    print(analysis.text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
