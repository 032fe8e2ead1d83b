"""One Accelerate training loop for GPT-1, shared by fine-tuning (`gpt1_hf.finetuning`) and pretraining
(`gpt1_hf.pretraining`). No HF `Trainer`: everything the paper's recipes need is written out here.

* Optimiser: AdamW with *decoupled* weight decay applied to every weight with ``ndim >= 2`` (all matrices, the token
  and position embeddings included) and never to biases or LayerNorm gains -- exactly the set the original code
  (openai/finetune-transformer-lm, ``adam(..., l2=0.01, vector_l2=False)``) regularised. ``fused=True`` is used when
  the device supports it, else ``foreach``.
* Learning-rate schedules count OPTIMIZER UPDATES (never micro-batches): update ``k`` (0-based) uses
  ``lr_max * lr_factor(kind, k, warmup, total)``; warmup is linear ``(k+1)/warmup``, then ``linear`` decays to 0 at
  ``total`` (fine-tuning: warmup = 0.2% of the updates) or ``cosine`` does a half cosine to 0 (pretraining).
* Batching: ``global_batch_size = per_device_batch_size x num_processes x gradient_accumulation_steps``; a
  combination that does not divide is an error raised before anything runs. The loss of an update is the
  example-weighted mean over its micro-batches, so one batch of 4 and 2 micro-batches of 2 give the same gradient.
* Mixed precision through Accelerate (``bf16`` autocast on CPU and GPU; ``fp16`` with its grad scaler on GPU),
  gradient clipping, optional gradient checkpointing and ``torch.compile``.
* Data order is a pure function of ``(seed, epoch)`` (shuffled or length-grouped), cut into per-process micro-batches
  by this module, so a resumed run skips exactly the micro-batches already seen in its epoch without reading them.
* Checkpoints (``<output_dir>/checkpoints/step-NNNNNNNN``) hold the model (safetensors, `save_pretrained` layout,
  loadable on its own; for a PEFT/LoRA model its adapter, ``adapter_model.safetensors``), optimizer, scheduler,
  every process's RNG states and ``trainer_state.json``. They are written to a temporary folder that is renamed into
  place once complete; the ``latest`` pointer file is replaced atomically afterwards, so a kill at any moment leaves
  ``latest`` naming a complete checkpoint. Only the main process writes.
  ``torch.load`` is only ever called with ``weights_only=True``.
* Resuming (``resume_from_checkpoint="latest"`` or a path) restores model, optimizer, scheduler, RNG states and the
  data position; a killed-and-resumed run ends bitwise identical to an uninterrupted one (same seed, same hardware).
* Budgets: ``max_steps`` (updates; it also sets the schedule length), ``max_train_tokens`` (non-padding tokens seen
  by all processes) and ``max_time`` (seconds of this invocation): the loop stops after the update that reaches the
  budget, saves a checkpoint and returns (resuming continues the same schedule).
* Evaluation: ``eval_fn(trainer) -> dict`` at the end of each epoch or every ``eval_every_steps`` updates (run with the
  RNG state forked, so evaluating never changes training); ``metric_for_best_model`` keeps ``<output_dir>/best``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

logger = logging.getLogger(__name__)

__all__ = [
    "TrainingArguments",
    "TrainerState",
    "TrainResult",
    "Trainer",
    "BatchConfig",
    "resolve_batch_config",
    "lr_factor",
    "build_lr_scheduler",
    "param_groups_for_weight_decay",
    "build_optimizer",
    "create_accelerator",
    "find_checkpoint",
    "save_directory_atomically",
    "recover_directory",
    "CHECKPOINTS_DIR",
    "LATEST_POINTER",
    "StopTraining",
    "predict_logits",
    "write_text_atomically",
]

CHECKPOINTS_DIR = "checkpoints"
LATEST_POINTER = "latest"
TRAINER_STATE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
RNG_FILE = "rng_state.pt"
DEEPSPEED_DIR = "deepspeed"  # DeepSpeed's engine checkpoint (optimizer partitions) inside a checkpoint folder
DEEPSPEED_TAG = "engine"
BEST_DIR = "best"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # PEFT's save_pretrained(safe_serialization=True) of a LoRA model


class StopTraining(Exception):
    """Raise from a callback to stop training cleanly after the current update (a checkpoint is saved)."""


# ======================================================================================================================
# Arguments and state
# ======================================================================================================================


@dataclass
class TrainingArguments:
    """Everything the loop needs. Defaults are the paper's fine-tuning recipe (§4.1)."""

    output_dir: str = "outputs/run"
    learning_rate: float = 6.25e-5
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float | None = 1.0
    lr_scheduler_type: str = "linear"  # "linear" | "cosine" | "constant"
    warmup_ratio: float = 0.002
    warmup_steps: int | None = None  # overrides warmup_ratio
    num_train_epochs: int = 3
    max_steps: int | None = None  # updates; overrides num_train_epochs for the schedule length
    max_train_tokens: int | None = None
    max_time: float | None = None  # seconds, this invocation
    per_device_batch_size: int | None = None
    global_batch_size: int | None = 32
    gradient_accumulation_steps: int | None = None
    seed: int = 42
    mixed_precision: str | None = None  # "auto" | "no" | "bf16" | "fp16"; None: Accelerate's config / env ("no")
    cpu: bool = False
    eval_every_steps: int | None = None  # None: at the end of each epoch
    save_every_steps: int | None = None
    save_at_epoch_end: bool = True
    save_total_limit: int | None = 2  # step checkpoints kept (the best model lives in <output_dir>/best)
    save_final_checkpoint: bool = True
    metric_for_best_model: str | None = None
    greater_is_better: bool = True
    resume_from_checkpoint: str | None = None  # "latest", "auto" (latest if any, else fresh) or a path
    torch_compile: bool = False
    gradient_checkpointing: bool = False
    group_by_length: bool = False
    shuffle: bool = True
    dataloader_num_workers: int = 0
    log_every_steps: int = 10
    progress_bar: bool = True
    final_evaluation: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainerState:
    """Progress of a run; saved in every checkpoint as ``trainer_state.json``."""

    global_step: int = 0  # optimizer updates done
    epoch: int = 0  # current epoch (0-based)
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed (per process)
    tokens_seen: int = 0  # non-padding tokens, all processes
    examples_seen: int = 0  # all processes
    train_time: float = 0.0  # seconds of training over all sessions
    total_steps: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    last_eval_step: int | None = None
    log_history: list[dict] = field(default_factory=list)
    eval_history: list[dict] = field(default_factory=list)
    stop_reason: str | None = None

    @classmethod
    def from_dict(cls, data: dict) -> TrainerState:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class TrainResult:
    global_step: int
    epoch: int
    tokens_seen: int
    examples_seen: int
    train_time: float
    stop_reason: str
    metrics: dict[str, float] | None
    best_metric: float | None
    best_step: int | None
    eval_history: list[dict]
    log_history: list[dict]


# ======================================================================================================================
# Batch sizes
# ======================================================================================================================


@dataclass(frozen=True)
class BatchConfig:
    per_device_batch_size: int
    num_processes: int
    gradient_accumulation_steps: int

    @property
    def global_batch_size(self) -> int:
        return self.per_device_batch_size * self.num_processes * self.gradient_accumulation_steps

    @property
    def micro_batch_size(self) -> int:
        """Examples per micro-step over all processes."""
        return self.per_device_batch_size * self.num_processes


def resolve_batch_config(
    per_device_batch_size: int | None,
    global_batch_size: int | None,
    num_processes: int = 1,
    gradient_accumulation_steps: int | None = None,
) -> BatchConfig:
    """global = per_device x processes x accumulation. Any two determine the third; all three must agree.

    Raises ValueError (before any training) when the combination does not divide."""
    for name, value in (("per_device_batch_size", per_device_batch_size), ("global_batch_size", global_batch_size),
                        ("gradient_accumulation_steps", gradient_accumulation_steps)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    p = int(num_processes)
    if per_device_batch_size is None and global_batch_size is None:
        raise ValueError("set per_device_batch_size or global_batch_size")
    if global_batch_size is None:
        accum = gradient_accumulation_steps or 1
        return BatchConfig(int(per_device_batch_size), p, int(accum))
    g = int(global_batch_size)
    if per_device_batch_size is None:
        accum = int(gradient_accumulation_steps or 1)
        if g % (p * accum):
            raise ValueError(
                f"global_batch_size={g} is not divisible by num_processes ({p}) x gradient_accumulation_steps "
                f"({accum}); pick a global batch that is, or set per_device_batch_size."
            )
        return BatchConfig(g // (p * accum), p, accum)
    b = int(per_device_batch_size)
    if g % (b * p):
        raise ValueError(
            f"global_batch_size={g} is not a multiple of per_device_batch_size ({b}) x num_processes ({p}) = {b * p}: "
            "global = per_device x processes x gradient accumulation must hold exactly."
        )
    accum = g // (b * p)
    if gradient_accumulation_steps is not None and int(gradient_accumulation_steps) != accum:
        raise ValueError(
            f"gradient_accumulation_steps={gradient_accumulation_steps} contradicts global_batch_size={g} = "
            f"per_device_batch_size {b} x num_processes {p} x {accum}."
        )
    return BatchConfig(b, p, accum)


# ======================================================================================================================
# Schedules and optimizer
# ======================================================================================================================


def lr_factor(kind: str, step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate for optimizer update number ``step`` (0-based).

    Warmup: ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` updates (so the first update is not wasted
    with lr 0). Then with ``p = (step - warmup) / (total - warmup)`` in [0, 1): ``linear`` = 1 - p, ``cosine`` =
    (1 + cos(pi p)) / 2, ``constant`` = 1. Past ``total_steps`` the factor is 0 (linear/cosine)."""
    if kind not in ("linear", "cosine", "constant"):
        raise ValueError(f"unknown lr_scheduler_type {kind!r} (use linear, cosine or constant)")
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = (step - warmup_steps) / span
    if progress >= 1.0:
        return 0.0
    if kind == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class _LRFactor:
    """Picklable-free callable (LambdaLR stores callables' __dict__ in its state_dict: plain values only)."""

    def __init__(self, kind: str, warmup_steps: int, total_steps: int):
        self.kind, self.warmup_steps, self.total_steps = kind, int(warmup_steps), int(total_steps)

    def __call__(self, step: int) -> float:
        return lr_factor(self.kind, step, self.warmup_steps, self.total_steps)


def build_lr_scheduler(optimizer, kind: str, warmup_steps: int, total_steps: int):
    """A LambdaLR stepped once per optimizer update."""
    lr_factor(kind, 0, warmup_steps, total_steps)  # validates kind
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _LRFactor(kind, warmup_steps, total_steps))


def warmup_steps_for(total_steps: int, warmup_steps: int | None, warmup_ratio: float) -> int:
    if warmup_steps is not None:
        return max(0, int(warmup_steps))
    return int(math.ceil(max(0.0, warmup_ratio) * total_steps))


def param_groups_for_weight_decay(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weights with ndim >= 2 (all matrices incl. embeddings) decay; biases and LayerNorm gains
    (ndim < 2) do not. Tied parameters appear once. Group dicts carry ``names`` for inspection."""
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    seen = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.ndim >= 2:
            decay.append(p)
            decay_names.append(name)
        else:
            no_decay.append(p)
            no_decay_names.append(name)
    groups = [{"params": decay, "weight_decay": weight_decay, "names": decay_names}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "names": no_decay_names})
    return groups


def build_optimizer(model: torch.nn.Module, args: TrainingArguments) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay) with ``fused`` kernels where the device has them, else ``foreach``."""
    groups = param_groups_for_weight_decay(model, args.weight_decay)
    for g in groups:
        g.pop("names")
    kwargs = dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    device = next(model.parameters()).device
    if device.type in ("cuda", "cpu", "mps", "xpu"):
        try:
            return torch.optim.AdamW(groups, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            pass
    return torch.optim.AdamW(groups, foreach=True, **kwargs)


# ======================================================================================================================
# Accelerator
# ======================================================================================================================


MIXED_PRECISION_CHOICES = ("auto", "no", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX512-BF16, from /proc/cpuinfo). There bf16 autocast is
    faster than fp32 (~4x on AMX); on other CPUs (AVX2 only, e.g.) torch emulates bf16 and training runs ~5-10x
    slower than fp32 (docs/finetuning.md: 30 updates of the embedded default, 34.2 s in bf16 vs 6.5 s in fp32)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            flags = handle.read()
    except OSError:  # not Linux: do not guess
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_mixed_precision(mixed_precision: str | None, cpu: bool = False) -> str | None:
    """``"auto"`` -> ``"bf16"`` where it is fast (a CUDA GPU with bf16, or a CPU with native bf16), else ``"no"``;
    every other value is returned unchanged."""
    if mixed_precision != "auto":
        return mixed_precision
    if not cpu and torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"


def create_accelerator(mixed_precision: str | None = None, cpu: bool = False):
    """An `accelerate.Accelerator`. ``mixed_precision=None`` takes the value of ``accelerate launch`` / ``accelerate
    config`` (environment), else "no"; ``"auto"``: see `resolve_mixed_precision`. In a single process, a previously
    created state with another mixed-precision setting (several runs in one Python process, e.g. tests or the
    layer-transfer sweep) is reset first."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    if mixed_precision not in (None, *MIXED_PRECISION_CHOICES):
        raise ValueError(f"mixed_precision must be one of {', '.join(MIXED_PRECISION_CHOICES)}, got {mixed_precision!r}")
    # without an accelerator, processes started by torchrun / `accelerate launch --multi_gpu` join as MULTI_CPU (gloo)
    cpu = cpu or not torch.cuda.is_available()
    mixed_precision = resolve_mixed_precision(mixed_precision, cpu)
    if mixed_precision is None:  # resolved here: an existing state of an earlier run must not leak its setting
        mixed_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower() or "no"
    try:
        acc = Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    except ValueError as e:
        if "already been initialized" not in str(e) or PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state()
        acc = Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    _enable_fsdp_on_cpu_processes(acc, mixed_precision)
    return acc


def _enable_fsdp_on_cpu_processes(acc, mixed_precision: str) -> None:
    """FSDP over gloo on CPU processes, for an FSDP launch (``ACCELERATE_USE_FSDP=true``, e.g. ``accelerate launch
    --config_file configs/fsdp.yaml``) whose processes came up as ``MULTI_CPU`` (``--cpu``, or no CUDA).

    Accelerate enables FSDP only for accelerator process groups (``accelerate/state.py``): on CPU processes it
    ignores the FSDP request and the processes would train as plain DDP. PyTorch's FSDP2 (``fully_shard``) runs on a
    CPU device mesh over gloo, and so does Accelerate's FSDP2 code path once the state says FSDP, so the state is
    switched here, with the `FullyShardedDataParallelPlugin` the launcher's ``FSDP_*`` environment describes (what
    Accelerate would have built on GPUs). `gpt1_hf.distributed.preflight` only lets this happen with ``--cpu``."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if os.environ.get("ACCELERATE_USE_FSDP", "false").strip().lower() not in ("1", "true", "yes"):
        return
    if acc.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin()
    if mixed_precision not in (None, "no"):
        plugin.set_mixed_precision(mixed_precision)
    # PartialState too: every later AcceleratorState() copies PartialState's fields over its own
    PartialState().distributed_type = acc.state.distributed_type = DistributedType.FSDP
    acc.state.fsdp_plugin = plugin
    logger.info("FSDP%s over gloo on %d CPU processes", plugin.fsdp_version, acc.num_processes)


# ======================================================================================================================
# Atomic files and checkpoints
# ======================================================================================================================


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            try:
                with open(os.path.join(root, name), "rb") as f:
                    os.fsync(f.fileno())
            except OSError:
                pass
        _fsync_dir(Path(root))


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write to a temporary sibling, fsync, then `os.replace` (readers see the old or the new file, never a part)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _exchange_directories(a: Path, b: Path) -> bool:
    """Swap two existing paths in ONE atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the platform or
    the filesystem cannot (the caller then falls back to two renames)."""
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = getattr(libc, "renameat2", None)
        if renameat2 is None:
            return False
        at_fdcwd, rename_exchange = -100, 2
        return renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0
    except (OSError, AttributeError, TypeError):
        return False


def _old_copies(final_dir: Path) -> list[Path]:
    return sorted(final_dir.parent.glob(f".old-{final_dir.name}-*"), key=lambda p: p.stat().st_mtime)


def recover_directory(final_dir: str | os.PathLike) -> Path | None:
    """Repair what a kill in the middle of `save_directory_atomically`'s fallback swap (two renames: the old folder
    moved aside to ``.old-<name>-*``, then the new one renamed in) can leave: when ``final_dir`` is missing, the old
    folder moved aside is renamed back; leftover old copies are deleted once ``final_dir`` exists. Returns
    ``final_dir`` when it exists afterwards."""
    final_dir = Path(final_dir)
    if not final_dir.parent.is_dir():
        return None
    old = _old_copies(final_dir)
    if not final_dir.exists() and old:
        os.replace(old.pop(), final_dir)  # the most recent complete copy
        _fsync_dir(final_dir.parent)
        logger.warning("restored %s from the copy left by an interrupted save", final_dir)
    if final_dir.exists():
        for stale in old:
            shutil.rmtree(stale, ignore_errors=True)
        return final_dir
    return None


def save_directory_atomically(final_dir: str | os.PathLike, write_fn: Callable[[Path], None]) -> Path:
    """Run ``write_fn(tmp_dir)`` into a temporary sibling folder, then put it in place as ``final_dir``.

    If ``final_dir`` exists the two folders are swapped in one atomic step (``renameat2(RENAME_EXCHANGE)`` on Linux)
    and the old one, now at the temporary name, is deleted after: at every moment ``final_dir`` is the complete old
    or the complete new folder. Where the swap is not available, the old folder is moved aside to ``.old-<name>-*``
    and the new one renamed in (an error in between puts the old one back; after a kill in between,
    `recover_directory` -- called at the start of the next save -- restores it). If ``write_fn`` raises, the
    temporary folder is removed and ``final_dir`` is untouched."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(final_dir)
    tmp = final_dir.with_name(f".tmp-{final_dir.name}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        write_fn(tmp)
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not final_dir.exists():
        os.replace(tmp, final_dir)
        _fsync_dir(final_dir.parent)
        return final_dir
    if _exchange_directories(tmp, final_dir):  # final_dir: the new folder; tmp: the old one
        _fsync_dir(final_dir.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        return final_dir
    trash = final_dir.with_name(f".old-{final_dir.name}-{uuid.uuid4().hex[:8]}")
    os.replace(final_dir, trash)
    try:
        os.replace(tmp, final_dir)
    except BaseException:
        os.replace(trash, final_dir)  # the old folder back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(final_dir.parent)
    shutil.rmtree(trash, ignore_errors=True)
    return final_dir


def _is_complete_checkpoint(path: Path) -> bool:
    """The files every checkpoint has, plus the model's weights: ``model.safetensors`` (or a sharded index) for a
    plain model, ``adapter_model.safetensors`` for a PEFT model (``finetune(lora=True)``: only the adapters, the
    ``modules_to_save`` head and the trainable token rows are saved; the frozen base is reloaded from its source)."""
    return all((path / name).is_file() for name in (TRAINER_STATE, SCHEDULER_FILE, RNG_FILE)) and (
        (path / "model.safetensors").is_file() or (path / "model.safetensors.index.json").is_file()
        or (path / ADAPTER_WEIGHTS).is_file()
    ) and ((path / OPTIMIZER_FILE).is_file() or (path / DEEPSPEED_DIR).is_dir())


def find_checkpoint(output_dir: str | os.PathLike, which: str = "latest") -> Path | None:
    """Resolve ``which`` ("latest"/"auto" or a path) to a complete checkpoint folder.

    "latest" reads ``<output_dir>/checkpoints/latest``; "auto" does the same but returns None when there is no
    checkpoint (start fresh); a path may be a checkpoint folder, a run's output_dir or its checkpoints folder."""
    if which in ("latest", "auto"):
        root = Path(output_dir) / CHECKPOINTS_DIR
        pointer = root / LATEST_POINTER
        if not pointer.is_file():
            if which == "auto":
                return None
            raise FileNotFoundError(
                f"resume_from_checkpoint='latest' but {pointer} does not exist: no checkpoint has been completed in "
                f"{output_dir} (use 'auto' to start fresh when there is none)."
            )
        path = root / pointer.read_text(encoding="utf-8").strip()
    else:
        path = Path(which)
        if (path / CHECKPOINTS_DIR / LATEST_POINTER).is_file():
            return find_checkpoint(path, "latest")
        if (path / LATEST_POINTER).is_file() and not _is_complete_checkpoint(path):
            path = path / (path / LATEST_POINTER).read_text(encoding="utf-8").strip()
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {path} does not exist")
    if not _is_complete_checkpoint(path):
        raise FileNotFoundError(
            f"{path} is not a complete training checkpoint (needs {TRAINER_STATE}, {OPTIMIZER_FILE}, "
            f"{SCHEDULER_FILE}, {RNG_FILE} and model.safetensors, or {ADAPTER_WEIGHTS} for a LoRA run)"
        )
    return path


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _read_model_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = (
        [folder / "model.safetensors"]
        if (folder / "model.safetensors").is_file()
        else [folder / f for f in sorted(set(json.loads((folder / "model.safetensors.index.json").read_text())
                                                 ["weight_map"].values()))]
    )
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _is_peft_model(model: torch.nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def _load_adapter_weights(model: torch.nn.Module, folder: Path) -> None:
    """A PEFT checkpoint (``adapter_model.safetensors``) into a PEFT model whose adapters are in place:
    `peft.set_peft_model_state_dict` maps the saved keys (no adapter name) onto the model's. The frozen base weights
    are not in the file (they come from the base model the run loaded again); every trainable tensor must be."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = folder / ADAPTER_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {folder} has no {ADAPTER_WEIGHTS}, but this run trains a PEFT (LoRA) model: resume a LoRA "
            "run from a checkpoint of a LoRA run (a full-model checkpoint holds model.safetensors)."
        )
    result = set_peft_model_state_dict(model, load_file(str(path)))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    missing = [k for k in result.missing_keys if k in trainable]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise ValueError(f"LoRA checkpoint {folder} does not match the model's adapters: missing {missing}, "
                         f"unexpected {unexpected} (resume with the same --lora_r / --lora_target_modules)")


def _load_model_weights(model: torch.nn.Module, folder: Path) -> None:
    if _is_peft_model(model):
        _load_adapter_weights(model, folder)
        return
    if not ((folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()):
        raise FileNotFoundError(
            f"checkpoint {folder} has no model.safetensors"
            + (f" but {ADAPTER_WEIGHTS}: it was written by a LoRA run; resume it with --lora (same adapter "
               "settings)." if (folder / ADAPTER_WEIGHTS).is_file() else "")
        )
    state = _read_model_weights(folder)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # tied parameters (lm_head.weight = tokens_embed.weight) are stored once by save_pretrained
    tied = {n for n, p in model.named_parameters(remove_duplicate=False)} - {n for n, _ in model.named_parameters()}
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(f"checkpoint {folder} does not match the model: missing {missing}, unexpected {unexpected}")


def _meta_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` whose parameters are on the meta device (no memory; buffers are copied): the plain module
    structure the sharded engines' gathered weights are loaded into for `save_pretrained`."""
    memo = {}
    for p in model.parameters():  # shared parameters appear once: the copy shares them too
        memo[id(p)] = torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    return copy.deepcopy(model, memo)


def _parameters_to_meta(model: torch.nn.Module) -> None:
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None and p.device.type != "meta":
                module._parameters[name] = torch.nn.Parameter(torch.empty_like(p, device="meta"),
                                                              requires_grad=p.requires_grad)


def _tied_parameter_groups(model: torch.nn.Module) -> list[list[str]]:
    """Names that share one parameter (``lm_head.weight`` / ``transformer.tokens_embed.weight``), in module order."""
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _load_into_skeleton(skeleton: torch.nn.Module, state: dict, tied_groups: list[list[str]]) -> torch.nn.Module:
    """Put a full state dict into the meta copy (tensors assigned, not copied), re-tie shared parameters, check that
    every parameter got a value."""
    # keep the model's dtypes (DeepSpeed ZeRO-3 gathers its 16-bit copy of the weights)
    dtypes = {name: t.dtype for name, t in skeleton.state_dict().items()}
    state = {k: v.to(dtypes[k]) if torch.is_tensor(v) and v.is_floating_point() and k in dtypes
             and dtypes[k].is_floating_point else v for k, v in state.items()}
    skeleton.load_state_dict(state, strict=False, assign=True)
    for names in tied_groups:
        source = next((n for n in names if n in state), names[0])
        param = skeleton.get_parameter(source)
        for name in names:
            owner, _, attr = name.rpartition(".")
            setattr(skeleton.get_submodule(owner) if owner else skeleton, attr, param)
    on_meta = [n for n, p in skeleton.named_parameters() if p.device.type == "meta"]
    if on_meta:
        raise RuntimeError(f"the gathered state dict lacks {on_meta[:8]} ({len(on_meta)} tensors)")
    return skeleton


def predict_logits(model, dataset, collate_fn: Callable, accelerator, batch_size: int = 32,
                   forward_fn: Callable | None = None, num_workers: int = 0) -> dict[str, np.ndarray]:
    """Run ``model`` over ``dataset`` on every process (call it in eval mode under ``torch.no_grad``).

    Returns gathered numpy arrays: ``logits`` and, when the batches have them, ``labels`` (popped from the batch
    before the forward pass), in dataset order, without the duplicates Accelerate adds to even out the processes."""
    acc = accelerator
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn,
                                         num_workers=num_workers)
    loader = acc.prepare_data_loader(loader, device_placement=True)
    logits, labels = [], []
    for batch in loader:
        batch_labels = batch.pop("labels", None)
        out = forward_fn(model, batch) if forward_fn else model(**batch).logits
        logits.append(acc.gather_for_metrics(out.float().contiguous()).cpu())
        if batch_labels is not None:
            labels.append(acc.gather_for_metrics(batch_labels.contiguous()).cpu())
    result = {"logits": torch.cat(logits).numpy() if logits else np.zeros((0,))}
    if labels:
        result["labels"] = torch.cat(labels).numpy()
    return result


# ======================================================================================================================
# Trainer
# ======================================================================================================================


def _count_tokens(batch: dict) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def _default_loss(model, batch):
    return model(**batch).loss


class Trainer:
    """The training loop (see the module docstring).

    Engines: one process, DDP, FSDP (1 or 2) and DeepSpeed, as the `Accelerator` says. Under the sharded engines
    (FSDP, DeepSpeed) every save gathers the full weights on all processes (``accelerator.get_state_dict``, a
    collective) and the main process writes them as a normal ``save_pretrained`` folder; the optimizer state of a
    checkpoint is the full (gathered) one under FSDP and DeepSpeed's own engine checkpoint under DeepSpeed
    (docs/distributed.md).

    Args:
        model: a `PreTrainedModel` (saved with `save_pretrained` in checkpoints and ``best/``).
        args: `TrainingArguments`.
        train_dataset: anything indexable with ``len`` (a `datasets.Dataset`); examples go through ``data_collator``.
        data_collator: list of examples -> dict of tensors (``input_ids``, ``attention_mask``, ``labels`` ...).
        eval_fn: ``eval_fn(trainer) -> dict[str, float]``, called on every process (use `predict` / `evaluate_loss`).
        lengths: per-example lengths for ``args.group_by_length``.
        loss_fn: ``loss_fn(model, batch) -> scalar`` (default ``model(**batch).loss``).
        save_fn: ``save_fn(folder)`` writes extra files (the tokenizer) next to every saved model.
        callbacks: called as ``callback(trainer)`` after every optimizer update (after evaluation/checkpointing);
            raising `StopTraining` stops cleanly, any other exception propagates (a "kill").
        accelerator: reuse an existing `Accelerator` (else one is created from ``args``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        args: TrainingArguments,
        train_dataset,
        data_collator: Callable,
        eval_fn: Callable[[Trainer], dict] | None = None,
        lengths: Sequence[int] | None = None,
        loss_fn: Callable | None = None,
        save_fn: Callable[[Path], None] | None = None,
        callbacks: Iterable[Callable[[Trainer], None]] = (),
        accelerator=None,
    ):
        from accelerate.utils import DistributedType

        self.args = args
        self.accelerator = accelerator or create_accelerator(args.mixed_precision, args.cpu)
        acc = self.accelerator
        self.batch = resolve_batch_config(args.per_device_batch_size, args.global_batch_size, acc.num_processes,
                                          args.gradient_accumulation_steps)
        if len(train_dataset) == 0:
            raise ValueError("the training dataset is empty")
        if args.group_by_length and lengths is None:
            raise ValueError("group_by_length needs the examples' lengths")
        self.train_dataset = train_dataset
        self.data_collator = data_collator
        self.eval_fn = eval_fn
        self.lengths = list(lengths) if lengths is not None else None
        self.loss_fn = loss_fn or _default_loss
        self.save_fn = save_fn
        self.callbacks = list(callbacks)
        self.output_dir = Path(args.output_dir)
        self.state = TrainerState()
        self._session_start = None

        self.micro_batches_per_epoch = math.ceil(len(train_dataset) / self.batch.micro_batch_size)
        self.updates_per_epoch = math.ceil(self.micro_batches_per_epoch / self.batch.gradient_accumulation_steps)
        if args.max_steps is not None:
            if args.max_steps < 1:
                raise ValueError(f"max_steps must be >= 1, got {args.max_steps}")
            total = int(args.max_steps)
        else:
            if args.num_train_epochs < 1:
                raise ValueError(f"num_train_epochs must be >= 1, got {args.num_train_epochs}")
            total = int(args.num_train_epochs) * self.updates_per_epoch
        self.total_steps = total
        self.warmup_steps = warmup_steps_for(total, args.warmup_steps, args.warmup_ratio)
        self.state.total_steps = total

        if args.gradient_checkpointing:
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
                model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.engine = {DistributedType.FSDP: "fsdp", DistributedType.DEEPSPEED: "deepspeed"}.get(
            acc.distributed_type, "ddp")
        # sharded engines: the plain module structure (parameters on the meta device, no memory) that the gathered
        # weights are loaded into for saving, and the names that share one parameter (lm_head = tokens_embed)
        self._skeleton = _meta_copy(model) if self.sharded else None
        self._tied_groups = _tied_parameter_groups(model)
        if self.engine == "deepspeed":
            self._configure_deepspeed()
        model.to(acc.device)
        optimizer = build_optimizer(model, args)
        self.scheduler = build_lr_scheduler(optimizer, args.lr_scheduler_type, self.warmup_steps, total)
        if args.torch_compile:
            model.compile()
        self.model, self.optimizer = acc.prepare(model, optimizer)

    #: gpt1_hf.distributed.preflight lets FSDP / DeepSpeed launches through only when this is True
    supports_sharded_engines = True

    @property
    def sharded(self) -> bool:
        """FSDP or DeepSpeed: the weights/optimizer state may be split over the processes."""
        return self.engine in ("fsdp", "deepspeed")

    def _configure_deepspeed(self) -> None:
        """Fill the batch entries DeepSpeed needs before ``accelerator.prepare(model, optimizer)``: without a
        dataloader Accelerate cannot resolve ``"auto"`` for ``train_micro_batch_size_per_gpu`` (and fails). Not run
        here (no DeepSpeed install); see docs/distributed.md."""
        if self.batch.gradient_accumulation_steps > 1:
            raise ValueError(
                f"global batch {self.batch.global_batch_size} = per_device {self.batch.per_device_batch_size} x "
                f"{self.batch.num_processes} processes x {self.batch.gradient_accumulation_steps} accumulation: the "
                "loop does not accumulate gradients under DeepSpeed (the engine steps at every backward); use "
                f"per_device_batch_size={self.batch.global_batch_size // self.batch.num_processes}."
            )
        acc = self.accelerator
        config = acc.state.deepspeed_plugin.deepspeed_config
        config["train_micro_batch_size_per_gpu"] = self.batch.per_device_batch_size
        config["gradient_accumulation_steps"] = self.batch.gradient_accumulation_steps
        config["train_batch_size"] = self.batch.global_batch_size
        acc.gradient_accumulation_steps = self.batch.gradient_accumulation_steps

    # ------------------------------------------------------------------------------------------------------------------
    @property
    def unwrapped_model(self):
        return self.accelerator.unwrap_model(self.model)

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This process's micro-batches (lists of example indices) for ``epoch``: a pure function of (seed, epoch)."""
        n = len(self.train_dataset)
        gm = self.batch.micro_batch_size
        seed = self.args.seed * 1_000_003 + epoch
        if self.args.group_by_length:
            from .data import length_grouped_indices

            order = length_grouped_indices(self.lengths, gm, seed=seed % (2**32))
        elif self.args.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        else:
            order = list(range(n))
        p, b, rank = self.batch.num_processes, self.batch.per_device_batch_size, self.accelerator.process_index
        batches = []
        for start in range(0, n, gm):
            chunk = order[start:start + gm]
            if p > 1 and len(chunk) < gm:  # every process needs a batch of the same size: wrap around
                chunk = (chunk + order * (gm // n + 1))[:gm]
            batches.append(chunk[rank * b:(rank + 1) * b] if p > 1 else chunk)
        return batches

    def _dataloader(self, batches: list[list[int]]):
        return torch.utils.data.DataLoader(
            self.train_dataset,
            batch_sampler=batches,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
            pin_memory=self.accelerator.device.type == "cuda",
            # own generator: creating the iterator must not draw from the global RNG (resume exactness)
            generator=torch.Generator().manual_seed(self.args.seed),
        )

    # ------------------------------------------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        args, acc = self.args, self.accelerator
        if acc.is_main_process:  # a best/ save interrupted by a kill in an earlier session
            recover_directory(self.output_dir / BEST_DIR)
            for stale in self.output_dir.glob(f".tmp-{BEST_DIR}-*"):  # an unfinished write, or the old copy of a swap
                shutil.rmtree(stale, ignore_errors=True)
        if args.resume_from_checkpoint:
            ckpt = find_checkpoint(self.output_dir, args.resume_from_checkpoint)
            if ckpt is not None:
                self.load_checkpoint(ckpt)
        self._session_start = time.perf_counter()
        state = self.state
        accum = self.batch.gradient_accumulation_steps
        progress = None
        if args.progress_bar and acc.is_main_process:
            from tqdm.auto import tqdm

            progress = tqdm(total=self.total_steps, initial=state.global_step, desc="training", dynamic_ncols=True)
        self.model.train()
        window_loss = torch.zeros((), device=acc.device)
        window_updates = 0
        window_tokens = 0
        window_time = 0.0  # seconds spent in updates since the last log entry (evaluation and saving excluded)
        stop_reason = "completed" if state.global_step >= self.total_steps else None
        last_session_mark = time.perf_counter()

        while stop_reason is None:
            batches = self.epoch_batches(state.epoch)
            if state.batch_in_epoch >= len(batches):
                state.epoch += 1
                state.batch_in_epoch = 0
                continue
            # micro-batches are grouped into updates from the start of the epoch
            first = state.batch_in_epoch
            loader = iter(self._dataloader(batches[first:]))
            position = first
            while position < len(batches) and stop_reason is None:
                window_end = min(len(batches), (position // accum + 1) * accum)
                window = batches[position:window_end]
                window_examples = sum(len(x) for x in window)
                update_tokens = 0
                update_examples = 0
                update_loss = torch.zeros((), device=acc.device)
                for i in range(len(window)):
                    batch = next(loader)
                    batch = {k: (v.to(acc.device, non_blocking=True) if torch.is_tensor(v) else v)
                             for k, v in batch.items()}
                    n_ex = len(window[i])
                    update_tokens += _count_tokens(batch)
                    update_examples += n_ex
                    sync = i == len(window) - 1
                    ctx = acc.no_sync(self.model) if (not sync and acc.num_processes > 1) else contextlib.nullcontext()
                    with ctx:
                        loss = self.loss_fn(self.model, batch)
                        scaled = loss * (n_ex / window_examples)
                        acc.backward(scaled)
                    update_loss += scaled.detach().float()
                # clip (or, with clipping off, just measure: max_norm=inf) the total gradient norm
                clip = args.max_grad_norm if args.max_grad_norm is not None and args.max_grad_norm > 0 else math.inf
                grad_norm = acc.clip_grad_norm_(self.model.parameters(), clip)
                lr = self.scheduler.get_last_lr()[0]
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                position = window_end

                counts = torch.tensor([update_tokens, update_examples], device=acc.device, dtype=torch.long)
                if acc.num_processes > 1:
                    counts = acc.reduce(counts, reduction="sum")
                    update_loss = acc.reduce(update_loss, reduction="mean")
                state.global_step += 1
                state.batch_in_epoch = position
                state.tokens_seen += int(counts[0])
                state.examples_seen += int(counts[1])
                now = time.perf_counter()
                state.train_time += now - last_session_mark
                window_time += now - last_session_mark
                window_loss += update_loss
                window_updates += 1
                window_tokens += int(counts[0])

                epoch_done = position >= len(batches)
                if state.global_step % max(1, args.log_every_steps) == 0 or epoch_done or \
                        state.global_step >= self.total_steps:
                    elapsed = max(1e-9, window_time)
                    entry = {
                        "step": state.global_step,
                        "epoch": state.epoch + position / len(batches),
                        "loss": float(window_loss) / window_updates,
                        "lr": lr,
                        "tokens_per_s": window_tokens / elapsed,
                    }
                    if grad_norm is not None:
                        entry["grad_norm"] = float(grad_norm)
                    state.log_history.append(entry)
                    if progress is not None:
                        progress.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{lr:.3g}",
                                             tok_s=f"{entry['tokens_per_s']:.0f}", refresh=False)
                    window_loss.zero_()
                    window_updates = window_tokens = 0
                    window_time = 0.0
                if progress is not None:
                    progress.update(1)

                # --- stop conditions (agreed by all processes) ---
                if state.global_step >= self.total_steps:
                    stop_reason = "completed"
                elif args.max_train_tokens is not None and state.tokens_seen >= args.max_train_tokens:
                    stop_reason = "max_train_tokens"
                elif args.max_time is not None and time.perf_counter() - self._session_start >= args.max_time:
                    stop_reason = "max_time"
                if acc.num_processes > 1:
                    flag = torch.tensor([0 if stop_reason is None else 1], device=acc.device)
                    if int(acc.reduce(flag, reduction="max")) and stop_reason is None:
                        stop_reason = "max_time"
                if epoch_done:
                    state.epoch += 1
                    state.batch_in_epoch = 0

                # --- evaluation, checkpoints, callbacks ---
                do_eval = self.eval_fn is not None and (
                    (args.eval_every_steps and state.global_step % args.eval_every_steps == 0)
                    or (not args.eval_every_steps and epoch_done)
                )
                if do_eval:
                    self._evaluate_and_track()
                do_save = (
                    (args.save_every_steps and state.global_step % args.save_every_steps == 0)
                    or (args.save_at_epoch_end and epoch_done)
                    or (stop_reason is not None and stop_reason != "completed")
                    or (stop_reason == "completed" and args.save_final_checkpoint)
                )
                if do_save:
                    self.save_checkpoint()
                try:
                    for callback in self.callbacks:
                        callback(self)
                except StopTraining:
                    stop_reason = "callback"
                    if not do_save:
                        self.save_checkpoint()
                last_session_mark = time.perf_counter()  # train_time and tokens/s count updates only
                if epoch_done:
                    break

        if progress is not None:
            progress.close()
        state.stop_reason = stop_reason
        metrics = None
        if self.eval_fn is not None and args.final_evaluation:
            if state.last_eval_step == state.global_step and state.eval_history:
                metrics = {k: v for k, v in state.eval_history[-1].items() if k not in ("step", "epoch")}
            else:
                metrics = self._evaluate_and_track()
        return TrainResult(
            global_step=state.global_step,
            epoch=state.epoch,
            tokens_seen=state.tokens_seen,
            examples_seen=state.examples_seen,
            train_time=state.train_time,
            stop_reason=stop_reason,
            metrics=metrics,
            best_metric=state.best_metric,
            best_step=state.best_step,
            eval_history=list(state.eval_history),
            log_history=list(state.log_history),
        )

    # ------------------------------------------------------------------------------------------------------------------
    # Evaluation
    # ------------------------------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _eval_mode(self):
        """Eval mode, no grad, and the RNG states forked so evaluation never perturbs training."""
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        was_training = self.model.training
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            self.model.eval()
            try:
                yield
            finally:
                self.model.train(was_training)
                random.setstate(py_state)
                np.random.set_state(np_state)

    def _evaluate_and_track(self) -> dict[str, float]:
        state, args = self.state, self.args
        with self._eval_mode():
            metrics = {k: float(v) for k, v in (self.eval_fn(self) or {}).items()}
        state.last_eval_step = state.global_step
        epoch = state.epoch + state.batch_in_epoch / max(1, self.micro_batches_per_epoch)
        state.eval_history.append({"step": state.global_step, "epoch": round(epoch, 4), **metrics})
        if args.metric_for_best_model:
            if args.metric_for_best_model not in metrics:
                raise KeyError(f"metric_for_best_model={args.metric_for_best_model!r} is not among the evaluation "
                               f"metrics {sorted(metrics)}")
            value = metrics[args.metric_for_best_model]
            better = state.best_metric is None or (
                value > state.best_metric if args.greater_is_better else value < state.best_metric
            )
            if better and not math.isnan(value):
                state.best_metric, state.best_step = value, state.global_step
                self.save_model(self.output_dir / BEST_DIR, extra={"metrics": metrics, "step": state.global_step})
        if self.is_main_process:
            logger.info("step %d: %s", state.global_step, metrics)
        return metrics

    def predict(self, dataset, collate_fn: Callable, batch_size: int | None = None,
                forward_fn: Callable | None = None) -> dict[str, np.ndarray]:
        """`predict_logits` with this trainer's model and accelerator (RNG forked, eval mode)."""
        with self._eval_mode():
            return predict_logits(self.model, dataset, collate_fn, self.accelerator,
                                  batch_size or self.batch.per_device_batch_size, forward_fn,
                                  num_workers=self.args.dataloader_num_workers)

    def evaluate_loss(self, dataset, collate_fn: Callable, batch_size: int | None = None) -> dict[str, float]:
        """Token-weighted mean LM loss and perplexity over ``dataset`` (a causal LM; ``labels`` in the batches)."""
        acc = self.accelerator
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size or self.batch.per_device_batch_size,
                                             shuffle=False, collate_fn=collate_fn,
                                             num_workers=self.args.dataloader_num_workers)
        loader = acc.prepare_data_loader(loader, device_placement=True)
        totals = torch.zeros(2, dtype=torch.float64, device=acc.device)
        with self._eval_mode():
            for batch in loader:
                # one (nll sum, token count) row per example, so gather_for_metrics drops the padded duplicates
                # that multi-process evaluation adds to the last batch
                mask = batch.get("attention_mask")
                logits = self.model(input_ids=batch["input_ids"], attention_mask=mask).logits[:, :-1].float()
                targets = batch.get("labels", batch["input_ids"])[:, 1:]
                keep = targets != -100
                if mask is not None:
                    keep = keep & mask[:, 1:].bool()
                nll = F.cross_entropy(logits.transpose(1, 2), targets.clamp_min(0), reduction="none")
                rows = torch.stack([(nll * keep).sum(1).double(), keep.sum(1).double()], dim=1)
                totals += acc.gather_for_metrics(rows).sum(0)
        loss = float(totals[0] / totals[1]) if float(totals[1]) > 0 else float("nan")
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}

    # ------------------------------------------------------------------------------------------------------------------
    # Saving and loading
    # ------------------------------------------------------------------------------------------------------------------
    def _write_model(self, folder: Path, model=None) -> None:
        from transformers.utils import logging as hf_logging

        if model is None:
            model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Writing model shards" bar inside the training bar
        try:
            model.save_pretrained(folder, safe_serialization=True)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        if self.save_fn is not None:
            self.save_fn(folder)

    def _gather_plain_model(self):
        """The model to save, called on EVERY process. Without a sharded engine: the unwrapped model. Under FSDP /
        DeepSpeed the full weights are gathered (``accelerator.get_state_dict``: a collective every process must
        join, or the run deadlocks) into a plain copy of the model, returned on the main process (None elsewhere)."""
        acc = self.accelerator
        if not self.sharded:
            return acc.unwrap_model(self.model, keep_torch_compile=False)
        state = acc.get_state_dict(self.model)
        if not acc.is_main_process:
            return None
        return _load_into_skeleton(self._skeleton, state, self._tied_groups)

    def _release_plain_model(self) -> None:
        if self.sharded and self._skeleton is not None:
            _parameters_to_meta(self._skeleton)  # drop the gathered weights (re-tied at the next load)

    def save_model(self, folder: str | os.PathLike, extra: dict | None = None) -> None:
        """Save the (unwrapped) model + ``save_fn`` files to ``folder`` atomically. Call it on every process: under
        FSDP / DeepSpeed the weights are gathered from all of them; only the main process writes."""
        folder = Path(folder)
        model = self._gather_plain_model()
        if self.is_main_process:
            def write(tmp: Path):
                self._write_model(tmp, model)
                if extra is not None:
                    (tmp / "training_info.json").write_text(json.dumps(extra, indent=2, default=str))

            save_directory_atomically(folder, write)
        self._release_plain_model()
        self.accelerator.wait_for_everyone()

    def _fsdp_info(self) -> dict:
        """What FSDP did to the model (recorded in trainer_state.json): version, wrapped units, sharded tensors."""
        plugin = self.accelerator.state.fsdp_plugin
        try:
            from torch.distributed.fsdp import FSDPModule
        except ImportError:  # older PyTorch: FSDP1 only
            FSDPModule = ()  # noqa: N806
        units = [name for name, m in self.model.named_modules()
                 if (FSDPModule and isinstance(m, FSDPModule)) or type(m).__name__ == "FullyShardedDataParallel"]
        sharded = sum(1 for p in self.model.parameters() if type(p).__name__ == "DTensor"
                      or type(getattr(p, "data", None)).__name__ == "DTensor")
        return {"version": getattr(plugin, "fsdp_version", None), "units": units, "sharded_parameters": sharded,
                "processes": self.accelerator.num_processes}

    def _optimizer_state_for_checkpoint(self):
        """The optimizer state the main process writes (collective under FSDP: every process calls this)."""
        if self.engine == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            # parameter names as keys, full (gathered) tensors, on the main process's CPU
            return get_optimizer_state_dict(self.model, self.optimizer.optimizer,
                                            options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.engine == "deepspeed":
            return None  # DeepSpeed's engine checkpoint (every process writes its partition)
        return self.optimizer.state_dict()

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step-NNNNNNNN`` atomically, then point ``checkpoints/latest`` at it, then prune.
        Call it on every process (the sharded engines gather weights and optimizer state from all of them)."""
        from accelerate.utils import gather_object

        acc, state = self.accelerator, self.state
        rng_states = gather_object([_rng_state()]) if acc.num_processes > 1 else [_rng_state()]
        root = self.output_dir / CHECKPOINTS_DIR
        name = f"step-{state.global_step:08d}"
        final = root / name
        model = self._gather_plain_model()
        optimizer_state = self._optimizer_state_for_checkpoint()
        engine_dir = None
        if self.engine == "deepspeed":
            # DeepSpeed writes its (partitioned) optimizer state from every process, into a folder the main process
            # then moves into the checkpoint before the atomic rename
            engine_dir = root / f".tmp-{name}-{DEEPSPEED_DIR}"
            if self.is_main_process:
                shutil.rmtree(engine_dir, ignore_errors=True)
                root.mkdir(parents=True, exist_ok=True)
            acc.wait_for_everyone()
            self.model.save_checkpoint(str(engine_dir), tag=DEEPSPEED_TAG)
            acc.wait_for_everyone()
        fsdp_info = self._fsdp_info() if self.engine == "fsdp" else None
        if self.is_main_process:
            trainer_state = {
                **asdict(state),
                "batch_config": asdict(self.batch),
                "engine": self.engine,
                **({"fsdp": fsdp_info} if fsdp_info else {}),
                "training_arguments": self.args.to_dict(),
            }

            def write(tmp: Path):
                self._write_model(tmp, model)
                if engine_dir is not None:
                    os.replace(engine_dir, tmp / DEEPSPEED_DIR)
                else:
                    torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
                torch.save(self.scheduler.state_dict(), tmp / SCHEDULER_FILE)
                torch.save(rng_states, tmp / RNG_FILE)
                # written last: a folder with trainer_state.json is complete
                (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2, default=str))

            save_directory_atomically(final, write)
            write_text_atomically(root / LATEST_POINTER, name)
            self._prune_checkpoints(root, keep=name)
        optimizer_state = None  # free the gathered copy before waiting
        self._release_plain_model()
        acc.wait_for_everyone()
        return final

    def _prune_checkpoints(self, root: Path, keep: str) -> None:
        limit = self.args.save_total_limit
        for stale in root.glob(".tmp-step-*"):  # leftovers of a save killed in another session
            shutil.rmtree(stale, ignore_errors=True)
        if not limit or limit < 1:
            return
        ckpts = sorted((p for p in root.glob("step-*") if p.is_dir()), key=lambda p: p.name)
        excess = [p for p in ckpts if p.name != keep][: max(0, len(ckpts) - limit)]
        for path in excess:
            shutil.rmtree(path, ignore_errors=True)

    def load_checkpoint(self, folder: str | os.PathLike) -> None:
        """Restore model, optimizer, scheduler, RNG states and progress from a checkpoint folder (every process)."""
        folder = Path(folder)
        acc = self.accelerator
        saved = json.loads((folder / TRAINER_STATE).read_text())
        saved_batch = saved.get("batch_config") or {}
        if saved_batch and (saved_batch.get("per_device_batch_size"), saved_batch.get("num_processes")) != (
            self.batch.per_device_batch_size, self.batch.num_processes
        ) or saved_batch and saved_batch.get("gradient_accumulation_steps") != self.batch.gradient_accumulation_steps:
            raise ValueError(
                f"checkpoint {folder} was written with batch configuration {saved_batch}, this run has "
                f"{asdict(self.batch)}; resume with the same per-device batch size, number of processes and "
                "gradient accumulation (the data position is counted in micro-batches)."
            )
        if saved.get("total_steps") not in (None, self.total_steps):
            raise ValueError(
                f"checkpoint {folder} belongs to a run of {saved['total_steps']} updates, this run plans "
                f"{self.total_steps}: use the same epochs / max_steps / dataset to resume."
            )
        saved_engine = saved.get("engine", "ddp")
        if saved_engine != self.engine:
            raise ValueError(
                f"checkpoint {folder} was written under {saved_engine}, this run uses {self.engine}: the optimizer "
                "state is stored differently per engine; resume with the same kind of launch (the model weights in "
                "the checkpoint folder load anywhere with from_pretrained)."
            )
        if self.engine == "fsdp":
            self._load_fsdp_checkpoint(folder)
        elif self.engine == "deepspeed":
            load_dir, _ = self.model.load_checkpoint(str(folder / DEEPSPEED_DIR), tag=DEEPSPEED_TAG,
                                                     load_optimizer_states=True, load_lr_scheduler_states=False)
            if load_dir is None:
                raise FileNotFoundError(f"DeepSpeed could not load {folder / DEEPSPEED_DIR}")
        else:
            _load_model_weights(acc.unwrap_model(self.model, keep_torch_compile=False), folder)
            self.optimizer.load_state_dict(torch.load(folder / OPTIMIZER_FILE, map_location="cpu",
                                                      weights_only=True))
        self.scheduler.load_state_dict(torch.load(folder / SCHEDULER_FILE, map_location="cpu", weights_only=True))
        rng_states = torch.load(folder / RNG_FILE, map_location="cpu", weights_only=True)
        if len(rng_states) != acc.num_processes:
            raise ValueError(f"checkpoint {folder} has RNG states of {len(rng_states)} processes, this run has "
                             f"{acc.num_processes}")
        _set_rng_state(rng_states[acc.process_index])
        self.state = TrainerState.from_dict(saved)
        if self.is_main_process:
            logger.info("resumed from %s (step %d, epoch %d, micro-batch %d)", folder, self.state.global_step,
                        self.state.epoch, self.state.batch_in_epoch)

    def _load_fsdp_checkpoint(self, folder: Path) -> None:
        """The main process reads the full weights and optimizer state; PyTorch's distributed state-dict API
        broadcasts them and each process keeps its shards."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        weights, optimizer_state = {}, {}
        if self.is_main_process:
            weights = _read_model_weights(folder)
            for names in self._tied_groups:  # save_pretrained stores a tied parameter once
                present = [n for n in names if n in weights]
                for n in names:
                    if present and n not in weights:
                        weights[n] = weights[present[0]]
            optimizer_state = torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        set_model_state_dict(self.model, weights, options=options)
        set_optimizer_state_dict(self.model, self.optimizer.optimizer, optimizer_state, options=options)

    def finalize_model(self):
        """The trained model without Accelerate's wrappers (DDP, autocast hooks). Call it on every process. Under
        FSDP / DeepSpeed the full weights are gathered (a collective) into a plain copy of the model on the CPU of the
        main process; the other processes get that copy without weights (parameters on the meta device): only the
        main process saves."""
        if not self.sharded:
            return self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False, keep_torch_compile=False)
        model = self._gather_plain_model()
        if model is None:
            return _meta_copy(self._skeleton)
        self._skeleton = _meta_copy(model)  # the returned model is the caller's; later saves fill a fresh copy
        return model
