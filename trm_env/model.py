"""The Tiny Recursive Model (Jolicoeur-Martineau 2025, "Less is More: Recursive Reasoning with Tiny Networks").

One small network ``core`` refines a latent state z and an answer state y. One *supervision step*:

    repeat n_cycles times (all but the last without gradient):
        repeat n_latent times:  z <- core(x + y + z)     # think
        y <- core(y + z)                                  # update the answer
    emit task_logits = task_head(y), halt_logit = halt_head(y); hand on (y, z) detached

``x`` is the embedded input. In stream mode (``n_chunks > 0``) step t also sees the t-th input
chunk, so evidence arrives one step at a time (used by the ``regime-chain`` task).

The halt head starts biased to "continue" (bias -5, as in TRM): an untrained head would say
"halt" with probability 0.5 at every step, i.e. after about two steps, before the answer has had
any chance to improve; with the bias it starts at p(halt) ~ 0.007 and learns when to stop. With
``halt_outputs=2`` (the ``q_halt`` objective, ``trm_env.halting_loss``) it has HRM/TRM's two Q outputs
(Q_halt, Q_continue), both started at weight 0 and bias -5, and the halt logit it emits is Q_halt - Q_continue.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trm_env.checks import check_int
from trm_env.io import atomic_path
from trm_env.loss import PNL_SCALE

__all__ = ["CHECKPOINT_FORMAT", "TRMState", "TinyRecursiveModel", "resolve_device", "torch_threads"]

CHECKPOINT_FORMAT = "trm_env/TinyRecursiveModel/v1"
_ROLLOUT_CHUNK = 4096  # rows per inference block (benchmark.py: 2048-8192 all far faster than one block)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"`` (refused when CUDA is not available) or ``"auto"`` (cuda when available)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device != "cpu" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but CUDA is not available here (use 'auto' or 'cpu')")
    return torch.device(device)


def _map_blocks(fn: Callable[[Tensor], tuple[Tensor, ...]], blocks: tuple[Tensor, ...]) -> list[tuple[Tensor, ...]]:
    """``fn`` over row blocks, one worker per torch thread, each running its ops on one thread."""
    threads = torch.get_num_threads()
    if len(blocks) == 1 or threads == 1:
        return [fn(b) for b in blocks]
    with torch_threads(1), ThreadPoolExecutor(threads) as pool:
        return list(pool.map(fn, blocks))


class TRMState(NamedTuple):
    """Recursion state, one row per sample: embedded static input, the raw chunks (B, n_chunks, chunk_dim) (or
    None; a step embeds only its own chunk, so retiring rows copies little), y, z and the steps done (B,) (rows may
    stand at different steps: live halting batches them together)."""

    x: Tensor
    chunks: Tensor | None
    y: Tensor
    z: Tensor
    step: Tensor


class _Core(nn.Module):
    """The one tiny network: a residual 2-layer MLP with post-RMSNorm, as in TRM's MLP variant."""

    def __init__(self, hidden_dim: int, expansion: int) -> None:
        super().__init__()
        self.up = nn.Linear(hidden_dim, expansion * hidden_dim)
        self.down = nn.Linear(expansion * hidden_dim, hidden_dim)
        self.norm = nn.RMSNorm(hidden_dim, elementwise_affine=False)

    def forward(self, u: Tensor) -> Tensor:
        return self.norm(u + self.down(F.gelu(self.up(u))))


class TinyRecursiveModel(nn.Module):
    """Refines (y, z) step after step; every step emits 8 strategy logits and one halt logit.

    >>> model = TinyRecursiveModel(input_dim=5, hidden_dim=16, max_steps=4)
    >>> task_logits, halt_logits = model.rollout(torch.zeros(3, 5))
    >>> tuple(task_logits.shape), tuple(halt_logits.shape)
    ((3, 4, 8), (3, 4))
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int = 8,
        hidden_dim: int = 128,
        n_latent: int = 3,
        n_cycles: int = 1,
        max_steps: int = 16,
        expansion: int = 2,
        n_chunks: int = 0,
        chunk_dim: int = 0,
        halt_bias: float = -5.0,
        halt_outputs: int = 1,
    ) -> None:
        super().__init__()
        for name, value, low in (
            ("input_dim", input_dim, 1),
            ("num_classes", num_classes, 2),
            ("hidden_dim", hidden_dim, 1),
            ("n_latent", n_latent, 1),
            ("n_cycles", n_cycles, 1),
            ("max_steps", max_steps, 1),
            ("expansion", expansion, 1),
            ("n_chunks", n_chunks, 0),
            ("chunk_dim", chunk_dim, 0),
            ("halt_outputs", halt_outputs, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if halt_outputs > 2:
            raise ValueError(f"halt_outputs must be 1 (one halt logit) or 2 (Q_halt, Q_continue), got {halt_outputs}")
        static_dim = input_dim - n_chunks * chunk_dim
        if (n_chunks > 0) != (chunk_dim > 0) or static_dim < 0:
            raise ValueError(
                f"stream input needs n_chunks > 0 and chunk_dim > 0 with n_chunks * chunk_dim <= input_dim; "
                f"got n_chunks={n_chunks}, chunk_dim={chunk_dim}, input_dim={input_dim}"
            )
        self.config: dict[str, Any] = dict(
            input_dim=input_dim, num_classes=num_classes, hidden_dim=hidden_dim, n_latent=n_latent,
            n_cycles=n_cycles, max_steps=max_steps, expansion=expansion, n_chunks=n_chunks,
            chunk_dim=chunk_dim, halt_bias=halt_bias,
        )  # fmt: skip
        if halt_outputs != 1:  # a one-output model's config (and checkpoint) stays what it was
            self.config["halt_outputs"] = halt_outputs
        self.input_dim, self.num_classes, self.max_steps = input_dim, num_classes, max_steps
        self.n_latent, self.n_cycles = n_latent, n_cycles
        self.n_chunks, self.chunk_dim, self.static_dim = n_chunks, chunk_dim, static_dim
        self.embed = nn.Linear(static_dim, hidden_dim) if static_dim else None
        self.embed_chunk = nn.Linear(chunk_dim, hidden_dim) if n_chunks else None
        self.core = _Core(hidden_dim, expansion)
        self.register_buffer("y_init", torch.randn(hidden_dim))  # fixed random starts, as in TRM
        self.register_buffer("z_init", torch.randn(hidden_dim))
        self.train_config: dict[str, Any] = {}  # set by training; saved with the weights (pnl_scale, ...)
        self.task_head = nn.Linear(hidden_dim, num_classes)
        self.halt_head = nn.Linear(hidden_dim, halt_outputs)
        nn.init.zeros_(self.halt_head.weight)
        nn.init.constant_(self.halt_head.bias, halt_bias)

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != self.input_dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (B, {self.input_dim}) (expected width {self.input_dim}), got {shape}")
        if x.numel() and not x.abs().amax() < float("inf"):  # NaN too (amax keeps it); ~10x faster than isfinite
            raise ValueError("x holds NaN or inf")

    def initial_state(self, x: Tensor) -> TRMState:
        """Embed the input once and start from the learned y and z."""
        self._check_input(x)
        batch = x.shape[0]
        hidden = self.task_head.in_features
        static = x[:, : self.static_dim]
        x_emb = self.embed(static) if self.embed is not None else x.new_zeros(batch, hidden)
        chunks = None
        if self.embed_chunk is not None:
            chunks = x[:, self.static_dim :].reshape(batch, self.n_chunks, self.chunk_dim)
        y = self.y_init.expand(batch, hidden)
        z = self.z_init.expand(batch, hidden)
        return TRMState(x_emb, chunks, y, z, torch.zeros(batch, dtype=torch.long, device=x.device))

    def _step_input(self, state: TRMState) -> Tensor:
        """x, plus in stream mode the chunk of each row's own step (none once the chunks are used up)."""
        if state.chunks is None:
            return state.x
        rows = len(state.step)
        flat = torch.arange(rows, device=state.step.device) * self.n_chunks + state.step.clamp(max=self.n_chunks - 1)
        chunk = self.embed_chunk(state.chunks.reshape(rows * self.n_chunks, self.chunk_dim).index_select(0, flat))
        streaming = state.step < self.n_chunks
        return state.x + chunk if bool(streaming.all()) else torch.where(streaming[:, None], state.x + chunk, state.x)

    def latent(self, state: TRMState) -> Tensor:
        """The answer state y of each row (B, hidden_dim): the "latent" observation's extra columns."""
        return state.y

    def _cycle(self, x: Tensor, y: Tensor, z: Tensor) -> tuple[Tensor, Tensor]:
        xy = x + y  # (x + y) + z, as x + y + z evaluates, with x + y formed once
        for _ in range(self.n_latent):
            z = self.core(xy + z)
        return self.core(y + z), z

    def step(self, state: TRMState, detach: bool = True) -> tuple[TRMState, Tensor, Tensor]:
        """Exactly one supervision step: ``(new_state, task_logits (B, C), halt_logits (B,))``.

        The state handed on is detached (as in TRM) unless ``detach=False``: then a later step's loss
        also trains the earlier steps that wrote its state (backpropagation through the steps).
        """
        new_state, task_logits, outputs = self.step_outputs(state, detach)
        return new_state, task_logits, self.halt_logit(outputs)

    @staticmethod
    def halt_logit(outputs: Tensor) -> Tensor:
        """The one halt logit per row (B,) of the halt head's outputs (B, 1 or 2): the logit, or Q_halt - Q_continue."""
        return outputs[:, 0] if outputs.shape[1] == 1 else outputs[:, 0] - outputs[:, 1]

    def step_outputs(self, state: TRMState, detach: bool = True) -> tuple[TRMState, Tensor, Tensor]:
        """``step`` with the halt head's raw outputs (B, halt_outputs) in place of the halt logit (for training)."""
        x = self._step_input(state)
        y, z = state.y, state.z
        with torch.no_grad():
            for _ in range(self.n_cycles - 1):
                y, z = self._cycle(x, y, z)
        y, z = self._cycle(x, y, z)
        task_logits = self.task_head(y)
        halt_outputs = self.halt_head(y)
        if detach:
            y, z = y.detach(), z.detach()
        new_state = TRMState(state.x, state.chunks, y, z, state.step + 1)
        return new_state, task_logits, halt_outputs

    def rollout(
        self, x: Tensor, steps: int | None = None, return_answers: bool = False
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
        """All K steps in one call: ``task_logits (B, K, C)``, ``halt_logits (B, K)``.

        With ``return_answers`` also the answer states ``y (B, K, hidden_dim)``. Runs under
        ``torch.no_grad()`` unless the model is in training mode. Without grad, large batches go
        through in row blocks of ``_ROLLOUT_CHUNK``, all K steps per block (a block's activations stay
        in cache), one block per core with single-threaded ops: a 128-wide op is too small to split.
        """
        steps = check_int("steps", self.max_steps if steps is None else steps)
        self._check_input(x)
        if self.training and torch.is_grad_enabled():
            return self._rollout_block(x, steps, return_answers)
        if x.device.type != "cpu":  # an accelerator takes the whole batch at once
            with torch.no_grad():
                return self._rollout_block(x, steps, return_answers)  # type: ignore[return-value]

        def block(rows: Tensor) -> tuple[Tensor, ...]:
            with torch.no_grad():  # grad mode is per thread
                return self._rollout_block(rows, steps, return_answers)

        blocks = _map_blocks(block, x.split(_ROLLOUT_CHUNK))
        return tuple(torch.cat(parts) for parts in zip(*blocks, strict=True))  # type: ignore[return-value]

    def _rollout_block(self, x: Tensor, steps: int, return_answers: bool) -> tuple[Tensor, ...]:
        state = self.initial_state(x)
        task, halt, answers = [], [], []
        for _ in range(steps):
            state, task_logits, halt_logits = self.step(state)
            task.append(task_logits)
            halt.append(halt_logits)
            answers.append(state.y)
        out = torch.stack(task, dim=1), torch.stack(halt, dim=1)
        return (*out, torch.stack(answers, dim=1)) if return_answers else out

    # ---- checkpoints -------------------------------------------------------------------------

    @property
    def pnl_scale(self) -> float:
        """The pnl scale of the profit weight this model was trained with (``PNL_SCALE`` if unknown)."""
        return float(self.train_config.get("pnl_scale", PNL_SCALE))

    def save(self, path: str | Path) -> None:
        """Write ``{format, config, train_config, state_dict}`` atomically (temp file, fsync, rename)."""
        state = {name: tensor.detach().cpu() for name, tensor in self.state_dict().items()}  # loads on any device
        payload = {"format": CHECKPOINT_FORMAT, "config": self.config, "train_config": self.train_config,
                   "state_dict": state}  # fmt: skip
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)

    @classmethod
    def load(cls, path: str | Path, input_dim: int | None = None) -> TinyRecursiveModel:
        """Restore a saved model (a ``model.pt`` or its run directory) in eval mode.

        Refuses, with ``ValueError``, a missing or corrupt file, a file that is not a checkpoint of
        this project, or (when ``input_dim`` is given) one trained for another input width.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "model.pt"
        if not path.is_file():
            raise ValueError(f"checkpoint {str(path)!r} does not exist")
        if path.stat().st_size == 0:
            raise ValueError(f"checkpoint {str(path)!r} is corrupt or unreadable: the file is empty (0 bytes)")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ValueError(f"checkpoint {str(path)!r} is corrupt or unreadable: {type(exc).__name__}: {exc}") from exc
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{str(path)!r} is not a TinyRecursiveModel checkpoint (format {CHECKPOINT_FORMAT})")
        config = payload["config"]
        if input_dim is not None and config["input_dim"] != input_dim:
            raise ValueError(
                f"checkpoint {str(path)!r} expects input width {config['input_dim']}, but the task has {input_dim}"
            )
        model = cls(**config)
        try:
            model.load_state_dict(payload["state_dict"])
        except RuntimeError as exc:
            raise ValueError(f"checkpoint {str(path)!r} does not match its own config: {exc}") from exc
        model.train_config = dict(payload.get("train_config") or _run_train_config(path.parent))
        return model.eval()


def _run_train_config(folder: Path) -> dict[str, Any]:
    """The ``train`` section of the run's ``config.json`` beside an older checkpoint without one inside."""
    config = folder / "config.json"
    return json.loads(config.read_text()).get("train", {}) if config.is_file() else {}
