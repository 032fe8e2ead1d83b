"""The shared training loop (gpt1_hf.training): schedules, weight decay, batching, resume, atomic checkpoints, budgets."""

import json
import math
import platform

import pytest
import torch
from conftest import tiny_config_kwargs

from gpt1_hf import GPT1Config, GPT1LMHeadModel
from gpt1_hf import training as T
from gpt1_hf.training import (
    StopTraining,
    Trainer,
    TrainingArguments,
    find_checkpoint,
    lr_factor,
    param_groups_for_weight_decay,
    resolve_batch_config,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest (and do not fight other jobs for the cores) on one intra-op thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def lm_data(n=22, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, 100, (length,), generator=g).tolist()} for _ in range(n)]


def lm_collate(features):
    ids = torch.tensor([f["input_ids"] for f in features])
    return {"input_ids": ids, "labels": ids}


def tiny_lm(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs(**overrides)))


def args_for(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), learning_rate=3e-3, per_device_batch_size=2, global_batch_size=4,
                num_train_epochs=2, progress_bar=False, log_every_steps=1, seed=7, save_at_epoch_end=False,
                save_final_checkpoint=False, save_total_limit=None)
    base.update(kw)
    return TrainingArguments(**base)


def state_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------------------------------------------------
# Schedules
# ----------------------------------------------------------------------------------------------------------------------


def test_lr_factor_values():
    # linear, warmup 4 of 20 updates: (k+1)/4 during warmup, then 1 - (k-4)/16
    assert [lr_factor("linear", k, 4, 20) for k in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor("linear", 4, 4, 20) == 1.0
    assert lr_factor("linear", 12, 4, 20) == pytest.approx(0.5)
    assert lr_factor("linear", 19, 4, 20) == pytest.approx(1 / 16)
    assert lr_factor("linear", 20, 4, 20) == 0.0
    # cosine to 0
    assert lr_factor("cosine", 4, 4, 20) == 1.0
    assert lr_factor("cosine", 12, 4, 20) == pytest.approx(0.5)
    assert lr_factor("cosine", 8, 4, 20) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))
    assert lr_factor("cosine", 25, 4, 20) == 0.0
    assert lr_factor("constant", 10, 0, 20) == 1.0
    with pytest.raises(ValueError, match="unknown lr_scheduler_type"):
        lr_factor("step", 0, 0, 10)
    # the paper's fine-tuning warmup: 0.2% of the updates
    assert T.warmup_steps_for(6315, None, 0.002) == 13
    assert T.warmup_steps_for(100, 5, 0.002) == 5


def test_schedule_counts_optimizer_updates_with_accumulation(tmp_path):
    # 10 examples, per-device 2, accumulation 2 -> 5 micro-batches = 3 updates per epoch (last window has one)
    args = args_for(tmp_path, global_batch_size=4, num_train_epochs=2, lr_scheduler_type="linear", warmup_steps=2,
                    learning_rate=1e-3)
    trainer = Trainer(tiny_lm(), args, lm_data(10), lm_collate)
    assert trainer.batch.gradient_accumulation_steps == 2
    assert trainer.updates_per_epoch == 3 and trainer.total_steps == 6
    result = trainer.train()
    assert result.global_step == 6
    lrs = [e["lr"] for e in result.log_history]
    expected = [1e-3 * lr_factor("linear", k, 2, 6) for k in range(6)]
    assert lrs == pytest.approx(expected)
    assert trainer.scheduler.last_epoch == 6  # stepped once per update, not per micro-batch
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0


def test_cosine_schedule_in_trainer(tmp_path):
    args = args_for(tmp_path, per_device_batch_size=4, global_batch_size=4, num_train_epochs=1,
                    lr_scheduler_type="cosine", warmup_steps=1)
    result = Trainer(tiny_lm(), args, lm_data(16), lm_collate).train()
    lrs = [e["lr"] for e in result.log_history]
    assert lrs == pytest.approx([args.learning_rate * lr_factor("cosine", k, 1, 4) for k in range(4)])


# ----------------------------------------------------------------------------------------------------------------------
# Optimizer and batch configuration
# ----------------------------------------------------------------------------------------------------------------------


def test_weight_decay_groups():
    from gpt1_hf import GPT1ForSequenceClassification

    model = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(num_labels=3)))
    decay, no_decay = param_groups_for_weight_decay(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    dn, nn_ = set(decay["names"]), set(no_decay["names"])
    assert "transformer.tokens_embed.weight" in dn and "transformer.positions_embed.weight" in dn
    assert "transformer.h.0.attn.c_attn.weight" in dn and "score.weight" in dn
    assert "transformer.h.0.attn.c_attn.bias" in nn_ and "score.bias" in nn_
    assert "transformer.h.0.ln_1.weight" in nn_ and "transformer.h.1.ln_2.bias" in nn_
    assert "lm_head.weight" not in dn | nn_  # tied to tokens_embed: counted once
    assert all(p.ndim >= 2 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    n_params = len({id(p) for p in model.parameters()})
    assert len(decay["params"]) + len(no_decay["params"]) == n_params
    opt = T.build_optimizer(model, TrainingArguments(weight_decay=0.01))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]
    assert opt.defaults.get("fused") or opt.defaults.get("foreach")


def test_batch_config():
    assert resolve_batch_config(4, 32, 2).gradient_accumulation_steps == 4
    assert resolve_batch_config(None, 32, 2).per_device_batch_size == 16
    assert resolve_batch_config(8, None, 2, 3).global_batch_size == 48
    with pytest.raises(ValueError, match="not a multiple"):
        resolve_batch_config(5, 32, 2)
    with pytest.raises(ValueError, match="not divisible"):
        resolve_batch_config(None, 30, 4)
    with pytest.raises(ValueError, match="contradicts"):
        resolve_batch_config(4, 32, 1, 2)


def test_bad_batch_combination_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="not a multiple"):
        Trainer(tiny_lm(), args_for(tmp_path, per_device_batch_size=3, global_batch_size=8), lm_data(8), lm_collate)
    assert not (tmp_path / "checkpoints").exists()


def test_gradient_accumulation_equivalence(tmp_path):
    """One batch of 4 == two accumulated micro-batches of 2 (dropout off, equal-length LM blocks). A large Adam
    epsilon and no clipping make the update depend on the gradient's scale, so a mis-scaled accumulation fails."""
    kw = dict(num_train_epochs=1, shuffle=True, adam_epsilon=0.05, max_grad_norm=None, learning_rate=1e-2)
    no_dropout = dict(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    data = lm_data(12)
    a = Trainer(tiny_lm(1, **no_dropout), args_for(tmp_path / "a", per_device_batch_size=4, global_batch_size=4, **kw),
                data, lm_collate)
    ra = a.train()
    b = Trainer(tiny_lm(1, **no_dropout), args_for(tmp_path / "b", per_device_batch_size=2, global_batch_size=4, **kw),
                data, lm_collate)
    rb = b.train()
    assert b.batch.gradient_accumulation_steps == 2 and ra.global_step == rb.global_step == 3
    assert [e["grad_norm"] for e in ra.log_history] == pytest.approx([e["grad_norm"] for e in rb.log_history],
                                                                       rel=1e-4)
    sa, sb = state_of(a.finalize_model()), state_of(b.finalize_model())
    init = state_of(tiny_lm(1, **no_dropout))
    assert not torch.allclose(sa["transformer.h.0.mlp.c_fc.weight"], init["transformer.h.0.mlp.c_fc.weight"])
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# Resume equivalence and atomic checkpoints
# ----------------------------------------------------------------------------------------------------------------------


def _eval_fn(data):
    return lambda trainer: trainer.evaluate_loss(data, lm_collate)


def test_resume_equivalence_after_kill(tmp_path):
    """22 examples, micro-batch 2, accumulation 2: 11 micro-batches = 6 updates/epoch; 2 epochs, dropout on,
    shuffled. Killed after update 9 (last checkpoint: update 8, mid-epoch) then resumed from 'latest': identical
    weights (bitwise) and evaluation metrics to the uninterrupted run."""
    data, held_out = lm_data(22), lm_data(6, seed=1)
    common = dict(save_every_steps=4, metric_for_best_model="loss", greater_is_better=False)

    ref = Trainer(tiny_lm(0), args_for(tmp_path / "ref", **common), data, lm_collate, eval_fn=_eval_fn(held_out))
    ref_result = ref.train()
    assert ref_result.global_step == 12 and len(ref_result.eval_history) == 2

    def kill_after_9(trainer):
        if trainer.state.global_step == 9:
            raise RuntimeError("simulated kill")

    run_dir = tmp_path / "run"
    killed = Trainer(tiny_lm(0), args_for(run_dir, **common), data, lm_collate, eval_fn=_eval_fn(held_out),
                     callbacks=[kill_after_9])
    with pytest.raises(RuntimeError, match="simulated kill"):
        killed.train()
    assert find_checkpoint(run_dir, "latest").name == "step-00000008"

    resumed = Trainer(tiny_lm(123), args_for(run_dir, resume_from_checkpoint="latest", **common), data, lm_collate,
                      eval_fn=_eval_fn(held_out))
    resumed_result = resumed.train()
    assert resumed_result.global_step == 12
    s_ref, s_res = state_of(ref.finalize_model()), state_of(resumed.finalize_model())
    for k in s_ref:
        assert torch.equal(s_ref[k], s_res[k]), k
    assert resumed_result.metrics == ref_result.metrics
    assert resumed_result.eval_history == ref_result.eval_history
    assert resumed_result.best_step == ref_result.best_step
    assert [e["loss"] for e in resumed_result.log_history] == [e["loss"] for e in ref_result.log_history]
    # the best model folder is a loadable model
    best = GPT1LMHeadModel.from_pretrained(run_dir / "best")
    assert json.loads((run_dir / "best" / "training_info.json").read_text())["step"] == ref_result.best_step
    assert best.config.n_layer == 2


def test_resume_with_length_grouping_and_budget_stop(tmp_path):
    """A run stopped by max_time after its first update, resumed without the budget, equals an uninterrupted run
    (length-grouped order, variable lengths with padding)."""
    g = torch.Generator().manual_seed(3)
    data = [{"input_ids": torch.randint(0, 100, (int(n),), generator=g).tolist()}
            for n in torch.randint(4, 16, (14,), generator=g)]
    lengths = [len(d["input_ids"]) for d in data]

    def collate(features):
        longest = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), longest), 103)
        mask = torch.zeros_like(ids)
        for i, f in enumerate(features):
            ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            mask[i, : len(f["input_ids"])] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids}

    kw = dict(group_by_length=True)
    ref = Trainer(tiny_lm(0), args_for(tmp_path / "ref", **kw), data, collate, lengths=lengths)
    ref_result = ref.train()
    stopped = Trainer(tiny_lm(0), args_for(tmp_path / "run", max_time=0.0, **kw), data, collate, lengths=lengths)
    r1 = stopped.train()
    assert r1.stop_reason == "max_time" and r1.global_step == 1
    assert find_checkpoint(tmp_path / "run", "latest").name == "step-00000001"
    resumed = Trainer(tiny_lm(5), args_for(tmp_path / "run", resume_from_checkpoint="latest", **kw), data, collate,
                      lengths=lengths)
    r2 = resumed.train()
    assert r2.global_step == ref_result.global_step and r2.tokens_seen == ref_result.tokens_seen
    s_ref, s_res = state_of(ref.finalize_model()), state_of(resumed.finalize_model())
    assert all(torch.equal(s_ref[k], s_res[k]) for k in s_ref)


def test_atomic_checkpoint_failure_keeps_previous_latest(tmp_path, monkeypatch):
    """A failure in the middle of writing checkpoint 4 leaves 'latest' on checkpoint 2, no partial step folder, and
    a resumable run. A folder left by a hard kill (no rename) is ignored too."""
    real_save = torch.save

    def failing_save(obj, path, *a, **k):
        if "step-00000004" in str(path) and str(path).endswith(T.SCHEDULER_FILE):
            raise OSError("disk full (simulated)")
        return real_save(obj, path, *a, **k)

    monkeypatch.setattr(T.torch, "save", failing_save)
    run_dir = tmp_path / "run"
    trainer = Trainer(tiny_lm(0), args_for(run_dir, save_every_steps=2), lm_data(22), lm_collate)
    with pytest.raises(OSError, match="disk full"):
        trainer.train()
    root = run_dir / "checkpoints"
    assert (root / "latest").read_text() == "step-00000002"
    assert not (root / "step-00000004").exists()
    assert not list(root.glob(".tmp-*"))
    # a hard kill during a save leaves only a temporary folder behind
    (root / ".tmp-step-00000006-deadbeef").mkdir()
    (root / ".tmp-step-00000006-deadbeef" / "model.safetensors").write_bytes(b"partial")
    ckpt = find_checkpoint(run_dir, "latest")
    assert ckpt.name == "step-00000002"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    monkeypatch.setattr(T.torch, "save", real_save)
    resumed = Trainer(tiny_lm(0), args_for(run_dir, save_every_steps=2, resume_from_checkpoint="latest"),
                      lm_data(22), lm_collate)
    assert resumed.train().global_step == 12
    assert not list(root.glob(".tmp-*"))  # stale temporary folders are cleaned


def _folder(path, tag):
    """A complete stand-in for a saved model folder: three files that all carry ``tag``."""
    for name in ("config.json", "model.safetensors", "training_info.json"):
        (path / name).write_text(tag)


def _complete_tag(path):
    """The tag of a complete folder written by `_folder` (all three files agree), else None."""
    tags = {(path / n).read_text() for n in ("config.json", "model.safetensors", "training_info.json")
            if (path / n).is_file()}
    return tags.pop() if len(tags) == 1 and len(list(path.iterdir())) == 3 else None


def test_best_swap_is_atomic(tmp_path, monkeypatch):
    """Replacing best/: at every point of the swap a complete best/ (the old or the new one) exists."""
    best = tmp_path / "best"
    T.save_directory_atomically(best, lambda d: _folder(d, "old"))
    assert _complete_tag(best) == "old"
    # the write fails: the old folder is untouched, nothing is left behind
    with pytest.raises(OSError, match="disk full"):
        T.save_directory_atomically(best, lambda d: (_folder(d, "new"), (_ for _ in ()).throw(OSError("disk full"))))
    assert _complete_tag(best) == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]

    # the one-step swap (Linux renameat2 RENAME_EXCHANGE): "killed" right after it, before the old copy is deleted
    if platform.system() == "Linux":
        def killed(path, *a, **k):
            raise KeyboardInterrupt("killed (simulated)")

        monkeypatch.setattr(T.shutil, "rmtree", killed)
        with pytest.raises(KeyboardInterrupt):
            T.save_directory_atomically(best, lambda d: _folder(d, "new"))
        monkeypatch.undo()
        assert _complete_tag(best) == "new"
        leftover = [p for p in tmp_path.iterdir() if p.name != "best"]
        assert len(leftover) == 1 and _complete_tag(leftover[0]) == "old"  # the old copy (Trainer.train cleans it)
        T.shutil.rmtree(leftover[0])
    T.save_directory_atomically(best, lambda d: _folder(d, "newer"))
    assert _complete_tag(best) == "newer" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]

    # the fallback (no atomic exchange): two renames; a failure between them puts the old folder back
    monkeypatch.setattr(T, "_exchange_directories", lambda a, b: False)
    real_replace = T.os.replace
    calls = []

    def second_rename_fails(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("rename failed (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(T.os, "replace", second_rename_fails)
    with pytest.raises(OSError, match="rename failed"):
        T.save_directory_atomically(best, lambda d: _folder(d, "lost"))
    monkeypatch.setattr(T.os, "replace", real_replace)
    assert _complete_tag(best) == "newer" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]

    # ... and a hard kill between them (old folder moved aside, new one not renamed in) is repaired by
    # recover_directory, which the next save and Trainer.train() call first
    real_replace(best, tmp_path / ".old-best-deadbeef")
    (tmp_path / ".tmp-best-cafebabe").mkdir()
    _folder(tmp_path / ".tmp-best-cafebabe", "unfinished")
    assert T.recover_directory(best) == best and _complete_tag(best) == "newer"
    assert not (tmp_path / ".old-best-deadbeef").exists()
    T.save_directory_atomically(best, lambda d: _folder(d, "fallback"))
    assert _complete_tag(best) == "fallback" and not list(tmp_path.glob(".old-*"))


def test_trainer_restores_best_left_by_a_kill(tmp_path):
    run_dir = tmp_path / "run"
    old = run_dir / ".old-best-0badf00d"
    old.mkdir(parents=True)
    _folder(old, "old best")
    (run_dir / ".tmp-best-12345678").mkdir()  # an unfinished write (or the old copy of a swap) of a killed session
    trainer = Trainer(tiny_lm(0), args_for(run_dir, max_steps=1), lm_data(8), lm_collate)
    trainer.train()
    assert _complete_tag(run_dir / "best") == "old best" and not old.exists()
    assert not list(run_dir.glob(".tmp-best-*"))


def test_find_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        find_checkpoint(tmp_path, "latest")
    assert find_checkpoint(tmp_path, "auto") is None
    (tmp_path / "half").mkdir()
    with pytest.raises(FileNotFoundError, match="not a complete training checkpoint"):
        find_checkpoint(tmp_path, str(tmp_path / "half"))


def test_resume_rejects_different_batch_configuration(tmp_path):
    Trainer(tiny_lm(0), args_for(tmp_path, max_steps=1, save_final_checkpoint=True), lm_data(8), lm_collate).train()
    other = Trainer(tiny_lm(0), args_for(tmp_path, max_steps=1, per_device_batch_size=4,
                                         resume_from_checkpoint="latest"), lm_data(8), lm_collate)
    with pytest.raises(ValueError, match="batch configuration"):
        other.train()


# ----------------------------------------------------------------------------------------------------------------------
# Budgets
# ----------------------------------------------------------------------------------------------------------------------


def test_budgets(tmp_path):
    # max_steps sets the schedule length and stops
    r = Trainer(tiny_lm(), args_for(tmp_path / "steps", max_steps=3, num_train_epochs=100), lm_data(22),
                lm_collate).train()
    assert r.global_step == 3 and r.stop_reason == "completed"
    # max_train_tokens: 4 sequences x 12 tokens = 48 tokens per update -> stops after the update reaching 100
    t = Trainer(tiny_lm(), args_for(tmp_path / "tokens", max_train_tokens=100), lm_data(22), lm_collate)
    r = t.train()
    assert r.stop_reason == "max_train_tokens" and r.global_step == 3 and r.tokens_seen == 144
    assert find_checkpoint(tmp_path / "tokens", "latest").name == "step-00000003"
    # a callback can stop cleanly
    def stop(trainer):
        if trainer.state.global_step == 2:
            raise StopTraining()

    r = Trainer(tiny_lm(), args_for(tmp_path / "cb"), lm_data(22), lm_collate, callbacks=[stop]).train()
    assert r.stop_reason == "callback" and r.global_step == 2
    assert find_checkpoint(tmp_path / "cb", "latest").name == "step-00000002"


def test_bf16_mixed_precision_and_gradient_checkpointing(tmp_path):
    r = Trainer(tiny_lm(), args_for(tmp_path / "bf16", mixed_precision="bf16", max_steps=2), lm_data(8),
                lm_collate).train()
    assert r.global_step == 2 and math.isfinite(r.log_history[-1]["loss"])
    # activation checkpointing recomputes the forward: same gradients as without it (dropout off)
    no_dropout = dict(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)
    runs = [Trainer(tiny_lm(2, **no_dropout), args_for(tmp_path / str(gc), gradient_checkpointing=gc, max_steps=2),
                    lm_data(8), lm_collate) for gc in (False, True)]
    results = [t.train() for t in runs]
    assert runs[1].unwrapped_model.is_gradient_checkpointing
    assert [e["grad_norm"] for e in results[0].log_history] == pytest.approx(
        [e["grad_norm"] for e in results[1].log_history], rel=1e-5)


def test_accelerator_settings_do_not_leak_between_runs(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert T.create_accelerator("bf16").mixed_precision == "bf16"
    assert T.create_accelerator(None).mixed_precision == "no"  # not the previous run's bf16
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision` sets
    assert T.create_accelerator(None).mixed_precision == "bf16"
    assert T.create_accelerator("no").mixed_precision == "no"


def test_lora_checkpoint_is_complete_and_needs_a_peft_model(tmp_path):
    """A LoRA checkpoint holds adapter_model.safetensors instead of model.safetensors: complete for find_checkpoint;
    loading it into a plain (non-PEFT) model is a clear error, not a missing-file traceback."""
    ckpt = tmp_path / T.CHECKPOINTS_DIR / "step-00000001"
    ckpt.mkdir(parents=True)
    for name in (T.TRAINER_STATE, T.SCHEDULER_FILE, T.RNG_FILE, T.OPTIMIZER_FILE, T.ADAPTER_WEIGHTS):
        (ckpt / name).write_bytes(b"x")
    T.write_text_atomically(tmp_path / T.CHECKPOINTS_DIR / T.LATEST_POINTER, ckpt.name)
    assert find_checkpoint(tmp_path, "latest") == ckpt
    with pytest.raises(FileNotFoundError, match="written by a LoRA run; resume it with --lora"):
        T._load_model_weights(tiny_lm(0), ckpt)
    (ckpt / T.ADAPTER_WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=r"not a complete training checkpoint .*adapter_model.safetensors"):
        find_checkpoint(tmp_path, "latest")


def test_auto_mixed_precision_follows_the_hardware(monkeypatch):
    """"auto" is bf16 only where bf16 is native (emulated bf16 on an AVX2-only CPU is ~10x slower than fp32)."""
    import gpt1_hf.training as training

    monkeypatch.setattr(training.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: True)
    assert training.resolve_mixed_precision("auto", cpu=True) == "bf16"
    monkeypatch.setattr(training, "cpu_has_native_bf16", lambda: False)
    assert training.resolve_mixed_precision("auto", cpu=True) == "no"
    for value in (None, "no", "bf16", "fp16"):
        assert training.resolve_mixed_precision(value, cpu=True) == value
    assert training.create_accelerator("auto", cpu=True).mixed_precision == "no"
    with pytest.raises(ValueError, match="mixed_precision must be one of auto, no, bf16, fp16"):
        training.create_accelerator("fp8", cpu=True)
