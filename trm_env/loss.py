"""The TRM loss: profit-weighted cross-entropy over 8 strategies plus a small halt-head BCE term.

    total_loss = lambda_halt * halt_loss + lambda_profit * profit_weighted_task_loss

where ``profit_weighted_task_loss = mean_i (1 - tanh(pnl_i / pnl_scale)) * ce_i`` so that losing
samples are learned harder, and ``halt_loss`` teaches the halt head to fire when the model is
confident (max probability > ``confidence_threshold``) *and* correct.

The profit weight, with the default ``pnl_scale=0.05`` (true values of the formula):

>>> [round(float(w), 4) for w in profit_weight(torch.tensor([0.10, 0.05, 0.0, -0.05, -0.10]))]
[0.036, 0.2384, 1.0, 1.7616, 1.964]

Run ``python -m trm_env.loss`` for a sanity check that prints every component.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PNL_SCALE", "TRMLoss", "class_weights_from_labels", "halt_target", "profit_weight", "profit_weighted_ce"]

PNL_SCALE = 0.05  # the default pnl scale of the profit weight, everywhere a checkpoint does not say otherwise


def _check_finite(name: str, t: Tensor) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite; it holds NaN or inf (shape {tuple(t.shape)})")


def _check_scale(pnl_scale: float) -> None:
    if not pnl_scale > 0:
        raise ValueError(f"pnl_scale must be > 0, got {pnl_scale}")


def _check_threshold(confidence_threshold: float) -> None:
    if not 0.0 < confidence_threshold < 1.0:
        raise ValueError(f"confidence_threshold must lie in (0, 1), got {confidence_threshold}")


def profit_weight(pnl: Tensor, pnl_scale: float = PNL_SCALE) -> Tensor:
    """Per-sample weight ``1 - tanh(pnl / pnl_scale)``, always in (0, 2): losses weigh more."""
    _check_scale(pnl_scale)
    return 1.0 - torch.tanh(pnl / pnl_scale)


def profit_weighted_ce(task_logits: Tensor, labels: Tensor, pnl: Tensor, pnl_scale: float = PNL_SCALE) -> Tensor:
    """Per-sample ``(1 - tanh(pnl / pnl_scale)) * CE(logits, label)`` (no class weights), over the last dim.

    ``task_logits`` (..., C), ``labels`` and ``pnl`` broadcast against its leading dims; the quantity
    the environment pays at a halt and every evaluation reports.
    """
    log_probs = task_logits.log_softmax(dim=-1)
    labels = labels.expand(log_probs.shape[:-1])
    ce = -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return profit_weight(pnl, pnl_scale) * ce


@torch.no_grad()
def halt_target(task_logits: Tensor, labels: Tensor, confidence_threshold: float = 0.7) -> Tensor:
    """1.0 where max softmax probability > threshold and the argmax is the label, else 0.0."""
    _check_threshold(confidence_threshold)
    probs = task_logits.detach().softmax(dim=-1)
    confident = probs.max(dim=-1).values > confidence_threshold
    correct = probs.argmax(dim=-1) == labels
    return (confident & correct).to(task_logits.dtype)


def class_weights_from_labels(labels: Tensor | object, num_classes: int = 8) -> Tensor:
    """Inverse-frequency class weights normalised to sum to ``num_classes``.

    A class absent from ``labels`` raises ``ValueError`` (its inverse frequency would be inf).

    >>> class_weights_from_labels(torch.tensor([0, 0, 0, 1]), num_classes=2)
    tensor([0.5000, 1.5000])
    """
    labels = torch.as_tensor(labels)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.ndim != 1 or labels.numel() == 0:
        raise ValueError(f"labels must be a non-empty 1-D tensor, got shape {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got range [{labels.min()}, {labels.max()}]")
    counts = torch.bincount(labels, minlength=num_classes).to(torch.float32)
    missing = (counts == 0).nonzero().flatten().tolist()
    if missing:
        raise ValueError(f"labels hold no sample of class(es) {missing}: inverse-frequency weight undefined")
    inverse = 1.0 / counts
    return inverse * (num_classes / inverse.sum())


class TRMLoss(nn.Module):
    """Profit-weighted cross-entropy plus a halt-head BCE term (see the module docstring).

    >>> criterion = TRMLoss()
    >>> logits, halt = torch.zeros(4, 8), torch.zeros(4)
    >>> labels, pnl = torch.tensor([0, 1, 2, 3]), torch.tensor([0.05, -0.05, 0.0, 0.0])
    >>> round(float(criterion(logits, halt, labels, pnl)), 4)  # ln(8) * mean weight + 0.01 * ln(2)
    2.0864
    """

    class_weights: Tensor | None

    def __init__(
        self,
        lambda_halt: float = 0.01,
        lambda_profit: float = 1.0,
        class_weights: Tensor | None = None,
        confidence_threshold: float = 0.7,
        pnl_scale: float = PNL_SCALE,
        num_classes: int = 8,
    ) -> None:
        super().__init__()
        _check_scale(pnl_scale)
        _check_threshold(confidence_threshold)
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if lambda_halt < 0 or lambda_profit < 0:
            raise ValueError(f"lambda_halt and lambda_profit must be >= 0, got {lambda_halt}, {lambda_profit}")
        if class_weights is not None:
            class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
            if class_weights.shape != (num_classes,):
                raise ValueError(
                    f"class_weights must have shape ({num_classes},), got {tuple(class_weights.shape)}"
                )
            if not torch.isfinite(class_weights).all() or (class_weights < 0).any():
                raise ValueError(f"class_weights must be finite and >= 0, got {class_weights.tolist()}")
        self.lambda_halt = float(lambda_halt)
        self.lambda_profit = float(lambda_profit)
        self.confidence_threshold = float(confidence_threshold)
        self.pnl_scale = float(pnl_scale)
        self.num_classes = int(num_classes)
        self.register_buffer("class_weights", class_weights)

    def extra_repr(self) -> str:
        weighted = "None" if self.class_weights is None else f"tensor of {self.num_classes}"
        return (f"lambda_halt={self.lambda_halt}, lambda_profit={self.lambda_profit}, "
                f"confidence_threshold={self.confidence_threshold}, pnl_scale={self.pnl_scale}, "
                f"num_classes={self.num_classes}, class_weights={weighted}")  # fmt: skip

    def _validate(self, task_logits: Tensor, halt_logits: Tensor, labels: Tensor, pnl: Tensor) -> Tensor:
        """Check shapes, dtypes and values; return halt logits flattened to (B,)."""
        if task_logits.ndim != 2:
            raise ValueError(f"task_logits must be 2-D (B, C), got shape {tuple(task_logits.shape)}")
        batch, classes = task_logits.shape
        if batch == 0:
            raise ValueError("empty batch: task_logits has 0 rows")
        if classes != self.num_classes:
            raise ValueError(f"task_logits has {classes} classes, expected num_classes={self.num_classes}")
        for name, t in (("task_logits", task_logits), ("halt_logits", halt_logits), ("pnl", pnl)):
            if not t.dtype.is_floating_point:
                raise TypeError(f"{name} must be floating point, got {t.dtype}")
        if halt_logits.ndim == 2 and halt_logits.shape[1] == 1:
            halt_logits = halt_logits[:, 0]
        if halt_logits.shape != (batch,):
            raise ValueError(
                f"halt_logits must have shape ({batch},) or ({batch}, 1), got {tuple(halt_logits.shape)}"
            )
        if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
        if labels.shape != (batch,):
            raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}")
        if pnl.shape != (batch,):
            raise ValueError(f"pnl must have shape ({batch},), got {tuple(pnl.shape)}")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}), got range [{labels.min()}, {labels.max()}]"
            )
        for name, t in (("task_logits", task_logits), ("halt_logits", halt_logits), ("pnl", pnl)):
            _check_finite(name, t)
        return halt_logits

    def _class_weights(self, task_logits: Tensor) -> Tensor | None:
        return None if self.class_weights is None else self.class_weights.to(task_logits.dtype)

    def task_losses(self, task_logits: Tensor, labels: Tensor, pnl: Tensor) -> Tensor:
        """Per-sample task term ``lambda_profit * (1 - tanh(pnl / pnl_scale)) * CE`` (class-weighted) over the last
        dim: what ``forward`` averages, for the joint halting objectives. ``task_logits`` (..., C), ``labels`` and
        ``pnl`` (B,) with the leading dim B.

        >>> TRMLoss().task_losses(torch.zeros(2, 3, 8), torch.tensor([0, 1]), torch.tensor([0.0, 0.0])).shape
        torch.Size([2, 3])
        """
        if task_logits.ndim < 2 or labels.ndim != 1 or task_logits.shape[0] != labels.shape[0]:
            raise ValueError(f"task_logits (B, ..., C) and labels (B,) must share B, got shapes "
                             f"{tuple(task_logits.shape)} and {tuple(labels.shape)}")  # fmt: skip
        flat = task_logits.reshape(-1, task_logits.shape[-1])
        labels, pnl = (t.repeat_interleave(flat.shape[0] // len(labels)) for t in (labels, pnl))
        self._validate(flat, flat[:, 0], labels, pnl)
        ce = F.cross_entropy(flat, labels, weight=self._class_weights(flat), reduction="none")
        weights = profit_weight(pnl.to(ce.dtype), self.pnl_scale)
        return (self.lambda_profit * weights * ce).reshape(task_logits.shape[:-1])

    def forward(
        self,
        task_logits: Tensor,
        halt_logits: Tensor,
        labels: Tensor,
        pnl: Tensor,
        return_components: bool = False,
    ) -> Tensor | dict[str, Tensor | float]:
        halt_logits = self._validate(task_logits, halt_logits, labels, pnl)
        weight = self._class_weights(task_logits)
        ce = F.cross_entropy(task_logits, labels, weight=weight, reduction="none")
        weights = profit_weight(pnl.to(ce.dtype), self.pnl_scale)
        profit_weighted_task_loss = (weights * ce).mean()
        target = halt_target(task_logits, labels, self.confidence_threshold)
        halt_loss = F.binary_cross_entropy_with_logits(halt_logits, target.to(halt_logits.dtype))
        total = self.lambda_halt * halt_loss + self.lambda_profit * profit_weighted_task_loss
        if not return_components:
            return total
        return {
            "total_loss": total,
            "halt_loss": halt_loss,
            "task_loss": F.cross_entropy(task_logits.detach(), labels, weight=weight),
            "profit_weighted_task_loss": profit_weighted_task_loss,
            "halt_target_rate": target.mean(),
            "mean_profit_weight": weights.mean(),
            "lambda_halt": self.lambda_halt,
            "lambda_profit": self.lambda_profit,
        }


def _sanity_check() -> None:
    """Print the loss components on a random batch and the profit-weight table."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 8, generator=gen) * 2
    halt = torch.randn(64, generator=gen)
    labels = torch.randint(0, 8, (64,), generator=gen)
    pnl = torch.randn(64, generator=gen) * 0.03
    components = TRMLoss()(logits, halt, labels, pnl, return_components=True)
    print("TRMLoss components on a random batch of 64:")
    for key, value in components.items():
        print(f"  {key:<27} {float(value):.6f}")
    print("profit weight 1 - tanh(pnl / 0.05):")
    for p in (0.10, 0.05, 0.0, -0.05, -0.10):
        print(f"  pnl {p:+.2f} -> {float(profit_weight(torch.tensor(p))):.4f}")


if __name__ == "__main__":
    _sanity_check()
