"""Every fast path of gpt1_hf against its eager reference (same loss and gradients within tolerance).

The switches: `attn_implementation` ("gpt1_sdpa" vs "sdpa") and the config fields `fast_dropout`, `fused_lm_loss`,
`attention_recompute`, `train_logits`, `gelu_kernel`, `bf16_erf_gelu`;
`reference_paths(model)` turns every one of them to its reference.
"""

import contextlib
import math

import pytest
import torch
from torch.nn import functional as F

from gpt1_hf import GPT1Config, GPT1ForMultipleChoice, GPT1ForSequenceClassification, GPT1LMHeadModel
from gpt1_hf.kernels_gpt1 import (
    GPT1Dropout,
    dropout,
    dropout_attention_forward,
    dropout_keep_mask,
    gelu_tanh,
    linear_cross_entropy,
)
from gpt1_hf.modeling_gpt1 import eager_attention_forward, next_token_loss
from tests.conftest import tiny_config_kwargs

START, DELIM, CLF, PAD = 100, 101, 102, 103
CONFIG_SWITCHES_OFF = {"fast_dropout": False, "fused_lm_loss": False, "attention_recompute": False, "train_logits": True,
                       "gelu_kernel": False, "bf16_erf_gelu": False}


@contextlib.contextmanager
def reference_paths(model):
    """Every fast path of `model` switched to its reference for the block: plain SDPA attention, F.dropout, logits +
    F.cross_entropy, the LM logits in training, transformers' written-out gelu_new (and the tanh kernel in bf16)."""
    config = model.config
    saved = {name: getattr(config, name) for name in CONFIG_SWITCHES_OFF}
    saved_attn = config._attn_implementation
    for name, value in CONFIG_SWITCHES_OFF.items():
        setattr(config, name, value)
    model.set_attn_implementation("sdpa")
    try:
        yield model
    finally:
        for name, value in saved.items():
            setattr(config, name, value)
        model.set_attn_implementation(saved_attn)
NO_DROPOUT = dict(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0)


def make_batch(batch=3, seq=12, lengths=(12, 9, 5)):
    ids = torch.randint(0, 100, (batch, seq))
    mask = torch.zeros(batch, seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, 0] = START
        ids[i, n - 1] = CLF
        ids[i, n:] = PAD
        mask[i, :n] = 1
    return ids, mask


def loss_and_grads(model, batch, autocast=False):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(**batch).loss
    loss.backward()
    return loss.detach().float(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same_training_step(model, batch, autocast, rtol, atol):
    """One loss + backward with every fast path on and with every fast path off (the eager reference)."""
    model.train()
    fast_loss, fast_grads = loss_and_grads(model, batch, autocast)
    with reference_paths(model):
        assert model.config._attn_implementation == "sdpa"
        ref_loss, ref_grads = loss_and_grads(model, batch, autocast)
    assert model.config._attn_implementation == "gpt1_sdpa"
    torch.testing.assert_close(fast_loss, ref_loss, rtol=rtol, atol=atol)
    assert fast_grads.keys() == ref_grads.keys()
    for name in ref_grads:
        scale = ref_grads[name].abs().max().clamp_min(1e-12)
        torch.testing.assert_close(fast_grads[name] / scale, ref_grads[name] / scale, rtol=rtol, atol=atol,
                                   msg=lambda m, name=name: f"{name}: {m}")


# ----------------------------------------------------------------------------------------------------------------------
# Dropout
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_rate_and_values(p):
    mask = dropout_keep_mask((64, 1000), p, torch.bfloat16, "cpu")
    assert mask.shape == (64, 1000) and mask.dtype == torch.bfloat16
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    keep = mask.float().mean().item()
    assert abs(keep - (1 - p)) < 4 * math.sqrt(p * (1 - p) / mask.numel())  # within 4 sigma


def test_keep_mask_odd_sizes_and_independence():
    for shape in [(1,), (3,), (5, 7), (2, 3, 5)]:
        assert dropout_keep_mask(shape, 0.5, torch.float32, "cpu").shape == shape
    a = dropout_keep_mask((200_000,), 0.5, torch.float32, "cpu")
    # neighbouring elements share a 64-bit word but use disjoint bits: no correlation between them
    assert abs(torch.corrcoef(torch.stack([a[:-1], a[1:]]))[0, 1].item()) < 0.02


def test_keep_mask_follows_the_torch_seed():
    torch.manual_seed(3)
    a = dropout_keep_mask((100,), 0.3, torch.float32, "cpu")
    torch.manual_seed(3)
    b = dropout_keep_mask((100,), 0.3, torch.float32, "cpu")
    assert torch.equal(a, b)


def test_dropout_matches_f_dropout_in_distribution():
    x = torch.randn(100, 1000)
    y = dropout(x, 0.1, training=True)
    dropped = y == 0
    assert abs(dropped.float().mean().item() - 0.1) < 0.005
    torch.testing.assert_close(y[~dropped], x[~dropped] / 0.9)  # survivors scaled by exactly 1 / (1 - p)
    # bf16: the scale is applied per element, not rounded once to bf16 (1/0.9 -> 1.109375)
    xb = torch.ones(10_000, dtype=torch.bfloat16)
    kept = dropout(xb, 0.1, training=True)
    assert kept.max().item() == torch.tensor(1 / 0.9, dtype=torch.bfloat16).item()
    assert torch.equal(dropout(x, 0.1, training=False), x) and torch.equal(dropout(x, 0.0, training=True), x)
    assert torch.equal(dropout(x, 1.0, training=True), torch.zeros_like(x))


def test_dropout_gradient_is_the_mask():
    x = torch.randn(50, 40, requires_grad=True)
    torch.manual_seed(1)
    y = GPT1Dropout(0.2).train()(x)
    y.sum().backward()
    torch.manual_seed(1)
    keep = dropout_keep_mask(x.shape, 0.2, x.dtype, "cpu")
    torch.testing.assert_close(y, x * keep / 0.8)
    torch.testing.assert_close(x.grad, keep / 0.8)


# ----------------------------------------------------------------------------------------------------------------------
# Attention with dropout (CPU training path)
# ----------------------------------------------------------------------------------------------------------------------


class _Module:
    training = True


def _qkv(batch=2, heads=3, seq=9, dim=8, dtype=torch.float32):
    return [torch.randn(batch, heads, seq, dim, dtype=dtype, requires_grad=True) for _ in range(3)]


@pytest.mark.parametrize("mask_kind", ["causal", "bool_padding", "additive"])
def test_dropout_attention_without_dropout_equals_eager(mask_kind):
    q, k, v = _qkv()
    causal = torch.ones(9, 9, dtype=torch.bool).tril()
    if mask_kind == "causal":
        mask, ref_mask = None, causal[None, None]
    else:
        pad = torch.ones(2, 9, dtype=torch.bool)
        pad[1, 6:] = False
        ref_mask = causal[None, None] & pad[:, None, None, :]
        mask = ref_mask if mask_kind == "bool_padding" else torch.zeros(ref_mask.shape).masked_fill(~ref_mask, -1e9)
    out, _ = dropout_attention_forward(_Module(), q, k, v, mask, scaling=8**-0.5, dropout=0.0)
    ref, _ = eager_attention_forward(_Module(), q, k, v, ref_mask, scaling=8**-0.5, dropout=0.0)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_dropout_attention_with_dropout_by_hand():
    q, k, v = _qkv()
    torch.manual_seed(7)
    out, _ = dropout_attention_forward(_Module(), q, k, v, None, scaling=8**-0.5, dropout=0.25)
    torch.manual_seed(7)
    keep = dropout_keep_mask((2, 3, 9, 9), 0.25, torch.float32, "cpu")
    scores = (q @ k.transpose(-1, -2)) * 8**-0.5
    scores = scores.masked_fill(~torch.ones(9, 9, dtype=torch.bool).tril(), float("-inf"))
    ref = ((scores.softmax(-1) * keep / 0.75) @ v).transpose(1, 2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_dropout_attention_bf16_close_to_fp32_eager():
    q, k, v = _qkv(seq=33, dim=16)
    out, _ = dropout_attention_forward(_Module(), *(t.bfloat16() for t in (q, k, v)), None, scaling=0.25, dropout=0.0)
    ref, _ = eager_attention_forward(_Module(), q, k, v, torch.ones(33, 33, dtype=torch.bool).tril(), scaling=0.25)
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


def test_model_uses_dropout_attention_only_when_training_with_attention_dropout(monkeypatch):
    import gpt1_hf.kernels_gpt1 as kernels

    calls = []
    original = kernels.dropout_attention_forward
    monkeypatch.setattr(kernels, "dropout_attention_forward", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs()))
    assert model.config._attn_implementation == "gpt1_sdpa"  # the default, from transformers' AttentionInterface
    ids, mask = make_batch()
    model.eval()(ids, attention_mask=mask)
    assert not calls  # inference: SDPA
    model.train()(ids, attention_mask=mask, labels=ids)
    assert len(calls) == 2  # one per layer
    model.set_attn_implementation("sdpa")  # the reference: SDPA's own dropout
    model(ids, attention_mask=mask, labels=ids)
    assert len(calls) == 2


# ----------------------------------------------------------------------------------------------------------------------
# Fused LM head + cross-entropy
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1024, 7])
def test_linear_cross_entropy_fp32(chunk_size):
    h = torch.randn(30, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    t = torch.randint(0, 50, (30,))
    loss = linear_cross_entropy(h, w, t, chunk_size=chunk_size)
    ref = F.cross_entropy(F.linear(h, w), t)
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    g = torch.autograd.grad(0.5 * loss, (h, w))
    g_ref = torch.autograd.grad(0.5 * ref, (h, w))
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [1024, 16])
def test_linear_cross_entropy_bf16_autocast(chunk_size):
    h = torch.randn(64, 32, requires_grad=True)
    w = (torch.randn(300, 32) * 0.3).requires_grad_()
    t = torch.randint(0, 300, (64,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(h, w, t, chunk_size=chunk_size)
        ref = F.cross_entropy(F.linear(h, w).float(), t)  # what autocast + a plain loss compute
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=1e-3, atol=1e-3)
    g = torch.autograd.grad(loss, (h, w))
    g_ref = torch.autograd.grad(ref, (h, w))
    for a, b in zip(g, g_ref, strict=True):
        assert a.dtype == b.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2 * b.abs().max().item())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("target", [3, 7])
def test_linear_cross_entropy_confident_and_hopeless_rows(dtype, target):
    """The loss and target gradient come from p_t and 1 - p_t, each rounded once to the matmul dtype. Rows with
    p_t ~ 1 - 4e-5 (token 3: p_t rounds to 1 in bf16, so -log p_t and p_t - 1 would be 0) and rows whose p_t
    underflows to 0 (token 7: loss ~ 204 nats, from an fp32 log-sum-exp) match the fp32 reference of the same
    rounded logits."""
    torch.manual_seed(0)
    h = torch.ones(4, 1) + torch.randn(4, 1) * 0.01
    w = torch.randn(50, 1) * 0.1
    w[3, 0], w[7, 0] = 14.0, -190.0
    h, w = h.to(dtype).float().requires_grad_(), w.to(dtype).float().requires_grad_()  # exact in both dtypes
    t = torch.full((4,), target)
    ref = F.cross_entropy(F.linear(h, w).to(dtype).float(), t)  # the same rounded logits, in fp32
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        loss = linear_cross_entropy(h, w, t)
    assert (ref < 1e-4) if target == 3 else (ref > 150)  # the rows are what the test says
    torch.testing.assert_close(loss, ref, rtol=4e-3, atol=0)
    dw, dw_ref = torch.autograd.grad(loss, w)[0][target], torch.autograd.grad(ref, w)[0][target]
    torch.testing.assert_close(dw, dw_ref, rtol=1e-2, atol=0)


def test_linear_cross_entropy_default_chunks_on_cpu_match_one_chunk():
    # the CPU default (256 rows) splits 600 rows into 3 chunks: same loss and gradients as a single chunk
    h = torch.randn(600, 16, requires_grad=True)
    w = torch.randn(40, 16, requires_grad=True)
    t = torch.randint(0, 40, (600,))
    loss = linear_cross_entropy(h, w, t)
    one = linear_cross_entropy(h, w, t, chunk_size=600)
    torch.testing.assert_close(loss, one, rtol=1e-6, atol=1e-6)
    for a, b in zip(torch.autograd.grad(loss, (h, w)), torch.autograd.grad(one, (h, w)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows", [1, 63, 64, 65, 300])
@pytest.mark.parametrize("chunk_size", [None, 16])
def test_linear_cross_entropy_rows_rounded_up_on_cpu(monkeypatch, rows, chunk_size):
    """On CPU the rows are padded to a multiple of `CPU_ROW_MULTIPLE` (64) with zero rows, whose loss is not counted
    and whose gradient rows are dropped: loss and gradients are those without the padding (multiple 1), in fp32
    and under bf16 autocast, whether the padding shares a chunk with real rows or fills whole chunks."""
    from gpt1_hf import kernels_gpt1

    assert kernels_gpt1.CPU_ROW_MULTIPLE == 64
    torch.manual_seed(rows)
    h = torch.randn(rows, 16, requires_grad=True)
    w = (torch.randn(90, 16) * 0.3).requires_grad_()
    t = torch.randint(0, 90, (rows,))
    for autocast in (False, True):
        results = []
        for multiple in (64, 1):
            monkeypatch.setattr(kernels_gpt1, "CPU_ROW_MULTIPLE", multiple)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                loss = linear_cross_entropy(h, w, t, chunk_size=chunk_size)
            results.append((loss, *torch.autograd.grad(loss, (h, w))))
        for a, b in zip(*results, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    monkeypatch.setattr(kernels_gpt1, "CPU_ROW_MULTIPLE", 64)
    torch.testing.assert_close(linear_cross_entropy(h, w, t, chunk_size=chunk_size), F.cross_entropy(h @ w.T, t),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("group_rows", [1, 32, 4096])
def test_linear_cross_entropy_dw_groups_match_the_reference(monkeypatch, group_rows):
    """dW = grad^T h in one matmul per group of chunks (`DW_GROUP_ROWS`): per chunk (1), 2 chunks of 16 with a partial
    last group (32: 70 = 32 + 32 + 6 rows) or all rows at once; fp32 exact, bf16 as autocast's reference."""
    from gpt1_hf import kernels_gpt1

    monkeypatch.setattr(kernels_gpt1, "DW_GROUP_ROWS", group_rows)
    h = torch.randn(70, 16, requires_grad=True)
    w = (torch.randn(90, 16) * 0.3).requires_grad_()
    t = torch.randint(0, 90, (70,))
    g = torch.autograd.grad(linear_cross_entropy(h, w, t, chunk_size=16), (h, w))
    g_ref = torch.autograd.grad(F.cross_entropy(F.linear(h, w), t), (h, w))
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = torch.autograd.grad(linear_cross_entropy(h, w, t, chunk_size=16), (h, w))
        g_ref = torch.autograd.grad(F.cross_entropy(F.linear(h, w).float(), t), (h, w))
    for a, b in zip(g, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2 * b.abs().max().item())


def test_linear_cross_entropy_only_needed_grads_and_no_grad():
    h = torch.randn(10, 8, requires_grad=True)
    w = torch.randn(20, 8)
    t = torch.randint(0, 20, (10,))
    (gh,) = torch.autograd.grad(linear_cross_entropy(h, w, t), (h,))
    torch.testing.assert_close(gh, torch.autograd.grad(F.cross_entropy(h @ w.T, t), (h,))[0], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, t), F.cross_entropy(h @ w.T, t))


def test_linear_cross_entropy_backward_twice_raises():
    h = torch.randn(4, 8, requires_grad=True)
    loss = linear_cross_entropy(h, torch.randn(20, 8), torch.randint(0, 20, (4,)))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="fused_lm_loss = False"):
        loss.backward()


def test_next_token_loss_fused_equals_reference_with_padding_and_ignore_index():
    lm = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs()))
    ids, mask = make_batch()
    labels = ids.clone()
    labels[0, 3] = -100
    hidden = torch.randn(3, 12, 32, requires_grad=True)
    fused = next_token_loss(hidden, lm.lm_head, labels, mask, fused=True)
    ref = next_token_loss(hidden, lm.lm_head, labels, mask, fused=False)
    torch.testing.assert_close(fused, ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(torch.autograd.grad(fused, (hidden, lm.lm_head.weight)),
                    torch.autograd.grad(ref, (hidden, lm.lm_head.weight)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# GELU kernel, training logits
# ----------------------------------------------------------------------------------------------------------------------


def test_gelu_kernel_equals_gelu_new_formula():
    """`config.gelu_kernel` (one PyTorch kernel) computes "gelu_new", the paper's tanh GELU as transformers writes it."""
    from transformers.activations import NewGELUActivation

    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs())).eval()
    mlp, x = model.transformer.h[0].mlp, torch.randn(4, 7, 32) * 3
    assert model.config.gelu_kernel and model.config.activation_function == "gelu_new"
    formula = mlp.c_proj(NewGELUActivation()(mlp.c_fc(x)))
    torch.testing.assert_close(mlp(x), formula, rtol=1e-6, atol=1e-6)
    ids = torch.randint(0, 100, (2, 9))
    fast = model(ids).logits
    model.config.gelu_kernel = False
    assert torch.equal(mlp(x), formula)  # the switch really selects the formula
    torch.testing.assert_close(fast, model(ids).logits, rtol=1e-5, atol=1e-5)


def _exact_tanh_gelu_and_derivative(x):
    """GPT-1's tanh GELU of the bf16 values `x` and its derivative, in fp64 (the exact function the kernels round)."""
    xd = x.double().requires_grad_()
    y = 0.5 * xd * (1 + torch.tanh(math.sqrt(2 / math.pi) * (xd + 0.044715 * xd**3)))
    y.sum().backward()
    return y.detach(), xd.grad


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_bf16_erf_gelu_is_the_tanh_gelu_within_bf16_rounding(scale):
    """The bf16 CPU fast path (the erf GELU's kernel) computes the tanh GELU about as exactly as the tanh kernel: its
    mean error against the exact function, value and derivative, is within 20% of the tanh kernel's and below that of
    gelu_new written out in bf16 (what openai-gpt computes under autocast); no value is off by more than the two
    forms' exact difference plus one bf16 rounding step."""
    from transformers.activations import NewGELUActivation

    from gpt1_hf.kernels_gpt1 import TANH_ERF_GELU_MAX_DIFF

    torch.manual_seed(0)
    x = (torch.randn(100_000, dtype=torch.float64) * scale).to(torch.bfloat16)
    exact, exact_grad = _exact_tanh_gelu_and_derivative(x)
    errors = {}
    for name, fn in (("erf", gelu_tanh), ("tanh", lambda v: gelu_tanh(v, bf16_erf=False)), ("new", NewGELUActivation())):
        v = x.clone().requires_grad_()
        y = fn(v)
        y.backward(torch.ones_like(y))
        assert y.dtype == torch.bfloat16
        errors[name] = ((y.double() - exact).abs().mean(), (v.grad.double() - exact_grad).abs().mean(), y.detach())
    for i in (0, 1):  # value, derivative
        assert errors["erf"][i] <= 1.2 * errors["tanh"][i] and errors["erf"][i] < errors["new"][i], (i, errors)
    assert torch.equal(errors["erf"][2], F.gelu(x)) and torch.equal(errors["tanh"][2], F.gelu(x, approximate="tanh"))
    tanh_y = errors["tanh"][2].float()
    assert ((errors["erf"][2].float() - tanh_y).abs() <= TANH_ERF_GELU_MAX_DIFF + tanh_y.abs() * 2**-7).all()


def test_bf16_erf_gelu_switch_changes_only_bf16():
    """`config.bf16_erf_gelu` selects the erf kernel for bf16 CPU tensors only; fp32 always gets the tanh kernel."""
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs())).eval()
    mlp, x = model.transformer.h[0].mlp, torch.randn(4, 7, 32)
    assert model.config.bf16_erf_gelu
    assert torch.equal(mlp(x), mlp.c_proj(F.gelu(mlp.c_fc(x), approximate="tanh")))
    mlp.to(torch.bfloat16)
    h = mlp.c_fc(x.bfloat16())
    assert torch.equal(mlp(x.bfloat16()), mlp.c_proj(F.gelu(h)))
    model.config.bf16_erf_gelu = False
    assert torch.equal(mlp(x.bfloat16()), mlp.c_proj(F.gelu(h, approximate="tanh")))
    mlp.float()  # fp32 weights again (rounded through bf16): the tanh kernel whatever the switch
    for switch in (False, True):
        model.config.bf16_erf_gelu = switch
        assert torch.equal(mlp(x), mlp.c_proj(F.gelu(mlp.c_fc(x), approximate="tanh")))


def test_bf16_erf_gelu_training_follows_the_tanh_kernel():
    """150 bf16-autocast updates of a tiny LM with dropout: the loss curve with the erf kernel stays on the tanh
    kernel's (same seed, same data): every update within 0.05 nats, the last 50 within 0.01 on average."""
    curves = {}
    for erf in (True, False):
        torch.manual_seed(0)
        model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs(bf16_erf_gelu=erf))).train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        data = torch.randint(0, 100, (150, 8, 16))
        data[:, :, 1::2] = (data[:, :, 0::2] * 7 + 3) % 100  # something learnable: odd tokens follow from even ones
        losses = []
        for ids in data:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        curves[erf] = torch.tensor(losses)
    erf, tanh = curves[True], curves[False]
    assert tanh[-50:].mean() < tanh[:10].mean() - 0.5  # it learned
    assert (erf - tanh).abs().max() < 0.05 and abs(erf[-50:].mean() - tanh[-50:].mean()) < 0.01, (erf - tanh).abs().max()


def test_training_with_labels_returns_no_logits_unless_asked():
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs())).train()
    ids = torch.randint(0, 100, (2, 8))
    out = model(ids, labels=ids)
    assert out.logits is None and out.loss is not None
    assert model(ids, labels=ids, logits_to_keep=1).logits.shape == (2, 1, 104)
    assert model(ids).logits.shape == (2, 8, 104)  # no labels: logits
    model.config.train_logits = True
    assert model(ids, labels=ids).logits.shape == (2, 8, 104)
    model.config.train_logits = False
    model.eval()
    out = model(ids, labels=ids)
    assert out.logits.shape == (2, 8, 104)


# ----------------------------------------------------------------------------------------------------------------------
# Whole models: fast paths vs reference, fp32 and bf16 autocast
# ----------------------------------------------------------------------------------------------------------------------


def _lm_batch():
    ids, mask = make_batch()
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


@pytest.mark.parametrize("autocast", [False, True])
def test_lm_training_step_matches_reference(autocast):
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs(**NO_DROPOUT)))
    tol = 2e-2 if autocast else 1e-5
    assert_same_training_step(model, _lm_batch(), autocast, rtol=tol, atol=tol)


@pytest.mark.parametrize("autocast", [False, True])
def test_classification_training_step_matches_reference(autocast):
    model = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(num_labels=3, **NO_DROPOUT)))
    ids, mask = make_batch()
    batch = {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, 1])}
    tol = 2e-2 if autocast else 1e-5
    assert_same_training_step(model, batch, autocast, rtol=tol, atol=tol)


@pytest.mark.parametrize("autocast", [False, True])
def test_multiple_choice_training_step_matches_reference(autocast):
    model = GPT1ForMultipleChoice(GPT1Config(**tiny_config_kwargs(**NO_DROPOUT)))
    ids, mask = make_batch(batch=4, lengths=(12, 9, 5, 12))
    batch = {"input_ids": ids.view(2, 2, 12), "attention_mask": mask.view(2, 2, 12), "labels": torch.tensor([1, 0])}
    tol = 2e-2 if autocast else 1e-5
    assert_same_training_step(model, batch, autocast, rtol=tol, atol=tol)


def test_attention_dropout_path_matches_reference_with_attention_dropout_only():
    """With only attention dropout on, the fast and reference paths differ only in the random masks: the same
    expected loss. Seeded runs of the fast path are reproducible and checkpointing replays the same masks."""
    cfg = GPT1Config(**tiny_config_kwargs(embd_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0, attn_pdrop=0.1))
    model = GPT1LMHeadModel(cfg).train()
    batch = _lm_batch()
    torch.manual_seed(11)
    a, grads_a = loss_and_grads(model, batch)
    torch.manual_seed(11)
    b, _ = loss_and_grads(model, batch)
    assert torch.equal(a, b)
    model.gradient_checkpointing_enable()
    torch.manual_seed(11)
    c, grads_c = loss_and_grads(model, batch)
    torch.testing.assert_close(c, a)
    for name in grads_a:
        torch.testing.assert_close(grads_c[name], grads_a[name], rtol=1e-5, atol=1e-6)
    model.gradient_checkpointing_disable()
    fast = torch.stack([loss_and_grads(model, batch)[0] for _ in range(30)]).mean()
    with reference_paths(model):
        ref = torch.stack([loss_and_grads(model, batch)[0] for _ in range(30)]).mean()
    model.eval()
    no_dropout = model(**batch).loss.detach()
    assert abs(fast - ref) < 0.05 and abs(fast - no_dropout) < 0.1


def test_fast_path_switches_are_config_fields_read_at_call_time():
    config = GPT1Config(**tiny_config_kwargs())
    assert (config.fast_dropout, config.fused_lm_loss, config.attention_recompute, config.train_logits) == (
        True, True, False, False)
    model = GPT1LMHeadModel(config).train()
    assert all(m.config is config for m in model.modules() if isinstance(m, GPT1Dropout))
    x = torch.randn(1000)
    torch.manual_seed(2)
    fast = model.transformer.drop(x)
    config.fast_dropout = False
    torch.manual_seed(2)
    reference = model.transformer.drop(x)
    torch.manual_seed(2)
    assert torch.equal(reference, F.dropout(x, 0.1, training=True))  # the reference is F.dropout
    assert not torch.equal(fast, reference)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    """`--compile` path: no graph breaks, and the compiled LM and multiple-choice losses/gradients match eager."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs(**NO_DROPOUT))).train()
    batch = _lm_batch()
    ref_loss, ref_grads = loss_and_grads(model, batch)
    compiled = torch.compile(model)
    loss, grads = loss_and_grads(compiled, batch)
    assert not torch._dynamo.utils.counters["graph_break"], dict(torch._dynamo.utils.counters["graph_break"])
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-5)
    grads = {name.removeprefix("_orig_mod."): g for name, g in grads.items()}
    assert grads.keys() == ref_grads.keys()
    for name, g in ref_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_recompute_equals_autograd(dtype):
    """`_DropoutAttention` (probabilities recomputed in backward) against the same ops differentiated by autograd."""
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in _qkv(seq=17, dim=8))
    pad = torch.ones(2, 17, dtype=torch.bool)
    pad[0, 12:] = False
    mask = torch.ones(17, 17, dtype=torch.bool).tril()[None, None] & pad[:, None, None, :]
    g = torch.randn(2, 17, 3, 8, dtype=dtype)
    results = []
    for recompute in (True, False):
        torch.manual_seed(5)
        out, _ = dropout_attention_forward(_Module(), q, k, v, mask, scaling=8**-0.5, dropout=0.2, recompute=recompute)
        results.append((out, torch.autograd.grad(out, (q, k, v), g)))
    (out, grads), (ref, ref_grads) = results
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_attention_recompute_switch_in_the_model_same_loss_and_gradients():
    """`config.attention_recompute` (off by default) changes only what backward keeps, not the result."""
    cfg = GPT1Config(**tiny_config_kwargs(embd_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0, attn_pdrop=0.2))
    model = GPT1LMHeadModel(cfg).train()
    batch = _lm_batch()
    results = []
    for recompute in (True, False):
        model.config.attention_recompute = recompute
        torch.manual_seed(4)
        results.append(loss_and_grads(model, batch))
    (loss, grads), (ref, ref_grads) = results
    torch.testing.assert_close(loss, ref, rtol=1e-6, atol=1e-6)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-5, atol=1e-6)
