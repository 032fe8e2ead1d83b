"""The parts of GPT-1's one training loop (`gpt1_hf.loop.TrainingLoop`), shared by fine-tuning and pretraining, built
from Accelerate's own parts.

Its shape is that of Accelerate's ``examples/by_feature/gradient_accumulation_for_autoregressive_models.py`` and
transformers' ``run_glue_no_trainer.py``: ``accelerator.prepare``, a data loader sharded over the processes,
``skip_first_batches`` to resume mid-epoch, ``gather_for_metrics``, transformers' ``get_scheduler``,
``accelerator.save_state`` / ``load_state``, trackers through ``Accelerator(log_with=..., project_dir=...)``.

* **One update = one global batch**, however it is laid out (processes x accumulation x micro-batch): the loop first
  draws the update's micro-batches, counts its items over all processes -- examples for L2, next-token targets for
  L1 -- and every micro-batch's loss is its *sum* over items divided by those global counts (transformers'
  ``num_items_in_batch``). So 1 process x 8, 1 x 4 x accumulation 2 and 2 processes x 4 take the same step
  (docs/model.md, "Loss normalisation"). Accelerate's ``accumulate()`` decides per micro-batch and cannot see the
  window's counts, which is why the window is explicit, as in Accelerate's own example.
* **Data order** is a pure function of ``(seed, epoch)`` (`EpochSampler`: a seeded permutation, or transformers'
  ``LengthGroupedSampler``); a resumed run skips the micro-batches of its epoch already seen.
* **Checkpoints** (``<output_dir>/checkpoints/step-NNNNNNNN``): ``accelerator.save_state`` (model, optimizer,
  scheduler, every process's RNG state) plus the model's config and tokenizer (so ``from_pretrained`` loads one) and
  ``training_state.json`` -- progress, data position and the run's identity -- written last, into a temporary folder
  renamed into place; ``checkpoints/latest`` names the newest. The data position lives in that JSON file rather than
  in a ``register_for_checkpointing`` object because Accelerate unpickles those with ``weights_only=False``.
* **Guards**: a non-finite loss or gradient norm stops the run before the optimizer step (or skips the update,
  ``on_nonfinite="skip"``); resuming a checkpoint of a different run is refused, naming each difference; one run
  per output folder (`gpt1_hf.durable.RunLock`), a fresh run into a folder holding another is refused without
  ``overwrite_output_dir``, and a killed run's temporary files are removed at the next start (`open_run_folder`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .durable import RunLock, remove_leftovers

logger = logging.getLogger(__name__)

__all__ = [
    "LoopState",
    "TrainResult",
    "BatchConfig",
    "NonFiniteError",
    "RunMismatchError",
    "StopTraining",
    "EpochSampler",
    "resolve_batch_config",
    "param_groups_for_weight_decay",
    "build_optimizer",
    "create_accelerator",
    "bf16_master_weights",
    "find_checkpoint",
    "open_run_folder",
    "count_items",
]

CHECKPOINTS_DIR = "checkpoints"
LATEST_POINTER = "latest"
STATE_FILE = "training_state.json"
BEST_DIR = "best"
TRACKING_DIR = "runs"


class StopTraining(Exception):
    """Raise from a callback to stop training cleanly after the current update (a checkpoint is saved)."""


class NonFiniteError(RuntimeError):
    """A NaN/inf loss or gradient norm (the run stops before the optimizer step)."""


class RunMismatchError(ValueError):
    """A checkpoint of another run (task, data, model, batch, seed or length) given to resume this one."""


# ======================================================================================================================
# State, batch sizes, optimizer
# ======================================================================================================================


@dataclass
class LoopState:
    """Progress of a run; saved in every checkpoint (``training_state.json``)."""

    global_step: int = 0  # optimizer updates done
    epoch: int = 0  # current epoch (0-based)
    batch_in_epoch: int = 0  # micro-batches of `epoch` already consumed (per process)
    tokens_seen: int = 0  # non-padding tokens, all processes
    examples_seen: int = 0  # all processes
    train_time: float = 0.0  # seconds of training over all sessions
    total_steps: int = 0
    skipped_updates: int = 0  # non-finite updates skipped (on_nonfinite="skip")
    best_metric: float | None = None
    best_step: int | None = None
    last_eval_step: int | None = None
    log_history: list[dict] = field(default_factory=list)
    eval_history: list[dict] = field(default_factory=list)
    stop_reason: str | None = None

    @classmethod
    def from_dict(cls, data: dict) -> LoopState:
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

    def as_results(self) -> dict[str, int]:
        """The layout as results.json records it."""
        return {"per_device": self.per_device_batch_size, "processes": self.num_processes,
                "gradient_accumulation_steps": self.gradient_accumulation_steps, "global": self.global_batch_size}


def resolve_batch_config(per_device_batch_size: int | None, global_batch_size: int | None, num_processes: int = 1,
                         gradient_accumulation_steps: int | None = None) -> BatchConfig:
    """global = per_device x processes x accumulation; any two determine the third, all three must agree (raised
    before any training)."""
    for name, value in (("per_device_train_batch_size", per_device_batch_size),
                        ("global_batch_size", global_batch_size),
                        ("gradient_accumulation_steps", gradient_accumulation_steps)):
        if value is not None and int(value) < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    p = int(num_processes)
    if per_device_batch_size is None and global_batch_size is None:
        raise ValueError("set --per_device_train_batch_size or --global_batch_size")
    if global_batch_size is None:
        return BatchConfig(int(per_device_batch_size), p, int(gradient_accumulation_steps or 1))
    g = int(global_batch_size)
    if per_device_batch_size is None:
        accum = int(gradient_accumulation_steps or 1)
        if g % (p * accum):
            raise ValueError(f"--global_batch_size {g} is not divisible by the {p} processes x "
                             f"--gradient_accumulation_steps {accum}; pick a global batch that is, or set "
                             "--per_device_train_batch_size.")
        return BatchConfig(g // (p * accum), p, accum)
    b = int(per_device_batch_size)
    if g % (b * p):
        raise ValueError(f"--global_batch_size {g} is not a multiple of --per_device_train_batch_size {b} x {p} "
                         f"processes = {b * p}: global = per_device x processes x gradient accumulation must hold.")
    accum = g // (b * p)
    if gradient_accumulation_steps is not None and int(gradient_accumulation_steps) != accum:
        raise ValueError(f"--gradient_accumulation_steps {gradient_accumulation_steps} contradicts --global_batch_size "
                         f"{g} = per_device {b} x {p} processes x {accum}.")
    return BatchConfig(b, p, accum)


def param_groups_for_weight_decay(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups, as the original code regularised: every weight with ndim >= 2 (matrices and embeddings)
    decays, biases and LayerNorm gains do not. Tied parameters appear once; ``names`` is for inspection."""
    decay, no_decay, decay_names, no_decay_names, seen = [], [], [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.ndim >= 2 else no_decay).append(p)
        (decay_names if p.ndim >= 2 else no_decay_names).append(name)
    groups = [{"params": decay, "weight_decay": weight_decay, "names": decay_names}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "names": no_decay_names})
    return groups


def build_optimizer(model: torch.nn.Module, args, master_weights: bool = False) -> torch.optim.Optimizer:
    """AdamW with decoupled weight decay; ``fused`` kernels where the device has them, else ``foreach``. With
    ``master_weights`` (a bf16 model) the AdamW step runs on fp32 master copies (`gpt1_hf.precision`)."""
    from .precision import MasterWeightsAdamW

    groups = [{k: v for k, v in g.items() if k != "names"} for g in param_groups_for_weight_decay(
        model, args.weight_decay)]
    kwargs = dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
    optimizer_class = MasterWeightsAdamW if master_weights else torch.optim.AdamW
    try:
        return optimizer_class(groups, fused=True, **kwargs)
    except (RuntimeError, TypeError, ValueError):
        return optimizer_class(groups, foreach=True, **kwargs)


def total_and_warmup_steps(args, updates_per_epoch: int) -> tuple[int, int]:
    """The schedule's length (``max_train_steps``, else epochs x updates) and warmup: ``num_warmup_steps``, else
    ``warmup_ratio`` of the run, else the paper's pretraining rule min(2000, 1% of the run)."""
    if args.max_train_steps is not None:
        if args.max_train_steps < 1:
            raise ValueError(f"--max_train_steps must be >= 1, got {args.max_train_steps}")
        total = int(args.max_train_steps)
    else:
        if args.num_train_epochs < 1:
            raise ValueError(f"--num_train_epochs must be >= 1, got {args.num_train_epochs}")
        total = int(args.num_train_epochs) * updates_per_epoch
    if args.num_warmup_steps is not None:
        return total, max(0, int(args.num_warmup_steps))
    if args.warmup_ratio is not None:
        return total, int(math.ceil(max(0.0, args.warmup_ratio) * total))
    return total, min(2000, int(math.ceil(0.01 * total)))


# ======================================================================================================================
# Accelerator
# ======================================================================================================================

MIXED_PRECISION_CHOICES = ("auto", "no", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16 in /proc/cpuinfo: there bf16 autocast beats fp32 (~4x on AMX); elsewhere torch emulates
    bf16 and training runs 5-10x slower than fp32 (docs/finetuning.md)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            flags = handle.read()
    except OSError:  # not Linux: do not guess
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_mixed_precision(mixed_precision: str | None, cpu: bool = False) -> str | None:
    """``"auto"`` -> ``"bf16"`` where it is fast (a CUDA GPU with bf16, a CPU with native bf16), else ``"no"``."""
    if mixed_precision != "auto":
        return mixed_precision
    if not cpu and torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"


def bf16_master_weights(mixed_precision: str | None, bf16_implementation: str = "auto", cpu: bool = False) -> bool:
    """Whether bf16 trains with bf16 working weights and fp32 masters (`gpt1_hf.precision`) instead of autocast:
    asked for ("auto" stays with autocast: see docs/benchmarks.md for the measurements)."""
    if resolve_mixed_precision(mixed_precision, cpu) != "bf16" and not (
            mixed_precision is None and os.environ.get("ACCELERATE_MIXED_PRECISION", "").lower() == "bf16"):
        return False
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true", "yes") or \
            os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes"):
        if bf16_implementation == "master_weights":
            raise ValueError("--bf16_implementation master_weights is for one process or DDP; FSDP and DeepSpeed "
                             "keep their own (sharded) master weights: use --bf16_implementation autocast")
        return False
    return bf16_implementation == "master_weights"  # "auto": autocast until a benchmark shows master weights faster


def _trackers(with_tracking: bool, report_to: str | None) -> list[str] | str | None:
    if not with_tracking:
        return None
    names = [n.strip() for n in (report_to or "tensorboard").split(",") if n.strip()]
    return "all" if names == ["all"] else names


def create_accelerator(mixed_precision: str | None = None, cpu: bool = False, with_tracking: bool = False,
                       report_to: str | None = None, project_dir: str | os.PathLike | None = None,
                       bf16_implementation: str = "autocast"):
    """An `accelerate.Accelerator` with trackers under ``<project_dir>/runs``. ``mixed_precision=None`` takes the
    ``accelerate launch`` / config value, else "no"; bf16 with master weights (`bf16_master_weights`) needs no
    autocast, so Accelerate's precision is then "no". In a single process, an earlier state with other settings
    (several runs in one Python process: tests, the layer-transfer sweep) is reset first."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import ProjectConfiguration

    if mixed_precision not in (None, *MIXED_PRECISION_CHOICES):
        raise ValueError(f"--mixed_precision must be one of {', '.join(MIXED_PRECISION_CHOICES)}, got "
                         f"{mixed_precision!r}")
    # without an accelerator, processes started by torchrun / `accelerate launch --multi_gpu` join as MULTI_CPU (gloo)
    cpu = cpu or not torch.cuda.is_available()
    if bf16_master_weights(mixed_precision, bf16_implementation, cpu):
        mixed_precision = "no"  # the model itself is bf16 (gpt1_hf.precision)
    mixed_precision = resolve_mixed_precision(mixed_precision, cpu)
    if mixed_precision is None:  # resolved here: an existing state of an earlier run must not leak its setting
        mixed_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower() or "no"
    kwargs: dict[str, Any] = dict(mixed_precision=mixed_precision, cpu=cpu, log_with=_trackers(with_tracking,
                                                                                                report_to))
    if project_dir is not None:
        kwargs["project_config"] = ProjectConfiguration(project_dir=str(project_dir),
                                                        logging_dir=str(Path(project_dir) / TRACKING_DIR))
    try:
        acc = Accelerator(**kwargs)
    except ValueError as e:
        if "already been initialized" not in str(e) or PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state()
        acc = Accelerator(**kwargs)
    _enable_fsdp_on_cpu_processes(acc, mixed_precision)
    return acc


def _enable_fsdp_on_cpu_processes(acc, mixed_precision: str) -> None:
    """FSDP2 over gloo for an FSDP launch whose processes came up as MULTI_CPU (``--cpu`` or no CUDA): Accelerate only
    enables FSDP for accelerator process groups and would silently train plain DDP; its FSDP2 code path itself runs on
    a CPU mesh, so the state is switched here with the plugin the launcher's ``FSDP_*`` environment describes."""
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
# The run folder: one run per folder, no mixing, no leftovers
# ======================================================================================================================

#: files and folders of a run in its output folder (what --overwrite_output_dir replaces)
RUN_ARTIFACTS = (CHECKPOINTS_DIR, BEST_DIR, TRACKING_DIR, "predictions", "results.json", "README.md",
                 "heldout_perplexity.png", "trained_tokenizer")
MODEL_FILE_PATTERNS = ("config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json",
                       "adapter_config.json", "tokenizer*.json", "special_tokens_map.json", "vocab*.json",
                       "merges*.txt", "*_gpt1.py")


def holds_a_run(output_dir: Path) -> list[str]:
    """What in ``output_dir`` belongs to an earlier run (empty when it holds none)."""
    found = [name for name in (CHECKPOINTS_DIR, BEST_DIR, "results.json", "config.json", "adapter_config.json")
             if (output_dir / name).exists()]
    return found


def _clear_run(output_dir: Path) -> None:
    for name in RUN_ARTIFACTS:
        path = output_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for pattern in MODEL_FILE_PATTERNS:
        for path in output_dir.glob(pattern):
            if path.is_file():
                path.unlink()


@contextlib.contextmanager
def open_run_folder(output_dir: str | os.PathLike, accelerator, resume_from_checkpoint: str | None,
                    overwrite_output_dir: bool) -> Iterator[Path]:
    """Hold ``output_dir`` for one run: its lock (a second run into it exits at once), a killed run's temporary files
    removed, and a fresh run refused where the folder holds another run unless ``overwrite_output_dir`` (which then
    removes that run's files first). Resuming (``resume_from_checkpoint``) continues the run that is there."""
    output_dir = Path(output_dir)
    lock = RunLock(output_dir) if accelerator.is_main_process else contextlib.nullcontext()
    with lock:
        if accelerator.is_main_process:
            removed = remove_leftovers(output_dir)
            if removed:
                logger.warning("removed %d temporary file(s) left by a killed run in %s", len(removed), output_dir)
            resuming = resume_from_checkpoint not in (None, "auto") or (
                resume_from_checkpoint == "auto" and find_checkpoint(output_dir, "auto") is not None)
            existing = holds_a_run(output_dir)
            if existing and not resuming:
                if not overwrite_output_dir:
                    raise FileExistsError(
                        f"--output_dir {output_dir} already holds a run ({', '.join(existing)}). Pass "
                        "--overwrite_output_dir to replace it, --resume_from_checkpoint latest to continue it, or "
                        "choose another --output_dir.")
                _clear_run(output_dir)
        accelerator.wait_for_everyone()
        yield output_dir
        accelerator.wait_for_everyone()


def find_checkpoint(output_dir: str | os.PathLike, which: str = "latest") -> Path | None:
    """``which`` ("latest" / "auto" or a path: a checkpoint, a run's output_dir or its checkpoints/) -> a complete
    checkpoint folder; "auto" returns None when there is none."""
    if which in ("latest", "auto"):
        pointer = Path(output_dir) / CHECKPOINTS_DIR / LATEST_POINTER
        if not pointer.is_file():
            if which == "auto":
                return None
            raise FileNotFoundError(f"--resume_from_checkpoint latest, but {pointer} does not exist: no checkpoint was "
                                    f"completed in {output_dir} (use 'auto' to start fresh when there is none).")
        path = pointer.parent / pointer.read_text(encoding="utf-8").strip()
    else:
        path = Path(which)
        if (path / CHECKPOINTS_DIR / LATEST_POINTER).is_file():
            return find_checkpoint(path, "latest")
        if (path / LATEST_POINTER).is_file() and not (path / STATE_FILE).is_file():
            path = path / (path / LATEST_POINTER).read_text(encoding="utf-8").strip()
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a complete training checkpoint (it has no {STATE_FILE}, written last "
                                "when a checkpoint is complete)")
    return path


# ======================================================================================================================
# Data order and item counts
# ======================================================================================================================


class EpochSampler(torch.utils.data.Sampler):
    """The epoch's example order, a pure function of ``(seed, epoch)``: a seeded permutation, or transformers'
    `LengthGroupedSampler` (batches of similar lengths, ``group_size`` = the global micro-batch)."""

    def __init__(self, n: int, seed: int, lengths: Sequence[int] | None = None, group_size: int = 1,
                 shuffle: bool = True):
        self.n, self.seed, self.lengths, self.group_size, self.shuffle = n, seed, lengths, group_size, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.lengths is not None:
            from transformers.trainer_pt_utils import LengthGroupedSampler

            return iter(LengthGroupedSampler(self.group_size, lengths=list(self.lengths), generator=generator))
        if not self.shuffle:
            return iter(range(self.n))
        return iter(torch.randperm(self.n, generator=generator).tolist())


def count_items(batch: dict, pad_token_id: int | None = None) -> tuple[int, int]:
    """(examples, next-token targets) of a batch, as the model's losses count them: a target is a position whose token
    and predecessor are both real (attention mask) and whose label is not -100."""
    ids = batch["input_ids"]
    flat = ids.reshape(-1, ids.shape[-1])
    mask = batch.get("attention_mask")
    if mask is not None:
        mask = mask.reshape(flat.shape).bool()
    elif pad_token_id is not None:
        mask = flat != pad_token_id
    else:
        mask = torch.ones_like(flat, dtype=torch.bool)
    keep = mask[:, 1:] & mask[:, :-1]
    labels = batch.get("labels")
    if labels is not None and labels.shape == ids.shape and ids.dim() == 2:  # LM labels (pretraining)
        keep = keep & (labels[:, 1:] != -100)
    return int(ids.shape[0]), int(keep.sum())
