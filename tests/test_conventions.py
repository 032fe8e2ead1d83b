"""What transformers expects of an in-tree model, checked on the gpt1 classes (issue #15): the cache argument, the
Trainer's `shift_labels` and evaluation, packed batches, export / full-graph compile, static caches, inputs_embeds,
the tokenizer's length and prompt template, PEFT defaults, vocabulary shrinking and the n_inner default."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt1_hf import (
    GPT1Config,
    GPT1ForMultipleChoice,
    GPT1ForSequenceClassification,
    GPT1LMHeadModel,
    GPT1Model,
    GPT1Tokenizer,
)
from tests.conftest import tiny_config_kwargs

START, DELIM, CLF, PAD = 100, 101, 102, 103
NO_DROPOUT = dict(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0)
FIXTURES = Path(__file__).parent / "fixtures" / "gpt1_bpe"


def gpt1_tokenizer():
    return GPT1Tokenizer(vocab_file=str(FIXTURES / "encoder_bpe_40000.json"),
                         merges_file=str(FIXTURES / "vocab_40000.bpe"))


def task_rows(lengths, seq=None, seed=0):
    """Rows of random BPE ids, `_start_ ... _classify_`, right-padded to `seq`, and their mask."""
    g = torch.Generator().manual_seed(seed)
    seq = seq or max(lengths)
    ids = torch.full((len(lengths), seq), PAD)
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(0, 100, (n,), generator=g)
        ids[i, 0], ids[i, n - 1] = START, CLF
        mask[i, :n] = 1
    return ids, mask


# ----------------------------------------------------------------------------------------------------------------------
# 1. The cache argument: `cache`, with `past_key_values` deprecated through transformers' own decorator
# ----------------------------------------------------------------------------------------------------------------------


def test_cache_argument_named_as_in_tree_models():
    import inspect

    for cls in (GPT1Model, GPT1LMHeadModel):
        params = inspect.signature(cls.forward).parameters
        assert "cache" in params and "past_key_values" not in params
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs())).eval()
    ids = torch.randint(0, 100, (2, 9))
    full = model(ids, use_cache=False).logits
    cache = model(ids[:, :5], use_cache=True).cache
    with pytest.warns(FutureWarning, match="`past_key_values` is deprecated"):
        old = model(ids[:, 5:], past_key_values=cache).logits
    torch.testing.assert_close(old, full[:, 5:], rtol=1e-5, atol=1e-5)
    # both names: transformers' rule, said out loud: `cache` is used and the warning names the dropped one
    cache = model(ids[:, :5], use_cache=True).cache
    with pytest.warns(FutureWarning, match="Both `past_key_values` and `cache`"):
        both = model(ids[:, 5:], cache=cache, past_key_values=object()).logits
    torch.testing.assert_close(both, full[:, 5:], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# 2. shift_labels (Trainer under context / sequence parallelism) in the LM loss and the auxiliary LM loss
# ----------------------------------------------------------------------------------------------------------------------


def shifted(labels):
    return torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)


@pytest.mark.parametrize("fused", [True, False])
def test_lm_loss_honours_shift_labels(fused):
    config = GPT1Config(**tiny_config_kwargs(fused_lm_loss=fused, initializer_range=0.5, **NO_DROPOUT))
    model = GPT1LMHeadModel(config).train()
    ids, mask = task_rows((9, 6))
    labels = ids.masked_fill(mask == 0, -100)
    ref = model(ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(model(ids, attention_mask=mask, shift_labels=shifted(labels)).loss, ref)
    other = torch.randint(0, 100, ids.shape).masked_fill(mask == 0, -100)
    loss = model(ids, attention_mask=mask, labels=labels, shift_labels=other).loss  # shift_labels win: unshifted
    logits = model.eval()(ids, attention_mask=mask).logits
    expected = torch.nn.functional.cross_entropy(logits[mask.bool()], other[mask.bool()])
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    # Trainer with gradient accumulation: the sum over the targets divided by its count over all micro-batches
    model.train()
    n = int((shifted(labels) != -100).sum())
    summed = model(ids, attention_mask=mask, labels=labels, num_items_in_batch=4 * n).loss
    torch.testing.assert_close(summed, ref / 4, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused", [True, False])
def test_lm_loss_equals_transformers_causal_lm_loss(fused):
    """L1 is transformers' ForCausalLMLoss (`model.loss_function`) on unpadded rows, with and without shift_labels."""
    config = GPT1Config(**tiny_config_kwargs(fused_lm_loss=fused, initializer_range=0.5, **NO_DROPOUT))
    model = GPT1LMHeadModel(config).eval()
    ids = torch.randint(0, 100, (3, 10))
    labels = ids.clone()
    labels[0, 4] = -100
    out = model(ids, labels=labels)
    expected = model.loss_function(out.logits, labels, vocab_size=config.vocab_size)
    torch.testing.assert_close(out.loss, expected, rtol=1e-5, atol=1e-6)
    expected = model.loss_function(out.logits, None, vocab_size=config.vocab_size, shift_labels=shifted(labels))
    torch.testing.assert_close(model(ids, shift_labels=shifted(labels)).loss, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", [GPT1ForSequenceClassification, GPT1ForMultipleChoice])
def test_aux_lm_loss_honours_shift_labels(cls):
    model = cls(GPT1Config(**tiny_config_kwargs(**NO_DROPOUT, initializer_range=0.5))).eval()
    ids, mask = task_rows((9, 6, 7, 9))
    if cls is GPT1ForMultipleChoice:
        ids, mask = ids.view(2, 2, -1), mask.view(2, 2, -1)
    labels = torch.tensor([1, 0]) if cls is GPT1ForMultipleChoice else torch.tensor([1, 0, 1, 0])
    ref = model(ids, attention_mask=mask, labels=labels)
    # pre-shifted targets, -100 at padding (as the Trainer derives them from labels)
    flat_targets = ids.masked_fill(mask == 0, -100).reshape(-1, ids.shape[-1])
    same = model(ids, attention_mask=mask, labels=labels, shift_labels=shifted(flat_targets).view(ids.shape))
    torch.testing.assert_close(same.lm_loss, ref.lm_loss)
    other = torch.randint(0, 100, ids.shape)
    changed = model(ids, attention_mask=mask, labels=labels, shift_labels=other)
    assert not torch.allclose(changed.lm_loss, ref.lm_loss)
    torch.testing.assert_close(changed.clf_loss, ref.clf_loss)


# ----------------------------------------------------------------------------------------------------------------------
# 3. Packed batches (DataCollatorWithFlattening): one row, restarting position_ids == padded, per sequence
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["eager", "sdpa", "gpt1_sdpa"])
def test_packed_batch_equals_padded_batch(impl):
    from transformers import DataCollatorWithFlattening

    # the packed row (16 tokens) is longer than n_positions (8): only the position ids must fit
    config = GPT1Config(**tiny_config_kwargs(n_positions=8, **NO_DROPOUT))
    model = GPT1LMHeadModel(config)
    model.set_attn_implementation(impl)
    lengths = (5, 7, 4)
    ids, mask = task_rows(lengths)
    sequences = [ids[i, :n].tolist() for i, n in enumerate(lengths)]
    packed = DataCollatorWithFlattening(return_tensors="pt")([{"input_ids": s} for s in sequences])
    assert packed["input_ids"].shape == (1, 16) and "attention_mask" not in packed
    for mode in ("eval", "train"):
        getattr(model, mode)()
        out = model(**packed, output_hidden_states=True)
        ref = model(ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100), output_hidden_states=True)
        hidden, ref_hidden = out.hidden_states[-1][0], ref.hidden_states[-1]
        start = 0
        for i, n in enumerate(lengths):
            torch.testing.assert_close(hidden[start : start + n], ref_hidden[i, :n], rtol=1e-5, atol=1e-5)
            start += n
        torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="Position id 8 is outside"):
        model(packed["input_ids"], position_ids=packed["position_ids"] + 2)
    with pytest.raises(ValueError, match="exceeds the model's n_positions=8"):
        model(packed["input_ids"])  # no position ids: the row would need positions 0..15


# ----------------------------------------------------------------------------------------------------------------------
# 4. torch.export and torch.compile(fullgraph=True) for all four classes, matching eager; static-cache generation
# ----------------------------------------------------------------------------------------------------------------------


def _four_classes():
    config = GPT1Config(**tiny_config_kwargs(num_labels=3, **NO_DROPOUT))
    ids, mask = task_rows((6, 4))
    mc_ids, mc_mask = task_rows((6, 4, 5, 6))
    return [
        (GPT1Model(config), ids, {"attention_mask": mask, "use_cache": False}),
        (GPT1LMHeadModel(config), ids, {"attention_mask": mask, "use_cache": False, "labels": ids}),
        (GPT1ForSequenceClassification(config), ids, {"attention_mask": mask, "labels": torch.tensor([2, 0])}),
        (GPT1ForMultipleChoice(config), mc_ids.view(2, 2, -1),
         {"attention_mask": mc_mask.view(2, 2, -1), "labels": torch.tensor([1, 0])}),
    ]


def _first(out):
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits


def test_torch_export_all_four_classes_match_eager():
    assert GPT1LMHeadModel._can_compile_fullgraph
    for model, x, kwargs in _four_classes():
        model.eval()
        ref = model(x, **kwargs)
        exported = torch.export.export(model, (x,), kwargs=kwargs).module()
        out = exported(x, **kwargs)
        torch.testing.assert_close(_first(out), _first(ref), rtol=1e-5, atol=1e-5)
        if getattr(ref, "loss", None) is not None:
            torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-5)


def test_torch_compile_fullgraph_all_four_classes_match_eager():
    import torch._dynamo

    torch._dynamo.reset()
    for model, x, kwargs in _four_classes():
        model.eval()
        ref = model(x, **kwargs)
        # backend "eager": the full graph is captured (what fullgraph=True checks), without inductor's C++ build
        out = torch.compile(model, fullgraph=True, backend="eager")(x, **kwargs)
        torch.testing.assert_close(_first(out), _first(ref), rtol=1e-5, atol=1e-5)
        if getattr(ref, "loss", None) is not None:
            torch.testing.assert_close(out.loss, ref.loss, rtol=1e-5, atol=1e-5)


def test_torch_compile_fullgraph_training_with_dropout_on_the_reference_paths():
    """Dropout's fast CPU masks are drawn eagerly (a graph break): full-graph training uses the reference paths."""
    import torch._dynamo

    torch._dynamo.reset()
    config = GPT1Config(**tiny_config_kwargs(num_labels=2, fast_dropout=False))
    model = GPT1ForSequenceClassification(config).train()
    model.set_attn_implementation("sdpa")
    ids, mask = task_rows((6, 4))
    out = torch.compile(model, fullgraph=True, backend="eager")(ids, attention_mask=mask, labels=torch.tensor([0, 1]))
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.score.weight.grad is not None


def test_static_cache_generation_compiled_full_graph():
    from transformers import CompileConfig

    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs())).eval()
    prompt, mask = torch.randint(0, 100, (2, 5)), torch.ones(2, 5, dtype=torch.long)
    mask[0, :2] = 0
    kwargs = dict(attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=PAD)
    dynamic = model.generate(prompt, **kwargs)
    assert torch.equal(model.generate(prompt, cache_implementation="static", **kwargs), dynamic)
    compile_config = CompileConfig(fullgraph=True, backend="eager")
    compile_config._compile_all_devices = True  # transformers compiles the decoding step on CPU too
    compiled = model.generate(prompt, cache_implementation="static", compile_config=compile_config, **kwargs)
    assert torch.equal(compiled, dynamic)


# ----------------------------------------------------------------------------------------------------------------------
# 5. Static cache with output_attentions
# ----------------------------------------------------------------------------------------------------------------------


def test_static_cache_generate_with_output_attentions():
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs())).eval()
    prompt = torch.randint(0, 100, (2, 5))
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=PAD, output_attentions=True,
                  return_dict_in_generate=True)
    static = model.generate(prompt, cache_implementation="static", **kwargs)
    dynamic = model.generate(prompt, **kwargs)
    assert torch.equal(static.sequences, dynamic.sequences)
    for step_static, step_dynamic in zip(static.attentions, dynamic.attentions, strict=True):
        for a, b in zip(step_static, step_dynamic, strict=True):  # static: keys padded to the cache length
            torch.testing.assert_close(a[..., : b.shape[-1]], b, rtol=1e-5, atol=1e-6)
            assert torch.all(a[..., b.shape[-1] :] == 0)


# ----------------------------------------------------------------------------------------------------------------------
# 6. inputs_embeds on the task heads
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [GPT1ForSequenceClassification, GPT1ForMultipleChoice])
def test_task_heads_accept_inputs_embeds(cls):
    model = cls(GPT1Config(**tiny_config_kwargs(num_labels=3, **NO_DROPOUT))).eval()
    ids, mask = task_rows((6, 4, 5, 6))  # every row ends with its extract token
    if cls is GPT1ForMultipleChoice:
        ids, mask = ids.view(2, 2, -1), mask.view(2, 2, -1)
    embeds = model.get_input_embeddings()(ids)
    labels = torch.tensor([1, 0]) if cls is GPT1ForMultipleChoice else torch.tensor([1, 0, 2, 1])
    ref = model(ids, attention_mask=mask, labels=labels)
    out = model(inputs_embeds=embeds, attention_mask=mask, labels=labels)
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.clf_loss, ref.clf_loss, rtol=1e-5, atol=1e-5)
    assert out.lm_loss is None  # no token ids: no auxiliary LM targets (pass shift_labels for them)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(ids, inputs_embeds=embeds)


# ----------------------------------------------------------------------------------------------------------------------
# 7. Trainer evaluation hands only the logits to compute_metrics
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [GPT1ForMultipleChoice, GPT1ForSequenceClassification])
def test_trainer_evaluate_with_plain_compute_metrics(cls, tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    assert {"clf_loss", "lm_loss"} <= set(GPT1Config.keys_to_ignore_at_inference)
    model = cls(GPT1Config(**tiny_config_kwargs(num_labels=2)))
    ids, mask = task_rows((6, 4, 5, 6, 3, 6, 5, 4), seq=6)
    if cls is GPT1ForMultipleChoice:
        ids, mask = ids.view(4, 2, -1), mask.view(4, 2, -1)
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": mask.tolist(),
                              "labels": [i % 2 for i in range(ids.shape[0])]})

    def compute_metrics(prediction):
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    args = TrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=2, report_to=[], use_cpu=True)
    trainer = Trainer(model=model, args=args, eval_dataset=data, compute_metrics=compute_metrics)
    assert trainer.label_names == ["labels"]  # loss kwargs (shift_labels) stay out of the signature, as in-tree
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] <= 1.0 and np.isfinite(metrics["eval_loss"])


# ----------------------------------------------------------------------------------------------------------------------
# 8-9. The tokenizer: model_max_length = n_positions; a single text is a prompt that generation continues
# ----------------------------------------------------------------------------------------------------------------------


def test_tokenizer_model_max_length_is_n_positions_and_pipeline_truncates(tmp_path):
    from transformers import pipeline

    tokenizer = gpt1_tokenizer()
    assert tokenizer.model_max_length == GPT1Config().n_positions == 512
    tokenizer.save_pretrained(tmp_path)
    assert GPT1Tokenizer.from_pretrained(tmp_path).model_max_length == 512
    long_review = "This film was a long, slow and wonderful ride. " * 120  # > 1,000 tokens
    assert len(tokenizer(long_review, truncation=True)["input_ids"]) == 512
    config = GPT1Config(vocab_size=len(tokenizer), n_positions=512, n_embd=16, n_layer=1, n_head=2, num_labels=2)
    model = GPT1ForSequenceClassification(config).eval()
    tokenizer.add_extract_token = True  # what a single-text classifier's folder saves
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    assert classify(long_review, truncation=True)[0]["label"] in model.config.id2label.values()


def test_tokenize_then_generate_continues_the_text():
    tokenizer = gpt1_tokenizer()
    config = GPT1Config(vocab_size=len(tokenizer), n_positions=64, n_embd=16, n_layer=1, n_head=2)
    model = GPT1LMHeadModel(config).eval()
    batch = tokenizer("The cat sat on the", return_tensors="pt")
    assert batch["input_ids"][0, 0] == tokenizer.start_token_id
    assert tokenizer.classify_token_id not in batch["input_ids"][0].tolist()
    out = model.generate(**batch, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert torch.equal(out[:, : batch["input_ids"].shape[1]], batch["input_ids"])
    # the task transformations stay one call away
    assert tokenizer("The cat sat.", add_extract_token=True)["input_ids"][-1] == tokenizer.classify_token_id
    assert tokenizer("The cat sat.", "It did.")["input_ids"][-1] == tokenizer.classify_token_id


# ----------------------------------------------------------------------------------------------------------------------
# 10. PEFT defaults for model_type gpt1 (registered on `import gpt1_hf`)
# ----------------------------------------------------------------------------------------------------------------------


def test_plain_lora_config_works_for_both_heads():
    from peft import LoraConfig, get_peft_model

    clf = get_peft_model(GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(num_labels=2))),
                         LoraConfig(task_type="SEQ_CLS"))
    trainable = {name for name, p in clf.named_parameters() if p.requires_grad}
    assert any("c_attn.lora_A" in n for n in trainable) and any("c_fc.lora_B" in n for n in trainable)
    assert any("score" in n for n in trainable)  # SEQ_CLS: PEFT's modules_to_save default
    assert not any("tokens_embed" in n for n in trainable)  # the special-token rows: gpt1_hf.lora adds them
    ids, mask = task_rows((6, 4))
    clf(ids, attention_mask=mask, labels=torch.tensor([0, 1])).loss.backward()
    # multiple choice: PEFT has no task type for it; LoRA targets still default, `score` must be named to train
    mc = get_peft_model(GPT1ForMultipleChoice(GPT1Config(**tiny_config_kwargs())), LoraConfig(modules_to_save=["score"]))
    assert any("c_proj.lora_A" in n for n, p in mc.named_parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------------------------------
# The vocabulary, n_inner, attention implementations
# ----------------------------------------------------------------------------------------------------------------------


def test_shrinking_the_vocabulary_below_the_special_ids_warns_and_keeps_saving(tmp_path):
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.resize_token_embeddings(110)  # growing: silent
    with pytest.warns(UserWarning, match="drops the special token ids"):
        model.resize_token_embeddings(100)
    assert model.config.clf_token_id is None and model.config.pad_token_id is None
    model.save_pretrained(tmp_path)  # the config stays valid
    assert GPT1LMHeadModel.from_pretrained(tmp_path).config.vocab_size == 100


def test_n_inner_defaults_to_four_times_n_embd():
    assert GPT1Config.__dataclass_fields__["n_inner"].default is None
    assert GPT1Config(n_embd=256, n_head=4).n_inner == 1024
    assert GPT1Config().n_inner == 3072
    assert GPT1Config(n_embd=256, n_head=4, n_inner=512).n_inner == 512


def test_attention_implementations_from_transformers_registry(tmp_path):
    from transformers import AttentionInterface

    assert "gpt1_sdpa" in AttentionInterface().valid_keys()
    model = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(**NO_DROPOUT)))
    assert model.config._attn_implementation == "gpt1_sdpa"
    model.save_pretrained(tmp_path)
    ids, mask = task_rows((6, 4))
    ref = model.eval()(ids, attention_mask=mask).logits
    for impl in ("eager", "sdpa", "gpt1_sdpa"):
        loaded = GPT1ForSequenceClassification.from_pretrained(tmp_path, attn_implementation=impl).eval()
        assert loaded.config._attn_implementation == impl
        torch.testing.assert_close(loaded(ids, attention_mask=mask).logits, ref, rtol=1e-5, atol=1e-5)
