"""Models and tokenizers for the paper's tasks: the head a task needs, loaded from a gpt1 folder, a transformers
``openai-gpt`` checkpoint or OpenAI's original release (converted on load), or built from scratch; the tokenizer that
belongs to it; layer transfer (Figure 2, left). Used by fine-tuning, pretraining (`build_lm_model`) and evaluation."""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .tasks import TaskSpec

if TYPE_CHECKING:  # annotations only
    from .arguments import FinetuneArguments, PretrainArguments

logger = logging.getLogger(__name__)

__all__ = ["bundled_data_path", "load_tokenizer", "head_class_for", "task_config_overrides", "read_config_json",
           "check_head_compatibility", "reinitialize_layers", "build_task_model", "build_finetune_model",
           "build_lm_model", "check_tokenizer_matches"]


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


def task_config_overrides(spec: TaskSpec, args: FinetuneArguments) -> dict[str, Any]:
    overrides: dict[str, Any] = dict(aux_lm_weight=float(args.aux_lm_weight), clf_pdrop=float(args.clf_pdrop))
    if spec.kind != "multiple_choice":
        overrides["num_labels"] = spec.num_labels
        overrides["problem_type"] = "regression" if spec.is_regression else "single_label_classification"
        if spec.id2label:
            overrides["id2label"] = dict(spec.id2label)
            overrides["label2id"] = dict(spec.label2id)
    return overrides


def read_config_json(path: str) -> dict | None:
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


def check_head_compatibility(spec: TaskSpec, model_name_or_path: str, reinit_head: bool) -> None:
    """A fine-tuned checkpoint (local folder or Hub id) whose head does not fit the task: a clear error (unless
    ``reinit_head``), raised from its config.json before any weight is loaded."""
    cfg = read_config_json(model_name_or_path)
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
    overrides = task_config_overrides(spec, args)
    info: dict[str, Any] = {"head": head.__name__, "init": None}
    if args.from_scratch:
        if args.model_name_or_path is not None:
            cfg = read_config_json(args.model_name_or_path)
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

        check_head_compatibility(spec, args.model_name_or_path, args.reinit_head)
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
    check_tokenizer_matches(model.config, tokenizer)
    return model, info


def build_finetune_model(spec: TaskSpec, args: FinetuneArguments, tokenizer):
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


def build_lm_model(args: PretrainArguments, tokenizer):
    """Pretraining's `GPT1LMHeadModel`: ``model_name_or_path`` continued (checked against the block size and the
    tokenizer), else a new model of the arguments' shape around the tokenizer's vocabulary and special tokens."""
    from .configuration_gpt1 import GPT1Config
    from .modeling_gpt1 import GPT1LMHeadModel

    if args.model_name_or_path:
        from .convert import load_as_gpt1

        model = load_as_gpt1(args.model_name_or_path, GPT1LMHeadModel)
        if model.config.n_positions < args.block_size:
            raise ValueError(f"--block_size {args.block_size} exceeds the checkpoint's n_positions="
                             f"{model.config.n_positions}")
        if len(tokenizer) > model.config.vocab_size:
            raise ValueError(f"the tokenizer has {len(tokenizer)} entries, the checkpoint {model.config.vocab_size}")
        return model
    config = GPT1Config(
        vocab_size=len(tokenizer),
        n_positions=args.block_size,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_inner=args.n_inner or 4 * args.n_embd,
        embd_pdrop=args.dropout,
        attn_pdrop=args.dropout,
        resid_pdrop=args.dropout,
        start_token_id=tokenizer.start_token_id,
        delimiter_token_id=tokenizer.delimiter_token_id,
        clf_token_id=tokenizer.classify_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT1LMHeadModel(config)


def check_tokenizer_matches(config, tokenizer) -> None:
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
