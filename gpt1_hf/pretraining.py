"""Unsupervised pretraining of GPT-1 (paper §3.1, L1 = next-token log-likelihood) on the shared training loop.

`pretrain(PretrainArguments(...))` (what ``scripts/pretrain.py`` runs; docs/pretraining.md has the details):

1. the corpus -- text files (one document per file or per line), ``.jsonl`` or a Hub dataset -- its tokenizer (given,
   bundled, or trained on the corpus by the main process) and its contiguous ``block_size``-token blocks, with a
   held-out split (`gpt1_hf.corpus.corpus_blocks`);
2. a new `GPT1LMHeadModel` of the arguments' shape, or ``model_name_or_path`` continued
   (`gpt1_hf.task_models.build_lm_model`);
3. the paper's optimisation (`PRETRAIN_DEFAULTS`: AdamW 2.5e-4, warmup, cosine decay, weight decay 0.01, batch
   64 x 512, clipping 1.0) in `gpt1_hf.training.TrainingLoop`, the held-out loss before training, every
   ``eval_steps`` (default: each epoch) and at the end; a token budget (``max_train_tokens``) sizes the schedule;
4. ``<output_dir>``: the model + tokenizer (``scripts/finetune.py --model_name_or_path`` takes it), ``results.json``
   (sizes, time, tokens/s, the held-out curve) and ``heldout_perplexity.png``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from .arguments import PretrainArguments
from .corpus import BlockCollator, corpus_blocks, digest, tokenizer_fingerprint
from .distributed import create_accelerator, resolve_batch_config
from .durable import save_final_model, write_text_atomically
from .evaluation import plot_heldout_curve
from .process_settings import apply_process_settings
from .run_folder import find_checkpoint, open_run_folder
from .task_models import build_lm_model
from .training import TrainingLoop

logger = logging.getLogger(__name__)

__all__ = [
    "PretrainArguments",
    "pretrain",
]

# ======================================================================================================================
# Main entry point
# ======================================================================================================================


def pretrain(args: PretrainArguments | None = None, **kwargs) -> dict[str, Any]:
    """Pretrain (see module docstring). Returns the content of ``results.json``."""
    from accelerate.utils import set_seed

    from .distributed import preflight

    start = time.perf_counter()
    args = (args if args is not None else PretrainArguments(**kwargs)).resolved()
    # launch and batch checks before any model or data is loaded (GPU config on a CPU machine, non-dividing batch)
    preflight(args.per_device_train_batch_size, args.global_batch_size, args.gradient_accumulation_steps,
              cpu=args.cpu)
    if args.document_per not in ("file", "line"):
        raise ValueError(f"--document_per must be 'file' or 'line', got {args.document_per!r}")
    set_seed(args.seed)
    apply_process_settings(args.num_threads, args.keep_freed_memory)
    # the processes exist before any data is read: the main one trains the tokenizer (if asked) and builds the
    # datasets cache first, the others then read both
    accelerator = create_accelerator(args.mixed_precision, args.cpu, args.with_tracking, args.report_to,
                                     args.output_dir, args.bf16_implementation)
    with open_run_folder(args.output_dir, accelerator, args.resume_from_checkpoint, args.overwrite_output_dir):
        return _pretrain(args, accelerator, start)


def _sized_arguments(args: PretrainArguments, num_processes: int) -> PretrainArguments:
    """A token budget sizes the schedule: ``max_train_steps`` = the updates that reach ``max_train_tokens``."""
    from dataclasses import replace

    if args.max_train_steps is not None or args.max_train_tokens is None:
        return args
    batch = resolve_batch_config(args.per_device_train_batch_size, args.global_batch_size, num_processes,
                                 args.gradient_accumulation_steps)
    tokens_per_update = batch.global_batch_size * args.block_size
    return replace(args, max_train_steps=max(1, math.ceil(args.max_train_tokens / tokens_per_update)))


def _pretrain(args: PretrainArguments, accelerator, start: float) -> dict[str, Any]:
    resume_ckpt = find_checkpoint(args.output_dir, args.resume_from_checkpoint) if args.resume_from_checkpoint \
        else None
    data = corpus_blocks(args, accelerator, resume_ckpt)
    tokenizer, heldout = data["tokenizer"], data["heldout"]
    model = build_lm_model(args, tokenizer)
    tokenizer.model_max_length = int(model.config.n_positions)  # saved with the model: truncation stops there
    collator = BlockCollator()
    args = _sized_arguments(args, accelerator.num_processes)
    eval_bs = args.per_device_eval_batch_size

    def eval_fn(loop: TrainingLoop) -> dict[str, float]:
        return loop.evaluate_loss(heldout, collator, batch_size=eval_bs)

    identity = {"task": "pretraining", "tokenizer": tokenizer_fingerprint(tokenizer),
                "train_data": digest(len(data["train"]), data["tokens"], args.block_size, args.seed),
                "model": {k: getattr(model.config, k) for k in ("vocab_size", "n_positions", "n_embd", "n_layer",
                                                                "n_head", "n_inner")}}
    loop = TrainingLoop(model, args, data["train"], collator, accelerator, eval_fn=eval_fn,
                        save_fn=tokenizer.save_pretrained, run_identity=identity, metric_for_best_model="loss",
                        greater_is_better=False, tracking_name="gpt1-pretraining")
    initial = None
    if resume_ckpt is None:  # the untrained model's held-out loss: the curve's first point
        initial = loop.evaluate_loss(heldout, collator, batch_size=eval_bs)
        loop.state.eval_history.append({"step": 0, "epoch": 0.0, **initial})
    result = loop.fit()
    history = result.eval_history
    if initial is None:
        initial = next(({k: h[k] for k in ("loss", "perplexity")} for h in history if h["step"] == 0), None)
    final_model = loop.finalize_model()
    results = _results(args, data, loop, result, final_model, initial)
    if accelerator.is_main_process:
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        save_final_model(final_model, tokenizer, output_dir)
        if args.plot and plot_heldout_curve(history, output_dir / "heldout_perplexity.png"):
            results["plot"] = str(output_dir / "heldout_perplexity.png")
        results["wall_time_s"] = time.perf_counter() - start
        write_text_atomically(output_dir / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    accelerator.wait_for_everyone()
    results.setdefault("wall_time_s", time.perf_counter() - start)
    return results


def _results(args, data, loop, result, final_model, initial) -> dict[str, Any]:
    """``results.json``: corpus, tokenizer, model, the held-out curve, and the loop's summary (layout, arguments...)."""
    summary = loop.summary()
    tps = summary["train_tokens_per_s"]
    summary["batch"]["tokens_per_update"] = summary["batch"]["global"] * args.block_size
    return {
        "corpus": {"train_files": list(args.train_files), "dataset_name": args.dataset_name,
                   "documents": len(data["corpus"]), "tokens": data["tokens"], "train_blocks": len(data["train"]),
                   "heldout_blocks": len(data["heldout"]), "heldout_tokens": data["heldout_tokens"],
                   "block_size": args.block_size},
        "tokenizer": {"trained": args.train_tokenizer, "vocab_size": len(data["tokenizer"])},
        "model": {k: getattr(final_model.config, k) for k in ("vocab_size", "n_positions", "n_embd", "n_layer",
                                                              "n_head", "n_inner")},
        "num_parameters": sum(p.numel() for p in final_model.parameters()),
        "initial_heldout": initial, "final_heldout": result.metrics, "best_heldout_loss": result.best_metric,
        "best_step": result.best_step, "heldout_history": result.eval_history,
        "train_tokens_per_min": tps * 60 if tps else None, **summary,
    }
