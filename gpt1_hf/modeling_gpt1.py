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
    (4)  L2 = Σ log P(y | x)                    class_index_loss (classification_loss adds regression, multi-label)
    (5)  L3 = L2 + λ·L1   (λ = config.aux_lm_weight = 0.5)   add_aux_lm_loss
    §3.3 input transformations: the extract token `_classify_` ends every sequence; similarity tasks feed both
         orderings, (batch, 2, seq), and add the two pooled vectors; multiple choice feeds (batch, choices, seq)
         and normalises one score per choice with a softmax.
"""

import math
from collections.abc import Callable
from contextlib import contextmanager
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
# Fast paths. Each one keeps its reference next to it and a switch here: tests/test_fast_paths.py checks every fast path
# against its reference, and docs/benchmarks.md ("What each fast path buys") measures what switching it off costs.
# ----------------------------------------------------------------------------------------------------------------------

FAST_PATHS = {
    # dropout masks from 16-bit slices of 64-bit random words on CPU, instead of bernoulli_ (one draw per element)
    "fast_dropout": True,
    # training on CPU with attention dropout: low-precision matmul/softmax attention (`dropout_attention_forward`)
    # instead of SDPA, which has no fused CPU kernel with dropout and falls back to an fp32 math path
    "dropout_attention": True,
    # ... whose backward recomputes the (T x T) probabilities instead of keeping three (T x T) tensors per layer
    "attention_recompute": True,
    # LM head + cross-entropy in row chunks with the gradient computed in the same pass (`linear_cross_entropy`),
    # instead of (rows x vocab) fp32 logits, log-probabilities and their gradient
    "fused_lm_loss": True,
    # GPT-1's tanh GELU as one kernel (F.gelu(approximate="tanh")) instead of the 8-op formula of `gelu_new`
    "gelu_kernel": True,
    # GPT1LMHeadModel in training mode with labels returns the loss and no (batch, seq, vocab) logits
    "no_train_logits": True,
}


@contextmanager
def fast_paths(**switches: bool):
    """Switch fast paths on or off for a block, e.g. `with fast_paths(fused_lm_loss=False): ...` (tests, ablations)."""
    unknown = set(switches) - set(FAST_PATHS)
    if unknown:
        raise ValueError(f"Unknown fast paths {sorted(unknown)}; known: {sorted(FAST_PATHS)}.")
    saved = dict(FAST_PATHS)
    FAST_PATHS.update(switches)
    try:
        yield
    finally:
        FAST_PATHS.clear()
        FAST_PATHS.update(saved)


@torch.compiler.disable  # eager even under torch.compile: inductor's own CPU random numbers are ~3x slower
def dropout_keep_mask(shape, p: float, dtype: torch.dtype, device) -> torch.Tensor:
    """Bernoulli(1 - p) keep mask of 0/1 values in `dtype`, P(drop) = round(p * 2^16) / 2^16.

    CPU `bernoulli_` draws one Mersenne-Twister number per element (~5 ns each on the benchmark machine); here every
    64-bit draw gives four uniform 16-bit integers, compared with a threshold (~1 ns per element).
    """
    if not FAST_PATHS["fast_dropout"]:
        return torch.empty(shape, dtype=dtype, device=device).bernoulli_(1 - p)
    numel = math.prod(shape)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    uniform16 = words.view(torch.int16)[:numel].view(shape)  # uniform on [-2^15, 2^15)
    keep = torch.empty(shape, dtype=dtype, device=device)  # the comparison writes 0/1 in `dtype` directly
    return torch.ge(uniform16, round(p * 65536) - 32768, out=keep)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout, with `dropout_keep_mask` on CPU: x * mask / (1 - p)."""
    if not training or p == 0:
        return x
    if not FAST_PATHS["fast_dropout"] or x.device.type != "cpu" or p >= 1:
        return F.dropout(x, p, training=True)
    return (x * dropout_keep_mask(x.shape, p, x.dtype, x.device)).mul_(1.0 / (1.0 - p))


class GPT1Dropout(nn.Dropout):
    """nn.Dropout computed by `dropout` (same module, same state dict; only the random-number path differs)."""

    def forward(self, input):
        return dropout(input, self.p, self.training)


class _LinearCrossEntropy(torch.autograd.Function):
    """mean_i CE(h_i W^T, t_i) (0 for no rows) without the (rows x vocab) logits of the whole batch; see
    `linear_cross_entropy`."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size: int, compute_dtype: torch.dtype):
        want_dh, want_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n = hidden.shape[0]
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(compute_dtype), weight.to(compute_dtype)
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            dh = torch.empty_like(h) if want_dh else None
            dw = None
            for start in range(0, n, chunk_size):
                h_c, t_c = h[start : start + chunk_size], targets[start : start + chunk_size]
                # log-softmax in fp32, in place on one (chunk x vocab) buffer: x = logits - max; lse = max + log Σ e^x
                x = (h_c @ w.T).to(torch.float32)
                target_logit = x.gather(1, t_c[:, None])
                row_max = x.amax(dim=-1, keepdim=True)
                sum_exp = x.sub_(row_max).exp_().sum(dim=-1, keepdim=True)
                lse = row_max + sum_exp.log()
                total += (lse - target_logit).sum()
                if not (want_dh or want_dw):
                    continue
                # d(sum of CE)/d(logits) = softmax - one_hot, in fp32, rounded to the matmul dtype (as autocast does)
                target_grad = (target_logit - lse).exp() - 1
                grad = x.div_(sum_exp).scatter_(1, t_c[:, None], target_grad).to(compute_dtype)
                del x
                if want_dh:
                    torch.mm(grad, w, out=dh[start : start + chunk_size])
                if start + chunk_size >= n:
                    del w  # last chunk: free the weight copy before dW is allocated (lower peak memory)
                if want_dw:
                    dw_c = grad.T @ h_c
                    del grad
                    dw = dw_c.to(torch.float32) if dw is None else dw.add_(dw_c)
                    del dw_c
        ctx.grads = (dh, dw)
        ctx.n = max(n, 1)  # no rows (no target token in the batch): a zero loss, not 0/0
        ctx.hidden_dtype = hidden.dtype
        return total / ctx.n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        if ctx.grads is None:
            raise RuntimeError(
                "linear_cross_entropy computes its gradient during the forward pass and gives it out once; backward "
                "through it twice (retain_graph=True) needs `with fast_paths(fused_lm_loss=False)`."
            )
        dh, dw = ctx.grads
        ctx.grads = None
        scale = grad_output / ctx.n
        if dh is not None:
            dh = (dh * scale).to(ctx.hidden_dtype)
        if dw is not None:
            dw = dw.mul_(scale)  # in place: this is the only reference
        return dh, dw, None, None, None


def linear_cross_entropy(hidden, weight, targets, chunk_size: int = 1024):
    """F.cross_entropy(F.linear(hidden, weight).float(), targets) for the LM head, in chunks of `chunk_size` rows
    (0, not NaN, for no rows).

    hidden: (rows, H); weight: (vocab, H); targets: (rows,). Matmuls run in the autocast dtype when autocast is on
    (the dtype of `hidden` otherwise), log-softmax in fp32. The gradient of each chunk is computed right away and kept
    as dh (rows x H) and dW (vocab x H, fp32), so neither the (rows x vocab) logits nor their fp32 log-probabilities
    and gradient ever exist for the whole batch, and backward only scales them.
    """
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = hidden.dtype
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk_size, compute_dtype)


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


class _DropoutAttention(torch.autograd.Function):
    """(softmax(Q K^T s + mask) * keep) V / (1 - p), keeping only Q, K, V, the mask and the keep mask for backward.

    Autograd would keep three (T x T) tensors per layer and head (the probabilities, the keep mask and the dropped
    probabilities); here backward recomputes the probabilities instead (one Q K^T matmul and a softmax).
    """

    @staticmethod
    def forward(ctx, query, key, value, mask, keep, scaling: float, p: float):
        probs = torch.softmax(torch.matmul(query * scaling, key.transpose(-1, -2)) + mask, dim=-1)
        output = torch.matmul(probs.mul_(keep), value).mul_(1.0 / (1.0 - p))
        ctx.save_for_backward(query, key, value, mask, keep)
        ctx.scaling, ctx.p = scaling, p
        return output

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        query, key, value, mask, keep = ctx.saved_tensors
        grad_output = grad_output * (1.0 / (1.0 - ctx.p))
        scaled_query = query * ctx.scaling
        probs = torch.softmax(torch.matmul(scaled_query, key.transpose(-1, -2)) + mask, dim=-1)
        grad_value = torch.matmul((probs * keep).transpose(-1, -2), grad_output)
        grad_probs = torch.matmul(grad_output, value.transpose(-1, -2)).mul_(keep)
        grad_scores = torch.ops.aten._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        grad_query = torch.matmul(grad_scores, key).mul_(ctx.scaling)
        grad_key = torch.matmul(grad_scores.transpose(-1, -2), scaled_query)
        return grad_query, grad_key, grad_value, None, None, None, None


def dropout_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """softmax(Q K^T / sqrt(d) + mask) with dropout on the probabilities, then V: the CPU training path.

    SDPA has no fused CPU kernel with dropout; its math fallback upcasts bf16 to fp32 and draws the mask with
    bernoulli_. Here the matmuls and the softmax output stay in the input dtype (the softmax accumulates in fp32), the
    mask comes from `dropout_keep_mask`, 1/(1-p) scales the (T x d) output instead of the (T x T) probabilities, and
    `_DropoutAttention` recomputes the probabilities in backward instead of keeping them.
    attention_mask: None (causal, no padding), boolean (True = attend) or additive, broadcastable to the scores.
    """
    q_len, kv_len = query.shape[-2], key.shape[-2]
    # The mask is added, not filled in: the backward of an addition is free, and softmax's own backward already gives
    # masked positions a zero gradient.
    if attention_mask is None:
        attention_mask = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
    if attention_mask.dtype == torch.bool:
        additive = torch.zeros(attention_mask.shape, dtype=query.dtype, device=query.device)
        attention_mask = additive.masked_fill_(~attention_mask, torch.finfo(query.dtype).min)
    attention_mask = attention_mask.to(query.dtype)
    if dropout > 0:
        keep = dropout_keep_mask((*query.shape[:-1], kv_len), dropout, query.dtype, query.device)
        if FAST_PATHS["attention_recompute"]:
            output = _DropoutAttention.apply(query, key, value, attention_mask, keep, scaling, dropout)
        else:  # the same computation, differentiated by autograd (keeps probabilities, keep mask, dropped probs)
            probs = torch.softmax(torch.matmul(query * scaling, key.transpose(-1, -2)) + attention_mask, dim=-1)
            output = torch.matmul(probs * keep, value) * (1.0 / (1.0 - dropout))
    else:
        probs = torch.softmax(torch.matmul(query * scaling, key.transpose(-1, -2)) + attention_mask, dim=-1)
        output = torch.matmul(probs, value)
    return output.transpose(1, 2), None


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
        self.resid_dropout = GPT1Dropout(config.resid_pdrop)

    def forward(self, hidden_states, attention_mask=None, cache: Cache | None = None, output_attentions=False, **kwargs):
        batch, seq, _ = hidden_states.shape
        qkv = self.c_attn(hidden_states).view(batch, seq, 3, self.n_head, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, seq, head_dim)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        if output_attentions:
            attention_interface = eager_attention_forward
        elif (
            self.training
            and self.attn_dropout > 0
            and query.device.type == "cpu"
            and self.config._attn_implementation == "sdpa"
            and FAST_PATHS["dropout_attention"]
        ):
            attention_interface = dropout_attention_forward
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
        self.tanh_gelu = config.activation_function == "gelu_new"  # GPT-1's GELU: 0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))
        self.c_proj = nn.Linear(config.n_inner, config.n_embd)
        self.dropout = GPT1Dropout(config.resid_pdrop)

    def forward(self, x):
        h = self.c_fc(x)
        h = F.gelu(h, approximate="tanh") if self.tanh_gelu and FAST_PATHS["gelu_kernel"] else self.act(h)
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
        self.drop = GPT1Dropout(config.embd_pdrop)
        self.h = nn.ModuleList([GPT1Block(config, i) for i in range(config.n_layer)])
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self):
        return self.tokens_embed

    def set_input_embeddings(self, new_embeddings):
        self.tokens_embed = new_embeddings

    def check_inputs(self, input_ids, attention_mask, position_ids, batch: int, past_length: int, seq_length: int):
        """Bad input fails loudly here instead of becoming an index error deep inside an embedding (or a mask that
        broadcasts silently)."""
        if past_length + seq_length > self.config.n_positions:
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
        if torch.compiler.is_compiling():
            return
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
        past_key_values: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """attention_mask: (batch, past + seq), 1 for real tokens. Without position_ids, each row's positions count its
        real tokens (cumsum of the mask - 1), so a left-padded row gets the positions it would have alone.
        return_dict=False returns a tuple (`can_return_tuple`)."""
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
        self.check_inputs(input_ids, attention_mask, position_ids, batch, past_length, seq)

        if attention_mask is None and input_ids is not None and past_length == 0 and self.config.pad_token_id is not None:
            attention_mask = (input_ids != self.config.pad_token_id).long()  # pad tokens are never attended to
        if inputs_embeds is None:
            inputs_embeds = self.tokens_embed(input_ids)
        if position_ids is None and isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
            # the number of real tokens before each one (padding gets 0): left padding does not shift the positions
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq:]
        elif position_ids is None:
            position_ids = torch.arange(past_length, past_length + seq, device=inputs_embeds.device)[None]
        hidden_states = self.drop(inputs_embeds + self.positions_embed(position_ids))  # (2): h_0 = U W_e + W_p
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

    Position t predicts token t+1 and counts when both are real tokens (attention_mask == 1; with left padding, the
    first real token is not predicted from a pad), special tokens included, as in the original code. Only those
    positions go through the LM head, so the (tokens x vocab) logits of padding are never built. A batch without any
    target (every row at most one token long) gives a zero loss that keeps the graph. hidden_states: (N, T, H);
    input_ids, attention_mask: (N, T).
    """
    targets = input_ids[:, 1:]
    if attention_mask is None:
        keep = torch.ones_like(targets, dtype=torch.bool)
    else:
        keep = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
    if ignore_index is not None:
        keep = keep & (targets != ignore_index)
    if torch.compiler.is_compiling():  # no boolean indexing (data-dependent shapes); the compiler fuses the loss
        logits = lm_head(hidden_states[:, :-1]).float()
        total = F.cross_entropy(logits.flatten(0, 1), targets.masked_fill(~keep, -100).flatten(), reduction="sum")
        return total / keep.sum().clamp(min=1)
    if FAST_PATHS["fused_lm_loss"] and type(lm_head) is nn.Linear and lm_head.bias is None:  # not PEFT-wrapped
        return linear_cross_entropy(hidden_states[:, :-1][keep], lm_head.weight, targets[keep])
    logits = lm_head(hidden_states[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum") / max(logits.shape[0], 1)


def pool_at_extract_token(hidden_states, input_ids, attention_mask, clf_token_id, require_extract_token: bool):
    """h_l^m of eq. (3): the final hidden state at the extract token `_classify_` (its last occurrence).

    Rows without it fall back to their last non-pad token, unless `require_extract_token`; a row without any real token
    is an error. hidden_states: (N, T, H); input_ids, attention_mask: (N, T). Returns (N, H).
    """
    n, t = input_ids.shape
    positions = torch.arange(t, device=input_ids.device).expand(n, t)
    if attention_mask is None:
        last_real = torch.full((n,), t - 1, device=input_ids.device)
    else:
        has_real = attention_mask.bool().any(dim=1)
        if not bool(has_real.all()):
            rows = torch.nonzero(~has_real).flatten().tolist()
            raise ValueError(
                f"Sequences {rows[:10]} (flattened batch x choice index) have no real token: their attention_mask is "
                "all 0 (or they are all padding), so there is nothing to classify."
            )
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


def class_index_loss(logits, labels, classes: str):
    """(4) L2 = -log P(y | x) for integer class labels (batch,), checked: float labels (say, targets meant for another
    problem type) and out-of-range classes are errors; any integer dtype is accepted."""
    batch, num_classes = logits.shape
    if labels.shape != (batch,):
        raise ValueError(f"labels must have shape ({batch},), got {tuple(labels.shape)}.")
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be integer class indices for {classes}, got dtype {labels.dtype}.")
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
        past_key_values=None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """labels: (batch, seq) token ids, shifted inside (labels = input_ids is fine); -100 marks ignored tokens.

        In training mode with labels, only the loss is computed (logits=None): the loss projects just the target
        positions (`next_token_loss`). Pass logits_to_keep > 0 to get the logits of the last positions as well.
        return_dict=False returns a tuple (`can_return_tuple`).
        """
        out = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            cache=cache if cache is not None else past_key_values,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        hidden_states = out.last_hidden_state
        loss = None
        if labels is not None:
            seq = hidden_states.shape[1]
            if labels.shape != hidden_states.shape[:2]:
                raise ValueError(f"labels must have shape {tuple(hidden_states.shape[:2])}, got {tuple(labels.shape)}.")
            if not torch.compiler.is_compiling():
                bad = labels[(labels != -100) & ((labels < 0) | (labels >= self.config.vocab_size))]
                if bad.numel():
                    raise ValueError(
                        f"Label {int(bad[0])} is out of range: labels must be -100 (ignored) or token ids in "
                        f"[0, {self.config.vocab_size})."
                    )
            if attention_mask is None and input_ids is not None and self.config.pad_token_id is not None:
                attention_mask = (input_ids != self.config.pad_token_id).long()
            elif isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 2:
                attention_mask = attention_mask[:, -seq:]  # with a cache the mask also covers the cached tokens
            loss = next_token_loss(hidden_states, self.lm_head, labels.long(), attention_mask, ignore_index=-100)
        logits = None
        skip_logits = self.training and loss is not None and FAST_PATHS["no_train_logits"]
        if not (skip_logits and isinstance(logits_to_keep, int) and logits_to_keep == 0):
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
        self.clf_dropout = GPT1Dropout(config.clf_pdrop)

    def encode_flat(self, input_ids, attention_mask, output_attentions, output_hidden_states, **kwargs):
        """Run the backbone on the (..., T) sequences flattened to (N, T); returns the output, the flat ids and the
        flat (pad-inferred when not given) mask."""
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must have the shape of input_ids, {tuple(input_ids.shape)}, got "
                f"{tuple(attention_mask.shape)}."
            )
        seq = input_ids.shape[-1]
        input_ids = input_ids.reshape(-1, seq)
        if attention_mask is None and self.config.pad_token_id is not None:
            attention_mask = (input_ids != self.config.pad_token_id).long()
        elif attention_mask is not None:
            attention_mask = attention_mask.reshape(-1, seq)
        out = self.transformer(
            input_ids,
            attention_mask=attention_mask,
            use_cache=False,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        return out, input_ids, attention_mask

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

    @can_return_tuple
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        **kwargs,
    ) -> GPT1SequenceClassifierOutput:
        if input_ids is None or input_ids.dim() not in (2, 3) or (input_ids.dim() == 3 and input_ids.shape[1] != 2):
            raise ValueError(
                "input_ids must have shape (batch, seq), or (batch, 2, seq) for similarity tasks (both orderings); "
                f"got {None if input_ids is None else tuple(input_ids.shape)}."
            )
        batch = input_ids.shape[0]
        out, flat_ids, flat_mask = self.encode_flat(
            input_ids, attention_mask, output_attentions, output_hidden_states, **kwargs
        )
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
        if bool(((labels < 0) | (labels > 1)).any()):
            low, high = float(labels.min()), float(labels.max())
            raise ValueError(f"Multi-label targets must lie in [0, 1], got values from {low} to {high}.")
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

    @can_return_tuple
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        labels=None,
        output_attentions=None,
        output_hidden_states=None,
        **kwargs,
    ) -> GPT1MultipleChoiceModelOutput:
        if input_ids is None or input_ids.dim() != 3:
            raise ValueError(
                "GPT1ForMultipleChoice takes input_ids of shape (batch, num_choices, seq), got "
                f"{None if input_ids is None else tuple(input_ids.shape)}."
            )
        batch, num_choices, _ = input_ids.shape
        out, flat_ids, flat_mask = self.encode_flat(
            input_ids, attention_mask, output_attentions, output_hidden_states, **kwargs
        )
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
            clf_loss = class_index_loss(logits, labels, f"{num_choices} choices")
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
