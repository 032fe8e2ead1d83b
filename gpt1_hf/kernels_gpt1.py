"""The custom kernels of GPT-1's CPU training fast paths, each next to its reference switch.

Hub-portable: imports only torch and transformers; `modeling_gpt1.py` imports it relatively, and `save_pretrained`
copies it next to the weights with the modeling file (transformers copies the relative imports of remote code).

- `dropout_keep_mask` / `dropout` / `GPT1Dropout`: dropout masks from 16-bit slices of 64-bit random words on CPU
  instead of one `bernoulli_` draw per element. Switch: `config.fast_dropout` (False: `F.dropout`).
- `linear_cross_entropy`: LM head + cross-entropy in row chunks with the gradient computed in the same pass, instead of
  (rows x vocab) fp32 logits, log-probabilities and their gradient. Switch: `config.fused_lm_loss`.
- `dropout_attention_forward`: CPU training attention with dropout in the input dtype (SDPA has no fused CPU kernel
  with dropout and falls back to an fp32 math path); `_DropoutAttention` recomputes the probabilities in backward
  (`config.attention_recompute`). Registered with transformers' `AttentionInterface` as `attn_implementation="gpt1_sdpa"`
  (SDPA everywhere else); `attn_implementation="sdpa"` is its reference.
- `gelu_tanh`: GPT-1's tanh GELU in one kernel; in bf16 on CPU, the erf GELU's kernel, the same function to within
  bf16's rounding and 3-5x faster. Switch: `config.bf16_erf_gelu` (False: the tanh kernel everywhere).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_utils import AttentionInterface

GPT1_SDPA = "gpt1_sdpa"


# ----------------------------------------------------------------------------------------------------------------------
# Dropout
# ----------------------------------------------------------------------------------------------------------------------


@torch.compiler.disable  # eager even under torch.compile: inductor's own CPU random numbers are ~3x slower
def dropout_keep_mask(shape, p: float, dtype: torch.dtype, device) -> torch.Tensor:
    """Bernoulli(1 - p) keep mask of 0/1 values in `dtype`, P(drop) = round(p * 2^16) / 2^16.

    CPU `bernoulli_` draws one Mersenne-Twister number per element (~5 ns each on the benchmark machine); here every
    64-bit draw gives four uniform 16-bit integers, compared with a threshold (~1 ns per element).
    """
    numel = math.prod(shape)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), None)
    uniform16 = words.view(torch.int16)[:numel].view(shape)  # uniform on [-2^15, 2^15)
    keep = torch.empty(shape, dtype=dtype, device=device)  # the comparison writes 0/1 in `dtype` directly
    return torch.ge(uniform16, round(p * 65536) - 32768, out=keep)


def dropout(x: torch.Tensor, p: float, training: bool, fast: bool = True) -> torch.Tensor:
    """F.dropout, with `dropout_keep_mask` on CPU: x * mask / (1 - p); `fast=False` is F.dropout (the reference)."""
    if not training or p == 0:
        return x
    if not fast or x.device.type != "cpu" or p >= 1:
        return F.dropout(x, p, training=True)
    return (x * dropout_keep_mask(x.shape, p, x.dtype, x.device)).mul_(1.0 / (1.0 - p))


class GPT1Dropout(nn.Dropout):
    """nn.Dropout computed by `dropout` (same module, same state dict; only the random-number path differs).

    `config.fast_dropout` (read at every call, so it can be switched on a built model) picks the fast mask.
    """

    def __init__(self, p: float = 0.5, config=None):
        super().__init__(p)
        self.config = config

    def forward(self, input):
        return dropout(input, self.p, self.training, fast=getattr(self.config, "fast_dropout", True))


# ----------------------------------------------------------------------------------------------------------------------
# GELU
# ----------------------------------------------------------------------------------------------------------------------

#: max over x of |GELU_tanh(x) - GELU_erf(x)| in exact arithmetic (4.732e-4 at |x| = 2.70, fp64 on a 1e-5 grid)
TANH_ERF_GELU_MAX_DIFF = 4.74e-4


def gelu_tanh(x: torch.Tensor, bf16_erf: bool = True) -> torch.Tensor:
    """GPT-1's GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (transformers' "gelu_new"), in one kernel.

    In bf16 on CPU, with `bf16_erf`, it is computed by the erf GELU's kernel. PyTorch's CPU tanh-GELU is 3-5x slower
    (4,096 x 1,024 bf16 on AMX Intel: forward 3.6 against 0.7 ms, backward 3.8 against 1.3 ms), 10% of the study's
    pretraining step. The two forms differ by at most `TANH_ERF_GELU_MAX_DIFF`, below bf16's rounding step for
    |y| >= 0.06: on N(0, s) inputs the erf kernel's mean error against the exact tanh form, value and derivative, is
    within 15% of the tanh kernel's own, and smaller than that of "gelu_new" written out in bf16 (openai-gpt under
    autocast). fp32 and fp16 (rounding steps too fine for the difference) and other devices keep the tanh kernel.
    """
    if bf16_erf and x.dtype == torch.bfloat16 and x.device.type == "cpu":
        return F.gelu(x)
    return F.gelu(x, approximate="tanh")


def _softmax_loss_grad(logits, targets, out, rows=None):
    """Sum of the cross-entropies of the first `rows` rows (None: all); leaves d(row's loss)/d(logits) = softmax -
    one_hot in `out` (the logits' dtype) for every row.

    One softmax kernel, which reads the logits in their dtype and computes in fp32, replaces an fp32 copy of the
    (rows x vocab) chunk and five passes over it. The precision an fp32 log-softmax has comes from two
    per-row numbers: p_t, the target's probability, and rest = 1 - p_t, summed without the target's entry. Each is
    rounded once to the logits' dtype, so the loss (-log p_t, or -log1p(-rest) for confident rows) and the target's
    gradient -rest keep their relative precision. A row whose p_t is subnormal in that dtype (a loss above ~87 nats
    in bf16 or fp32, above ~9.7 in fp16), where the rounding loses bits, gets its loss from an fp32 log-sum-exp.
    """
    torch.softmax(logits, dim=-1, out=out)
    # the targets' entries through a flat view: index_copy_ touches only them (scatter_ copies the chunk twice on CPU)
    flat, entries = out.view(-1), torch.arange(len(targets), device=out.device) * out.shape[1] + targets
    p_t = flat[entries].float()
    rest = flat.index_fill_(0, entries, 0).view_as(out).sum(dim=-1).float()  # the reduction accumulates in fp32
    flat.index_copy_(0, entries, (-rest).to(out.dtype))
    loss = torch.where(rest < 0.5, -torch.log1p(-rest.clamp(max=0.5)), -p_t.log())
    underflow = (p_t < torch.finfo(out.dtype).tiny).nonzero().squeeze(1)  # one host sync per chunk on a GPU
    if len(underflow):
        x = logits[underflow].float()
        loss[underflow] = torch.logsumexp(x, dim=-1) - x.gather(1, targets[underflow, None]).squeeze(1)
    return loss[:rows].sum()


class _LinearCrossEntropy(torch.autograd.Function):
    """mean_i CE(h_i W^T, t_i) (0 for no rows) without the (rows x vocab) logits of the whole batch; see
    `linear_cross_entropy`."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_size: int, compute_dtype: torch.dtype, row_multiple: int):
        want_dh, want_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n = hidden.shape[0]
        # oneDNN builds a kernel for each new matmul shape (~3x the matmul's time on CPU), and the number of loss rows
        # changes with every batch: zero rows round it up (no loss, no dW; their dh is dropped)
        pad = -n % row_multiple
        padded = n + pad
        with torch.autocast(hidden.device.type, enabled=False):
            h, w = hidden.to(compute_dtype), weight.to(compute_dtype)
            if pad:
                h, targets = F.pad(h, (0, 0, 0, pad)), F.pad(targets, (0, pad))
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            dh = torch.empty_like(h) if want_dh else None
            # one dW = grad^T h matmul per group of chunks: one fp32 cast + add per group, not per chunk
            group = max(chunk_size, DW_GROUP_ROWS) // chunk_size * chunk_size
            grads = h.new_empty((min(padded, group), w.shape[0])) if want_dw else None
            dw, group_start = None, 0
            for start in range(0, padded, chunk_size):
                h_c, t_c = h[start : start + chunk_size], targets[start : start + chunk_size]
                end = start + len(t_c)
                logits = h_c @ w.T
                # the gradient (softmax - one_hot, rounded to the matmul dtype as autocast does) lands in the dW buffer
                grad = grads[start - group_start : end - group_start] if want_dw else torch.empty_like(logits)
                total += _softmax_loss_grad(logits, t_c, grad, rows=max(n - start, 0))
                del logits
                if not (want_dh or want_dw):
                    continue
                if want_dh:
                    torch.mm(grad, w, out=dh[start : start + chunk_size])
                if end >= padded:
                    del w  # last chunk: free the weight copy before dW is allocated (lower peak memory)
                if want_dw and (end - group_start == group or end >= padded):
                    dw_g = grads[: end - group_start].T @ h[group_start:end]
                    if end >= padded:
                        del grad, grads  # the last group: free the gradient rows before dW's fp32 copy (peak memory)
                    dw = dw_g.to(torch.float32) if dw is None else dw.add_(dw_g)
                    del dw_g
                    group_start = end
        ctx.grads = (None if dh is None else dh[:n], dw)
        ctx.n = max(n, 1)  # no rows (no target token in the batch): a zero loss, not 0/0
        ctx.hidden_dtype = hidden.dtype
        return total / ctx.n

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        if ctx.grads is None:
            raise RuntimeError(
                "linear_cross_entropy computes its gradient during the forward pass and gives it out once; backward "
                "through it twice (retain_graph=True) needs `model.config.fused_lm_loss = False`."
            )
        dh, dw = ctx.grads
        ctx.grads = None
        scale = grad_output / ctx.n
        if dh is not None:
            dh = (dh * scale).to(ctx.hidden_dtype)
        if dw is not None:
            dw = dw.mul_(scale)  # in place: this is the only reference
        return dh, dw, None, None, None, None


#: Rows per (rows x vocab) logit chunk. On CPU 256 rows measured +17% a step at the study shape (vocabulary 16k)
#: and neutral at the full config (docs/benchmarks.md); elsewhere larger chunks mean fewer kernel launches.
CPU_CHUNK_ROWS, DEFAULT_CHUNK_ROWS = 256, 1024
#: On CPU the loss rows are rounded up to a multiple of this (zero rows): each new number of rows would cost oneDNN a
#: new kernel for three matmuls (LM head 420 x 256 @ 256 x 16,004 bf16: 4.1 us a row for a shape seen before, 13.7 for
#: a new one, 4.8 for new numbers rounded up to 64); a fine-tuning batch has a new number of real tokens every time
CPU_ROW_MULTIPLE = 64
#: Rows of the logits' gradient per dW matmul (kept in a (rows x vocab) buffer of the matmul dtype): on CPU 4 chunks
#: share one matmul and one fp32 accumulation, -7% of a fine-tuning update at the study shape (docs/benchmarks.md)
DW_GROUP_ROWS = 1024


def linear_cross_entropy(hidden, weight, targets, chunk_size: int | None = None):
    """F.cross_entropy(F.linear(hidden, weight).float(), targets) for the LM head, in chunks of `chunk_size` rows
    (0, not NaN, for no rows; None: `CPU_CHUNK_ROWS` on CPU, `DEFAULT_CHUNK_ROWS` elsewhere).

    hidden: (rows, H); weight: (vocab, H); targets: (rows,). Matmuls run in the autocast dtype when autocast is on
    (the dtype of `hidden` otherwise), the softmax in fp32 inside one kernel (`_softmax_loss_grad`). The gradient of
    each chunk is computed right away and kept as dh (rows x H) and dW (vocab x H, fp32; one matmul per `DW_GROUP_ROWS`
    rows of the logits' gradient, held in the matmul dtype), so neither the (rows x vocab) logits nor their gradient
    ever exist for the whole batch, and backward only scales them. On CPU the rows are rounded up to a multiple of
    `CPU_ROW_MULTIPLE` with zero rows, so that batches of different sizes reuse oneDNN's kernels.
    """
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = hidden.dtype
    if chunk_size is None:
        chunk_size = CPU_CHUNK_ROWS if device_type == "cpu" else DEFAULT_CHUNK_ROWS
    row_multiple = CPU_ROW_MULTIPLE if device_type == "cpu" else 1
    return _LinearCrossEntropy.apply(hidden, weight, targets, chunk_size, compute_dtype, row_multiple)



# ----------------------------------------------------------------------------------------------------------------------
# Attention with dropout (CPU training)
# ----------------------------------------------------------------------------------------------------------------------


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


def dropout_attention_forward(
    module, query, key, value, attention_mask, scaling=None, dropout=0.0, recompute: bool | None = None, **kwargs
):
    """softmax(Q K^T / sqrt(d) + mask) with dropout on the probabilities, then V: the CPU training path.

    SDPA has no fused CPU kernel with dropout; its math fallback upcasts bf16 to fp32 and draws the mask with
    bernoulli_. Here the matmuls and the softmax output stay in the input dtype (the softmax accumulates in fp32), the
    mask comes from `dropout_keep_mask`, 1/(1-p) scales the (T x d) output instead of the (T x T) probabilities, and
    `_DropoutAttention` recomputes the probabilities in backward instead of keeping them.
    attention_mask: None (causal, no padding), boolean (True = attend) or additive, broadcastable to the scores.
    recompute: None reads `module.config.attention_recompute` (False without a config).
    """
    if recompute is None:
        recompute = bool(getattr(getattr(module, "config", None), "attention_recompute", False))
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
        if recompute:
            output = _DropoutAttention.apply(query, key, value, attention_mask, keep, scaling, dropout)
        else:  # the same computation, differentiated by autograd (keeps probabilities, keep mask, dropped probs)
            probs = torch.softmax(torch.matmul(query * scaling, key.transpose(-1, -2)) + attention_mask, dim=-1)
            output = torch.matmul(probs * keep, value) * (1.0 / (1.0 - dropout))
    else:
        probs = torch.softmax(torch.matmul(query * scaling, key.transpose(-1, -2)) + attention_mask, dim=-1)
        output = torch.matmul(probs, value)
    return output.transpose(1, 2), None


def gpt1_sdpa_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """`attn_implementation="gpt1_sdpa"`: `dropout_attention_forward` when training on CPU with attention dropout
    (measured 1.35x faster per training step than SDPA's fp32 math fallback), SDPA otherwise."""
    if dropout > 0 and module.training and query.device.type == "cpu":
        return dropout_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout)
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)


# The name goes through transformers' SDPA checks ("sdpa" in it) and gets SDPA's boolean masks.
AttentionInterface.register(GPT1_SDPA, gpt1_sdpa_attention_forward)
AttentionMaskInterface.register(GPT1_SDPA, sdpa_mask)

__all__ = [
    "GPT1_SDPA",
    "GPT1Dropout",
    "dropout",
    "dropout_attention_forward",
    "dropout_keep_mask",
    "gpt1_sdpa_attention_forward",
    "linear_cross_entropy",
]
