"""A run's output folder: its layout, and who may write it (one run per folder, no mixing, no leftovers).

* Layout: ``checkpoints/step-NNNNNNNN`` (complete once ``training_state.json`` is in it; ``checkpoints/latest`` names
  the newest), ``best/``, ``runs/`` (trackers), the final model, ``results.json``.
* `open_run_folder`: the folder's `gpt1_hf.durable.RunLock` for the run's life, a killed run's temporary files removed,
  and a fresh run refused where the folder holds another run unless ``overwrite_output_dir``.
* `find_checkpoint`: ``--resume_from_checkpoint`` (``latest``, ``auto`` or a path) -> a complete checkpoint folder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .durable import RunLock, remove_leftovers

logger = logging.getLogger(__name__)

__all__ = ["CHECKPOINTS_DIR", "LATEST_POINTER", "STATE_FILE", "BEST_DIR", "TRACKING_DIR", "holds_a_run",
           "open_run_folder", "find_checkpoint"]

CHECKPOINTS_DIR = "checkpoints"
LATEST_POINTER = "latest"
STATE_FILE = "training_state.json"
BEST_DIR = "best"
TRACKING_DIR = "runs"


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
