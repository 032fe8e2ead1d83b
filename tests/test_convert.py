"""Numerical parity with transformers' openai-gpt classes, through gpt1_hf.convert (both directions), and the
folder-level conversion / loading of openai-gpt and gpt1 checkpoints (load_as_gpt1, convert_checkpoint, the CLI)."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel, OpenAIGPTModel

from gpt1_hf import GPT1ForSequenceClassification, GPT1LMHeadModel, GPT1Model
from gpt1_hf.convert import (
    convert_checkpoint,
    detect_checkpoint_format,
    gpt1_to_openai_gpt,
    load_as_gpt1,
    openai_gpt_to_gpt1,
)


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
        a = back(ids, attention_mask=mask, output_hidden_states=True)
        b = ours(ids, attention_mask=mask, output_hidden_states=True)
    keep = mask.bool()
    assert len(a.hidden_states) == len(b.hidden_states) == ours.config.n_layer + 1
    for ha, hb in zip(a.hidden_states, b.hidden_states, strict=True):
        torch.testing.assert_close(ha[keep], hb[keep], rtol=0, atol=1e-5)
    torch.testing.assert_close(a.logits[keep], b.logits[keep], rtol=0, atol=1e-5)
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


# ----------------------------------------------------------------------------------------------------------------------
# Folders: transformers openai-gpt checkpoints <-> gpt1 (load_as_gpt1, convert_checkpoint, the CLI)
# ----------------------------------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
BPE = REPO / "tests" / "fixtures" / "gpt1_bpe"


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


def test_from_pretrained_on_openai_gpt_folder_points_to_the_converter(tmp_path):
    src = openai_tiny()
    src.save_pretrained(tmp_path / "openai")
    with pytest.raises(ValueError, match="openai-gpt") as info:
        GPT1LMHeadModel.from_pretrained(tmp_path / "openai")
    message = str(info.value)
    assert "scripts/convert_checkpoint.py --from openai-gpt --input" in message
    assert "gpt1_hf.convert.load_as_gpt1" in message
    # The command of the message works as written (with <dir> filled in).
    command = re.search(r"`(python scripts/convert_checkpoint\.py [^`]*)`", message).group(1)
    command = command.replace("<dir>", str(tmp_path / "gpt1"))
    run = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    converted = GPT1LMHeadModel.from_pretrained(tmp_path / "gpt1")
    ids = torch.randint(0, 100, (2, 9))
    torch.testing.assert_close(_logits(converted, ids)[..., :100], _logits(src, ids), rtol=0, atol=1e-5)
    # ... and so does the library function.
    loaded = load_as_gpt1(tmp_path / "openai")
    assert isinstance(loaded, GPT1LMHeadModel)
    torch.testing.assert_close(_logits(loaded, ids)[..., :100], _logits(src, ids), rtol=0, atol=1e-5)


def test_load_as_gpt1_every_format_and_head(tmp_path):
    src = openai_tiny()
    src.save_pretrained(tmp_path / "openai")
    assert detect_checkpoint_format(tmp_path / "openai") == "openai-gpt"
    clf = load_as_gpt1(tmp_path / "openai", GPT1ForSequenceClassification, num_labels=3, add_special_tokens=True)
    assert clf.config.vocab_size == 104 and clf.score.out_features == 3
    lm = load_as_gpt1(tmp_path / "openai", add_special_tokens=True, seed=4)
    lm.save_pretrained(tmp_path / "gpt1")
    assert detect_checkpoint_format(tmp_path / "gpt1") == "gpt1"
    again = load_as_gpt1(tmp_path / "gpt1")
    for k, v in lm.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    clf2 = load_as_gpt1(tmp_path / "gpt1", GPT1ForSequenceClassification, num_labels=2)
    assert torch.equal(clf2.transformer.tokens_embed.weight, lm.transformer.tokens_embed.weight)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OSError, match="no params_shapes.json"):
        load_as_gpt1(tmp_path / "empty")


def test_hub_repo_ids_go_through_the_hub_path_offline():
    # No network in tests: an unknown repo id fails with the converter's message, after trying the Hub code path.
    with pytest.raises(OSError, match="openai-community/openai-gpt-not-here"):
        load_as_gpt1("openai-community/openai-gpt-not-here", local_files_only=True)


def test_openai_gpt_round_trip_keeps_special_rows(tmp_path):
    gpt1 = openai_gpt_to_gpt1(openai_tiny(), add_special_tokens=True, seed=2)
    gpt1.save_pretrained(tmp_path / "gpt1")
    convert_checkpoint(tmp_path / "gpt1", tmp_path / "openai", to_format="openai-gpt")
    config = json.loads((tmp_path / "openai" / "config.json").read_text())
    assert config["vocab_size"] == 104 and config["n_special"] == 4
    back = load_as_gpt1(tmp_path / "openai")  # n_special = 4: no second set of special rows
    for k, v in gpt1.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    convert_checkpoint(tmp_path / "gpt1", tmp_path / "openai_bpe", to_format="openai-gpt", drop_special_tokens=True)
    assert json.loads((tmp_path / "openai_bpe" / "config.json").read_text())["vocab_size"] == 100


def _released_like_openai_gpt(folder):
    """A tiny-width openai-gpt checkpoint with GPT-1's real 40,478-entry vocabulary and its tokenizer."""
    from transformers import OpenAIGPTTokenizer

    cfg = OpenAIGPTConfig(vocab_size=40478, n_positions=16, n_embd=8, n_layer=1, n_head=2)
    src = OpenAIGPTLMHeadModel(cfg).eval()
    src.save_pretrained(folder)
    OpenAIGPTTokenizer(vocab=str(BPE / "encoder_bpe_40000.json"), merges=str(BPE / "vocab_40000.bpe")).save_pretrained(
        folder)
    return src


def _script_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("convert_checkpoint_script", REPO / "scripts" / "convert_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_openai_gpt_folder_with_tokenizer_to_gpt1_folder(tmp_path):
    tokenization = pytest.importorskip("gpt1_hf.tokenization_gpt1")
    if not hasattr(tokenization, "GPT1Tokenizer"):
        pytest.skip("GPT1Tokenizer not available yet")
    src = _released_like_openai_gpt(tmp_path / "openai")
    assert _script_main()(["--from", "openai-gpt", "--input", str(tmp_path / "openai"),
                           "--output", str(tmp_path / "gpt1"), "--seed", "1"]) == 0
    model = GPT1LMHeadModel.from_pretrained(tmp_path / "gpt1")
    tok = tokenization.GPT1Tokenizer.from_pretrained(tmp_path / "gpt1")
    assert model.config.vocab_size == len(tok) == 40482
    assert tok.convert_tokens_to_ids("_classify_") == model.config.clf_token_id == 40480
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(tmp_path / "openai")
    text = "the cat sat on the mat"
    assert tok(text, add_special_tokens=False)["input_ids"] == reference(text)["input_ids"]
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    torch.testing.assert_close(_logits(model, ids)[..., :40478], _logits(src, ids), rtol=0, atol=1e-5)


def test_bpe_files_must_match_the_embedding(tmp_path):
    openai_tiny().save_pretrained(tmp_path / "openai")  # 100 rows
    with pytest.raises(ValueError, match=r"encoder_bpe_40000.json has 40,478 entries but the model's token "
                                         r"embedding has 96 BPE rows"):
        _script_main()(["--from", "openai-gpt", "--input", str(tmp_path / "openai"), "--output",
                        str(tmp_path / "out"), "--tokenizer", str(BPE / "encoder_bpe_40000.json"),
                        str(BPE / "vocab_40000.bpe")])
    with pytest.raises(ValueError, match="looks like a 'openai-gpt' checkpoint, not 'original'"):
        convert_checkpoint(tmp_path / "openai", tmp_path / "out", from_format="original")
