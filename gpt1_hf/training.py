"""`TrainingLoop`: GPT-1's one training loop, shared by fine-tuning and pretraining, built from Accelerate's own parts;
read top-down: ``fit`` -> ``_run_epoch`` -> ``_update``, then evaluation, saving and resuming.

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
* **Checkpoints** and models are written and read by `gpt1_hf.checkpointing.Checkpointer`.
* **Guards**: a non-finite loss or gradient norm stops the run before the optimizer step (or skips the update,
  ``on_nonfinite="skip"``); resuming a checkpoint of a different run is refused, naming each difference; one run
  per output folder (`gpt1_hf.run_folder`), a fresh run into a folder holding another is refused without
  ``overwrite_output_dir``, and a killed run's temporary files are removed at the next start (`open_run_folder`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpointing import Checkpointer, NonFiniteError, RunMismatchError
from .distributed import resolve_batch_config
from .evaluation import lm_heldout_loss, predict_logits
from .precision import bf16_master_weights
from .run_folder import BEST_DIR, find_checkpoint

logger = logging.getLogger(__name__)

__all__ = ["TrainingLoop", "LoopState", "build_optimizer",
           "param_groups_for_weight_decay", "EpochSampler", "count_items", "NonFiniteError", "RunMismatchError",
           "StopTraining"]


class StopTraining(Exception):
    """Raise from a callback to stop training cleanly after the current update (a checkpoint is saved)."""


# ======================================================================================================================
# State and optimizer
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
    metrics: dict[str, float] | None = None  # the final evaluation's

    @classmethod
    def from_dict(cls, data: dict) -> LoopState:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


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


# ======================================================================================================================
# The loop
# ======================================================================================================================


class TrainingLoop:
    """Train ``model`` on ``train_dataset`` with ``args`` (a resolved `gpt1_hf.arguments.RunArguments`).

    Args:
        eval_fn: ``eval_fn(loop) -> dict[str, float]`` on every process (use `predict` / `evaluate_loss`).
        lengths: per-example lengths, for ``args.group_by_length``.
        save_fn: ``save_fn(folder)`` writes what travels with every saved model (the tokenizer).
        run_identity: what defines this run (task, data fingerprint, model config, tokenizer, aux weight...): stored in
            every checkpoint and compared on resume.
        metric_for_best_model / greater_is_better: which evaluation metric keeps ``<output_dir>/best``.
        callbacks: ``callback(loop)`` after every update; raising `StopTraining` stops cleanly.
        tracking_name: the trackers' project name.
    """

    #: gpt1_hf.distributed.preflight lets FSDP / DeepSpeed launches through only when this is True
    supports_sharded_engines = True

    def __init__(self, model, args, train_dataset, data_collator: Callable, accelerator, *,
                 eval_fn: Callable | None = None, lengths: Sequence[int] | None = None,
                 save_fn: Callable[[Path], None] | None = None, run_identity: dict | None = None,
                 metric_for_best_model: str | None = None, greater_is_better: bool = True,
                 callbacks: Iterable[Callable] = (), tracking_name: str = "gpt1", final_evaluation: bool = True):
        from accelerate.utils import DistributedType
        from transformers import get_scheduler

        acc = self.accelerator = accelerator
        self.args, self.eval_fn, self.callbacks = args, eval_fn, list(callbacks)
        self.metric_for_best_model, self.greater_is_better = metric_for_best_model, greater_is_better
        self.tracking_name, self.final_evaluation = tracking_name, final_evaluation
        self.output_dir = Path(args.output_dir)
        self.batch = resolve_batch_config(args.per_device_train_batch_size, args.global_batch_size,
                                          acc.num_processes, args.gradient_accumulation_steps)
        if len(train_dataset) == 0:
            raise ValueError("the training dataset is empty")
        if args.group_by_length and lengths is None:
            raise ValueError("--group_by_length needs the examples' lengths")
        self.engine = {DistributedType.FSDP: "fsdp", DistributedType.DEEPSPEED: "deepspeed"}.get(
            acc.distributed_type, "ddp")
        if self.engine == "deepspeed":
            self._configure_deepspeed()
        self.sampler = EpochSampler(len(train_dataset), args.seed, lengths if args.group_by_length else None,
                                    self.batch.micro_batch_size)
        loader = torch.utils.data.DataLoader(
            train_dataset, batch_size=self.batch.per_device_batch_size, sampler=self.sampler,
            collate_fn=data_collator, num_workers=args.dataloader_num_workers,
            pin_memory=acc.device.type == "cuda",
            generator=torch.Generator().manual_seed(args.seed))  # its own: iterators must not draw the global RNG
        if args.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if args.torch_compile:
            model.compile()
        self.master_weights = bf16_master_weights(args.mixed_precision, args.bf16_implementation, args.cpu)
        model.to(acc.device, dtype=torch.bfloat16 if self.master_weights else None)
        optimizer = build_optimizer(model, args, master_weights=self.master_weights)
        self.model, self.optimizer, self.loader = acc.prepare(model, optimizer, loader)
        self.micro_batches_per_epoch = len(self.loader)
        updates_per_epoch = math.ceil(self.micro_batches_per_epoch / self.batch.gradient_accumulation_steps)
        self.total_steps, self.warmup_steps = total_and_warmup_steps(args, updates_per_epoch)
        # a prepared scheduler steps once per process at every update (Accelerate's convention): scale its lengths
        p = acc.num_processes
        self.scheduler = acc.prepare(get_scheduler(args.lr_scheduler_type, self.optimizer,
                                                   num_warmup_steps=self.warmup_steps * p,
                                                   num_training_steps=self.total_steps * p))
        self.state = LoopState(total_steps=self.total_steps)
        self.run_identity = {**(run_identity or {}), "batch": asdict(self.batch), "seed": args.seed,
                             "total_steps": self.total_steps, "engine": self.engine}
        unwrapped = acc.unwrap_model(self.model)
        config = getattr(unwrapped, "config", None)
        self.pad_token_id = getattr(config, "pad_token_id", None)
        self.aux_weight = float(getattr(config, "aux_lm_weight", 0.0) or 0.0)
        self.checkpoints = Checkpointer(acc, self.model, self.optimizer, self.output_dir, engine=self.engine,
                                        master_weights=self.master_weights, save_fn=save_fn,
                                        save_total_limit=args.save_total_limit, run_identity=self.run_identity)
        self._progress = None

    @property
    def precision(self) -> dict[str, str | None]:
        """What trained: Accelerate's mixed precision, or bf16 with master weights (`gpt1_hf.precision`)."""
        if self.master_weights:
            return {"mixed_precision": "bf16", "bf16_implementation": "master_weights"}
        mp = self.accelerator.mixed_precision
        return {"mixed_precision": mp, "bf16_implementation": "autocast" if mp == "bf16" else None}

    def summary(self) -> dict[str, Any]:
        """What both recipes' ``results.json`` record of the run: progress, budgets, layout, precision, arguments."""
        s = self.state
        return {"global_step": s.global_step, "epochs_completed": s.epoch, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "stop_reason": s.stop_reason, "tokens_seen": s.tokens_seen,
                "examples_seen": s.examples_seen, "train_time_s": s.train_time,
                "train_tokens_per_s": s.tokens_seen / s.train_time if s.train_time > 0 else None,
                "skipped_updates": s.skipped_updates, "batch": self.batch.as_results(), "seed": self.args.seed,
                **self.precision, "config": self.args.to_dict(), "log_history": s.log_history}

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    def _configure_deepspeed(self) -> None:
        """DeepSpeed's batch entries, filled before ``prepare`` (without them it cannot resolve "auto"). Not run here
        (no DeepSpeed install); see docs/distributed.md."""
        if self.batch.gradient_accumulation_steps > 1:
            raise ValueError(f"global batch {self.batch.global_batch_size} needs gradient accumulation "
                             f"({self.batch.gradient_accumulation_steps}), which the loop does not do under DeepSpeed "
                             "(the engine steps at every backward); use --per_device_train_batch_size "
                             f"{self.batch.global_batch_size // self.batch.num_processes}.")
        config = self.accelerator.state.deepspeed_plugin.deepspeed_config
        config["train_micro_batch_size_per_gpu"] = self.batch.per_device_batch_size
        config["gradient_accumulation_steps"] = 1
        config["train_batch_size"] = self.batch.global_batch_size

    # ------------------------------------------------------------------------------------------------------------------
    # The loop
    # ------------------------------------------------------------------------------------------------------------------
    def fit(self) -> LoopState:
        args, acc = self.args, self.accelerator
        if args.resume_from_checkpoint:
            ckpt = find_checkpoint(self.output_dir, args.resume_from_checkpoint)
            if ckpt is not None:
                self.load_checkpoint(ckpt)
        state = self.state
        if args.with_tracking:
            acc.init_trackers(self.tracking_name, config=_scalar_config(args.to_dict()))
        if acc.is_main_process and not args.disable_tqdm:
            from tqdm.auto import tqdm

            self._progress = tqdm(total=self.total_steps, initial=state.global_step, desc="training",
                                  dynamic_ncols=True)
        self._session_start = time.perf_counter()
        stop = "completed" if state.global_step >= self.total_steps else None
        while stop is None:
            stop = self._run_epoch()
        if self._progress is not None:
            self._progress.close()
        state.stop_reason = stop
        metrics = None
        if self.eval_fn is not None and self.final_evaluation:
            if state.last_eval_step == state.global_step and state.eval_history:
                metrics = {k: v for k, v in state.eval_history[-1].items() if k not in ("step", "epoch")}
            else:
                metrics = self.evaluate()
        if args.with_tracking:
            acc.end_training()
        state.metrics = metrics
        return state

    def _run_epoch(self) -> str | None:
        """The rest of the current epoch, one update per window of micro-batches; returns the stop reason, if any."""
        acc, state = self.accelerator, self.state
        # the data order of this epoch: a sharded loader (several processes) does not pass the epoch to the sampler
        self.sampler.set_epoch(state.epoch)
        self.loader.set_epoch(state.epoch)
        loader = self.loader if state.batch_in_epoch == 0 else acc.skip_first_batches(self.loader,
                                                                                        state.batch_in_epoch)
        batches = iter(loader)
        accum = self.batch.gradient_accumulation_steps
        stop, epoch_done = None, False
        self.model.train()
        while stop is None and not epoch_done:
            size = min(accum, self.micro_batches_per_epoch - state.batch_in_epoch)
            window = [next(batches) for _ in range(size)]
            started = time.perf_counter()
            entry = self._update(window)
            state.batch_in_epoch += size
            epoch_done = state.batch_in_epoch >= self.micro_batches_per_epoch
            state.train_time += time.perf_counter() - started
            if entry is not None:
                entry["tokens_per_s"] = entry.pop("tokens") / max(1e-9, time.perf_counter() - started)
                self._log(entry, force=epoch_done or state.global_step >= self.total_steps)
            stop = self._stop_reason()
            if epoch_done:
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
            stop = self._after_update(epoch_done, stop)
        return stop

    def _update(self, window: list[dict]) -> dict | None:
        """One optimizer update over ``window`` (this process's micro-batches of one global batch): losses are
        normalised by the global batch's item counts (see `gpt1_hf.training`), checked, then the optimizer steps."""
        acc, args, p = self.accelerator, self.args, self.accelerator.num_processes
        counts = [count_items(b, self.pad_token_id) for b in window]
        local = torch.tensor([sum(c[0] for c in counts), sum(c[1] for c in counts),
                              sum(_non_pad_tokens(b) for b in window)], device=acc.device, dtype=torch.long)
        totals = acc.reduce(local, reduction="sum") if p > 1 else local
        n_examples, n_targets = int(totals[0]), max(1, int(totals[1]))
        parts = torch.zeros(3, device=acc.device, dtype=torch.float32)  # L3, L2, L1 of the global batch
        has_clf = False  # a task head (L2 + λ L1) rather than the causal LM (L1)
        for i, (batch, (ex, tg)) in enumerate(zip(window, counts, strict=True)):
            sync = i == len(window) - 1 or p == 1
            with contextlib.nullcontext() if sync else acc.no_sync(self.model):
                out = self.model(**batch)
                has_clf = getattr(out, "clf_loss", None) is not None
                loss, terms = self._normalized_loss(out, ex / n_examples, tg / n_targets)
                acc.backward(loss * p)  # the processes' gradients are averaged: the global sum needs x p
            parts += terms.detach().float()
        if p > 1:
            parts = acc.reduce(parts, reduction="sum")
        clip = args.max_grad_norm if args.max_grad_norm else math.inf  # inf: measure the norm, clip nothing
        grad_norm = acc.clip_grad_norm_(self.model.parameters(), clip)
        norm = float(grad_norm) if grad_norm is not None else 0.0
        if not (math.isfinite(float(parts[0])) and math.isfinite(norm)):
            return self._nonfinite(float(parts[0]), norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state = self.state
        state.global_step += 1
        state.tokens_seen += int(totals[2])
        state.examples_seen += n_examples
        entry = {"step": state.global_step, "loss": float(parts[0]), "learning_rate": lr, "grad_norm": norm,
                 "tokens": int(totals[2])}
        if has_clf:
            entry.update(clf_loss=float(parts[1]), lm_loss=float(parts[2]))
        return entry

    def _normalized_loss(self, out, example_share: float, target_share: float):
        """This micro-batch's part of the global batch's loss: its mean losses reweighted by its share of the items
        (examples for L2, next-token targets for L1). Returns (loss, [L3, L2, L1] parts)."""
        clf = getattr(out, "clf_loss", None)
        if clf is None:  # the causal LM: L1 alone
            lm = out.loss * target_share
            return lm, torch.stack([lm, torch.zeros_like(lm), lm])
        clf = clf * example_share
        lm = getattr(out, "lm_loss", None)
        lm = lm * target_share if lm is not None else torch.zeros_like(clf)
        loss = clf + self.aux_weight * lm
        return loss, torch.stack([loss, clf, lm])

    def _nonfinite(self, loss: float, norm: float) -> None:
        """A NaN/inf loss or gradient norm: nothing of this update is applied or saved."""
        step = self.state.global_step + 1
        what = "non-finite loss" if not math.isfinite(loss) else "non-finite gradient norm"
        self.optimizer.zero_grad(set_to_none=True)
        if self.args.on_nonfinite == "skip":
            self.state.skipped_updates += 1
            logger.warning("%s (%s, grad norm %s) at update %d: skipped (--on_nonfinite skip)", what, loss, norm, step)
            return None
        latest = find_checkpoint(self.output_dir, "auto")
        raise NonFiniteError(
            f"{what} at update {step} (loss {loss}, gradient norm {norm}): training stopped before the optimizer step "
            f"and nothing of this update was saved. Likely causes: a learning rate too high (--learning_rate "
            f"{self.args.learning_rate}), fp16 overflow (use bf16), corrupt weights or inputs. Resume point: "
            f"{latest or 'none (no checkpoint yet)'}; --on_nonfinite skip skips such updates instead.")

    def _stop_reason(self) -> str | None:
        """The budgets, agreed by every process (the time budget could differ between them)."""
        args, state, acc = self.args, self.state, self.accelerator
        stop = None
        if state.global_step >= self.total_steps:
            stop = "completed"
        elif args.max_train_tokens is not None and state.tokens_seen >= args.max_train_tokens:
            stop = "max_train_tokens"
        elif args.max_time is not None and time.perf_counter() - self._session_start >= args.max_time:
            stop = "max_time"
        if acc.num_processes > 1:
            flag = torch.tensor([0 if stop is None else 1], device=acc.device)
            if int(acc.reduce(flag, reduction="max")) and stop is None:
                stop = "max_time"
        return stop

    def _after_update(self, epoch_done: bool, stop: str | None) -> str | None:
        """Evaluation, checkpoint and callbacks after an update."""
        args, state = self.args, self.state
        if self._progress is not None:
            self._progress.update(1)
        every = args.eval_steps
        if self.eval_fn is not None and ((every and state.global_step % every == 0) or (not every and epoch_done)):
            self.evaluate()
        steps = args.checkpointing_steps
        step_save = steps not in (None, "", "epoch") and int(steps) > 0 and state.global_step % int(steps) == 0
        if step_save or (steps == "epoch" and epoch_done) or stop is not None:
            self.save_checkpoint()
        try:
            for callback in self.callbacks:
                callback(self)
        except StopTraining:
            if not (step_save or (steps == "epoch" and epoch_done) or stop is not None):
                self.save_checkpoint()
            stop = "callback"
        return stop

    # ------------------------------------------------------------------------------------------------------------------
    # Logging and evaluation
    # ------------------------------------------------------------------------------------------------------------------
    def _log(self, entry: dict, force: bool) -> None:
        state = self.state
        entry["epoch"] = round(state.epoch + state.batch_in_epoch / max(1, self.micro_batches_per_epoch), 4)
        if not force and state.global_step % max(1, self.args.logging_steps):
            return
        state.log_history.append(entry)
        if self.args.with_tracking:
            self.accelerator.log({f"train/{k}": v for k, v in entry.items() if k not in ("step",)},
                                 step=state.global_step)
        if self._progress is not None:
            self._progress.set_postfix(loss=f"{entry['loss']:.4f}", lr=f"{entry['learning_rate']:.3g}",
                                       tok_s=f"{entry['tokens_per_s']:.0f}", refresh=False)

    def _print(self, line: str) -> None:
        if not self.is_main_process:
            return
        if self._progress is not None:
            self._progress.write(line)
        else:
            print(line, flush=True)

    @contextlib.contextmanager
    def eval_mode(self):
        """Eval mode, no grad, RNG states forked: evaluating never changes training."""
        was_training = self.model.training
        py_state, np_state = random.getstate(), np.random.get_state()
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            self.model.eval()
            try:
                yield
            finally:
                self.model.train(was_training)
                random.setstate(py_state)
                np.random.set_state(np_state)

    def evaluate(self) -> dict[str, float]:
        """``eval_fn`` now: recorded, printed as one line, sent to the trackers, and ``best/`` kept."""
        state = self.state
        with self.eval_mode():
            metrics = {k: float(v) for k, v in (self.eval_fn(self) or {}).items()}
        state.last_eval_step = state.global_step
        epoch = round(state.epoch + state.batch_in_epoch / max(1, self.micro_batches_per_epoch), 4)
        state.eval_history.append({"step": state.global_step, "epoch": epoch, **metrics})
        shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        self._print(f"eval step {state.global_step} (epoch {epoch:.2f}): {shown}")
        if self.args.with_tracking:
            self.accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=state.global_step)
        key = self.metric_for_best_model
        if key:
            if key not in metrics:
                raise KeyError(f"metric_for_best_model={key!r} is not among the evaluation metrics {sorted(metrics)}")
            value = metrics[key]
            better = state.best_metric is None or (value > state.best_metric if self.greater_is_better
                                                   else value < state.best_metric)
            if better and not math.isnan(value):
                state.best_metric, state.best_step = value, state.global_step
                self.save_model(self.output_dir / BEST_DIR, extra={"metrics": metrics, "step": state.global_step})
        return metrics

    def predict(self, dataset, collate_fn: Callable, batch_size: int | None = None) -> dict[str, np.ndarray]:
        with self.eval_mode():
            return predict_logits(self.model, dataset, collate_fn, self.accelerator,
                                  batch_size or self.batch.per_device_batch_size, self.args.dataloader_num_workers)

    def evaluate_loss(self, dataset, collate_fn: Callable, batch_size: int | None = None) -> dict[str, float]:
        with self.eval_mode():
            return lm_heldout_loss(self.model, dataset, collate_fn, self.accelerator,
                                   batch_size or self.batch.per_device_batch_size)

    # ------------------------------------------------------------------------------------------------------------------
    # Saving and resuming (`gpt1_hf.checkpointing`)
    # ------------------------------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """``checkpoints/step-N`` of the run as it is now (call on every process)."""
        return self.checkpoints.save(asdict(self.state), self.args.to_dict())

    def load_checkpoint(self, folder: Path) -> None:
        self.state = LoopState.from_dict(self.checkpoints.load(folder))
        self._print(f"resumed from {folder} at step {self.state.global_step}")

    def save_model(self, folder: str | Path, extra: dict | None = None) -> None:
        self.checkpoints.save_model(folder, self.state.global_step, extra)

    def finalize_model(self):
        """The trained model without Accelerate's wrappers (every process calls it: the sharded engines gather)."""
        return self.checkpoints.finalize_model()


def _non_pad_tokens(batch: dict) -> int:
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def _scalar_config(config: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters the trackers can store (TensorBoard's hparams take scalars and strings only)."""
    return {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v, default=str))
            for k, v in config.items() if v is not None}
