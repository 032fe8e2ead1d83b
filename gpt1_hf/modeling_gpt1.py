"""GPT-1 in PyTorch for transformers 5 (Radford et al. 2018, "Improving Language Understanding by Generative
Pre-Training").

Hub-portable: imports only torch, transformers and `.configuration_gpt1`; `save_pretrained` copies this file next to the
weights so that `AutoModel*.from_pretrained(repo, trust_remote_code=True)` works without `gpt1_hf` installed.

Where the paper's equations live:

    (2)  h_0 = U W_e + W_p                      GPT1Model.forward (token + learned position embeddings)
         h_l = transformer_block(h_{l-1})       GPT1Block.forward: n = LN(h + attn(h)); h' = LN(n + mlp(n))  (post-LN)
         P(u) = softmax(h_n W_e^T)              GPT1LMHeadModel (lm_head tied to W_e)
    (1)  L1 = Σ_i log P(u_i | u_<i)             next_token_loss (mean over the non-pad target tokens)
    (3)  P(y | x) = softmax(h_l^m W_y)          pool_at_extract_token + GPT1ForSequenceClassification.score
    (4)  L2 = Σ log P(y | x)                    classification_loss
    (5)  L3 = L2 + λ·L1   (λ = config.aux_lm_weight = 0.5)   add_aux_lm_loss
    §3.3 input transformations: the extract token `_classify_` ends every sequence; similarity tasks feed both
         orderings, (batch, 2, seq), and add the two pooled vectors; multiple choice feeds (batch, choices, seq)
         and normalises one score per choice with a softmax.
"""

from collections.abc import Callable
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

from .configuration_gpt1 import GPT1Config

# Every head is written into `config.auto_map` on save, so one folder serves all Auto classes with remote code.
GPT1_AUTO_MAP = {
    "AutoConfig": "configuration_gpt1.GPT1Config",
    "AutoModel": "modeling_gpt1.GPT1Model",
    "AutoModelForCausalLM": "modeling_gpt1.GPT1LMHeadModel",
    "AutoModelForSequenceClassification": "modeling_gpt1.GPT1ForSequenceClassification",
    "AutoModelForMultipleChoice": "modeling_gpt1.GPT1ForMultipleChoice",
}


# ----------------------------------------------------------------------------------------------------------------------
# Attention
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


def eager_causal_mask(attention_mask: torch.Tensor | None, q_len: int, kv_len: int, device) -> torch.Tensor:
    """Boolean (batch|1, 1, q_len, kv_len) mask: causal, and padding keys hidden. Used when attention weights are asked
    for, since only the eager kernel returns them."""
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
    mask = (torch.arange(kv_len, device=device)[None, :] <= q_pos)[None, None]
    if attention_mask is not None and attention_mask.dim() == 2:
        mask = mask & attention_mask[:, None, None, -kv_len:].bool()
    return mask


class GPT1Attention(nn.Module):
    """Masked multi-head self-attention with one fused QKV projection (`c_attn`) and an output projection (`c_proj`)."""

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
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, hidden_states, attention_mask=None, cache: Cache | None = None, output_attentions=False, **kwargs):
        batch, seq, _ = hidden_states.shape
        qkv = self.c_attn(hidden_states).view(batch, seq, 3, self.n_head, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, seq, head_dim)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        if output_attentions:
            attention_interface = eager_attention_forward
        else:
            attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
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
        output = output.reshape(batch, seq, -1)
        return self.resid_dropout(self.c_proj(output)), weights


class GPT1MLP(nn.Module):
    """Position-wise feed-forward network: c_proj(GELU(c_fc(x)))."""

    def __init__(self, config: GPT1Config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.n_inner)
        self.act = ACT2FN[config.activation_function]
        self.c_proj = nn.Linear(config.n_inner, config.n_embd)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


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
    _can_compile_fullgraph = False

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
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

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
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([GPT1Block(config, i) for i in range(config.n_layer)])
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.tokens_embed

    def set_input_embeddings(self, new_embeddings):
        self.tokens_embed = new_embeddings

    def check_inputs(self, input_ids, past_length: int, seq_length: int):
        """Bad input fails loudly here instead of becoming an index error deep inside an embedding."""
        if past_length + seq_length > self.config.n_positions:
            raise ValueError(
                f"Sequence length {past_length + seq_length} exceeds the model's n_positions={self.config.n_positions}"
                " (GPT-1 has learned position embeddings for that many positions only). Truncate the input, e.g. "
                f"tokenizer(..., truncation=True, max_length={self.config.n_positions})."
            )
        if input_ids is not None and not torch.compiler.is_compiling() and input_ids.numel() > 0:
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.config.vocab_size:
                bad = low if low < 0 else high
                raise ValueError(
                    f"Token id {bad} is outside the vocabulary [0, {self.config.vocab_size}). If you added tokens to "
                    "the tokenizer, call model.resize_token_embeddings(len(tokenizer))."
                )

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
        return_dict: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        cache = cache if cache is not None else past_key_values
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
        self.check_inputs(input_ids, past_length, seq)

        if inputs_embeds is None:
            inputs_embeds = self.tokens_embed(input_ids)
        if position_ids is None:
            position_ids = torch.arange(past_length, past_length + seq, device=inputs_embeds.device)[None]
        hidden_states = self.drop(inputs_embeds + self.positions_embed(position_ids))  # (2): h_0 = U W_e + W_p

        if attention_mask is None and input_ids is not None and past_length == 0 and self.config.pad_token_id is not None:
            attention_mask = (input_ids != self.config.pad_token_id).long()  # pad tokens are never attended to
        if output_attentions:
            mask = eager_causal_mask(attention_mask, seq, past_length + seq, inputs_embeds.device)
        else:
            mask = create_causal_mask(
                config=self.config,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                cache=cache,
                position_ids=position_ids,
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


# ----------------------------------------------------------------------------------------------------------------------
# Losses and pooling shared by the heads
# ----------------------------------------------------------------------------------------------------------------------


def next_token_loss(hidden_states, lm_head: nn.Linear, input_ids, attention_mask=None, ignore_index=None):
    """L1 of the paper as a mean: next-token cross-entropy over every non-pad target token of the batch.

    Position t predicts token t+1 and counts when token t+1 is a real token (attention_mask == 1), special tokens
    included, as in the original code. Only those positions go through the LM head, so the (tokens x vocab) logits of
    padding are never built. hidden_states: (N, T, H); input_ids, attention_mask: (N, T).
    """
    targets = input_ids[:, 1:]
    keep = torch.ones_like(targets, dtype=torch.bool) if attention_mask is None else attention_mask[:, 1:].bool()
    if ignore_index is not None:
        keep = keep & (targets != ignore_index)
    logits = lm_head(hidden_states[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep])


def pool_at_extract_token(hidden_states, input_ids, attention_mask, clf_token_id, require_extract_token: bool):
    """h_l^m of eq. (3): the final hidden state at the extract token `_classify_` (its last occurrence).

    Rows without it fall back to their last non-pad token, unless `require_extract_token`.
    hidden_states: (N, T, H); input_ids, attention_mask: (N, T). Returns (N, H).
    """
    n, t = input_ids.shape
    positions = torch.arange(t, device=input_ids.device).expand(n, t)
    if attention_mask is None:
        last_real = torch.full((n,), t - 1, device=input_ids.device)
    else:
        last_real = (positions * attention_mask.bool()).amax(dim=1)
    if clf_token_id is None:
        if require_extract_token:
            raise ValueError("config.clf_token_id is None; multiple choice needs an extract token to pool at.")
        index = last_real
    else:
        is_extract = input_ids == clf_token_id
        has_extract = is_extract.any(dim=1)
        if require_extract_token and not bool(has_extract.all()):
            rows = torch.nonzero(~has_extract).flatten().tolist()
            raise ValueError(
                f"Sequences {rows[:10]} (flattened batch x choice index) have no extract token id {clf_token_id} "
                "(`_classify_`). End every choice with it, e.g. tokenizer(context, answer) adds it."
            )
        index = torch.where(has_extract, (positions * is_extract).amax(dim=1), last_real)
    return hidden_states[torch.arange(n, device=hidden_states.device), index]


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
        past_key_values=None,
        return_dict=None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """labels: (batch, seq) token ids, shifted inside (labels = input_ids is fine); -100 marks ignored tokens."""
        out = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            cache=cache if cache is not None else past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        hidden_states = out.last_hidden_state
        loss = None
        if labels is not None:
            if labels.shape != hidden_states.shape[:2]:
                raise ValueError(f"labels must have shape {tuple(hidden_states.shape[:2])}, got {tuple(labels.shape)}.")
            if attention_mask is None and input_ids is not None and self.config.pad_token_id is not None:
                attention_mask = (input_ids != self.config.pad_token_id).long()
            loss = next_token_loss(hidden_states, self.lm_head, labels, attention_mask, ignore_index=-100)
        slice_ = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, slice_])
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states, attentions=out.attentions
        )


class _GPT1TaskHead(GPT1PreTrainedModel):
    """Backbone + tied LM head (for the auxiliary objective) shared by the two task heads."""

    _tied_weights_keys = {"lm_head.weight": "transformer.tokens_embed.weight"}

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.transformer = GPT1Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.clf_dropout = nn.Dropout(config.clf_pdrop)

    def encode_flat(self, input_ids, attention_mask, output_attentions, output_hidden_states, **kwargs):
        """Run the backbone on (N, T) sequences; returns the output, pad-inferred mask and last hidden states."""
        if attention_mask is None and self.config.pad_token_id is not None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        out = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            use_cache=False,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            **kwargs,
        )
        return out, attention_mask

    def aux_lm_loss(self, hidden_states, input_ids, attention_mask, labels_given: bool):
        """L1 on the task's own inputs, computed only when it contributes to the loss (λ > 0 and labels given)."""
        if not labels_given or not self.config.aux_lm_weight:
            return None
        return next_token_loss(hidden_states, self.lm_head, input_ids, attention_mask)


class GPT1ForSequenceClassification(_GPT1TaskHead):
    """Eq. (3)-(5): a linear layer W_y on the extract token's final state, trained with L3 = L2 + λ·L1.

    input_ids: (batch, seq) for single texts and pairs, or (batch, 2, seq) for similarity tasks, whose two orderings
    are encoded independently and whose pooled states are added before the head (paper §3.3).
    Losses by `config.problem_type` (inferred like transformers): cross-entropy (single label), MSE (num_labels == 1,
    e.g. STS-B) or BCE-with-logits (multi-label float targets of shape (batch, num_labels)).
    """

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.score = nn.Linear(config.n_embd, config.num_labels)  # W_y
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> GPT1SequenceClassifierOutput:
        if input_ids is None or input_ids.dim() not in (2, 3) or (input_ids.dim() == 3 and input_ids.shape[1] != 2):
            raise ValueError(
                "input_ids must have shape (batch, seq), or (batch, 2, seq) for similarity tasks (both orderings); "
                f"got {None if input_ids is None else tuple(input_ids.shape)}."
            )
        batch, seq = input_ids.shape[0], input_ids.shape[-1]
        flat_ids = input_ids.reshape(-1, seq)
        flat_mask = None if attention_mask is None else attention_mask.reshape(-1, seq)
        out, flat_mask = self.encode_flat(flat_ids, flat_mask, output_attentions, output_hidden_states, **kwargs)
        hidden_states = out.last_hidden_state
        pooled = pool_at_extract_token(hidden_states, flat_ids, flat_mask, self.config.clf_token_id, False)
        pooled = pooled.view(batch, -1, pooled.shape[-1]).sum(dim=1)  # similarity: h(a;b) + h(b;a)
        logits = self.score(self.clf_dropout(pooled))

        loss = clf_loss = lm_loss = None
        if labels is not None:
            clf_loss = self.classification_loss(logits, labels)
            lm_loss = self.aux_lm_loss(hidden_states, flat_ids, flat_mask, labels_given=True)
            loss = add_aux_lm_loss(clf_loss, lm_loss, self.config.aux_lm_weight)
        return GPT1SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            clf_loss=clf_loss,
            lm_loss=lm_loss,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )

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
            if labels.numel() != batch:
                raise ValueError(f"Regression labels must have shape ({batch},), got {tuple(labels.shape)}.")
            return F.mse_loss(logits.view(-1).float(), labels.view(-1).float())
        if problem == "single_label_classification":
            if labels.shape != (batch,):
                raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}.")
            bad = labels[(labels < 0) | (labels >= self.num_labels)]
            if bad.numel():
                raise ValueError(f"Label {int(bad[0])} is out of range for num_labels={self.num_labels}.")
            return F.cross_entropy(logits.float(), labels)
        if labels.shape != logits.shape:
            raise ValueError(f"Multi-label targets must have shape {tuple(logits.shape)}, got {tuple(labels.shape)}.")
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class GPT1ForMultipleChoice(_GPT1TaskHead):
    """Multiple choice (RACE, Story Cloze): one scalar per choice from its extract token, softmax over the choices.

    input_ids: (batch, num_choices, seq); every choice must contain the extract token. As in the original code, the
    classifier dropout mask is shared by the choices of one example.
    """

    def __init__(self, config: GPT1Config):
        super().__init__(config)
        self.score = nn.Linear(config.n_embd, 1)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        return_dict=None,
        **kwargs,
    ) -> GPT1MultipleChoiceModelOutput:
        if input_ids is None or input_ids.dim() != 3:
            raise ValueError(
                "GPT1ForMultipleChoice takes input_ids of shape (batch, num_choices, seq), got "
                f"{None if input_ids is None else tuple(input_ids.shape)}."
            )
        batch, num_choices, seq = input_ids.shape
        flat_ids = input_ids.reshape(-1, seq)
        flat_mask = None if attention_mask is None else attention_mask.reshape(-1, seq)
        out, flat_mask = self.encode_flat(flat_ids, flat_mask, output_attentions, output_hidden_states, **kwargs)
        hidden_states = out.last_hidden_state
        pooled = pool_at_extract_token(hidden_states, flat_ids, flat_mask, self.config.clf_token_id, True)
        pooled = pooled.view(batch, num_choices, -1)
        p = self.clf_dropout.p
        if self.training and p > 0:  # one dropout mask per example, shared across its choices
            keep = torch.empty_like(pooled[:, :1]).bernoulli_(1 - p) / (1 - p)
            pooled = pooled * keep
        logits = self.score(pooled).squeeze(-1)  # (batch, num_choices)

        loss = clf_loss = lm_loss = None
        if labels is not None:
            if labels.shape != (batch,):
                raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}.")
            bad = labels[(labels < 0) | (labels >= num_choices)]
            if bad.numel():
                raise ValueError(f"Label {int(bad[0])} is out of range for {num_choices} choices.")
            clf_loss = F.cross_entropy(logits.float(), labels)
            lm_loss = self.aux_lm_loss(hidden_states, flat_ids, flat_mask, labels_given=True)
            loss = add_aux_lm_loss(clf_loss, lm_loss, self.config.aux_lm_weight)
        return GPT1MultipleChoiceModelOutput(
            loss=loss,
            logits=logits,
            clf_loss=clf_loss,
            lm_loss=lm_loss,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )


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
