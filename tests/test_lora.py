"""LoRA on both task heads: training touches only adapters, head and special-token rows; save/load/merge agree."""

import pytest
import torch

from gpt1_hf import GPT1Config, GPT1ForMultipleChoice, GPT1ForSequenceClassification, GPT1LMHeadModel
from gpt1_hf.lora import apply_lora, count_parameters
from tests.conftest import tiny_config_kwargs

peft = pytest.importorskip("peft")


@pytest.fixture
def base_dir(tmp_path):
    GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs())).save_pretrained(tmp_path / "base")
    return tmp_path / "base"


def batch(shape):
    ids = torch.randint(0, 100, shape)
    ids[..., 0], ids[..., -1] = 100, 102
    return ids


def train_steps(model, ids, labels, steps=3):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        model(input_ids=ids, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.mark.parametrize("head,shape,labels", [
    (GPT1ForSequenceClassification, (2, 8), torch.tensor([0, 2])),
    (GPT1ForMultipleChoice, (2, 3, 8), torch.tensor([1, 2])),
])
def test_lora_train_save_load_merge(head, shape, labels, base_dir, tmp_path):
    model = head.from_pretrained(base_dir, num_labels=3)
    frozen_before = {n: p.clone() for n, p in model.named_parameters()}
    peft_model = apply_lora(model, r=4, alpha=8, dropout=0.0)
    trainable, total = count_parameters(peft_model)
    assert 0 < trainable < total * 0.5
    ids = batch(shape)
    train_steps(peft_model, ids, labels)
    with torch.no_grad():
        ref = peft_model(input_ids=ids).logits

    # the backbone's own weights did not move; the special-token rows did (through their delta)
    base = peft_model.get_base_model()
    assert torch.equal(base.transformer.h[0].attn.c_attn.base_layer.weight,
                       frozen_before["transformer.h.0.attn.c_attn.weight"])
    deltas = [p for n, p in peft_model.named_parameters() if "trainable_tokens_delta" in n]
    assert deltas and all(d.abs().sum() > 0 for d in deltas)
    peft_model.save_pretrained(tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert "adapter_model.safetensors" in files and "adapter_config.json" in files

    reloaded = peft.PeftModel.from_pretrained(head.from_pretrained(base_dir, num_labels=3), tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(input_ids=ids).logits, ref)
        merged = reloaded.merge_and_unload().eval()
        assert type(merged) is head
        torch.testing.assert_close(merged(input_ids=ids).logits, ref, rtol=1e-5, atol=1e-5)


def test_auto_peft_model_for_sequence_classification(base_dir, tmp_path):
    from peft import AutoPeftModelForSequenceClassification

    model = apply_lora(GPT1ForSequenceClassification.from_pretrained(base_dir, num_labels=3), r=4)
    ids = batch((2, 8))
    train_steps(model, ids, torch.tensor([1, 0]))
    model.save_pretrained(tmp_path / "adapter")
    loaded = AutoPeftModelForSequenceClassification.from_pretrained(tmp_path / "adapter", num_labels=3).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_bad_lora_target_is_a_clear_error(base_dir):
    model = GPT1ForSequenceClassification.from_pretrained(base_dir)
    with pytest.raises(ValueError, match=r"\['q_proj'\] match no Linear module"):
        apply_lora(model, target_modules=["q_proj"])
    with pytest.raises(ValueError, match="regex"):
        apply_lora(model, target_modules=r".*nothing.*")


@pytest.mark.parametrize("task", ["sst2", "race"])
def test_finetune_with_lora_saves_a_loadable_adapter(task, tmp_path):
    """`finetune(lora=True)` for both heads: only adapters/head/special rows train; the output loads and merges."""
    from pathlib import Path

    from gpt1_hf.arguments import FinetuneArguments
    from gpt1_hf.finetuning import finetune
    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    fixtures = Path(__file__).parent / "fixtures" / "tasks"
    texts = [p.read_text(encoding="utf-8-sig") for p in sorted((fixtures / task).rglob("*")) if p.is_file()]
    tok = GPT1Tokenizer(vocab={"<unk>": 0, "a</w>": 1}, merges=[]).train_new_from_iterator([texts], 300)
    base = tmp_path / "base"
    GPT1LMHeadModel(GPT1Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                               n_inner=64)).save_pretrained(base)
    tok.save_pretrained(base)
    frozen = GPT1LMHeadModel.from_pretrained(base).transformer.h[0].mlp.c_fc.weight.clone()
    out = tmp_path / "out"
    results = finetune(FinetuneArguments(task_name=task, data_dir=str(fixtures / task), model_name_or_path=str(base),
                                         output_dir=str(out), max_length=64, num_train_epochs=1, global_batch_size=4,
                                         learning_rate=1e-3, disable_tqdm=True, lora=True, lora_r=2, seed=0,
                                         predict_splits=[]))
    info = results["model"]["lora"]
    assert 0 < info["trainable_parameters"] < info["total_parameters"] / 2
    assert info["target_modules"] == ["c_attn", "c_proj", "c_fc"]  # the defaults, resolved (not null)
    assert results["model"]["converted"] is False and results["model"]["source_format"] == "gpt1"
    assert (out / "adapter_model.safetensors").is_file()
    head = GPT1ForMultipleChoice if task == "race" else GPT1ForSequenceClassification
    kwargs = {} if task == "race" else {"num_labels": 2}
    model = peft.PeftModel.from_pretrained(head.from_pretrained(base, **kwargs), out).eval()
    assert torch.equal(model.get_base_model().transformer.h[0].mlp.c_fc.base_layer.weight, frozen)
    merged = model.merge_and_unload()
    assert not torch.equal(merged.transformer.h[0].mlp.c_fc.weight, frozen)  # adapters trained and merged in


def test_lora_finetune_resumes_to_the_same_result(tmp_path):
    """A `--lora` run stopped after its first update (max_time=0) and resumed from 'latest' ends with the same adapter
    weights, metrics and evaluation history as an uninterrupted run with the same seed (a checkpoint is Accelerate's
    ``save_state`` folder: model.safetensors holds the PeftModel's state, adapters included)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from gpt1_hf.arguments import FinetuneArguments
    from gpt1_hf.finetuning import finetune
    from gpt1_hf.run_folder import find_checkpoint
    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    fixtures = Path(__file__).parent / "fixtures" / "tasks"
    texts = [p.read_text(encoding="utf-8-sig") for p in sorted((fixtures / "sst2").rglob("*")) if p.is_file()]
    tok = GPT1Tokenizer(vocab={"<unk>": 0, "a</w>": 1}, merges=[]).train_new_from_iterator([texts], 300)
    base = tmp_path / "base"
    GPT1LMHeadModel(GPT1Config(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                               n_inner=64)).save_pretrained(base)
    tok.save_pretrained(base)

    def run(out, **kw):
        return finetune(FinetuneArguments(task_name="sst2", data_dir=str(fixtures / "sst2"),
                                          model_name_or_path=str(base), output_dir=str(out), max_length=64,
                                          num_train_epochs=2, global_batch_size=4, learning_rate=1e-3,
                                          disable_tqdm=True, lora=True, lora_r=2, seed=0, predict_splits=[], **kw))

    ref = run(tmp_path / "ref")
    first = run(tmp_path / "run", max_time=0.0)
    assert first["stop_reason"] == "max_time" and first["global_step"] == 1
    ckpt = find_checkpoint(tmp_path / "run", "latest")
    assert {"model.safetensors", "optimizer.bin", "scheduler.bin", "training_state.json"} <= {
        p.name for p in ckpt.iterdir()}
    assert any("lora_B" in k for k in load_file(str(ckpt / "model.safetensors")))
    resumed = run(tmp_path / "run", resume_from_checkpoint="latest")
    assert resumed["global_step"] == ref["global_step"] == ref["total_steps"]
    assert resumed["metrics"] == ref["metrics"] and resumed["eval_history"] == ref["eval_history"]
    a = load_file(str(tmp_path / "ref" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "run" / "adapter_model.safetensors"))
    assert sorted(a) == sorted(b) and any("lora_B" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
