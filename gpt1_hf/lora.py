"""PEFT / LoRA for the GPT-1 task heads.

PEFT knows no defaults for a new `model_type`, and has no multiple-choice task type, so this module supplies both:
- target modules default to the attention and MLP projections (`c_attn`, `c_proj` of attention and MLP, `c_fc`),
  registered with PEFT for model_type "gpt1" on `import gpt1_hf` (`register_peft_defaults`), so that a plain
  `peft.get_peft_model(model, LoraConfig(task_type="SEQ_CLS"))` works without `target_modules`;
- the task layer `score` is trained and saved in full (`modules_to_save`);
- the embedding rows of the special tokens that fine-tuning introduces (`_start_`, `_delimiter_`, `_classify_`) are
  trained through PEFT's `trainable_token_indices`, so the adapter never stores the whole 40k x 768 embedding.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from torch import nn

DEFAULT_LORA_TARGETS = ("c_attn", "c_proj", "c_fc")
# PEFT's per-model_type default target tables that take Linear layer names (LoRA and its close relatives)
_PEFT_TARGET_TABLES = (
    "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING",
    "TRANSFORMERS_MODELS_TO_ADALORA_TARGET_MODULES_MAPPING",
    "TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING",
    "TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING",
)


def register_peft_defaults(model_type: str = "gpt1") -> bool:
    """Register `DEFAULT_LORA_TARGETS` as PEFT's default target modules for `model_type` (both heads share the module
    names). A plain `LoraConfig` then trains these projections (+ `score`, for task_type "SEQ_CLS"), not the special-token
    embedding rows: `lora_config_for` adds those. Returns False when PEFT is not installed."""
    try:
        from peft.utils import constants
    except ImportError:
        return False
    for table in _PEFT_TARGET_TABLES:
        mapping = getattr(constants, table, None)
        if mapping is not None:
            mapping.setdefault(model_type, list(DEFAULT_LORA_TARGETS))
    return True


def resolve_lora_targets(target_modules: list[str] | str | None = None) -> list[str] | str:
    """The target modules a LoRA run uses: the given list (or regex), else `DEFAULT_LORA_TARGETS`."""
    return list(DEFAULT_LORA_TARGETS) if target_modules is None else (
        target_modules if isinstance(target_modules, str) else list(target_modules))


def _linear_module_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def _matches(name: str, target: str) -> bool:
    """PEFT's rule for a list entry: the module name equals the target or ends with `.target`."""
    return name == target or name.endswith("." + target)


def lora_config_for(
    model: nn.Module,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: list[str] | str | None = None,
    train_special_tokens: bool = True,
):
    """A `peft.LoraConfig` for a gpt1 head, checked against the model before any training starts."""
    from peft import LoraConfig, TaskType

    targets = resolve_lora_targets(target_modules)
    linear = _linear_module_names(model)
    if isinstance(targets, str):  # a regex, as PEFT accepts
        if not any(re.fullmatch(targets, name) for name in linear):
            raise ValueError(f"LoRA target regex {targets!r} matches no Linear module. Linear modules: {linear[:12]}…")
    else:
        unmatched = [t for t in targets if not any(_matches(name, t) for name in linear)]
        if unmatched:
            names = sorted({name.split(".")[-1] for name in linear})
            raise ValueError(
                f"LoRA target module(s) {unmatched} match no Linear module of {type(model).__name__}. "
                f"Choose among {names} (default: {list(DEFAULT_LORA_TARGETS)})."
            )
        if any(_matches(name, t) for t in targets for name in linear if name.split(".")[-1] in ("score", "lm_head")):
            raise ValueError("Do not target `score` or `lm_head` with LoRA: `score` is trained in full already.")

    cfg = model.config
    trainable_tokens = None
    if train_special_tokens:
        ids = [i for i in (cfg.start_token_id, cfg.delimiter_token_id, cfg.clf_token_id) if i is not None]
        trainable_tokens = {"tokens_embed": ids} if ids else None
    is_seq_cls = type(model).__name__.endswith("ForSequenceClassification")
    return LoraConfig(
        task_type=TaskType.SEQ_CLS if is_seq_cls else None,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        modules_to_save=["score"],
        trainable_token_indices=trainable_tokens,
    )


def apply_lora(model: nn.Module, **kwargs):
    """Wrap a gpt1 head with LoRA adapters (see `lora_config_for` for the arguments); returns the `PeftModel`."""
    from peft import get_peft_model

    return get_peft_model(model, lora_config_for(model, **kwargs))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def write_adapter_task_config(model, output_dir) -> None:
    """``task_config.json`` beside a LoRA adapter: the head's labels, which the adapter's base config lacks
    (`from_pretrained` on the folder reads it, so a pipeline returns the label names)."""
    from .durable import write_text_atomically
    from .modeling_gpt1 import ADAPTER_TASK_CONFIG

    config = model.get_base_model().config
    if getattr(config, "id2label", None) is None or type(model.get_base_model()).__name__ == "GPT1ForMultipleChoice":
        return
    write_text_atomically(Path(output_dir) / ADAPTER_TASK_CONFIG, json.dumps({
        "num_labels": config.num_labels, "problem_type": config.problem_type,
        "id2label": {str(k): v for k, v in config.id2label.items()}, "label2id": dict(config.label2id)}, indent=2) + "\n")
