"""Deep-supervision training of the Tiny Recursive Model with TRMLoss.

For every batch: run K supervision steps, apply ``TRMLoss`` to each step's logits, average the K
losses, and take **one** AdamW step per batch. TRM steps the optimizer after every supervision step;
the state handed between steps is detached, so both give each step its own loss signal, and one step
per batch costs K times fewer optimizer updates (documented choice: faster on CPU). An EMA of the weights is what we
evaluate, early-stop on (validation profit-weighted CE at the last step; for a joint objective see
``_stopping_score``) and save. ``detach_steps=False``
backpropagates through all K steps instead: a later step's loss then also trains the steps that wrote its
state, which a fixed-input task needs (with the state detached, every step learns only a one-shot
answer and no step learns to leave a usable intermediate result). ``device="cuda"`` trains on a GPU; the
final model, its metrics and the saved weights are on the CPU either way.

``halting`` picks the halt objective: ``"bce"`` (TRMLoss's halt term, the default) or a joint one,
``"ponder"``, ``"act"`` or ``"q_halt"`` (``trm_env.halting_loss``): its one loss over the batch's K steps replaces
the mean of the K TRMLoss values, with the same profit-weighted CE as its task term (TRMLoss values are still
computed per step, without gradient, for the logs).

A run directory holds ``model.pt`` (see ``TinyRecursiveModel.save``), ``config.json`` (every
hyperparameter, the task name and its data hash) and ``metrics.json`` (per step on every split:
accuracy, pnl, profit-weighted CE and the halt target's positive rate; the halt head's halting-step
histogram at 0.5 and its accuracy).
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from trm_env.checks import check_int
from trm_env.halting_loss import JointObjective, check_halting, rule_fires
from trm_env.io import write_json_atomic
from trm_env.loss import PNL_SCALE, TRMLoss, class_weights_from_labels, halt_target, profit_weighted_ce
from trm_env.model import TinyRecursiveModel, resolve_device, torch_threads
from trm_env.task import SPLITS, Task
from trm_env.tasks import load_task

__all__ = ["TrainConfig", "evaluate_steps", "save_run", "train"]


@dataclass
class TrainConfig:
    """Every hyperparameter of a training run (all go to ``config.json``)."""

    task: str = "sp500"
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    hidden_dim: int = 128
    n_latent: int = 3
    n_cycles: int = 1
    max_steps: int = 16
    expansion: int = 2
    epochs: int = 30
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.01
    ema_decay: float = 0.99
    patience: int = 6
    grad_clip: float = 1.0
    lambda_halt: float = 0.01
    lambda_profit: float = 1.0
    confidence_threshold: float = 0.7
    pnl_scale: float = PNL_SCALE
    class_weights: bool = False  # True: inverse-frequency weights of the train split (every class must occur)
    detach_steps: bool = True  # False: backpropagate through all K steps (see the module docstring)
    device: str = "cpu"  # "cpu", "cuda" or "auto"; the saved model and its metrics are computed on the CPU
    seed: int = 0
    num_threads: int = 1  # tiny matmuls: one thread is fastest on CPU and keeps results reproducible
    halting: str = "bce"  # "bce" (TRMLoss's halt term), or joint: "ponder", "act", "q_halt" (trm_env.halting_loss)
    ponder_lambda_p: float = 0.2  # ponder: the geometric prior's lambda_p
    ponder_beta: float = 0.01  # ponder: the KL weight beta
    act_tau: float = 0.01  # act: the ponder cost tau
    q_weight: float = 0.5  # q_halt: the weight of the Q losses (TRM: 0.5)
    exploration: float = 0.1  # q_halt: probability of a random minimum halting step in [2, K] (TRM: 0.1)

    def validate(self) -> None:
        """Reject a bad config before any work starts."""
        for name in ("hidden_dim", "n_latent", "n_cycles", "max_steps", "epochs", "batch_size", "num_threads"):
            check_int(name, getattr(self, name))
        if self.lr <= 0 or not 0.0 <= self.ema_decay < 1.0 or self.patience < 1:
            raise ValueError(f"need lr > 0, 0 <= ema_decay < 1, patience >= 1; got {self.lr}, "
                             f"{self.ema_decay}, {self.patience}")  # fmt: skip
        resolve_device(self.device)
        if check_halting(self.halting) != "bce":
            self.objective()

    def objective(self) -> JointObjective | None:
        """The joint halting objective of ``halting`` (None for "bce"), its settings checked."""
        if self.halting == "bce":
            return None
        return JointObjective(self.halting, self.ponder_lambda_p, self.ponder_beta, self.act_tau, self.q_weight,
                              self.exploration, self.seed)  # fmt: skip

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        """Read the ``train`` section of a ``config.json`` (or a bare dict of fields)."""
        data = json.loads(Path(path).read_text())
        data = data.get("train", data)
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown config keys {sorted(unknown)}")
        return cls(**data)


def build_model(config: TrainConfig, task: Task) -> TinyRecursiveModel:
    """A fresh model for ``task`` with the config's architecture."""
    return TinyRecursiveModel(
        input_dim=task.num_features,
        num_classes=task.num_classes,
        hidden_dim=config.hidden_dim,
        n_latent=config.n_latent,
        n_cycles=config.n_cycles,
        max_steps=config.max_steps,
        expansion=config.expansion,
        n_chunks=task.n_chunks,
        chunk_dim=task.chunk_dim,
        halt_outputs=2 if config.halting == "q_halt" else 1,
    )


@torch.no_grad()
def evaluate_steps(model: TinyRecursiveModel, task: Task, split: str, pnl_scale: float = PNL_SCALE,
                   confidence_threshold: float = 0.7, halting: str = "bce") -> dict[str, Any]:  # fmt: skip
    """Per-step accuracy, mean realized pnl, profit-weighted CE and halt-target positive rate on a split,
    plus the halt head's use.

    The halt head halts at the first step whose halt probability exceeds 0.5 (else at K). The halt
    target is TRMLoss's: max probability above ``confidence_threshold`` and correct. A joint objective's
    model also gets ``halt_rule``: the same statistics of its own rule at its default knob (``rule_fires``).
    """
    model.eval()
    x, labels, pnl = task.tensors(split)
    task_logits, halt_logits = (t.cpu() for t in model.rollout(x.to(next(model.parameters()).device)))
    steps = task_logits.shape[1]
    pred = task_logits.argmax(-1)
    correct = (pred == labels[:, None]).double()
    pnl_matrix = torch.from_numpy(task.pnl_matrix[task.split(split)]).double()
    realized = pnl_matrix.gather(1, pred)
    pwce = profit_weighted_ce(task_logits.double(), labels[:, None], pnl[:, None].double(), pnl_scale)
    rows = torch.arange(len(labels))

    def use(fires: torch.Tensor) -> dict[str, Any]:
        halt_step = torch.where(fires.any(1), fires.double().argmax(1), torch.full_like(labels, steps - 1))
        return {"histogram": torch.bincount(halt_step, minlength=steps).tolist(),
                "mean_steps": float((halt_step + 1).double().mean()),
                "accuracy": float(correct[rows, halt_step].mean()), "mean_pnl": float(realized[rows, halt_step].mean()),
                "profit_weighted_ce": float(pwce[rows, halt_step].mean())}  # fmt: skip

    out = {
        "n": len(labels),
        "accuracy": correct.mean(0).tolist(),
        "mean_pnl": realized.mean(0).tolist(),
        "profit_weighted_ce": pwce.mean(0).tolist(),
        "halt_target_rate": halt_target(task_logits, labels[:, None], confidence_threshold).mean(0).tolist(),
        "halt_head": {"threshold": 0.5, **use(torch.sigmoid(halt_logits) > 0.5)},
    }
    if halting != "bce":
        out["halt_rule"] = {"halting": halting, **use(rule_fires(halting, halt_logits))}
    return out


@torch.no_grad()
def objective_loss(model: TinyRecursiveModel, task: Task, criterion: TRMLoss, objective: JointObjective,
                   split: str = "val") -> float:  # fmt: skip
    """A joint objective's loss on a whole split, without exploration: what a joint run early-stops on."""
    model.eval()
    device = next(model.parameters()).device
    x, labels, pnl = (t.to(device) for t in task.tensors(split))
    state, task_logits, outputs = model.initial_state(x), [], []
    for _ in range(model.max_steps):
        state, logits, halt = model.step_outputs(state)
        task_logits.append(logits)
        outputs.append(halt)
    logits = torch.stack(task_logits, dim=1)
    return float(objective(criterion.task_losses(logits, labels, pnl), logits, torch.stack(outputs, dim=1), labels,
                           explore=False))  # fmt: skip


def _stopping_score(val: dict[str, Any], model: TinyRecursiveModel, task: Task, criterion: TRMLoss,
                    objective: JointObjective | None) -> float:  # fmt: skip
    """What early stopping minimises: the val profit-weighted CE at the last step ("bce"); ponder's and act's own
    loss on val; for q_halt the val profit-weighted CE at its own rule's halt (its training loss averages over the
    steps up to the model's own halts, so it is not comparable between epochs that halt differently)."""
    if objective is None:
        return val["profit_weighted_ce"][-1]
    if objective.halting == "q_halt":
        return val["halt_rule"]["profit_weighted_ce"]
    return objective_loss(model, task, criterion, objective)


COMPONENTS = ("total_loss", "halt_loss", "profit_weighted_task_loss", "task_loss", "halt_target_rate")


def _train_epoch(
    model: TinyRecursiveModel,
    ema: AveragedModel,
    optimizer: torch.optim.Optimizer,
    criterion: TRMLoss,
    loader: torch.utils.data.DataLoader,
    config: TrainConfig,
    objective: JointObjective | None = None,
) -> torch.Tensor:
    """One pass over the train split; returns the epoch's mean loss components per step, (K, components)."""
    model.train()
    sums = torch.zeros(config.max_steps, len(COMPONENTS), dtype=torch.float64)
    device = next(model.parameters()).device
    for batch in loader:
        x, labels, pnl = (t.to(device) for t in batch)
        state = model.initial_state(x)
        losses, task, halt = [], [], []
        for _ in range(config.max_steps):
            state, task_logits, halt_outputs = model.step_outputs(state, detach=config.detach_steps)
            with torch.set_grad_enabled(objective is None):  # a joint objective's loss comes from all K steps
                losses.append(criterion(task_logits, model.halt_logit(halt_outputs), labels, pnl,
                                        return_components=True))  # fmt: skip
            task.append(task_logits)
            halt.append(halt_outputs)
        if objective is None:
            loss = torch.stack([c["total_loss"] for c in losses]).mean()
        else:
            task_logits = torch.stack(task, dim=1)
            loss = objective(criterion.task_losses(task_logits, labels, pnl), task_logits, torch.stack(halt, dim=1),
                             labels)  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        ema.update_parameters(model)
        with torch.no_grad():
            sums += torch.tensor([[float(c[key]) for key in COMPONENTS] for c in losses], dtype=torch.float64)
    return sums / len(loader)


def _log_epoch(writer: Any, epoch: int, train_parts: torch.Tensor, val: dict[str, Any]) -> None:
    """TensorBoard scalars per recursion step: train loss components, val accuracy and profit-weighted CE."""
    for k in range(train_parts.shape[0]):
        for j, key in enumerate(COMPONENTS):
            writer.add_scalar(f"train_{key}/step_{k + 1:02d}", float(train_parts[k, j]), epoch)
        writer.add_scalar(f"val_accuracy/step_{k + 1:02d}", val["accuracy"][k], epoch)
        writer.add_scalar(f"val_profit_weighted_ce/step_{k + 1:02d}", val["profit_weighted_ce"][k], epoch)


def train(
    config: TrainConfig,
    out_dir: str | Path | None = None,
    task: Task | None = None,
    progress: bool = True,
    tensorboard: bool = True,
) -> tuple[TinyRecursiveModel, dict[str, Any]]:
    """Train, early-stop and (with ``out_dir``) write the run directory; return the EMA model and metrics."""
    config.validate()
    task = load_task(config.task, **config.task_kwargs) if task is None else task
    for split in SPLITS:
        if len(task.split(split)) == 0:
            raise ValueError(f"task {task.name!r} has an empty {split!r} split")
    with torch_threads(config.num_threads):
        return _train(config, task, out_dir, progress, tensorboard)


def _train(config: TrainConfig, task: Task, out_dir: str | Path | None, progress: bool, tensorboard: bool
           ) -> tuple[TinyRecursiveModel, dict[str, Any]]:  # fmt: skip
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    model = build_model(config, task).to(device)
    weights = class_weights_from_labels(task.labels[task.split("train")], task.num_classes) if config.class_weights \
        else None  # fmt: skip
    criterion = TRMLoss(
        lambda_halt=config.lambda_halt,
        lambda_profit=config.lambda_profit,
        class_weights=weights,
        confidence_threshold=config.confidence_threshold,
        pnl_scale=config.pnl_scale,
        num_classes=task.num_classes,
    ).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    loader = task.loader("train", config.batch_size, shuffle=True, seed=config.seed)
    objective = config.objective()
    writer = None
    if tensorboard and out_dir is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(Path(out_dir) / "tensorboard"))
    best, best_state, stale = np.inf, None, 0
    bar = tqdm(range(config.epochs), desc=f"train TRM on {task.name}", disable=not progress, unit="epoch")
    for epoch in bar:
        train_parts = _train_epoch(model, ema, optimizer, criterion, loader, config, objective)
        val = evaluate_steps(ema.module, task, "val", config.pnl_scale, config.confidence_threshold, config.halting)
        score = _stopping_score(val, ema.module, task, criterion, objective)
        if writer is not None:
            _log_epoch(writer, epoch, train_parts, val)
        bar.set_postfix(val_pwce=f"{score:.4f}", val_acc=f"{val['accuracy'][-1]:.3f}")
        if score < best - 1e-5:
            best, best_state, stale = score, copy.deepcopy(ema.module.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    if writer is not None:
        writer.close()
    final = build_model(config, task)
    final.load_state_dict(best_state)
    final.train_config = asdict(config)
    final.eval()
    metrics = {
        "epochs_run": epoch + 1,
        "task_fingerprint": task.fingerprint(),
        **{s: evaluate_steps(final, task, s, config.pnl_scale, config.confidence_threshold, config.halting)
           for s in SPLITS},
    }
    if out_dir is not None:
        save_run(out_dir, final, config, task, metrics)
    return final, metrics


def save_run(out_dir: str | Path, model: TinyRecursiveModel, config: TrainConfig, task: Task, metrics: dict) -> None:
    """Write ``model.pt``, ``config.json`` and ``metrics.json`` atomically (metrics last)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.pt")
    write_json_atomic(
        out / "config.json",
        {"train": asdict(config), "model": model.config, "task": task.name,
         "task_params": task.params, "task_fingerprint": task.fingerprint()},
    )  # fmt: skip
    write_json_atomic(out / "metrics.json", metrics)
