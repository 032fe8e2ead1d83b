"""Saving and resuming a run: `Checkpointer`, the part of `gpt1_hf.training.TrainingLoop` that writes to disk.

* **Checkpoints** (``<output_dir>/checkpoints/step-NNNNNNNN``): ``accelerator.save_state`` (model, optimizer,
  scheduler, every process's RNG state) plus the model's config and tokenizer (so ``from_pretrained`` loads one) and
  ``training_state.json`` -- progress, data position and the run's identity -- written last, into a temporary folder
  renamed into place; ``checkpoints/latest`` names the newest. The data position lives in that JSON file rather than
  in a ``register_for_checkpointing`` object because Accelerate unpickles those with ``weights_only=False``.
* **Resuming** compares the checkpoint's run identity with this run's first (`RunMismatchError` names each
  difference), checks its weights are finite, then ``accelerator.load_state``.
* **Models** (``best/``, the final model): ``save_pretrained`` folders written atomically, never from non-finite
  weights (`NonFiniteError`); under FSDP / DeepSpeed the full weights are gathered first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from .durable import check_finite_weights, disk_errors, fsync_tree, save_directory_atomically, write_text_atomically
from .precision import fp32_model
from .run_folder import CHECKPOINTS_DIR, LATEST_POINTER, STATE_FILE

logger = logging.getLogger(__name__)

__all__ = ["Checkpointer", "NonFiniteError", "RunMismatchError"]


class NonFiniteError(RuntimeError):
    """A NaN/inf loss, gradient norm or weight (the run stops; nothing of that update is applied or saved)."""


class RunMismatchError(ValueError):
    """A checkpoint of another run (task, data, model, batch, seed or length) given to resume this one."""


class Checkpointer:
    """Writes and reads one run's checkpoints and models.

    Args:
        model, optimizer: as ``accelerator.prepare`` returned them.
        engine: "ddp", "fsdp" or "deepspeed" (the sharded engines gather the weights to save a plain model).
        master_weights: the model is bf16 and the optimizer holds fp32 master weights (`gpt1_hf.precision`).
        save_fn: ``save_fn(folder)`` writes what travels with every saved model (the tokenizer).
        run_identity: what defines the run; stored in every checkpoint and compared on resume.
    """

    def __init__(self, accelerator, model, optimizer, output_dir: Path, *, engine: str, master_weights: bool,
                 save_fn: Callable[[Path], None] | None, save_total_limit: int | None, run_identity: dict):
        self.accelerator, self.model, self.optimizer = accelerator, model, optimizer
        self.output_dir, self.engine, self.master_weights = Path(output_dir), engine, master_weights
        self.save_fn, self.save_total_limit, self.run_identity = save_fn, save_total_limit, run_identity

    @property
    def sharded(self) -> bool:
        return self.engine in ("fsdp", "deepspeed")

    def check_weights_finite(self, step: int) -> None:
        bad = [n for n, p in self.model.named_parameters() if p.is_floating_point() and not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteError(f"non-finite weights after update {step} ({bad[:4]}): nothing was saved. Likely "
                                 "cause: a learning rate too high; resume from the last checkpoint.")

    def save(self, state: dict, arguments: dict) -> Path:
        """``checkpoints/step-N``: ``accelerator.save_state`` into a temporary folder, then the config/tokenizer and
        ``training_state.json`` (last), renamed into place; ``latest`` then names it. Call on every process."""
        acc, step = self.accelerator, state["global_step"]
        self.check_weights_finite(step)
        root = self.output_dir / CHECKPOINTS_DIR
        name = f"step-{step:08d}"
        tmp, final = root / f".tmp-{name}", root / name
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        # sharded engines: the gathered weights (a collective) as model.safetensors beside Accelerate's own files
        plain = self.finalize_model(training_goes_on=True) if self.sharded else None
        extra = {"fsdp": self._fsdp_layout()} if self.engine == "fsdp" else {}
        with disk_errors(tmp), _quiet_saving():
            acc.save_state(str(tmp))
            if acc.is_main_process:
                self._write_companions(tmp, plain)
                (tmp / STATE_FILE).write_text(json.dumps(
                    {"state": state, "run": self.run_identity, **extra, "arguments": arguments},
                    indent=2, default=str))
                fsync_tree(tmp)
        if acc.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            write_text_atomically(root / LATEST_POINTER, name)
            self._prune(root, keep=name)
        acc.wait_for_everyone()
        return final

    def _write_companions(self, folder: Path, plain=None) -> None:
        """Config + tokenizer beside the weights, so that ``from_pretrained(checkpoint)`` loads a plain model (under
        the sharded engines, whose own files are not a ``save_pretrained`` layout, the gathered model too)."""
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if hasattr(model, "peft_config"):  # a LoRA checkpoint holds the PeftModel's state; its base is elsewhere
            return
        if plain is not None:
            plain.save_pretrained(folder, safe_serialization=True)
        else:
            model.config.save_pretrained(folder)
        if self.save_fn is not None:
            self.save_fn(folder)

    def _fsdp_layout(self) -> dict:
        """What FSDP did to the model (recorded in the checkpoint): version, wrapped units, sharded tensors."""
        from torch.distributed.fsdp import FSDPModule

        units = [name for name, m in self.model.named_modules() if isinstance(m, FSDPModule)]
        sharded = sum(1 for p in self.model.parameters() if type(p).__name__ == "DTensor")
        return {"version": getattr(self.accelerator.state.fsdp_plugin, "fsdp_version", None), "units": units,
                "sharded_parameters": sharded, "processes": self.accelerator.num_processes}

    def _prune(self, root: Path, keep: str) -> None:
        limit = self.save_total_limit
        if not limit or limit < 1:
            return
        ckpts = sorted(p for p in root.glob("step-*") if p.is_dir())
        for path in [p for p in ckpts if p.name != keep][: max(0, len(ckpts) - limit)]:
            shutil.rmtree(path, ignore_errors=True)

    def load(self, folder: Path) -> dict:
        """Resume: the run's identity compared first, the weights checked, then ``accelerator.load_state``; returns
        the saved loop state."""
        saved = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        self._check_same_run(saved.get("run") or {}, folder)
        check_finite_weights(folder)
        self.accelerator.load_state(str(folder))
        return saved["state"]

    def _check_same_run(self, saved: dict, folder: Path) -> None:
        differences = [f"{key}: checkpoint {saved[key]!r}, this run {value!r}"
                       for key, value in self.run_identity.items() if key in saved and saved[key] != value]
        if differences:
            task = saved.get("task")
            raise RunMismatchError(
                f"checkpoint {folder} belongs to another run{f' (task {task!r})' if task else ''}; it differs in:\n  "
                + "\n  ".join(differences)
                + "\nResume with the same task, data, model, batch layout, seed and length, or start fresh in another "
                "--output_dir (or with --overwrite_output_dir).")

    def save_model(self, folder: str | Path, step: int, extra: dict | None = None) -> None:
        """The model (+ ``save_fn`` files) as a ``save_pretrained`` folder, atomically. Every process calls it (the
        sharded engines gather the weights); the main process writes."""
        self.check_weights_finite(step)
        model = self.finalize_model(training_goes_on=True)
        if self.accelerator.is_main_process:
            def write(tmp: Path) -> None:
                with disk_errors(tmp), _quiet_saving():
                    model.save_pretrained(tmp, safe_serialization=True)
                    if self.save_fn is not None:
                        self.save_fn(tmp)
                    if extra is not None:
                        (tmp / "training_info.json").write_text(json.dumps(extra, indent=2, default=str))

            save_directory_atomically(folder, write)
        self.accelerator.wait_for_everyone()

    def finalize_model(self, training_goes_on: bool = False):
        """The trained model without Accelerate's wrappers. Under FSDP / DeepSpeed the full weights are gathered (every
        process must call this) into a plain copy; processes other than the main one get it on the meta device.
        `training_goes_on` (best/ during training) keeps the autocast wrapper: accelerate removes it in place."""
        acc = self.accelerator
        unwrapped = acc.unwrap_model(self.model, keep_fp32_wrapper=training_goes_on, keep_torch_compile=False)
        if self.master_weights:  # the fp32 master values, not their bf16 working copies
            return fp32_model(unwrapped, self.optimizer.optimizer)
        if not self.sharded:
            return unwrapped
        state = acc.get_state_dict(self.model)
        with torch.device("meta"):
            plain = type(unwrapped)(unwrapped.config)
        if acc.is_main_process:
            plain.load_state_dict(state, strict=False, assign=True)
            plain.tie_weights()
        return plain


@contextlib.contextmanager
def _quiet_saving():
    """No "Writing model shards" bar inside the training bar, no warning for the tied lm_head that safetensors stores
    once (``from_pretrained`` ties it again)."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    accelerate_logger = logging.getLogger("accelerate.utils.other")
    level = accelerate_logger.level
    accelerate_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        accelerate_logger.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()
