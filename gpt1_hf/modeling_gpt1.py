"""GPT-1 in PyTorch for transformers 5 (Radford et al. 2018, "Improving Language Understanding by Generative
Pre-Training").

Hub-portable: imports only torch, transformers and the relative modules `.configuration_gpt1` and `.kernels_gpt1`;
`save_pretrained` copies all three next to the weights so that `AutoModel*.from_pretrained(repo, trust_remote_code=True)`
works without `gpt1_hf` installed. The CPU training kernels live in `kernels_gpt1.py`; this file is the paper.

Where the paper's equations live:

    (2)  h_0 = U W_e + W_p                      GPT1Model.forward (token + learned position embeddings)
         h_l = transformer_block(h_{l-1})       GPT1Block.forward: n = LN(h + attn(h)); h' = LN(n + mlp(n))  (post-LN)
         P(u) = softmax(h_n W_e^T)              GPT1LMHeadModel (lm_head tied to W_e)
    (1)  L1 = Σ_i log P(u_i | u_<i)             next_token_loss (mean over the non-pad target tokens)
    (3)  P(y | x) = softmax(h_l^m W_y)          pool_at_extract_token + GPT1ForSequenceClassification.score
    (4)  L2 = Σ log P(y | x)                    class_index_loss (classification_loss adds regression, multi-label)
    (5)  L3 = L2 + λ·L1   (λ = config.aux_lm_weight = 0.5)   add_aux_lm_loss
    §3.3 input transformations: the extract token `_classify_` ends every sequence; similarity tasks feed both
         orderings, (batch, 2, seq), and add the two pooled vectors; multiple choice feeds (batch, choices, seq)
         and normalises one score per choice with a softmax.
"""

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, ModelOutput
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_gpt1 import GPT1Config
from .kernels_gpt1 import GPT1_SDPA, GPT1Dropout, gelu_tanh, linear_cross_entropy

# Every head is written into `config.auto_map` on save, so one folder serves all Auto classes with remote code.
GPT1_AUTO_MAP = {
    "AutoConfig": "configuration_gpt1.GPT1Config",
    "AutoModel": "modeling_gpt1.GPT1Model",
    "AutoModelForCausalLM": "modeling_gpt1.GPT1LMHeadModel",
    "AutoModelForSequenceClassification": "modeling_gpt1.GPT1ForSequenceClassification",
    "AutoModelForMultipleChoice": "modeling_gpt1.GPT1ForMultipleChoice",
}
SPECIAL_TOKEN_IDS = ("start_token_id", "delimiter_token_id", "clf_token_id", "pad_token_id", "bos_token_id")


def input_shape(input_ids, inputs_embeds):
    """The (..., seq) shape of the input: input_ids, or inputs_embeds without its hidden dimension (None if neither)."""
    if input_ids is not None:
        return input_ids.shape
    return None if inputs_embeds is None else inputs_embeds.shape[:-1]


def checking_values() -> bool:
    """Value checks (Python branches on tensor data) run in eager mode only; torch.compile and torch.export skip them."""
    return not (torch.compiler.is_compiling() or torch.compiler.is_exporting())


# ----------------------------------------------------------------------------------------------------------------------
# The transformer block
# ----------------------------------------------------------------------------------------------------------------------


def eager_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """softmax(Q K^T / sqrt(d) + mask) V, written out; returns the probabilities too (for `output_attentions`)."""
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            weights = weights.masked_fill(~attention_mask, torch.finfo(weights.dtype).min)
        else:
            weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(value.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2)
    return output, weights


class GPT1Attention(nn.Module):
    """Masked multi-head self-attention with one fused QKV projection (`c_attn`) and an output projection (`c_proj`).

    The kernel is transformers' attention interface entry named by `config._attn_implementation`: "gpt1_sdpa" (the
    default: SDPA, with `kernels_gpt1.dropout_attention_forward` for CPU training with attention dropout), "sdpa",
    "eager", flash when installed. `output_attentions` always uses the eager math, the only one returning weights.
    """

    is_causal = True

    def __init__(self, config: GPT1Config, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.scaling = self.head_dim**-0.5
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_dropout = config.attn_pdrop
        self.resid_dropout = GPT1Dropout(config.resid_pdrop, config)

    def forward(self, hidden_states, attention_mask=None, cache: Cache | None = None, output_attentions=False, **kwargs):
        batch, seq, _ = hidden_states.shape
        qkv = self.c_attn(hidden_states).view(batch, seq, 3, self.n_head, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, seq, head_dim)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        attention_interface = eager_attention_forward
        if not output_attentions:
            attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
                self.config._attn_implementation, eager_attention_forward
            )
        output, weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.attn_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        return self.resid_dropout(self.c_proj(output.reshape(batch, seq, -1))), weights


class GPT1MLP(nn.Module):
    """Position-wise feed-forward network: c_proj(act(c_fc(x))), act = ACT2FN[config.activation_function]."""

    def __init__(self, config: GPT1Config):
        super().__init__()
        self.config = config
        self.c_fc = nn.Linear(config.n_embd, config.n_inner)
        self.act = ACT2FN[config.activation_function]
        self.c_proj = nn.Linear(config.n_inner, config.n_embd)
        self.dropout = GPT1Dropout(config.resid_pdrop, config)

    def forward(self, x):
        h = self.c_fc(x)
        # gelu_new written out is seven tensor ops; one kernel computes the same function (kernels_gpt1.gelu_tanh)
        if self.config.gelu_kernel and self.config.activation_function == "gelu_new":
            h = gelu_tanh(h, bf16_erf=self.config.bf16_erf_gelu)
        else:
            h = self.act(h)
        return self.dropout(self.c_proj(h))


class GPT1Block(GradientCheckpointingLayer):
    """One transformer block, post-LN as in GPT-1: n = LN(h + attn(h)); h' = LN(n + mlp(n))."""

    def __init__(self, config: GPT1Config, layer_idx: int):
        super().__init__()
        self.attn = GPT1Attention(config, layer_idx)
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT1MLP(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)

    def forward(self, hidden_states, attention_mask=None, cache=None, output_attentions=False, **kwargs):
        a, weights = self.attn(hidden_states, attention_mask, cache=cache, output_attentions=output_attentions, **kwargs)
        n = self.ln_1(hidden_states + a)
        h = self.ln_2(n + self.mlp(n))
        return h, weights


# ----------------------------------------------------------------------------------------------------------------------
# Backbone
# ----------------------------------------------------------------------------------------------------------------------


#: beside a LoRA adapter: the fine-tuned head's labels (num_labels, id2label, label2id, problem_type), which the
#: adapter's base config does not know
ADAPTER_TASK_CONFIG = "task_config.json"


def _adapter_task_labels(path, kwargs: dict) -> None:
    """A LoRA fine-tuning folder (adapter_config.json + task_config.json) loads onto its base model's config, which
    has no task labels: put them into the config being loaded (so a text-classification pipeline on the folder gives
    the label names and builds the head with the adapter's number of classes)."""
    import json

    from transformers.utils import cached_file

    hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
    found = {}
    for name in ("adapter_config.json", ADAPTER_TASK_CONFIG):
        try:
            found[name] = cached_file(str(path), name, _raise_exceptions_for_missing_entries=False,
                                      _raise_exceptions_for_connection_errors=False, **hub)
        except (OSError, ValueError):
            return
    if not all(found.values()):
        return
    with open(found[ADAPTER_TASK_CONFIG], encoding="utf-8") as handle:
        task = json.load(handle)
    labels = {"num_labels": int(task["num_labels"]), "problem_type": task.get("problem_type"),
              "id2label": {int(k): v for k, v in task["id2label"].items()}, "label2id": task["label2id"]}
    config = kwargs.get("config")
    if config is not None and not isinstance(config, (str, bytes)) and not hasattr(config, "__fspath__"):
        for key, value in labels.items():  # num_labels first: setting it resets id2label
            setattr(config, key, value)
    else:
        kwargs.update(labels)


class GPT1PreTrainedModel(PreTrainedModel):
    config_class = GPT1Config
    config: GPT1Config
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GPT1Block"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = False
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    # The default `_init_weights` of transformers already does what the paper asks for every module here:
    # N(0, initializer_range) for every Linear and Embedding weight, zero biases, unit LayerNorm gains.

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        config = kwargs.get("config")
        if config is None or isinstance(config, (str, bytes)) or hasattr(config, "__fspath__"):
            from transformers import AutoConfig

            try:
                probe = AutoConfig.from_pretrained(
                    config or pretrained_model_name_or_path,
                    **{k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs},
                )
            except (OSError, ValueError):
                probe = None  # let transformers report its own error
            if probe is not None and probe.model_type == "openai-gpt":
                raise ValueError(
                    f"{pretrained_model_name_or_path} is a transformers `openai-gpt` checkpoint, not `gpt1`. Convert it "
                    "once with `python scripts/convert_checkpoint.py --from openai-gpt --input "
                    f"{pretrained_model_name_or_path} --output <dir>` (or `gpt1_hf.convert.load_as_gpt1(...)` in "
                    "Python), which also adds the _start_/_delimiter_/_classify_/<pad> embeddings."
                )
        # an adapter folder: the Auto classes pass its path here and the base model's as the model path
        adapter = (kwargs.get("adapter_kwargs") or {}).get("_adapter_model_path") or pretrained_model_name_or_path
        _adapter_task_labels(adapter, kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False) -> str:
        # Unrequested, the default is "gpt1_sdpa" (SDPA + the CPU dropout-attention kernel), not plain "sdpa".
        return super().get_correct_attn_implementation(requested_attention or GPT1_SDPA, is_init_check)

    def resize_token_embeddings(self, new_num_tokens=None, *args, **kwargs):
        """transformers' resize, plus a warning (and the id unset in the config) for every special token id that the
        new vocabulary no longer holds, so that the config stays valid and `save_pretrained` keeps working."""
        embeddings = super().resize_token_embeddings(new_num_tokens, *args, **kwargs)
        vocab_size = self.config.vocab_size
        lost = {name: getattr(self.config, name) for name in SPECIAL_TOKEN_IDS}
        lost = {name: i for name, i in lost.items() if i is not None and i >= vocab_size}
        if lost:
            warnings.warn(
                f"resize_token_embeddings({vocab_size}) drops the special token ids {lost}; they are set to None in the "
                "config (the task heads need clf_token_id: keep the vocabulary above the special ids to use them).",
                UserWarning,
                stacklevel=2,
            )
            for name in lost:
                setattr(self.config, name, None)
        return embeddings

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Write every head into auto_map (transformers writes only the saved class's entry).
        self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **GPT1_AUTO_MAP}
        return super().save_pretrained(save_directory, *args, **kwargs)


class GPT1Model(GPT1PreTrainedModel):
    """The GPT-1 transformer: h_0 = U W_e + W_p, then n_layer post-LN blocks. No final LayerNorm."""

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.tokens_embed = nn.Embedding(config.vocab_size, config.n_embd)  # W_e
        self.positions_embed = nn.Embedding(config.n_positions, config.n_embd)  # W_p
        self.drop = GPT1Dropout(config.embd_pdrop, config)
        self.h = nn.ModuleList([GPT1Block(config, i) for i in range(config.n_layer)])
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.tokens_embed

    def set_input_embeddings(self, new_embeddings):
        self.tokens_embed = new_embeddings

    def check_inputs(self, input_ids, attention_mask, position_ids, batch: int, past_length: int, seq_length: int):
        """Bad input fails loudly here instead of becoming an index error deep inside an embedding (or a mask that
        broadcasts silently). Shape checks always run; value checks in eager mode only (`checking_values`)."""
        if position_ids is None and past_length + seq_length > self.config.n_positions:
            raise ValueError(
                f"Sequence length {past_length + seq_length} exceeds the model's n_positions={self.config.n_positions}"
                " (GPT-1 has learned position embeddings for that many positions only). Truncate the input, e.g. "
                f"tokenizer(..., truncation=True, max_length={self.config.n_positions})."
            )
        # A 2D padding mask covers the cached tokens and the new ones; 4D masks are custom and passed through as given.
        if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() != 4:
            if tuple(attention_mask.shape) != (batch, past_length + seq_length):
                raise ValueError(
                    f"attention_mask must have shape (batch, past + seq) = ({batch}, {past_length + seq_length}), got "
                    f"{tuple(attention_mask.shape)}."
                )
        if not checking_values():
            return
        # Packed rows (DataCollatorWithFlattening) may be longer than n_positions: their position ids are checked.
        if position_ids is not None and position_ids.numel() > 0:
            low, high = int(position_ids.min()), int(position_ids.max())
            if low < 0 or high >= self.config.n_positions:
                raise ValueError(
                    f"Position id {low if low < 0 else high} is outside [0, n_positions={self.config.n_positions})."
                )
        if input_ids is not None and input_ids.numel() > 0:
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.config.vocab_size:
                bad = low if low < 0 else high
                raise ValueError(
                    f"Token id {bad} is outside the vocabulary [0, {self.config.vocab_size}). If you added tokens to "
                    "the tokenizer, call model.resize_token_embeddings(len(tokenizer))."
                )

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """attention_mask: (batch, past + seq), 1 for real tokens; left out, pad tokens are masked, unless position_ids
        are given (a packed row: one sequence per run of increasing position ids, as DataCollatorWithFlattening makes).
        Without position_ids, each row's positions count its real tokens (cumsum of the mask - 1), so a left-padded row
        gets the positions it would have alone. `past_key_values=` is the deprecated name of `cache=`."""
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if input_ids is not None and input_ids.dim() != 2:
            raise ValueError(
                f"GPT1Model takes input_ids of shape (batch, seq), got {tuple(input_ids.shape)}; the heads flatten "
                "(batch, choices, seq) inputs themselves."
            )
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        past_length = cache.get_seq_length() if cache is not None else 0
        batch, seq = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        self.check_inputs(input_ids, attention_mask, position_ids, batch, past_length, seq)

        no_mask_given = attention_mask is None and position_ids is None and past_length == 0
        if no_mask_given and input_ids is not None and self.config.pad_token_id is not None:
            attention_mask = (input_ids != self.config.pad_token_id).long()  # pad tokens are never attended to
        if inputs_embeds is None:
            inputs_embeds = self.tokens_embed(input_ids)
        if position_ids is None:
            position_ids = self.default_position_ids(attention_mask, past_length, seq, inputs_embeds.device)
        hidden_states = self.drop(inputs_embeds + self.positions_embed(position_ids))  # (2): h_0 = U W_e + W_p
        mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            # an empty dynamic cache adds nothing to the mask, and without one packed rows are recognised
            cache=None if isinstance(cache, DynamicCache) and past_length == 0 else cache,
            position_ids=position_ids,
            allow_is_causal_skip=not output_attentions,  # the eager math needs the causal mask written out
        )

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for block in self.h:
            hidden_states, weights = block(
                hidden_states, mask, cache=cache, output_attentions=output_attentions, **kwargs
            )
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)

        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            cache=cache if use_cache else None,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )

    @staticmethod
    def default_position_ids(attention_mask, past_length: int, seq: int, device) -> torch.Tensor:
        """The number of real tokens before each one (padding gets 0): left padding does not shift the positions."""
        if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
            return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq:]
        return torch.arange(past_length, past_length + seq, device=device)[None]


# ----------------------------------------------------------------------------------------------------------------------
# Losses and pooling shared by the heads
# ----------------------------------------------------------------------------------------------------------------------


def next_token_loss(
    hidden_states, lm_head: nn.Linear, labels=None, attention_mask=None, shift_labels=None, fused=True,
    num_items_in_batch=None,
):
    """L1 of the paper as a mean: next-token cross-entropy over every non-pad target token of the batch.

    Position t predicts labels[t+1] (or shift_labels[t], targets already shifted, as transformers' Trainer passes them
    under context parallelism); -100 is ignored, and so is a pair with a pad position (attention_mask == 0) on either
    side, special tokens included, as in the original code. Only those positions go through the LM head, so the
    (tokens x vocab) logits of padding are never built; `fused` uses `linear_cross_entropy` (no logits at all). A batch
    without any target gives a zero loss that keeps the graph; `num_items_in_batch` (Trainer with gradient
    accumulation) replaces the count of targets as the divisor. hidden_states: (N, T, H); labels, mask: (N, T).
    """
    targets = shift_labels if shift_labels is not None else F.pad(labels[:, 1:], (0, 1), value=-100)
    if attention_mask is not None:
        real = attention_mask.bool()
        keep = real if shift_labels is not None else real & F.pad(real[:, 1:], (0, 1), value=False)
        targets = targets.masked_fill(~keep, -100)
    keep = targets != -100
    if not checking_values():  # no boolean indexing (data-dependent shapes); the compiler fuses the loss
        total = F.cross_entropy(lm_head(hidden_states).float().flatten(0, 1), targets.flatten(), reduction="sum")
        return total / (num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1))
    rows, row_targets = hidden_states[keep], targets[keep]
    n = rows.shape[0]
    if fused and type(lm_head) is nn.Linear and lm_head.bias is None:  # not PEFT-wrapped
        loss = linear_cross_entropy(rows, lm_head.weight, row_targets)  # mean over the rows (0 for none)
        return loss if num_items_in_batch is None else loss * (n / num_items_in_batch)
    total = F.cross_entropy(lm_head(rows).float(), row_targets, reduction="sum")
    return total / (num_items_in_batch if num_items_in_batch is not None else max(n, 1))


def pool_at_extract_token(hidden_states, input_ids, attention_mask, clf_token_id, require_extract_token: bool):
    """h_l^m of eq. (3): the final hidden state at the extract token `_classify_` (its last occurrence).

    Rows without it fall back to their last non-pad token, unless `require_extract_token`; a row without any real token
    is an error. Without input_ids (inputs_embeds given), every row pools at its last non-pad position. The value
    checks run in eager mode only; traced, a bad row pools at position 0. hidden_states: (N, T, H); input_ids,
    attention_mask: (N, T). Returns (N, H).
    """
    n, t = hidden_states.shape[:2]
    positions = torch.arange(t, device=hidden_states.device).expand(n, t)
    real = torch.ones(n, t, dtype=torch.bool, device=hidden_states.device)
    if attention_mask is not None:
        real = attention_mask.bool()
        has_real = real.any(dim=1)
        if checking_values() and not bool(has_real.all()):
            rows = torch.nonzero(~has_real).flatten().tolist()
            raise ValueError(
                f"Sequences {rows[:10]} (flattened batch x choice index) have no real token: their attention_mask is "
                "all 0 (or they are all padding), so there is nothing to classify."
            )
    index = (positions * real).amax(dim=1)  # the last real token
    if clf_token_id is None and require_extract_token:
        raise ValueError("config.clf_token_id is None; multiple choice needs an extract token to pool at.")
    if input_ids is not None and clf_token_id is not None:
        is_extract = input_ids == clf_token_id
        has_extract = is_extract.any(dim=1)
        if require_extract_token and checking_values() and not bool(has_extract.all()):
            rows = torch.nonzero(~has_extract).flatten().tolist()
            raise ValueError(
                f"Sequences {rows[:10]} (flattened batch x choice index) have no extract token id {clf_token_id} "
                "(`_classify_`). End every choice with it, e.g. tokenizer(context, answer) adds it."
            )
        index = torch.where(has_extract, (positions * is_extract).amax(dim=1), index)
    return hidden_states[torch.arange(n, device=hidden_states.device), index]


def class_index_loss(logits, labels, classes: str):
    """(4) L2 = -log P(y | x) for integer class labels (batch,), checked: float labels (say, targets meant for another
    problem type) and out-of-range classes are errors; any integer dtype is accepted."""
    batch, num_classes = logits.shape
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}.")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be integer class indices for {classes}, got dtype {labels.dtype}.")
    if checking_values():
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if bad.numel():
            raise ValueError(f"Label {int(bad[0])} is out of range for {classes}.")
    return F.cross_entropy(logits.float(), labels.long())


def add_aux_lm_loss(clf_loss, lm_loss, weight: float):
    """(5): L3 = L2 + λ·L1."""
    return clf_loss if lm_loss is None else clf_loss + weight * lm_loss


@dataclass
class GPT1SequenceClassifierOutput(ModelOutput):
    """loss = clf_loss + aux_lm_weight * lm_loss when labels are given."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    clf_loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class GPT1MultipleChoiceModelOutput(GPT1SequenceClassifierOutput):
    """logits: (batch, num_choices)."""


# ----------------------------------------------------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------------------------------------------------


class GPT1LMHeadModel(GPT1PreTrainedModel, GenerationMixin):
    """P(u) = softmax(h_n W_e^T): the language model used for pretraining (L1) and generation."""

    _tied_weights_keys = {"lm_head.weight": "transformer.tokens_embed.weight"}

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.transformer = GPT1Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        inputs_embeds=None,
        cache=None,
        labels=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """labels: (batch, seq) token ids, shifted inside (labels = input_ids is fine); -100 marks ignored tokens.
        shift_labels: the same, already shifted (position t predicts shift_labels[t]); used instead of labels.

        In training mode with labels, only the loss is computed (logits=None, unless `config.train_logits`): the loss
        projects just the target positions (`next_token_loss`). Pass logits_to_keep > 0 to get the logits of the last
        positions as well. return_dict=False returns a tuple (`can_return_tuple`). Loss kwargs arrive in **kwargs, as
        in transformers' models (Trainer finds its label names in the signature): shift_labels, num_items_in_batch.
        """
        shift_labels, num_items_in_batch = kwargs.pop("shift_labels", None), kwargs.pop("num_items_in_batch", None)
        out = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            cache=cache,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        hidden_states = out.last_hidden_state
        loss = None
        if labels is not None or shift_labels is not None:
            targets = self.checked_lm_labels(shift_labels if shift_labels is not None else labels, hidden_states)
            if attention_mask is None and input_ids is not None and position_ids is None:
                if self.config.pad_token_id is not None:
                    attention_mask = (input_ids != self.config.pad_token_id).long()
            elif isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
                attention_mask = attention_mask[:, -hidden_states.shape[1] :]  # with a cache it covers the past too
            loss = next_token_loss(
                hidden_states,
                self.lm_head,
                labels=targets if shift_labels is None else None,
                attention_mask=attention_mask if attention_mask is None or attention_mask.dim() == 2 else None,
                shift_labels=targets if shift_labels is not None else None,
                fused=self.config.fused_lm_loss,
                num_items_in_batch=num_items_in_batch,
            )
        logits = None
        skip_logits = self.training and loss is not None and not self.config.train_logits
        if not (skip_logits and isinstance(logits_to_keep, int) and logits_to_keep == 0):
            slice_ = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            logits = self.lm_head(hidden_states[:, slice_])
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states, attentions=out.attentions
        )

    def checked_lm_labels(self, labels, hidden_states):
        """(batch, seq) LM targets as int64: -100 or token ids in [0, vocab_size) (values checked in eager mode)."""
        if labels.shape != hidden_states.shape[:2]:
            raise ValueError(f"labels must have shape {tuple(hidden_states.shape[:2])}, got {tuple(labels.shape)}.")
        if checking_values():
            bad = labels[(labels != -100) & ((labels < 0) | (labels >= self.config.vocab_size))]
            if bad.numel():
                raise ValueError(
                    f"Label {int(bad[0])} is out of range: labels must be -100 (ignored) or token ids in "
                    f"[0, {self.config.vocab_size})."
                )
        return labels.long()


class _GPT1TaskHead(GPT1PreTrainedModel):
    """Backbone + tied LM head (for the auxiliary objective) shared by the two task heads."""

    _tied_weights_keys = {"lm_head.weight": "transformer.tokens_embed.weight"}
    # the loss is a mean over examples: transformers' Trainer scales it for gradient accumulation itself
    accepts_loss_kwargs = False

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.transformer = GPT1Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.clf_dropout = GPT1Dropout(config.clf_pdrop, config)

    def encode_flat(self, input_ids, inputs_embeds, attention_mask, position_ids, **kwargs):
        """Run the backbone on the (..., T) sequences (input_ids, or inputs_embeds (..., T, H)) flattened to (N, T);
        returns the output, the flat ids (None with inputs_embeds) and the flat (pad-inferred when not given) mask."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        shape = input_ids.shape if input_ids is not None else inputs_embeds.shape[:-1]
        if attention_mask is not None and attention_mask.shape != shape:
            raise ValueError(
                f"attention_mask must have the shape of input_ids, {tuple(shape)}, got {tuple(attention_mask.shape)}."
            )
        seq = shape[-1]
        if input_ids is not None:
            input_ids = input_ids.reshape(-1, seq)
        else:
            inputs_embeds = inputs_embeds.reshape(-1, seq, inputs_embeds.shape[-1])
        if attention_mask is None and input_ids is not None and self.config.pad_token_id is not None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        elif attention_mask is not None:
            attention_mask = attention_mask.reshape(-1, seq)
        if position_ids is not None:
            position_ids = position_ids.reshape(-1, position_ids.shape[-1])
        kwargs.pop("num_items_in_batch", None)  # the losses here are means over examples
        out = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            return_dict=True,
            **kwargs,
        )
        return out, input_ids, attention_mask

    def aux_lm_loss(self, hidden_states, input_ids, attention_mask, shift_labels=None):
        """L1 on the task's own inputs (or on `shift_labels`, (..., seq) targets already shifted); None when it does not
        contribute to the loss (λ = 0) or has no targets (inputs_embeds without shift_labels)."""
        if not self.config.aux_lm_weight or (input_ids is None and shift_labels is None):
            return None
        if shift_labels is not None:
            shift_labels = shift_labels.reshape(hidden_states.shape[:2]).long()
        return next_token_loss(
            hidden_states,
            self.lm_head,
            labels=input_ids,
            attention_mask=attention_mask,
            shift_labels=shift_labels,
            fused=self.config.fused_lm_loss,
        )

    def outputs(self, output_class, logits, labels, clf_loss_fn, out, flat_ids, flat_mask, shift_labels):
        """(5) L3 = L2 + λ·L1 when labels are given, and the head's output."""
        loss = clf_loss = lm_loss = None
        if labels is not None:
            clf_loss = clf_loss_fn(logits, labels)
            lm_loss = self.aux_lm_loss(out.last_hidden_state, flat_ids, flat_mask, shift_labels)
            loss = add_aux_lm_loss(clf_loss, lm_loss, self.config.aux_lm_weight)
        return output_class(
            loss=loss,
            logits=logits,
            clf_loss=clf_loss,
            lm_loss=lm_loss,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


class GPT1ForSequenceClassification(_GPT1TaskHead):
    """Eq. (3)-(5): a linear layer W_y on the extract token's final state, trained with L3 = L2 + λ·L1.

    input_ids: (batch, seq) for single texts and pairs, or (batch, 2, seq) for similarity tasks, whose two orderings
    are encoded independently and whose pooled states are added before the head (paper §3.3); or inputs_embeds of the
    same shapes + (H,), pooled at the last non-pad position. Losses by `config.problem_type` (inferred like
    transformers): cross-entropy (single label), MSE (num_labels == 1, e.g. STS-B) or BCE-with-logits (multi-label
    float targets of shape (batch, num_labels)).
    """

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.score = nn.Linear(config.n_embd, config.num_labels)  # W_y
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        position_ids=None,
        inputs_embeds=None,
        **kwargs,
    ) -> GPT1SequenceClassifierOutput:
        shift_labels = kwargs.pop("shift_labels", None)  # pre-shifted aux LM targets (a loss kwarg, as in-tree)
        shape = input_shape(input_ids, inputs_embeds)
        if shape is None or len(shape) not in (2, 3) or (len(shape) == 3 and shape[1] != 2):
            raise ValueError(
                "input_ids must have shape (batch, seq), or (batch, 2, seq) for similarity tasks (both orderings) "
                f"(inputs_embeds: the same + (hidden,)); got {None if shape is None else tuple(shape)}."
            )
        out, flat_ids, flat_mask = self.encode_flat(
            input_ids, inputs_embeds, attention_mask, position_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, **kwargs,
        )
        pooled = pool_at_extract_token(out.last_hidden_state, flat_ids, flat_mask, self.config.clf_token_id, False)
        pooled = pooled.view(shape[0], -1, pooled.shape[-1]).sum(dim=1)  # similarity: h(a;b) + h(b;a)
        logits = self.score(self.clf_dropout(pooled))
        return self.outputs(GPT1SequenceClassifierOutput, logits, labels, self.classification_loss, out, flat_ids,
                            flat_mask, shift_labels)

    def classification_loss(self, logits, labels):
        """(4) L2, with the label checks that turn silent wrong results into errors."""
        batch = logits.shape[0]
        if self.config.problem_type is None:
            if self.num_labels == 1:
                self.config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
                self.config.problem_type = "single_label_classification"
            else:
                self.config.problem_type = "multi_label_classification"
        problem = self.config.problem_type
        if problem == "regression":
            shapes = [(batch,), (batch, 1)] if self.num_labels == 1 else [(batch, self.num_labels)]
            if tuple(labels.shape) not in shapes:
                raise ValueError(
                    f"Regression labels must have shape {' or '.join(map(str, shapes))}, got {tuple(labels.shape)}."
                )
            return F.mse_loss(logits.float().view(labels.shape), labels.float())
        if problem == "single_label_classification":
            return class_index_loss(logits, labels, f"num_labels={self.num_labels}")
        if labels.shape != logits.shape:
            raise ValueError(f"Multi-label targets must have shape {tuple(logits.shape)}, got {tuple(labels.shape)}.")
        if checking_values() and bool(((labels < 0) | (labels > 1)).any()):
            low, high = float(labels.min()), float(labels.max())
            raise ValueError(f"Multi-label targets must lie in [0, 1], got values from {low} to {high}.")
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class GPT1ForMultipleChoice(_GPT1TaskHead):
    """Multiple choice (RACE, Story Cloze): one scalar per choice from its extract token, softmax over the choices.

    input_ids: (batch, num_choices, seq); every choice must contain the extract token (checked in eager mode), or
    inputs_embeds (batch, num_choices, seq, H), pooled at each choice's last non-pad position. As in the original code,
    the classifier dropout mask is shared by the choices of one example.
    """

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.score = nn.Linear(config.n_embd, 1)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        position_ids=None,
        inputs_embeds=None,
        **kwargs,
    ) -> GPT1MultipleChoiceModelOutput:
        shift_labels = kwargs.pop("shift_labels", None)  # pre-shifted aux LM targets (a loss kwarg, as in-tree)
        shape = input_shape(input_ids, inputs_embeds)
        if shape is None or len(shape) != 3:
            raise ValueError(
                "GPT1ForMultipleChoice takes input_ids of shape (batch, num_choices, seq) (inputs_embeds: the same + "
                f"(hidden,)), got {None if shape is None else tuple(shape)}."
            )
        batch, num_choices, _ = shape
        out, flat_ids, flat_mask = self.encode_flat(
            input_ids, inputs_embeds, attention_mask, position_ids,
            output_attentions=output_attentions, output_hidden_states=output_hidden_states, **kwargs,
        )
        pooled = pool_at_extract_token(out.last_hidden_state, flat_ids, flat_mask, self.config.clf_token_id, True)
        pooled = pooled.view(batch, num_choices, -1)
        p = self.clf_dropout.p
        if self.training and p > 0:  # one dropout mask per example, shared across its choices
            keep = torch.empty_like(pooled[:, :1]).bernoulli_(1 - p) / (1 - p)
            pooled = pooled * keep
        logits = self.score(pooled).squeeze(-1)  # (batch, num_choices)

        def choice_loss(logits, labels):
            return class_index_loss(logits, labels, f"{num_choices} choices")

        return self.outputs(GPT1MultipleChoiceModelOutput, logits, labels, choice_loss, out, flat_ids, flat_mask,
                            shift_labels)


# `save_pretrained` copies the code and records each class in auto_map (remote code) without a registration call.
GPT1Config._auto_class = "AutoConfig"
GPT1Model._auto_class = "AutoModel"
GPT1LMHeadModel._auto_class = "AutoModelForCausalLM"
GPT1ForSequenceClassification._auto_class = "AutoModelForSequenceClassification"
GPT1ForMultipleChoice._auto_class = "AutoModelForMultipleChoice"

__all__ = [
    "GPT1PreTrainedModel",
    "GPT1Model",
    "GPT1LMHeadModel",
    "GPT1ForSequenceClassification",
    "GPT1ForMultipleChoice",
]
