"""Zero-shot heuristics (paper §5) on the task fixtures with a tiny random LM and a word-level tokenizer."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from gpt1_hf import GPT1Config, GPT1LMHeadModel
from gpt1_hf.zero_shot import (
    best_threshold,
    continuation_logprobs,
    evaluate_zero_shot,
    multiple_choice_scores,
    next_token_logprobs,
    sst2_scores,
    wnli_predictions,
    wnli_substitution,
)

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tests" / "fixtures" / "tasks"


def _texts():
    for task in ("sst2", "cola", "race", "story_cloze", "wnli"):
        for path in sorted((TASKS / task).rglob("*")):
            if path.is_file():
                yield path.read_text(encoding="utf-8-sig")
    yield "very positive negative not good the cat sat on mat"


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(list(_texts()), trainers.WordLevelTrainer(special_tokens=["<unk>"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = GPT1Config(vocab_size=len(tokenizer) + 4, n_positions=256, n_embd=16, n_layer=2, n_head=2, n_inner=32)
    return GPT1LMHeadModel(config).eval()


def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def hand_logprob(model, tokenizer, context, continuation):
    """Sum of log P(continuation token | everything before it), from one unbatched, unpadded forward pass."""
    c, x = ids(tokenizer, context), ids(tokenizer, continuation)
    seq = c + x
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([seq])).logits[0].double(), -1)
    start = max(len(c), 1)
    return sum(float(logp[t - 1, seq[t]]) for t in range(start, len(seq))), len(seq) - start


CONTEXTS = ["the cat sat on the mat .", "", "a long , long story about a boat that was lost near the lake today", "it"]
CONTS = ["very good", "the cat sat on the mat", "and then the end .", "was there"]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_continuation_logprobs_equals_hand_computation(model, tokenizer, batch_size):
    sums, counts = continuation_logprobs(model, tokenizer, CONTEXTS, CONTS, batch_size=batch_size)
    for i, (c, x) in enumerate(zip(CONTEXTS, CONTS, strict=True)):
        want, n = hand_logprob(model, tokenizer, c, x)
        assert counts[i] == n
        assert sums[i] == pytest.approx(want, abs=1e-4)


def test_bf16_autocast_is_close(model, tokenizer):
    exact, _ = continuation_logprobs(model, tokenizer, CONTEXTS, CONTS)
    bf16, _ = continuation_logprobs(model, tokenizer, CONTEXTS, CONTS, bf16=True)
    np.testing.assert_allclose(bf16, exact, atol=0.3)


def test_truncation_keeps_the_end_of_the_context(model, tokenizer):
    context, cont = CONTEXTS[2], "and then the end ."
    sums, counts = continuation_logprobs(model, tokenizer, [context], [cont], max_length=8)
    c, x = ids(tokenizer, context), ids(tokenizer, cont)
    seq = c[-(8 - len(x)):] + x
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([seq])).logits[0].double(), -1)
    want = sum(float(logp[t - 1, seq[t]]) for t in range(8 - len(x), 8))
    assert counts[0] == len(x) and sums[0] == pytest.approx(want, abs=1e-4)


def test_sst2_compares_exactly_the_two_words(model, tokenizer):
    sentences = ["it 's a charming and often affecting journey .", "hide new secretions from the parental units", "ok"]
    scores = sst2_scores(model, tokenizer, sentences, batch_size=2)
    neg, pos = ids(tokenizer, "negative"), ids(tokenizer, "positive")
    assert len(neg) == len(pos) == 1
    for i, s in enumerate(sentences):
        with torch.no_grad():
            logits = model(torch.tensor([ids(tokenizer, s + " very")])).logits[0, -1]
        p = torch.softmax(logits.double(), -1)
        assert scores[i, 0] == pytest.approx(float(p[neg[0]].log()), abs=1e-5)
        assert scores[i, 1] == pytest.approx(float(p[pos[0]].log()), abs=1e-5)
        assert scores[i].argmax() == int(p[pos[0]] > p[neg[0]])
    # The next-token path and the continuation path agree for one-token words.
    direct = next_token_logprobs(model, tokenizer, [s + " very" for s in sentences], [neg[0], pos[0]])
    np.testing.assert_allclose(direct, scores)
    # Multi-token label words: the probability of the whole word (sum over its tokens).
    multi = sst2_scores(model, tokenizer, sentences, label_words=("not good", "good"))
    for i, s in enumerate(sentences):
        assert multi[i, 0] == pytest.approx(hand_logprob(model, tokenizer, s + " very", "not good")[0], abs=1e-4)


def test_multiple_choice_picks_the_highest_average_logprob(model, tokenizer):
    contexts = ["the cat sat on the mat .", "a long story about a boat"]
    choices = [["it was good", "the end", "no"], ["lost near the lake", "good", "the cat sat"]]
    scores = multiple_choice_scores(model, tokenizer, contexts, choices, batch_size=4)
    for i, ctx in enumerate(contexts):
        for k, ch in enumerate(choices[i]):
            s, n = hand_logprob(model, tokenizer, ctx, ch)
            assert scores[i, k] == pytest.approx(s / n, abs=1e-5)


@pytest.mark.parametrize("task", ["story_cloze", "race", "sst2"])
def test_evaluate_prediction_is_argmax_and_metrics(model, tokenizer, task):
    out = evaluate_zero_shot(task, model, tokenizer, data_dir=TASKS, split="validation", max_examples=12,
                             batch_size=8)
    scores, preds = np.array(out["scores"]), np.array(out["predictions"])
    assert out["num_examples"] == len(preds) == 12
    np.testing.assert_array_equal(preds, scores.argmax(1))
    from gpt1_hf.data import load_task_split

    labels = np.array(load_task_split(task, "validation", data_dir=TASKS, max_examples=12)["label"])
    assert out["metrics"]["accuracy"] == pytest.approx(float((preds == labels).mean()))
    if task == "race":
        assert {"accuracy_middle", "accuracy_high"} <= set(out["metrics"])


def test_cola_threshold_chosen_on_train_and_reported(model, tokenizer):
    out = evaluate_zero_shot("cola", model, tokenizer, data_dir=TASKS, split="validation")
    assert out["threshold_source"].startswith("train")
    scores, preds = np.array(out["scores"]), np.array(out["predictions"])
    np.testing.assert_array_equal(preds, (scores > out["threshold"]).astype(int))
    assert "matthews_correlation" in out["metrics"]
    given = evaluate_zero_shot("cola", model, tokenizer, data_dir=TASKS, split="validation", threshold=-1e9)
    assert given["threshold_source"] == "given" and all(p == 1 for p in given["predictions"])


def test_best_threshold():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert best_threshold(scores, labels) == pytest.approx(0.35)
    assert best_threshold(scores, labels, metric="accuracy") == pytest.approx(0.35)
    assert best_threshold([0.5, np.nan], [1, 0]) < 0.5  # nan scores count as -inf


def test_wnli_substitution_and_predictions(model, tokenizer):
    sub = wnli_substitution("When Tommy dropped his ice cream, Timmy giggled, so father gave him a stern look.",
                            "Father gave Timmy a stern look.")
    assert sub["candidate_context"].endswith("so father gave Timmy") and sub["pronoun"] == "him"
    assert sub["rest"] == "a stern look." and sub["pronoun_context"].endswith("so father gave him")
    sub = wnli_substitution("The man couldn't lift his son because he was so heavy.", "The son was so heavy.")
    assert sub["candidate"] == "The son" and sub["rest"] == "was so heavy."
    assert wnli_substitution("There is a pillar between me and the stage.", "I can't see the stage.") is None
    scores = {"candidate": np.array([-3.0, -2.0, -5.0, -1.0]), "margin": np.array([0.5, 0.1, -0.2, 0.3]),
              "key": [("p", 3), ("p", 3), ("q", 1), ("r", 2)]}
    np.testing.assert_array_equal(wnli_predictions(scores, threshold=0.2), [0, 1, 0, 1])
    out = evaluate_zero_shot("wnli", model, tokenizer, data_dir=TASKS, split="validation")
    assert out["num_aligned"] >= 8 and "threshold" in out and 0 <= out["metrics"]["accuracy"] <= 1


def _zero_shot_script():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import zero_shot as script
    finally:
        sys.path.pop(0)
    return script


def test_script_writes_json(model, tokenizer, tmp_path):
    model.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    script = _zero_shot_script()
    rc = script.main(["--model_name_or_path", str(tmp_path / "lm"), "--tasks", "sst2,story_cloze", "--data_dir",
                      str(TASKS), "--max_eval_samples", "6", "--output", str(tmp_path / "out.json")])
    assert rc == 0
    result = json.loads((tmp_path / "out.json").read_text())
    assert set(result["tasks"]) == {"sst2", "story_cloze"}
    assert result["tasks"]["sst2"]["num_examples"] == 6 and "accuracy" in result["tasks"]["sst2"]["metrics"]
    with pytest.raises(ValueError, match=r"unknown zero-shot task\(s\) \['mnli'\]"):
        script.main(["--model_name_or_path", str(tmp_path / "lm"), "--tasks", "sst2,mnli"])


def test_script_refuses_a_tokenizer_of_another_size(model, tokenizer, tmp_path):
    """A vocabulary that does not belong to the checkpoint (its ids would index the wrong embedding rows) is a clear
    error, not silent garbage scores."""
    torch.manual_seed(0)
    other = GPT1LMHeadModel(GPT1Config(vocab_size=len(tokenizer) + 10, n_positions=64, n_embd=16, n_layer=1,
                                       n_head=2, n_inner=32))
    other.save_pretrained(tmp_path / "lm")
    tokenizer.save_pretrained(tmp_path / "lm")
    script = _zero_shot_script()
    with pytest.raises(ValueError, match=rf"has {len(tokenizer):,} entries but the model's token embedding has "
                                         rf"{len(tokenizer) + 10:,} rows"):
        script.main(["--model_name_or_path", str(tmp_path / "lm"), "--tasks", "sst2", "--data_dir", str(TASKS),
                     "--max_eval_samples", "2"])
    # the matching pair loads (BPE-only tokenizer: model rows = entries + the 4 special rows)
    model.save_pretrained(tmp_path / "ok")
    tokenizer.save_pretrained(tmp_path / "ok")
    assert len(script.load_tokenizer(tmp_path / "ok", vocab_size=model.config.vocab_size)) == len(tokenizer)


def test_sst2_with_the_real_gpt1_tokenizer():
    tokenization = pytest.importorskip("gpt1_hf.tokenization_gpt1")
    if not hasattr(tokenization, "GPT1Tokenizer"):
        pytest.skip("GPT1Tokenizer not available yet")
    bpe = REPO / "tests" / "fixtures" / "gpt1_bpe"
    tok = tokenization.GPT1Tokenizer(vocab_file=str(bpe / "encoder_bpe_40000.json"),
                                     merges_file=str(bpe / "vocab_40000.bpe"))
    assert ids(tok, "positive") == [6353] and ids(tok, "negative") == [9503] and ids(tok, "very") == [963]
    torch.manual_seed(0)
    lm = GPT1LMHeadModel(GPT1Config(n_positions=32, n_embd=8, n_layer=1, n_head=2, n_inner=16)).eval()
    sentence = "it 's a charming and often affecting journey ."
    scores = sst2_scores(lm, tok, [sentence, "a dull , lifeless movie"])
    with torch.no_grad():
        logp = torch.log_softmax(lm(torch.tensor([ids(tok, sentence) + [963]])).logits[0, -1].double(), -1)
    assert scores[0].tolist() == pytest.approx([float(logp[9503]), float(logp[6353])], abs=1e-6)


def test_library_refuses_a_tokenizer_of_another_size(tokenizer):
    """`evaluate_zero_shot` itself (not only the script) refuses a vocabulary that does not belong to the model."""
    torch.manual_seed(0)
    other = GPT1LMHeadModel(GPT1Config(vocab_size=len(tokenizer) + 10, n_positions=64, n_embd=16, n_layer=1,
                                       n_head=2, n_inner=32))
    with pytest.raises(ValueError, match="does not belong to this checkpoint"):
        evaluate_zero_shot("sst2", other, tokenizer, data_dir=TASKS, max_examples=2)
