"""Behaviour of the GPT-1 model family on tiny configs: losses by hand, cache, checkpointing, bad input, shapes."""

import pytest
import torch
from torch.nn import functional as F

from gpt1_hf import (
    GPT1Config,
    GPT1ForMultipleChoice,
    GPT1ForSequenceClassification,
    GPT1LMHeadModel,
    GPT1Model,
)
from tests.conftest import tiny_config_kwargs

START, DELIM, CLF, PAD = 100, 101, 102, 103


def make_batch(batch=3, seq=10, lengths=(10, 7, 4)):
    """Right-padded sequences `[s] ... [e]` with the extract token at the last real position."""
    ids = torch.randint(0, 100, (batch, seq))
    mask = torch.zeros(batch, seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, 0] = START
        ids[i, n - 1] = CLF
        ids[i, n:] = PAD
        mask[i, :n] = 1
    return ids, mask


def test_paper_defaults():
    cfg = GPT1Config()
    assert (cfg.vocab_size, cfg.n_positions, cfg.n_embd, cfg.n_layer, cfg.n_head, cfg.n_inner) == (
        40482, 512, 768, 12, 12, 3072)
    assert cfg.activation_function == "gelu_new" and cfg.layer_norm_epsilon == 1e-5
    assert (cfg.embd_pdrop, cfg.attn_pdrop, cfg.resid_pdrop, cfg.clf_pdrop) == (0.1, 0.1, 0.1, 0.1)
    assert cfg.aux_lm_weight == 0.5 and cfg.initializer_range == 0.02 and cfg.tie_word_embeddings
    assert (cfg.start_token_id, cfg.delimiter_token_id, cfg.clf_token_id, cfg.pad_token_id) == (
        40478, 40479, 40480, 40481)


def test_init_every_weight_normal_002():
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs(n_embd=64, n_inner=256, vocab_size=504)))
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == 0), name
        elif ".ln_" in name:
            assert torch.all(p == 1), name
        else:
            assert abs(p.std().item() - 0.02) < 0.004, (name, p.std().item())


def test_post_ln_block_structure():
    """h_l = LN(n + mlp(n)), n = LN(h + attn(h)): recompute block 0 by hand from its submodules."""
    model = GPT1Model(GPT1Config(**tiny_config_kwargs())).eval()
    ids = torch.randint(0, 100, (2, 6))
    out = model(ids, output_hidden_states=True)
    h0 = out.hidden_states[0]
    block = model.h[0]
    a, _ = block.attn(h0)
    n = block.ln_1(h0 + a)
    h1 = block.ln_2(n + block.mlp(n))
    torch.testing.assert_close(out.hidden_states[1], h1, rtol=1e-5, atol=1e-5)
    pos = model.positions_embed(torch.arange(6))
    torch.testing.assert_close(h0, model.tokens_embed(ids) + pos)
    assert torch.equal(out.last_hidden_state, out.hidden_states[-1])  # no final LayerNorm


def test_lm_loss_by_hand():
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs())).eval()
    ids = torch.randint(0, 100, (2, 8))
    labels = ids.clone()
    labels[1, 5:] = -100
    out = model(ids, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, 104)
    target = labels[:, 1:].reshape(-1)
    expected = F.cross_entropy(logits, target, ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    assert model.lm_head.weight is model.transformer.tokens_embed.weight


def _aux_lm_by_hand(logits, ids, mask):
    """Mean next-token CE over every non-pad target token of the batch."""
    target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)


def test_sequence_classification_loss_by_hand():
    model = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(num_labels=3))).eval()
    lm = GPT1LMHeadModel(model.config).eval()
    lm.transformer.load_state_dict(model.transformer.state_dict())
    ids, mask = make_batch()
    labels = torch.tensor([0, 2, 1])
    out = model(ids, attention_mask=mask, labels=labels)

    hidden = model.transformer(ids, attention_mask=mask).last_hidden_state
    pooled = hidden[torch.arange(3), torch.tensor([9, 6, 3])]
    logits = model.score(pooled)
    torch.testing.assert_close(out.logits, logits)
    clf = F.cross_entropy(logits, labels)
    lm_loss = _aux_lm_by_hand(lm(ids, attention_mask=mask).logits, ids, mask)
    torch.testing.assert_close(out.clf_loss, clf)
    torch.testing.assert_close(out.lm_loss, lm_loss)
    torch.testing.assert_close(out.loss, clf + 0.5 * lm_loss)
    # attention_mask inferred from the pad token gives the same result
    torch.testing.assert_close(model(ids, labels=labels).loss, out.loss)


def test_aux_weight_zero_is_the_ablation():
    model = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(aux_lm_weight=0.0))).eval()
    ids, mask = make_batch()
    out = model(ids, attention_mask=mask, labels=torch.tensor([0, 1, 1]))
    assert out.lm_loss is None
    torch.testing.assert_close(out.loss, out.clf_loss)


def test_regression_and_multilabel_losses():
    reg = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(num_labels=1, aux_lm_weight=0))).eval()
    ids, mask = make_batch()
    y = torch.tensor([0.5, 4.0, 2.5])
    out = reg(ids, attention_mask=mask, labels=y)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.view(-1), y))

    ml = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(num_labels=3, aux_lm_weight=0))).eval()
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    out = ml(ids, attention_mask=mask, labels=y)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, y))


def test_similarity_adds_both_orderings():
    model = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(num_labels=1))).eval()
    a, ma = make_batch(lengths=(10, 7, 4))
    b, mb = make_batch(lengths=(6, 9, 5))
    ids = torch.stack([a, b], dim=1)
    mask = torch.stack([ma, mb], dim=1)
    y = torch.tensor([1.0, 2.0, 3.0])
    out = model(ids, attention_mask=mask, labels=y)
    ha = model.transformer(a, attention_mask=ma).last_hidden_state[torch.arange(3), torch.tensor([9, 6, 3])]
    hb = model.transformer(b, attention_mask=mb).last_hidden_state[torch.arange(3), torch.tensor([5, 8, 4])]
    torch.testing.assert_close(out.logits, model.score(ha + hb), rtol=1e-5, atol=1e-5)
    flat_ids, flat_mask = ids.view(-1, 10), mask.view(-1, 10)
    lm = GPT1LMHeadModel(model.config).eval()
    lm.transformer.load_state_dict(model.transformer.state_dict())
    lm_loss = _aux_lm_by_hand(lm(flat_ids, attention_mask=flat_mask).logits, flat_ids, flat_mask)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.view(-1), y) + 0.5 * lm_loss)


def test_multiple_choice_loss_by_hand():
    model = GPT1ForMultipleChoice(GPT1Config(**tiny_config_kwargs())).eval()
    ids, mask = make_batch(batch=6, lengths=(10, 7, 4, 8, 8, 3))
    ids, mask = ids.view(2, 3, 10), mask.view(2, 3, 10)
    labels = torch.tensor([2, 0])
    out = model(ids, attention_mask=mask, labels=labels)
    hidden = model.transformer(ids.view(6, 10), attention_mask=mask.view(6, 10)).last_hidden_state
    pooled = hidden[torch.arange(6), torch.tensor([9, 6, 3, 7, 7, 2])]
    logits = model.score(pooled).view(2, 3)
    torch.testing.assert_close(out.logits, logits)
    lm = GPT1LMHeadModel(model.config).eval()
    lm.transformer.load_state_dict(model.transformer.state_dict())
    lm_loss = _aux_lm_by_hand(lm(ids.view(6, 10), attention_mask=mask.view(6, 10)).logits, ids.view(6, 10),
                              mask.view(6, 10))
    torch.testing.assert_close(out.loss, F.cross_entropy(logits, labels) + 0.5 * lm_loss)


def test_multiple_choice_dropout_mask_shared_across_choices():
    cfg = GPT1Config(**tiny_config_kwargs(clf_pdrop=0.5, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0))
    model = GPT1ForMultipleChoice(cfg).train()
    seen = {}
    model.score.register_forward_hook(lambda m, inp, out: seen.setdefault("x", inp[0].detach()))
    ids, mask = make_batch(batch=4, lengths=(10, 7, 4, 8))
    model(ids.view(2, 2, 10), attention_mask=mask.view(2, 2, 10))
    zero = seen["x"] == 0  # (batch, choices, hidden)
    assert zero.any()
    assert torch.equal(zero[:, 0], zero[:, 1])
    assert not torch.equal(zero[0, 0], zero[1, 0])  # but not shared across examples


def test_pool_falls_back_to_last_non_pad_token():
    model = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs())).eval()
    ids, mask = make_batch()
    ids[1, 6] = 5  # row 1 loses its extract token
    out = model(ids, attention_mask=mask)
    hidden = model.transformer(ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out.logits[1], model.score(hidden[1, 6]))


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_padding_does_not_change_real_tokens(impl):
    model = GPT1Model(GPT1Config(**tiny_config_kwargs())).eval()
    model.set_attn_implementation(impl)
    ids = torch.randint(0, 100, (1, 6))
    alone = model(ids).last_hidden_state
    padded = torch.cat([ids, torch.full((1, 4), PAD)], dim=1)
    batched = model(padded, attention_mask=(padded != PAD).long()).last_hidden_state
    torch.testing.assert_close(batched[:, :6], alone, rtol=1e-5, atol=1e-5)


def test_eager_and_sdpa_agree_with_padding():
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs())).eval()
    ids, mask = make_batch()
    model.set_attn_implementation("eager")
    eager = model(ids, attention_mask=mask).logits
    model.set_attn_implementation("sdpa")
    sdpa = model(ids, attention_mask=mask).logits
    keep = mask.bool()
    torch.testing.assert_close(sdpa[keep], eager[keep], rtol=1e-5, atol=1e-5)


def test_kv_cache_matches_full_forward():
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs())).eval()
    ids = torch.randint(0, 100, (2, 12))
    full = model(ids, use_cache=False).logits
    out = model(ids[:, :7], use_cache=True)
    step = model(ids[:, 7:], cache=out.cache, use_cache=True)
    torch.testing.assert_close(step.logits, full[:, 7:], rtol=1e-5, atol=1e-5)
    # the deprecated name keeps working, with transformers' deprecation warning
    out = model(ids[:, :7], use_cache=True)
    with pytest.warns(FutureWarning, match="past_key_values"):
        step = model(ids[:, 7:], past_key_values=out.cache)
    torch.testing.assert_close(step.logits, full[:, 7:], rtol=1e-5, atol=1e-5)


def test_generate_with_and_without_cache():
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs())).eval()
    prompt = torch.randint(0, 100, (2, 5))
    with_cache = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=True, pad_token_id=PAD)
    without = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=False, pad_token_id=PAD)
    assert with_cache.shape == (2, 17)
    assert torch.equal(with_cache, without)


def test_gradient_checkpointing_same_gradients():
    cfg = GPT1Config(**tiny_config_kwargs(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0))
    model = GPT1ForSequenceClassification(cfg).train()
    ids, mask = make_batch()
    labels = torch.tensor([0, 1, 0])
    model(ids, attention_mask=mask, labels=labels).loss.backward()
    ref = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(ids, attention_mask=mask, labels=labels).loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, ref[n], rtol=1e-5, atol=1e-6)


def test_output_attentions_and_hidden_states():
    model = GPT1Model(GPT1Config(**tiny_config_kwargs())).eval()  # sdpa by default: weights come from eager math
    ids, mask = make_batch()
    out = model(ids, attention_mask=mask, output_attentions=True, output_hidden_states=True)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    att = out.attentions[0]
    assert att.shape == (3, 4, 10, 10)
    torch.testing.assert_close(att.sum(-1), torch.ones(3, 4, 10))
    assert torch.all(att.triu(1) == 0)  # causal
    assert torch.all(att[2, :, :, 4:] == 0)  # padding keys get no weight
    torch.testing.assert_close(out.last_hidden_state, model(ids, attention_mask=mask).last_hidden_state,
                               rtol=1e-5, atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    cfg = GPT1Config(**tiny_config_kwargs(num_labels=3))
    lm, clf, mc = GPT1LMHeadModel(cfg), GPT1ForSequenceClassification(cfg), GPT1ForMultipleChoice(cfg)
    with pytest.raises(ValueError, match="n_positions=32"):
        lm(torch.randint(0, 100, (1, 33)))
    with pytest.raises(ValueError, match="Token id 104 is outside the vocabulary"):
        lm(torch.tensor([[1, 2, 104]]))
    with pytest.raises(ValueError, match="Token id -1"):
        lm(torch.tensor([[1, -1]]))
    ids, mask = make_batch(batch=4, lengths=(10, 7, 4, 8))
    ids[3, 7] = 9
    with pytest.raises(ValueError, match=r"Sequences \[3\].*no extract token"):
        mc(ids.view(2, 2, 10), attention_mask=mask.view(2, 2, 10))
    ids, mask = make_batch()
    with pytest.raises(ValueError, match="Label 3 is out of range for num_labels=3"):
        clf(ids, attention_mask=mask, labels=torch.tensor([0, 3, 1]))
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        clf(ids, attention_mask=mask, labels=torch.tensor([[0], [1], [1]]))
    with pytest.raises(ValueError, match=r"shape \(batch, num_choices, seq\)"):
        mc(ids)
    ids, mask = make_batch(batch=4, lengths=(10, 7, 4, 8))
    with pytest.raises(ValueError, match="out of range for 2 choices"):
        mc(ids.view(2, 2, 10), labels=torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"\(batch, 2, seq\)"):
        clf(ids.view(1, 4, 10))


# ----------------------------------------------------------------------------------------------------------------------
# Left padding, empty batches, label dtypes and ranges, mask shapes, return_dict
# ----------------------------------------------------------------------------------------------------------------------


def left_pad(ids, mask):
    """The same rows as `make_batch` gives them, with the padding moved to the left."""
    out_ids, out_mask = torch.full_like(ids, PAD), torch.zeros_like(mask)
    for i, n in enumerate(mask.sum(1).tolist()):
        out_ids[i, ids.shape[1] - n:] = ids[i, :n]
        out_mask[i, ids.shape[1] - n:] = 1
    return out_ids, out_mask


def test_left_padding_keeps_the_positions_of_the_prompt_alone():
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs())).eval()
    ids, mask = left_pad(*make_batch())
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        for i, n in enumerate(mask.sum(1).tolist()):
            alone = model(ids[i:i + 1, -n:]).logits
            torch.testing.assert_close(batched[i, -n:], alone[0], rtol=1e-5, atol=1e-5)
        # with a cache, the mask covers past + new tokens and the positions continue from the real tokens
        first = model(ids[:, :-2], attention_mask=mask[:, :-2], use_cache=True)
        step = model(ids[:, -2:], attention_mask=mask, cache=first.cache, use_cache=True).logits
    torch.testing.assert_close(step, batched[:, -2:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_cache", [True, False])
def test_batched_left_padded_generate_equals_per_prompt_generate(use_cache):
    # a large init spread makes greedy decoding of the random model depend on the positions (no constant tokens)
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs(initializer_range=0.5))).eval()
    prompts = [torch.randint(0, 100, (n,)) for n in (7, 3, 5)]
    ids = torch.full((3, 7), PAD)
    mask = torch.zeros(3, 7, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, 7 - len(p):], mask[i, 7 - len(p):] = p, 1
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=PAD, use_cache=use_cache,
                  return_dict_in_generate=True, output_logits=True)
    batched = model.generate(ids, attention_mask=mask, **kwargs)
    for i, p in enumerate(prompts):
        alone = model.generate(p[None], **kwargs)
        assert torch.equal(batched.sequences[i, 7:], alone.sequences[0, len(p):]), i
        for step_b, step_a in zip(batched.logits, alone.logits, strict=True):
            torch.testing.assert_close(step_b[i], step_a[0], rtol=1e-4, atol=1e-4)


def test_classifier_left_padding_equals_right_padding():
    clf = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(num_labels=3))).eval()
    right, right_mask = make_batch()
    left, left_mask = left_pad(right, right_mask)
    labels = torch.tensor([0, 2, 1])
    r = clf(right, attention_mask=right_mask, labels=labels)
    l_ = clf(left, attention_mask=left_mask, labels=labels)
    torch.testing.assert_close(l_.logits, r.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(l_.lm_loss, r.lm_loss, rtol=1e-5, atol=1e-5)
    mc = GPT1ForMultipleChoice(clf.config).eval()
    r = mc(right[:2, None].expand(2, 2, 10), attention_mask=right_mask[:2, None].expand(2, 2, 10))
    l_ = mc(left[:2, None].expand(2, 2, 10), attention_mask=left_mask[:2, None].expand(2, 2, 10))
    torch.testing.assert_close(l_.logits, r.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_lm_loss_same_for_left_and_right_padding(fused):
    # a large init spread: the per-token losses differ clearly from log(vocab), so one extra target shows
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs(initializer_range=0.5, fused_lm_loss=fused))).eval()
    right, right_mask = make_batch()
    left, left_mask = left_pad(right, right_mask)
    r = model(right, attention_mask=right_mask, labels=right).loss
    l_ = model(left, attention_mask=left_mask, labels=left).loss
    torch.testing.assert_close(l_, r, rtol=1e-5, atol=1e-5)
    # the first real token of a left-padded row is not a target: it would be predicted from a pad
    expected = _aux_lm_by_hand(model(right, attention_mask=right_mask).logits, right, right_mask)
    torch.testing.assert_close(r, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_batch_without_targets_gives_zero_loss_with_a_graph(fused):
    lm = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs(fused_lm_loss=fused))).train()
    clf = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(num_labels=2, fused_lm_loss=fused))).train()
    if True:
        loss = lm(torch.randint(0, 100, (2, 1)), labels=torch.randint(0, 100, (2, 1))).loss
        assert loss.item() == 0 and loss.requires_grad
        loss.backward()
        ids, mask = make_batch(batch=2, seq=4, lengths=(1, 1))  # rows of one token: the extract token alone
        out = clf(ids, attention_mask=mask, labels=torch.tensor([0, 1]))
        assert out.lm_loss.item() == 0 and torch.isfinite(out.loss)
        out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in clf.parameters() if p.grad is not None)


def test_integer_labels_of_any_dtype_and_float_labels_rejected():
    cfg = GPT1Config(**tiny_config_kwargs(num_labels=3))
    clf, mc, lm = GPT1ForSequenceClassification(cfg).eval(), GPT1ForMultipleChoice(cfg).eval(), GPT1LMHeadModel(cfg)
    ids, mask = make_batch(batch=4, lengths=(10, 7, 4, 8))
    labels = torch.tensor([0, 2, 1, 1])
    ref_clf = clf(ids, attention_mask=mask, labels=labels).loss
    ref_mc = mc(ids.view(2, 2, 10), attention_mask=mask.view(2, 2, 10), labels=labels[:2] % 2).loss
    for dtype in (torch.int32, torch.int16, torch.uint8):
        torch.testing.assert_close(clf(ids, attention_mask=mask, labels=labels.to(dtype)).loss, ref_clf)
        torch.testing.assert_close(
            mc(ids.view(2, 2, 10), attention_mask=mask.view(2, 2, 10), labels=(labels[:2] % 2).to(dtype)).loss, ref_mc)
    lm.eval()
    torch.testing.assert_close(lm(ids, labels=ids.int()).loss, lm(ids, labels=ids).loss)
    with pytest.raises(ValueError, match="torch.float32"):
        mc(ids.view(2, 2, 10), attention_mask=mask.view(2, 2, 10), labels=torch.tensor([0.0, 1.0]))
    single = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(
        num_labels=3, problem_type="single_label_classification"))).eval()
    with pytest.raises(ValueError, match="torch.float32"):
        single(ids, attention_mask=mask, labels=torch.tensor([0.0, 2.0, 1.0, 1.0]))


def test_lm_labels_out_of_vocabulary_raise():
    lm = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs()))
    ids = torch.randint(0, 100, (2, 6))
    for bad in (500, -5, 104):
        labels = ids.clone()
        labels[1, 3] = bad
        with pytest.raises(ValueError, match=rf"Label {bad} is out of range.*-100.*\[0, 104\)"):
            lm(ids, labels=labels)
    labels = ids.clone()
    labels[1, 3:] = -100
    lm(ids, labels=labels)  # -100 stays allowed


def test_attention_mask_shape_is_checked():
    cfg = GPT1Config(**tiny_config_kwargs(num_labels=2))
    model, lm = GPT1Model(cfg), GPT1LMHeadModel(cfg)
    clf, mc = GPT1ForSequenceClassification(cfg), GPT1ForMultipleChoice(cfg)
    ids = torch.randint(0, 100, (2, 6))
    for shape in [(2, 5), (2, 8), (1, 6), (6,)]:
        with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, past \+ seq\) = \(2, 6\)"):
            model(ids, attention_mask=torch.ones(shape, dtype=torch.long))
        with pytest.raises(ValueError, match="attention_mask must have"):
            lm(ids, attention_mask=torch.ones(shape, dtype=torch.long))
    cache = lm(ids, use_cache=True).cache
    with pytest.raises(ValueError, match=r"= \(2, 7\), got \(2, 1\)"):
        lm(ids[:, :1], attention_mask=torch.ones(2, 1, dtype=torch.long), cache=cache)
    choices, mask = make_batch(batch=3, lengths=(10, 7, 4))
    with pytest.raises(ValueError, match=r"the shape of input_ids, \(1, 3, 10\), got \(1, 10\)"):
        mc(choices[None], attention_mask=mask[:1])
    pairs = torch.stack([choices[:2], choices[1:]], dim=1)  # (2, 2, 10)
    with pytest.raises(ValueError, match=r"the shape of input_ids, \(2, 2, 10\), got \(2, 10\)"):
        clf(pairs, attention_mask=mask[:2])


def test_rows_without_real_tokens_raise():
    cfg = GPT1Config(**tiny_config_kwargs(num_labels=2))
    clf, mc = GPT1ForSequenceClassification(cfg), GPT1ForMultipleChoice(cfg)
    ids, mask = make_batch(batch=4, lengths=(10, 7, 4, 8))
    mask[2] = 0
    with pytest.raises(ValueError, match=r"Sequences \[2\].*no real token"):
        clf(ids, attention_mask=mask)
    with pytest.raises(ValueError, match=r"Sequences \[2\].*no real token"):
        mc(ids.view(2, 2, 10), attention_mask=mask.view(2, 2, 10))
    ids[3] = PAD  # all padding, mask inferred from the pad token
    with pytest.raises(ValueError, match=r"Sequences \[3\].*no real token"):
        clf(ids)


def test_label_checks_for_regression_and_multi_label():
    ids, mask = make_batch()
    reg = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(num_labels=1, aux_lm_weight=0))).eval()
    y = torch.tensor([0.5, 4.0, 2.5])
    out = reg(ids, attention_mask=mask, labels=y[:, None])
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.view(-1), y))
    for shape in [(3, 2), (1, 3), (3, 1, 1)]:
        with pytest.raises(ValueError, match=r"Regression labels must have shape \(3,\) or \(3, 1\)"):
            reg(ids, attention_mask=mask, labels=torch.zeros(shape))
    multi = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(
        num_labels=2, problem_type="regression", aux_lm_weight=0))).eval()
    y2 = torch.tensor([[0.5, 1.0], [4.0, -1.0], [2.5, 0.0]])
    out = multi(ids, attention_mask=mask, labels=y2)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits, y2))
    with pytest.raises(ValueError, match=r"Regression labels must have shape \(3, 2\)"):
        multi(ids, attention_mask=mask, labels=y2[:, 0])
    ml = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(num_labels=2, aux_lm_weight=0))).eval()
    with pytest.raises(ValueError, match=r"Multi-label targets must lie in \[0, 1\]"):
        ml(ids, attention_mask=mask, labels=torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"Multi-label targets must lie in \[0, 1\]"):
        ml(ids, attention_mask=mask, labels=torch.tensor([[0.0, -0.5], [1.0, 0.0], [0.0, 0.0]]))
    ml(ids, attention_mask=mask, labels=torch.tensor([[0.0, 0.3], [1.0, 0.0], [0.0, 0.0]]))  # soft targets are fine


def test_position_ids_out_of_range_raise():
    model = GPT1Model(GPT1Config(**tiny_config_kwargs()))
    ids = torch.randint(0, 100, (1, 4))
    with pytest.raises(ValueError, match=r"Position id 32 is outside \[0, n_positions=32\)"):
        model(ids, position_ids=torch.tensor([[29, 30, 31, 32]]))
    with pytest.raises(ValueError, match="Position id -1"):
        model(ids, position_ids=torch.tensor([[-1, 0, 1, 2]]))
    model(ids, position_ids=torch.tensor([[28, 29, 30, 31]]))


def test_return_dict_false_returns_tuples():
    cfg = GPT1Config(**tiny_config_kwargs(num_labels=2))
    ids, mask = make_batch(batch=4, lengths=(10, 7, 4, 8))
    for model, inputs, first in [
        (GPT1Model(cfg), dict(input_ids=ids, attention_mask=mask), "last_hidden_state"),
        (GPT1LMHeadModel(cfg), dict(input_ids=ids, attention_mask=mask, labels=ids), "loss"),
        (GPT1ForSequenceClassification(cfg),
         dict(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1, 1, 0])), "loss"),
        (GPT1ForMultipleChoice(cfg), dict(input_ids=ids.view(2, 2, 10), attention_mask=mask.view(2, 2, 10),
                                          labels=torch.tensor([0, 1])), "loss"),
    ]:
        model.eval()
        as_dict = model(**inputs)
        as_tuple = model(**inputs, return_dict=False)
        assert isinstance(as_tuple, tuple), type(model).__name__
        torch.testing.assert_close(as_tuple[0], getattr(as_dict, first))
        model.config.return_dict = False  # the config switch, as in transformers; the heads still read their backbone
        try:
            assert isinstance(model(**inputs), tuple), type(model).__name__
        finally:
            model.config.return_dict = True
