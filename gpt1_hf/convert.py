"""Conversion between transformers' `openai-gpt` classes and gpt1.

Both are the same network; the differences are layout only:
- openai-gpt stores projections as `Conv1D` (weight shape (in, out)); gpt1 uses `nn.Linear` (weight shape (out, in)).
- openai-gpt's released vocabulary has the 40,478 BPE entries only; gpt1 appends `_start_`, `_delimiter_`,
  `_classify_` and `<pad>`, whose embedding rows are drawn from N(0, 0.02) as the paper does for new tokens.
Parameter names are otherwise shared (`tokens_embed`, `positions_embed`, `h.{i}.attn.c_attn`, `ln_1`, ...).
"""

from __future__ import annotations

import torch
from torch import nn

from .configuration_gpt1 import GPT1Config
from .modeling_gpt1 import GPT1LMHeadModel, GPT1Model, GPT1PreTrainedModel

NUM_SPECIAL_TOKENS = 4  # _start_, _delimiter_, _classify_, <pad>
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _backbone_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's tensors keyed without the `transformer.` prefix, whatever head `model` is."""
    backbone = getattr(model, "transformer", model)
    return {k: v.detach().clone() for k, v in backbone.state_dict().items() if not k.endswith(".attn.bias")}


def _transpose_projections(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.t().contiguous() if k.endswith(_TRANSPOSED) else v) for k, v in state_dict.items()}


def gpt1_config_from_openai_gpt(openai_config, vocab_size: int | None = None, **overrides) -> GPT1Config:
    kwargs = dict(
        vocab_size=vocab_size if vocab_size is not None else openai_config.vocab_size,
        n_positions=openai_config.n_positions,
        n_embd=openai_config.n_embd,
        n_layer=openai_config.n_layer,
        n_head=openai_config.n_head,
        n_inner=4 * openai_config.n_embd,
        activation_function={"gelu": "gelu_new"}.get(openai_config.afn, openai_config.afn),
        embd_pdrop=openai_config.embd_pdrop,
        attn_pdrop=openai_config.attn_pdrop,
        resid_pdrop=openai_config.resid_pdrop,
        layer_norm_epsilon=openai_config.layer_norm_epsilon,
        initializer_range=openai_config.initializer_range,
    )
    kwargs.update(overrides)
    return GPT1Config(**kwargs)


def openai_gpt_to_gpt1(
    model: nn.Module,
    add_special_tokens: bool | None = None,
    target_class: type[GPT1PreTrainedModel] | None = None,
    seed: int = 0,
    **config_overrides,
) -> GPT1PreTrainedModel:
    """Convert a transformers `OpenAIGPT*` model object into a gpt1 model with the same weights.

    add_special_tokens: append the four special-token rows (N(0, initializer_range), seeded); default: only when the
        source has exactly GPT-1's 40,478 BPE entries (the released checkpoint). Otherwise the vocabulary is kept
        and the last four ids serve as the special tokens.
    target_class: the gpt1 class to build (default: GPT1LMHeadModel if the source has an LM head, else GPT1Model).
        A task head gets the converted backbone and a freshly initialised task layer.
    """
    src_config = model.config
    if add_special_tokens is None:
        add_special_tokens = src_config.vocab_size == 40478
    vocab_size = src_config.vocab_size + (NUM_SPECIAL_TOKENS if add_special_tokens else 0)
    config = gpt1_config_from_openai_gpt(src_config, vocab_size=vocab_size, **config_overrides)
    if target_class is None:
        target_class = GPT1LMHeadModel if hasattr(model, "lm_head") else GPT1Model

    state = _transpose_projections(_backbone_state_dict(model))
    state.pop("position_ids", None)
    if add_special_tokens:
        generator = torch.Generator().manual_seed(seed)
        old = state["tokens_embed.weight"]
        new_rows = torch.randn(NUM_SPECIAL_TOKENS, old.shape[1], generator=generator) * config.initializer_range
        state["tokens_embed.weight"] = torch.cat([old, new_rows.to(old.dtype)], dim=0)

    target = target_class(config)
    backbone = getattr(target, "transformer", target)
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"openai-gpt -> gpt1 conversion mismatch: missing {missing}, unexpected {unexpected}")
    if hasattr(target, "lm_head"):
        target.tie_weights()
    return target.eval() if not model.training else target


def gpt1_to_openai_gpt(model: GPT1PreTrainedModel, drop_special_tokens: bool = False):
    """Convert a gpt1 model object into transformers' `OpenAIGPTLMHeadModel` (or `OpenAIGPTModel` for a backbone).

    drop_special_tokens: remove the last four embedding rows (back to the BPE-only vocabulary).
    """
    from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel, OpenAIGPTModel

    cfg = model.config
    if cfg.activation_function not in ("gelu_new", "gelu", "relu", "silu", "swish"):
        raise ValueError(f"openai-gpt has no activation {cfg.activation_function!r}.")
    if cfg.n_inner != 4 * cfg.n_embd:
        raise ValueError(f"openai-gpt fixes n_inner = 4 * n_embd; this model has n_inner={cfg.n_inner}.")
    vocab_size = cfg.vocab_size - (NUM_SPECIAL_TOKENS if drop_special_tokens else 0)
    openai_config = OpenAIGPTConfig(
        vocab_size=vocab_size,
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        afn={"gelu_new": "gelu"}.get(cfg.activation_function, cfg.activation_function),
        embd_pdrop=cfg.embd_pdrop,
        attn_pdrop=cfg.attn_pdrop,
        resid_pdrop=cfg.resid_pdrop,
        layer_norm_epsilon=cfg.layer_norm_epsilon,
        initializer_range=cfg.initializer_range,
    )
    state = _transpose_projections(_backbone_state_dict(model))
    state["tokens_embed.weight"] = state["tokens_embed.weight"][:vocab_size]
    target = OpenAIGPTLMHeadModel(openai_config) if hasattr(model, "lm_head") else OpenAIGPTModel(openai_config)
    backbone = getattr(target, "transformer", target)
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith((".attn.bias", "position_ids"))]
    if missing or unexpected:
        raise ValueError(f"gpt1 -> openai-gpt conversion mismatch: missing {missing}, unexpected {unexpected}")
    if hasattr(target, "lm_head"):
        target.lm_head.weight = backbone.tokens_embed.weight
    return target.eval() if not model.training else target
