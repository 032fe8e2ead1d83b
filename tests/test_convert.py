"""Numerical parity with transformers' openai-gpt classes, through gpt1_hf.convert (both directions)."""

import pytest
import torch
from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel, OpenAIGPTModel

from gpt1_hf import GPT1ForSequenceClassification, GPT1LMHeadModel, GPT1Model
from gpt1_hf.convert import gpt1_to_openai_gpt, openai_gpt_to_gpt1


def openai_tiny(cls=OpenAIGPTLMHeadModel, vocab_size=100):
    cfg = OpenAIGPTConfig(vocab_size=vocab_size, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    return cls(cfg).eval()


def batch_with_padding():
    ids = torch.randint(0, 100, (3, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[2, 5:] = 0
    return ids, mask


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("padded", [False, True])
def test_openai_gpt_to_gpt1_parity(impl, padded):
    src = openai_tiny()
    ours = openai_gpt_to_gpt1(src, add_special_tokens=True)
    assert isinstance(ours, GPT1LMHeadModel) and ours.config.vocab_size == 104
    ours.set_attn_implementation(impl)
    ids, mask = batch_with_padding()
    if not padded:
        mask = torch.ones_like(ids)
    with torch.no_grad():
        ref = src(ids, attention_mask=mask, output_hidden_states=True)
        out = ours(ids, attention_mask=mask, output_hidden_states=True)
    keep = mask.bool()
    for a, b in zip(ref.hidden_states, out.hidden_states, strict=True):
        torch.testing.assert_close(b[keep], a[keep], rtol=0, atol=1e-5)
    torch.testing.assert_close(out.logits[..., :100][keep], ref.logits[keep], rtol=0, atol=1e-5)


def test_gpt1_to_openai_gpt_parity_and_round_trip():
    ours = GPT1LMHeadModel(openai_gpt_to_gpt1(openai_tiny()).config).eval()
    back = gpt1_to_openai_gpt(ours)
    assert isinstance(back, OpenAIGPTLMHeadModel)
    ids, mask = batch_with_padding()
    with torch.no_grad():
        a = back(ids, attention_mask=mask).logits
        b = ours(ids, attention_mask=mask).logits
    keep = mask.bool()
    torch.testing.assert_close(a[keep], b[keep], rtol=0, atol=1e-5)
    again = openai_gpt_to_gpt1(back, add_special_tokens=False)
    for k, v in ours.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_base_model_parity_and_special_rows():
    src = openai_tiny(OpenAIGPTModel, vocab_size=40478 // 100)  # vocabulary size decides nothing here
    ours = openai_gpt_to_gpt1(src, add_special_tokens=True, seed=3)
    assert isinstance(ours, GPT1Model)
    new_rows = ours.tokens_embed.weight[-4:]
    assert new_rows.abs().max() < 0.2 and new_rows.std() > 0.005  # N(0, 0.02), not zeros
    ids = torch.randint(0, 404, (2, 9))
    torch.testing.assert_close(ours(ids).last_hidden_state, src(ids).last_hidden_state, rtol=0, atol=1e-5)
    back = gpt1_to_openai_gpt(ours, drop_special_tokens=True)
    for k, v in src.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k


def test_released_vocabulary_gets_special_tokens_by_default():
    cfg = OpenAIGPTConfig(vocab_size=40478, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    ours = openai_gpt_to_gpt1(OpenAIGPTLMHeadModel(cfg))
    assert ours.config.vocab_size == 40482
    assert (ours.config.start_token_id, ours.config.clf_token_id, ours.config.pad_token_id) == (40478, 40480, 40481)


def test_convert_into_task_head_keeps_backbone():
    src = openai_tiny()
    clf = openai_gpt_to_gpt1(src, target_class=GPT1ForSequenceClassification, num_labels=3)
    assert clf.score.out_features == 3
    assert torch.equal(clf.transformer.h[1].mlp.c_fc.weight, src.transformer.h[1].mlp.c_fc.weight.t())
    assert clf.lm_head.weight is clf.transformer.tokens_embed.weight
