"""Fine-tuning GPT-1 on the paper's tasks (Radford et al. 2018, §3.2-3.3 and §4.1), on the shared training loop.

`finetune(FinetuneArguments(...))` (what ``scripts/finetune.py`` runs):

1. the tokenizer (``tokenizer_name``, else the model's, else the GPT-1 BPE files bundled in the package);
2. the model for the task's kind -- ``multiple_choice`` -> `GPT1ForMultipleChoice`, otherwise
   `GPT1ForSequenceClassification` (``num_labels`` from the task, 1 for STS-B regression; similarity tasks feed both
   orderings as (batch, 2, seq)) -- from a gpt1 folder / Hub id, a transformers ``openai-gpt`` checkpoint or OpenAI's
   original release (converted on load by `gpt1_hf.convert.load_as_gpt1`), or from scratch;
   ``transfer_layers=K`` keeps the embeddings and the first K pretrained blocks and re-initialises the rest (paper
   Figure 2 left);
3. the task data (`gpt1_hf.data`: local ``data_dir`` or the Hub), encoded with the paper's input transformations;
4. training with L3 = L2 + aux_lm_weight * L1 (computed by the model), evaluation with the task's `evaluate` metric
   every epoch (``gather_for_metrics``), the best checkpoint kept in ``<output_dir>/best``;
5. ``<output_dir>``: the final model + tokenizer, ``results.json``, ``predictions/<split>/`` (GLUE submission TSVs for
   GLUE tasks) and, with ``push_to_hub``, the Hub upload (`gpt1_hf.hub`).

Defaults are the paper's fine-tuning recipe (`FINETUNE_PAPER_DEFAULTS`). With no model at all (``model_name_or_path=None``)
the *embedded default* runs instead: a tiny GPT-1 trained from scratch on the SST-2 sample bundled in the package
(`FINETUNE_EMBEDDED_DEFAULTS`), offline, in a few minutes on a laptop CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .arguments import EMBEDDED_MODEL_CONFIG, FINETUNE_EMBEDDED_DEFAULTS, FINETUNE_PAPER_DEFAULTS, FinetuneArguments
from .durable import save_final_model, write_text_atomically
from .loop import TrainingLoop
from .tasks import TaskSpec, get_task, task_to_dict
from .user_data import DataOptions, has_user_data
from .training import create_accelerator, open_run_folder, predict_logits

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
    "head_class_for",
    "reinitialize_layers",
    "bundled_data_path",
]

def bundled_data_path(*parts: str) -> Path:
    """A path inside the package's ``data_files`` (embedded SST-2 sample, GPT-1 BPE files)."""
    return Path(str(resources.files("gpt1_hf").joinpath("data_files", *parts)))


# ======================================================================================================================
# Tokenizer and model
# ======================================================================================================================


def load_tokenizer(tokenizer_name_or_path: str | None = None, model_name_or_path: str | None = None):
    """GPT1Tokenizer from ``tokenizer_name_or_path``, else from the model's folder / repo, else the bundled GPT-1 BPE
    files (MIT licence, ``gpt1_hf/data_files/gpt1_bpe``)."""
    from .tokenization_gpt1 import GPT1Tokenizer

    source = tokenizer_name_or_path or model_name_or_path
    if source is None:
        bpe = bundled_data_path("gpt1_bpe")
        return GPT1Tokenizer(vocab_file=str(bpe / "encoder_bpe_40000.json"), merges_file=str(bpe / "vocab_40000.bpe"))
    from .convert import load_tokenizer_as_gpt1

    try:
        return load_tokenizer_as_gpt1(source)
    except (OSError, ValueError) as e:
        if tokenizer_name_or_path is None:
            raise OSError(
                f"no GPT-1 tokenizer found with the model {model_name_or_path!r} ({e}); pass --tokenizer_name"
            ) from e
        raise


def head_class_for(spec: TaskSpec):
    from .modeling_gpt1 import GPT1ForMultipleChoice, GPT1ForSequenceClassification

    return GPT1ForMultipleChoice if spec.kind == "multiple_choice" else GPT1ForSequenceClassification


def _task_config_overrides(spec: TaskSpec, args: FinetuneArguments) -> dict[str, Any]:
    overrides: dict[str, Any] = dict(aux_lm_weight=float(args.aux_lm_weight), clf_pdrop=float(args.clf_pdrop))
    if spec.kind != "multiple_choice":
        overrides["num_labels"] = spec.num_labels
        overrides["problem_type"] = "regression" if spec.is_regression else "single_label_classification"
        if spec.id2label:
            overrides["id2label"] = dict(spec.id2label)
            overrides["label2id"] = dict(spec.label2id)
    return overrides


def _read_config_json(path: str) -> dict | None:
    """The ``config.json`` of a local model folder, or of a Hub model id (through `transformers.utils.cached_file`:
    the local cache, else a download of that one small file); None when there is none (e.g. OpenAI's original
    release) or it cannot be fetched (offline and not cached: the weights' loading then reports the problem)."""
    p = Path(path) / "config.json"
    if p.is_file():
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None
    if Path(path).exists():  # a local folder / file without config.json
        return None
    from transformers.utils import cached_file

    try:
        resolved = cached_file(str(path), "config.json", _raise_exceptions_for_missing_entries=False,
                               _raise_exceptions_for_connection_errors=False, _raise_exceptions_for_gated_repo=False)
    except (OSError, ValueError) as e:  # not a valid repo id, no such repo, ...
        logger.debug("no config.json for %s: %s", path, e)
        return None
    if not resolved or not Path(resolved).is_file():
        return None
    try:
        return json.loads(Path(resolved).read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def _check_head_compatibility(spec: TaskSpec, model_name_or_path: str, reinit_head: bool) -> None:
    """A fine-tuned checkpoint (local folder or Hub id) whose head does not fit the task: a clear error (unless
    ``reinit_head``), raised from its config.json before any weight is loaded."""
    cfg = _read_config_json(model_name_or_path)
    if not cfg or reinit_head:
        return
    archs = cfg.get("architectures") or []
    if "GPT1ForSequenceClassification" in archs:
        if spec.kind == "multiple_choice":
            raise ValueError(
                f"{model_name_or_path} is a sequence-classification checkpoint ({cfg.get('num_labels', len(cfg.get('id2label') or {}))} labels); "
                f"task {spec.name} is multiple choice. Pass --reinit_head to train a new head on its backbone."
            )
        n = len(cfg.get("id2label") or {}) or cfg.get("num_labels")
        if n is not None and int(n) != spec.num_labels:
            raise ValueError(
                f"{model_name_or_path} was fine-tuned with {n} labels but task {spec.name} has {spec.num_labels} "
                f"({list(spec.label_names) if spec.label_names else 'regression'}). Use a checkpoint for this task, or "
                "--reinit_head to train a new head on its backbone."
            )
    elif "GPT1ForMultipleChoice" in archs and spec.kind != "multiple_choice":
        raise ValueError(
            f"{model_name_or_path} is a multiple-choice checkpoint; task {spec.name} needs a classification head "
            f"with {spec.num_labels} labels. Pass --reinit_head to train a new head on its backbone."
        )


def reinitialize_layers(model, keep_layers: int) -> list[str]:
    """Keep the embeddings and the first ``keep_layers`` blocks; re-initialise the other blocks and the task head with
    the model's own init (N(0, initializer_range) weights, zero biases, unit LayerNorm gains). Returns the names of
    the re-initialised parameters."""
    blocks = model.transformer.h
    if not 0 <= keep_layers <= len(blocks):
        raise ValueError(f"transfer_layers={keep_layers} but the model has {len(blocks)} layers (use 0..{len(blocks)})")
    reinit = []
    modules = list(blocks[keep_layers:])
    for name in ("score",):
        if hasattr(model, name):
            modules.append(getattr(model, name))
    for module in modules:
        for sub in module.modules():
            if hasattr(sub, "_is_hf_initialized"):
                sub._is_hf_initialized = False
            for p in sub.parameters(recurse=False):
                if hasattr(p, "_is_hf_initialized"):
                    p._is_hf_initialized = False
        module.apply(model._init_weights)
    names = {id(p): n for n, p in model.named_parameters()}
    for module in modules:
        reinit.extend(names[id(p)] for p in module.parameters() if id(p) in names)
    return reinit


def build_task_model(spec: TaskSpec, args: FinetuneArguments, tokenizer):
    """The task head model (see module docstring). Returns (model, info dict)."""
    from .configuration_gpt1 import GPT1Config

    head = head_class_for(spec)
    overrides = _task_config_overrides(spec, args)
    info: dict[str, Any] = {"head": head.__name__, "init": None}
    if args.from_scratch:
        if args.model_name_or_path is not None:
            cfg = _read_config_json(args.model_name_or_path)
            if cfg is not None and cfg.get("model_type") == "openai-gpt":
                from transformers import OpenAIGPTConfig

                from .convert import gpt1_config_from_openai_gpt

                base = gpt1_config_from_openai_gpt(OpenAIGPTConfig.from_pretrained(args.model_name_or_path),
                                                   vocab_size=len(tokenizer)).to_dict()
            else:
                base = GPT1Config.from_pretrained(args.model_name_or_path).to_dict()
            for k in ("architectures", "auto_map", "id2label", "label2id", "num_labels", "problem_type",
                      "transformers_version", "model_type", "_name_or_path", "dtype", "torch_dtype"):
                base.pop(k, None)
        else:
            base = {}
        base.update(args.model_config_overrides())
        base.update(vocab_size=len(tokenizer), start_token_id=tokenizer.start_token_id,
                    delimiter_token_id=tokenizer.delimiter_token_id, clf_token_id=tokenizer.classify_token_id,
                    pad_token_id=tokenizer.pad_token_id)
        base.update(overrides)
        config = GPT1Config(**base)
        model = head(config)
        info["init"] = "from_scratch"
    else:
        from .convert import detect_checkpoint_format, load_as_gpt1

        _check_head_compatibility(spec, args.model_name_or_path, args.reinit_head)
        # "gpt1" loads with from_pretrained; "openai-gpt" (transformers) and "original" (OpenAI's release) are
        # converted on load (special-token rows added from the seed): a LoRA adapter's card must say how to rebuild
        # that base (gpt1_hf.hub)
        info["source_format"] = detect_checkpoint_format(args.model_name_or_path)
        info["converted"] = info["source_format"] != "gpt1"
        extra = dict(overrides)
        extra.update(args.model_config_overrides())
        if args.reinit_head:
            extra["ignore_mismatched_sizes"] = True
        model = load_as_gpt1(args.model_name_or_path, head, seed=args.seed, **extra)
        info["init"] = "pretrained"
        if args.transfer_layers is not None:
            info["reinitialized"] = reinitialize_layers(model, int(args.transfer_layers))
            info["transfer_layers"] = int(args.transfer_layers)
    _check_tokenizer_matches(model.config, tokenizer)
    return model, info


def _check_tokenizer_matches(config, tokenizer) -> None:
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} entries but the model's vocabulary has {config.vocab_size}: they do "
            "not belong together (pass the model's own tokenizer with --tokenizer_name)."
        )
    for cfg_name, tok_name in (("start_token_id", "start_token_id"), ("delimiter_token_id", "delimiter_token_id"),
                               ("clf_token_id", "classify_token_id"), ("pad_token_id", "pad_token_id")):
        c, t = getattr(config, cfg_name, None), getattr(tokenizer, tok_name, None)
        if c is not None and t is not None and int(c) != int(t):
            raise ValueError(
                f"model config {cfg_name}={c} but the tokenizer's {tok_name}={t}: the tokenizer does not match the "
                "model (special tokens must be the same ids)."
            )


# ======================================================================================================================
# Data
# ======================================================================================================================


def _load_split(spec, split, args, max_examples, tokenizer, max_length):
    """(raw, encoded, n_truncated, load info dict) of one split; the info (`gpt1_hf.data.LoadInfo`: files, partial
    sample, split substitution, rows dropped without a gold label) goes to ``results["data"]``."""
    from .data import encode_dataset, load_task_split

    raw, info = load_task_split(spec, split, data_dir=args.data_dir, max_examples=max_examples, seed=args.seed,
                                return_info=True)
    if len(raw) == 0:
        raise ValueError(f"task {spec.name} split {split!r} has no examples")
    encoded, n_truncated = encode_dataset(raw, spec, tokenizer, max_length=max_length)
    info = asdict(info)
    info["num_truncated"] = int(n_truncated)
    return raw, encoded, n_truncated, info


def _report_data(data: dict[str, dict], is_main_process: bool) -> None:
    """One line per loaded split on stdout (main process): what was read and what was done to it."""
    from .data import describe_load_info

    if not is_main_process:
        return
    for info in data.values():
        print(f"data: {describe_load_info(info)}", flush=True)


def _check_run_options(spec: TaskSpec | None, args: FinetuneArguments) -> None:
    """Option combinations that would only fail after training: raised before anything is loaded or written."""
    if args.push_to_hub and not args.save_model:
        raise ValueError("--push_to_hub uploads the saved final model, but --no_save_model (save_model=False) skips "
                         "saving it: drop one of the two")
    for split in (args.predict_splits or ()) if spec is not None else ():
        if split not in spec.splits:
            raise ValueError(f"--predict_splits: unknown split {split!r} for task {spec.name!r}; use one of "
                             f"{list(spec.splits)}")


def _model_inputs(encoded):
    return encoded.select_columns(["input_ids", "labels"])


def _groups(encoded):
    return list(encoded["group"]) if "group" in encoded.column_names else None


def _metrics(spec, logits, labels, groups):
    from .metrics import compute_task_metrics

    return compute_task_metrics(spec, logits, labels, groups=groups)


def data_fingerprint(encoded) -> str:
    """A short hash of an encoded split (labels, lengths, token ids): what a checkpoint's run was trained on."""
    digest = hashlib.sha256()
    for column in ("labels", "length"):
        if column in encoded.column_names:
            digest.update(np.asarray(encoded[column], dtype=np.float64).tobytes())
    for ids in encoded["input_ids"][:: max(1, len(encoded) // 256)]:  # a sample of rows: cheap on big splits
        for row in ids if ids and isinstance(ids[0], (list, tuple)) else [ids]:  # multiple choice: a row a choice
            digest.update(np.asarray(row, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


# ======================================================================================================================
# Main entry points
# ======================================================================================================================


def _build_model(spec: TaskSpec, args: FinetuneArguments, tokenizer):
    """The task model, with LoRA adapters when asked (their targets checked before any data is loaded)."""
    model, info = build_task_model(spec, args, tokenizer)
    if args.lora:
        from .lora import apply_lora, count_parameters, resolve_lora_targets

        model = apply_lora(model, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
                           target_modules=args.lora_target_modules)
        trainable, total = count_parameters(model)
        info["lora"] = {"r": args.lora_r, "alpha": args.lora_alpha, "dropout": args.lora_dropout,
                        "target_modules": resolve_lora_targets(args.lora_target_modules),
                        "trainable_parameters": trainable, "total_parameters": total}
    return model, info


def _load_data(spec: TaskSpec, args: FinetuneArguments, tokenizer, max_length: int) -> dict[str, Any]:
    """Training, evaluation and prediction splits, loaded and encoded before training: an explicit
    ``--predict_splits`` that cannot be loaded fails here, before anything is trained; a missing default is skipped."""
    _, train, train_trunc, train_info = _load_split(spec, args.train_split, args, args.max_train_samples, tokenizer,
                                                    max_length)
    _, evals, eval_trunc, eval_info = _load_split(spec, args.eval_split, args, args.max_eval_samples, tokenizer,
                                                  max_length)
    if any(float(x) < 0 for x in evals["labels"]):  # -1 marks unlabeled examples (test splits)
        raise ValueError(f"task {spec.name} split {args.eval_split!r} is unlabeled; evaluate on a labeled split")
    data = {"train": train, "eval": evals, "predict": [], "info": {args.train_split: train_info,
                                                                 args.eval_split: eval_info},
            "sizes": {"train": len(train), args.eval_split: len(evals)},
            "truncated": {args.train_split: train_trunc, args.eval_split: eval_trunc}}
    explicit = args.predict_splits is not None
    for split in dict.fromkeys(args.predict_splits if explicit else spec.default_predict_splits):
        if split in (args.eval_split, args.train_split):
            continue
        try:
            _, enc, n_trunc, info = _load_split(spec, split, args, None, tokenizer, max_length)
        except (FileNotFoundError, ValueError) as e:
            if explicit:
                raise ValueError(f"--predict_splits {split!r} cannot be loaded for task {spec.name}: {e}") from e
            (logger.info if isinstance(e, FileNotFoundError) else logger.warning)("no %s predictions: %s", split, e)
            continue
        data["predict"].append((split, enc))
        data["sizes"][split], data["truncated"][split], data["info"][split] = len(enc), n_trunc, info
    return data


def _read_user_data(args: FinetuneArguments):
    """Your data (`gpt1_hf.user_data`): the task it defines and its raw splits."""
    from .user_data import load_user_task

    predict = args.predict_splits if args.predict_splits is not None else ["test"]
    splits = list(dict.fromkeys([args.train_split, args.eval_split, *predict]))
    spec, raw = load_user_task(DataOptions.from_args(args), splits=splits, seed=args.seed,
                               max_samples={args.train_split: args.max_train_samples,
                                            args.eval_split: args.max_eval_samples})
    for split, flag in ((args.train_split, "--train_file"), (args.eval_split, "--validation_file")):
        if split not in raw:
            raise ValueError(f"no {split} data for {spec.name}: pass {flag} (or a --dataset_name with a {split} "
                             "split)")
    if args.predict_splits is not None and (missing := [s for s in predict if s not in raw]):
        raise ValueError(f"--predict_splits {missing}: no such data for {spec.name} (pass --test_file)")
    return spec, raw


def _encode_user_data(spec: TaskSpec, args: FinetuneArguments, raw: dict, tokenizer, max_length: int) -> dict:
    """The splits of your data encoded with the paper's input transformations; the same layout as `_load_data`."""
    from .data import encode_dataset

    data: dict[str, Any] = {"predict": [], "info": {}, "sizes": {}, "truncated": {}}
    for split, (dataset, info) in raw.items():
        encoded, n_truncated = encode_dataset(dataset, spec, tokenizer, max_length=max_length)
        data["info"][split] = {**info, "num_truncated": int(n_truncated)}
        data["sizes"]["train" if split == args.train_split else split] = len(encoded)
        data["truncated"][split] = n_truncated
        if split == args.train_split:
            data["train"] = encoded
        elif split == args.eval_split:
            if any(float(x) < 0 for x in encoded["labels"]):
                raise ValueError(f"the {split} data of {spec.name} has rows without a label; evaluation needs them")
            data["eval"] = encoded
        else:
            data["predict"].append((split, encoded))
    return data


def _run_identity(spec: TaskSpec, args: FinetuneArguments, model, tokenizer, data: dict, max_length: int) -> dict:
    """What a checkpoint of this run must share with the run that resumes it (`gpt1_hf.loop.TrainingLoop`)."""
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
    if args.num_threads:
        torch.set_num_threads(int(args.num_threads))
    # the accelerator first: it decides the process group (a bare PartialState() would make a torchrun launch on CPUs
    # a set of independent single processes)
    accelerator = create_accelerator(args.mixed_precision, args.cpu, args.with_tracking, args.report_to,
                                     args.output_dir, args.bf16_implementation)
    with open_run_folder(args.output_dir, accelerator, args.resume_from_checkpoint, args.overwrite_output_dir):
        return _finetune(args, spec, accelerator, tokenizer, start)


def _finetune(args: FinetuneArguments, spec: TaskSpec | None, accelerator, tokenizer, start: float) -> dict[str, Any]:
    from .data import GPT1Collator

    raw = None
    if spec is None:  # your data: read first, it defines the task (kind, labels, metrics)
        spec, raw = _read_user_data(args)
        _check_run_options(spec, args)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(args.tokenizer_name, args.model_name_or_path)
    model, model_info = _build_model(spec, args, tokenizer)
    max_length = min(int(args.max_length), int(model.config.n_positions))
    # the saved tokenizer makes a task input: tokenizer(text) ends with _classify_, where the head pools (a
    # text-classification pipeline on the output folder then classifies), and truncation stops at the model's length
    tokenizer.add_extract_token = True
    tokenizer.model_max_length = int(model.config.n_positions)
    data = _load_data(spec, args, tokenizer, max_length) if raw is None else _encode_user_data(
        spec, args, raw, tokenizer, max_length)
    _report_data(data["info"], accelerator.is_main_process)
    collator = GPT1Collator(pad_token_id=tokenizer.pad_token_id,
                            pad_to_max_length=max_length if args.pad_to_max_length else None)
    eval_inputs, eval_groups = _model_inputs(data["eval"]), _groups(data["eval"])

    def eval_fn(loop: TrainingLoop) -> dict[str, float]:
        out = loop.predict(eval_inputs, collator, batch_size=args.per_device_eval_batch_size)
        return _metrics(spec, out["logits"], out["labels"], eval_groups)

    loop = TrainingLoop(model, args, _model_inputs(data["train"]), collator, accelerator, eval_fn=eval_fn,
                        lengths=list(data["train"]["length"]) if args.group_by_length else None,
                        save_fn=tokenizer.save_pretrained, metric_for_best_model=spec.primary_metric,
                        run_identity=_run_identity(spec, args, model, tokenizer, data, max_length),
                        tracking_name=f"gpt1-{spec.name}")
    result = loop.fit()
    # predictions of the final model on the eval split and the prediction splits loaded before training
    to_write = [(args.eval_split, loop.predict(eval_inputs, collator, args.per_device_eval_batch_size)["logits"],
                 list(data["eval"]["idx"]))]
    for split, enc in data["predict"]:
        to_write.append((split, loop.predict(_model_inputs(enc), collator, args.per_device_eval_batch_size)["logits"],
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
    """``results.json``: metrics, history, data accounting, batch layout, model and the arguments."""
    batch = loop.batch
    return {
        "task": spec.name, "task_kind": spec.kind, "primary_metric": spec.primary_metric, "metrics": result.metrics,
        "eval_split": args.eval_split, **loop.precision,
        "best": {"metric": spec.primary_metric, "value": result.best_metric, "step": result.best_step,
                 "path": str(Path(args.output_dir) / "best")},
        "paper_score": spec.paper_score, "eval_history": result.eval_history, "seed": args.seed, "wall_time_s": None,
        "train_time_s": result.train_time, "global_step": result.global_step, "epochs_completed": result.epoch,
        "stop_reason": result.stop_reason, "tokens_seen": result.tokens_seen, "examples_seen": result.examples_seen,
        "skipped_updates": loop.state.skipped_updates, "sizes": data["sizes"], "truncated": data["truncated"],
        # per split: what was loaded (source, files) and done to it (partial sample, substitution, dropped rows)
        "data": data["info"], "max_length": max_length,
        "batch": {"per_device": batch.per_device_batch_size, "processes": batch.num_processes,
                  "gradient_accumulation_steps": batch.gradient_accumulation_steps,
                  "global": batch.global_batch_size},
        "total_steps": loop.total_steps, "warmup_steps": loop.warmup_steps,
        "model": {**{k: v for k, v in model_info.items() if k != "reinitialized"},
                  "n_reinitialized_params": len(model_info.get("reinitialized", [])),
                  "config": {k: getattr(final_model.config, k) for k in
                             ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "aux_lm_weight",
                              "clf_pdrop")},
                  "num_parameters": sum(p.numel() for p in final_model.parameters())},
        "config": args.to_dict(), "prediction_files": {}, "log_history": result.log_history,
    }


def _write_outputs(spec, args, results, to_write, final_model, tokenizer, start) -> None:
    """Main process: prediction files, the final model (installed whole), results.json, then the Hub."""
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for split, logits, idx in to_write:
        results["prediction_files"][split] = str(_write_prediction_files(spec, split, logits, idx, output_dir))
    if args.save_model:
        save_final_model(final_model, tokenizer, output_dir)
        if hasattr(final_model, "peft_config"):  # the head's labels, which the adapter's base config lacks
            _write_adapter_task_config(final_model, output_dir)
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


def _write_adapter_task_config(model, output_dir: Path) -> None:
    from .modeling_gpt1 import ADAPTER_TASK_CONFIG

    config = model.get_base_model().config
    if getattr(config, "id2label", None) is None or type(model.get_base_model()).__name__ == "GPT1ForMultipleChoice":
        return
    _write_json(output_dir / ADAPTER_TASK_CONFIG, {
        "num_labels": config.num_labels, "problem_type": config.problem_type,
        "id2label": {str(k): v for k, v in config.id2label.items()}, "label2id": dict(config.label2id)})


def _write_json(path: Path, data) -> None:
    write_text_atomically(path, json.dumps(data, indent=2, default=str) + "\n")


def _write_prediction_files(spec, split: str, logits, idx, out_dir: Path) -> Path:
    from .data import write_predictions

    folder = out_dir / "predictions" / split
    folder.mkdir(parents=True, exist_ok=True)
    return write_predictions(spec, logits, folder, indices=idx, split=split)
def _user_split(data, model_name_or_path: str, split: str, max_examples: int | None, seed: int):
    """(task, raw split, load info) of your data for `evaluate_checkpoint`: classes from the checkpoint's
    ``id2label`` when not given (there may be no training file now)."""
    from dataclasses import replace

    from .user_data import load_user_task

    cfg = _read_config_json(model_name_or_path) or {}
    id2label = cfg.get("id2label") or {}
    if data.label_names is None and id2label and cfg.get("problem_type") != "regression":
        data = replace(data, label_names=[id2label[k] for k in sorted(id2label, key=int)])
    spec, raw = load_user_task(data, splits=(split,), max_samples={split: max_examples}, seed=seed)
    if split not in raw:
        raise ValueError(f"no {split} data: pass --{'validation' if split == 'validation' else split}_file")
    dataset, info = raw[split]
    return spec, dataset, info


def evaluate_checkpoint(
    model_name_or_path: str,
    task: str | None,
    split: str = "validation",
    data_dir: str | None = None,
    tokenizer_name_or_path: str | None = None,
    max_examples: int | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
    output_dir: str | None = None,
    mixed_precision: str | None = None,
    seed: int = 0,
    cpu: bool = False,
    data: DataOptions | None = None,
) -> dict[str, Any]:
    """Evaluate a fine-tuned checkpoint on one split of a task (a paper task, or your data with the data options of
    fine-tuning: ``data``): metrics (when the split is labeled) and predictions.

    Writes ``<output_dir>/eval_<task>_<split>.json`` and ``<output_dir>/predictions/<split>/...`` when ``output_dir``
    is given (main process only)."""
    from .data import GPT1Collator, encode_dataset, load_task_split

    if data is not None and has_user_data(data):
        spec, raw, info = _user_split(data, model_name_or_path, split, max_examples, seed)
    else:
        spec = get_task(task)
        raw, info = load_task_split(spec, split, data_dir=data_dir, max_examples=max_examples, seed=seed,
                                    return_info=True)
        info = asdict(info)
    tokenizer = load_tokenizer(tokenizer_name_or_path, model_name_or_path)
    _check_head_compatibility(spec, model_name_or_path, reinit_head=False)
    cfg = _read_config_json(model_name_or_path) or {}
    archs = cfg.get("architectures") or []
    if not any(a in archs for a in ("GPT1ForSequenceClassification", "GPT1ForMultipleChoice")):
        raise ValueError(f"{model_name_or_path} is not a fine-tuned gpt1 task checkpoint (architectures {archs}); "
                         "fine-tune it first with scripts/finetune.py.")
    if Path(model_name_or_path).is_dir():  # NaN/inf weights (a diverged run) are refused, naming the file
        from .durable import check_finite_weights

        check_finite_weights(model_name_or_path)
    model = head_class_for(spec).from_pretrained(model_name_or_path)
    _check_tokenizer_matches(model.config, tokenizer)
    max_length = min(int(max_length or model.config.n_positions), int(model.config.n_positions))
    encoded, n_truncated = encode_dataset(raw, spec, tokenizer, max_length=max_length)
    acc = create_accelerator(mixed_precision, cpu)
    model = acc.prepare_model(model, evaluation_mode=True)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        out = predict_logits(model, _model_inputs(encoded), GPT1Collator(tokenizer.pad_token_id), acc, batch_size)
    labels = out.get("labels")
    labeled = labels is not None and len(labels) and (spec.is_regression and (labels >= 0).all()
                                                      or not spec.is_regression and (labels >= 0).all())
    metrics = _metrics(spec, out["logits"], labels, _groups(encoded)) if labeled else None
    report: dict[str, Any] = {
        "task": spec.name,
        "split": split,
        "model": str(model_name_or_path),
        "metrics": metrics,
        "num_examples": len(encoded),
        "truncated": n_truncated,
        "max_length": max_length,
        "data": {split: info},
        "eval_time_s": time.perf_counter() - start,
    }
    if output_dir is not None and acc.is_main_process:
        out_dir = Path(output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        report["prediction_file"] = str(_write_prediction_files(spec, split, out["logits"], list(encoded["idx"]),
                                                                out_dir))
        _write_json(out_dir / f"eval_{spec.name}_{split}.json", report)
    return report
