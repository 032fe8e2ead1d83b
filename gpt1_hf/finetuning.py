"""Fine-tuning GPT-1 on the paper's tasks or your own data (Radford et al. 2018, §3.2-3.3 and §4.1), on the shared
training loop.

`finetune(FinetuneArguments(...))` (what ``scripts/finetune.py`` runs; docs/finetuning.md has the details):

1. the tokenizer, and the model for the task's kind (`gpt1_hf.task_models.build_finetune_model`: a gpt1 folder / Hub
   id, a transformers ``openai-gpt`` checkpoint or OpenAI's release converted on load, or from scratch; optionally
   ``transfer_layers`` and LoRA adapters);
2. the splits, loaded and encoded with the paper's input transformations before anything trains
   (`gpt1_hf.task_data`);
3. training with L3 = L2 + aux_lm_weight * L1 (computed by the model) in `gpt1_hf.training.TrainingLoop`, the task's
   `evaluate` metric every epoch, the best checkpoint kept in ``<output_dir>/best``;
4. ``<output_dir>``: the final model + tokenizer + card, ``results.json``, ``predictions/<split>/`` (GLUE submission
   TSVs for GLUE tasks) and, with ``push_to_hub``, the Hub upload (`gpt1_hf.hub`).

Defaults are the paper's recipe (`FINETUNE_PAPER_DEFAULTS`); with no model at all the *embedded default* runs instead:
a tiny GPT-1 trained from scratch on the SST-2 sample bundled in the package (`FINETUNE_EMBEDDED_DEFAULTS`), offline,
in about a minute on a laptop CPU.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from .arguments import EMBEDDED_MODEL_CONFIG, FINETUNE_EMBEDDED_DEFAULTS, FINETUNE_PAPER_DEFAULTS, FinetuneArguments
from .distributed import create_accelerator
from .durable import save_final_model, write_text_atomically
from .evaluation import evaluate_checkpoint, model_inputs, task_groups, task_metrics, write_prediction_files
from .process_settings import apply_process_settings
from .run_folder import open_run_folder
from .task_data import data_fingerprint, encode_user_data, load_task_data, read_user_data, report_data
from .task_models import build_finetune_model, build_task_model, bundled_data_path, load_tokenizer
from .tasks import TaskSpec, get_task, task_to_dict
from .training import TrainingLoop
from .user_data import DataOptions, has_user_data

logger = logging.getLogger(__name__)

__all__ = [
    "FinetuneArguments",
    "FINETUNE_PAPER_DEFAULTS",
    "FINETUNE_EMBEDDED_DEFAULTS",
    "EMBEDDED_MODEL_CONFIG",
    "finetune",
    "evaluate_checkpoint",
    "load_tokenizer",
    "build_task_model",
    "bundled_data_path",
]

# ======================================================================================================================
# Main entry points
# ======================================================================================================================


def _check_run_options(spec: TaskSpec | None, args: FinetuneArguments) -> None:
    """Option combinations that would only fail after training: raised before anything is loaded or written."""
    if args.push_to_hub and not args.save_model:
        raise ValueError("--push_to_hub uploads the saved final model, but --no_save_model (save_model=False) skips "
                         "saving it: drop one of the two")
    for split in (args.predict_splits or ()) if spec is not None else ():
        if split not in spec.splits:
            raise ValueError(f"--predict_splits: unknown split {split!r} for task {spec.name!r}; use one of "
                             f"{list(spec.splits)}")


def _run_identity(spec: TaskSpec, args: FinetuneArguments, model, tokenizer, data: dict, max_length: int) -> dict:
    """What a checkpoint of this run must share with the run that resumes it (`gpt1_hf.training.TrainingLoop`)."""
    config = model.config
    return {"task": spec.name, "train_data": data_fingerprint(data["train"]),
            "model": {k: getattr(config, k, None) for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head",
                                                            "n_inner", "num_labels")},
            "tokenizer": len(tokenizer), "aux_lm_weight": float(args.aux_lm_weight), "max_length": max_length,
            "lora": [args.lora_r, args.lora_alpha, sorted(args.lora_target_modules or [])] if args.lora else None}


def finetune(args: FinetuneArguments | None = None, tokenizer=None, **kwargs) -> dict[str, Any]:
    """Fine-tune (see module docstring); returns the content of ``results.json``. ``tokenizer``: use this tokenizer
    object instead of loading one (it needs the GPT-1 special-token ids)."""
    from accelerate.utils import set_seed

    from .distributed import preflight

    start = time.perf_counter()
    args = (args if args is not None else FinetuneArguments(**kwargs)).resolved()
    # launch and batch checks before anything is loaded (GPU config on a CPU machine, non-dividing batch, LoRA + FSDP)
    preflight(args.per_device_train_batch_size, args.global_batch_size, args.gradient_accumulation_steps,
              cpu=args.cpu, lora_trainable_tokens=args.lora)
    user_data = has_user_data(DataOptions.from_args(args))
    spec = None if user_data else get_task(args.task_name)  # your data: the task is built when it is read
    _check_run_options(spec, args)
    if args.push_to_hub:  # a push that cannot happen must fail now, not after training
        from .hub import check_hub_access

        check_hub_access(args.hub_model_id or Path(args.output_dir).name, token=args.hub_token,
                         private=args.hub_private_repo, model_dir=args.output_dir)
    set_seed(args.seed)
    apply_process_settings(args.num_threads, args.keep_freed_memory)
    # the accelerator first: it decides the process group (a bare PartialState() would make a torchrun launch on CPUs
    # a set of independent single processes)
    accelerator = create_accelerator(args.mixed_precision, args.cpu, args.with_tracking, args.report_to,
                                     args.output_dir, args.bf16_implementation)
    with open_run_folder(args.output_dir, accelerator, args.resume_from_checkpoint, args.overwrite_output_dir):
        return _finetune(args, spec, accelerator, tokenizer, start)


def _finetune(args: FinetuneArguments, spec: TaskSpec | None, accelerator, tokenizer, start: float) -> dict[str, Any]:
    from .data import GPT1Collator
    from .metrics import load_metric

    raw = None
    if spec is None:  # your data: read first, it defines the task (kind, labels, metrics)
        spec, raw = read_user_data(args)
        _check_run_options(spec, args)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(args.tokenizer_name, args.model_name_or_path)
    model, model_info = build_finetune_model(spec, args, tokenizer)
    max_length = min(int(args.max_length), int(model.config.n_positions))
    # the saved tokenizer makes a task input: tokenizer(text) ends with _classify_, where the head pools (a
    # text-classification pipeline on the output folder then classifies), and truncation stops at the model's length
    tokenizer.add_extract_token = True
    tokenizer.model_max_length = int(model.config.n_positions)
    data = load_task_data(spec, args, tokenizer, max_length) if raw is None else encode_user_data(
        spec, args, raw, tokenizer, max_length)
    report_data(data["info"], accelerator.is_main_process)
    collator = GPT1Collator(pad_token_id=tokenizer.pad_token_id, pad_to_multiple_of=args.pad_to_multiple_of,
                            pad_to_max_length=max_length if args.pad_to_max_length else None, max_length=max_length)
    eval_inputs, eval_groups = model_inputs(data["eval"]), task_groups(data["eval"])
    last_eval: dict[str, Any] = {}  # the logits of this session's latest evaluation, by update
    metric = load_metric(spec)  # once, and before training: a metric that cannot load fails now, not at epoch 1

    def eval_fn(loop: TrainingLoop) -> dict[str, float]:
        out = loop.predict(eval_inputs, collator, batch_size=args.per_device_eval_batch_size)
        last_eval.update(step=loop.state.global_step, logits=out["logits"])
        return task_metrics(spec, out["logits"], out["labels"], eval_groups, metric=metric)

    loop = TrainingLoop(model, args, model_inputs(data["train"]), collator, accelerator, eval_fn=eval_fn,
                        lengths=list(data["train"]["length"]) if args.group_by_length else None,
                        save_fn=tokenizer.save_pretrained, metric_for_best_model=spec.primary_metric,
                        run_identity=_run_identity(spec, args, model, tokenizer, data, max_length),
                        tracking_name=f"gpt1-{spec.name}")
    result = loop.fit()
    # predictions of the final model on the eval split (the evaluation after the last update made them already) and
    # on the prediction splits loaded before training
    final_logits = last_eval["logits"] if last_eval.get("step") == loop.state.global_step else loop.predict(
        eval_inputs, collator, args.per_device_eval_batch_size)["logits"]
    to_write = [(args.eval_split, final_logits, list(data["eval"]["idx"]))]
    for split, enc in data["predict"]:
        to_write.append((split, loop.predict(model_inputs(enc), collator, args.per_device_eval_batch_size)["logits"],
                         list(enc["idx"])))
    final_model = loop.finalize_model()
    results = _results(spec, args, loop, result, model_info, final_model, data, max_length)
    if raw is not None:  # no name looks a task of your data up: the card and the Hub upload read it from here
        results["task_spec"] = task_to_dict(spec)
    if accelerator.is_main_process:
        _write_outputs(spec, args, results, to_write, final_model, tokenizer, start)
    accelerator.wait_for_everyone()
    results["wall_time_s"] = results["wall_time_s"] or time.perf_counter() - start
    return results


def _results(spec, args, loop, result, model_info, final_model, data, max_length) -> dict[str, Any]:
    """``results.json``: metrics, history, data accounting, model, and the loop's summary (layout, arguments...)."""
    return {
        "task": spec.name, "task_kind": spec.kind, "primary_metric": spec.primary_metric, "metrics": result.metrics,
        "eval_split": args.eval_split,
        "best": {"metric": spec.primary_metric, "value": result.best_metric, "step": result.best_step,
                 "path": str(Path(args.output_dir) / "best")},
        "paper_score": spec.paper_score, "eval_history": result.eval_history, "wall_time_s": None,
        "sizes": data["sizes"], "truncated": data["truncated"],
        # per split: what was loaded (source, files) and done to it (partial sample, substitution, dropped rows)
        "data": data["info"], "max_length": max_length,
        "model": {**{k: v for k, v in model_info.items() if k != "reinitialized"},
                  "n_reinitialized_params": len(model_info.get("reinitialized", [])),
                  "config": {k: getattr(final_model.config, k) for k in
                             ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "aux_lm_weight",
                              "clf_pdrop")},
                  "num_parameters": sum(p.numel() for p in final_model.parameters())},
        **loop.summary(), "prediction_files": {},
    }


def _write_outputs(spec, args, results, to_write, final_model, tokenizer, start) -> None:
    """Main process: prediction files, the final model (installed whole), results.json, then the Hub."""
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for split, logits, idx in to_write:
        results["prediction_files"][split] = str(write_prediction_files(spec, split, logits, idx, output_dir))
    if args.save_model:
        save_final_model(final_model, tokenizer, output_dir)
        if hasattr(final_model, "peft_config"):  # the head's labels, which the adapter's base config lacks
            from .lora import write_adapter_task_config

            write_adapter_task_config(final_model, output_dir)
    results["wall_time_s"] = time.perf_counter() - start
    _write_json(output_dir / "results.json", results)
    if args.save_model:  # the card travels with the folder, pushed or not (a LoRA folder: ours, not PEFT's stub)
        from .hub import write_model_card

        write_model_card(output_dir, results, repo_id=args.hub_model_id, base_model=args.hub_base_model)
    if args.push_to_hub:
        from .hub import push_to_hub

        results["hub_url"] = push_to_hub(output_dir, args.hub_model_id or output_dir.name, results=results,
                                         private=args.hub_private_repo, token=args.hub_token,
                                         base_model=args.hub_base_model)


def _write_json(path: Path, data) -> None:
    write_text_atomically(path, json.dumps(data, indent=2, default=str) + "\n")


