"""The shared training loop (gpt1_hf.training): schedules, weight decay, one global batch whatever its
layout, kill-and-resume equality, atomic checkpoints, budgets, and the guards (non-finite values, run identity, one
run per folder, leftovers)."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import tiny_config_kwargs

from gpt1_hf import GPT1Config, GPT1ForSequenceClassification, GPT1LMHeadModel, precision
from gpt1_hf import training as T
from gpt1_hf.arguments import RunArguments
from gpt1_hf.checkpointing import NonFiniteError, RunMismatchError
from gpt1_hf.distributed import create_accelerator, resolve_batch_config
from gpt1_hf.durable import RunInUseError, RunLock
from gpt1_hf.run_folder import find_checkpoint, open_run_folder
from gpt1_hf.training import TrainingLoop, count_items, param_groups_for_weight_decay

pytestmark = pytest.mark.usefixtures("one_thread")


def lm_data(n=22, length=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, 100, (length,), generator=g).tolist()} for _ in range(n)]


def ragged_data(n=14, seed=3):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, 100, (int(k),), generator=g).tolist(), "labels": int(k) % 2}
            for k in torch.randint(4, 16, (n,), generator=g)]


def lm_collate(features):
    ids = torch.tensor([f["input_ids"] for f in features])
    return {"input_ids": ids, "labels": ids}


def padded_collate(features, with_labels=False):
    """Right padding with the pad id 103 and its attention mask (the rows' real lengths differ)."""
    longest = max(len(f["input_ids"]) for f in features)
    ids = torch.full((len(features), longest), 103)
    mask = torch.zeros_like(ids)
    for i, f in enumerate(features):
        ids[i, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
        mask[i, : len(f["input_ids"])] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    batch["labels"] = torch.tensor([f["labels"] for f in features]) if with_labels else ids
    return batch


def tiny_lm(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs(**overrides)))


NO_DROPOUT = dict(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, clf_pdrop=0.0)


def args_for(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), learning_rate=3e-3, per_device_train_batch_size=2, global_batch_size=4,
                num_train_epochs=2, disable_tqdm=True, logging_steps=1, seed=7, weight_decay=0.01,
                max_grad_norm=1.0, lr_scheduler_type="linear", warmup_ratio=0.0, save_total_limit=None)
    base.update(kw)
    return RunArguments(**base)


def loop_for(model, args, data, collate=lm_collate, **kw):
    acc = create_accelerator(args.mixed_precision, cpu=True, with_tracking=args.with_tracking,
                               report_to=args.report_to, project_dir=args.output_dir)
    return TrainingLoop(model, args, data, collate, acc, **kw)


def state_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _eval_fn(held_out, collate=lm_collate):
    return lambda loop: loop.evaluate_loss(held_out, collate)


# ----------------------------------------------------------------------------------------------------------------------
# Batches, schedules, weight decay
# ----------------------------------------------------------------------------------------------------------------------


def test_batch_config():
    assert resolve_batch_config(None, 32, 2, None).per_device_batch_size == 16
    assert resolve_batch_config(4, 32, 2, None).gradient_accumulation_steps == 4
    assert resolve_batch_config(4, None, 3, 2).global_batch_size == 24
    with pytest.raises(ValueError, match="not a multiple of --per_device_train_batch_size 3"):
        resolve_batch_config(3, 32, 2, None)
    with pytest.raises(ValueError, match="contradicts"):
        resolve_batch_config(4, 32, 2, 3)
    with pytest.raises(ValueError, match=">= 1"):
        resolve_batch_config(0, 32, 1, None)


def test_weight_decay_groups():
    model = tiny_lm()
    decay, no_decay = param_groups_for_weight_decay(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert "transformer.tokens_embed.weight" in decay["names"] and "lm_head.weight" not in decay["names"]  # tied: once
    assert all(n.endswith(("bias", "ln_1.weight", "ln_2.weight")) for n in no_decay["names"])


def test_schedule_is_transformers_get_scheduler_counting_updates(tmp_path):
    """22 examples, micro-batch 2, accumulation 2: 11 micro-batches = 6 updates per epoch, 12 in all. The learning
    rate of update k is transformers' linear schedule with warmup, counted in optimizer updates."""
    from transformers import get_scheduler

    loop = loop_for(tiny_lm(), args_for(tmp_path, num_warmup_steps=3), lm_data(22))
    result = loop.fit()
    assert loop.total_steps == 12 and result.global_step == 12
    reference = get_scheduler("linear", torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=3e-3),
                              num_warmup_steps=3, num_training_steps=12)
    expected = []
    for _ in range(12):
        expected.append(reference.get_last_lr()[0])
        reference.optimizer.step()
        reference.step()
    assert [e["learning_rate"] for e in result.log_history] == pytest.approx(expected)


def test_bad_batch_combination_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="--global_batch_size 5 is not a multiple"):
        loop_for(tiny_lm(), args_for(tmp_path, global_batch_size=5), lm_data(8))


# ----------------------------------------------------------------------------------------------------------------------
# One global batch, whatever its layout
# ----------------------------------------------------------------------------------------------------------------------


def test_count_items_matches_the_model_losses():
    """The loop's item counts are the ones the model averages over: next-token targets between real tokens."""
    batch = padded_collate(ragged_data(4))
    examples, targets = count_items(batch)
    assert examples == 4
    assert targets == int((batch["attention_mask"].sum(1) - 1).sum())
    # multiple choice / similarity shapes count every sequence's targets
    mc = {"input_ids": batch["input_ids"].view(2, 2, -1), "attention_mask": batch["attention_mask"].view(2, 2, -1)}
    assert count_items(mc) == (2, targets)


@pytest.mark.parametrize("head", ["lm", "classifier"])
def test_every_layout_of_a_global_batch_takes_the_same_step(tmp_path, head):
    """1 x 8, 1 x 4 x accumulation 2 and 1 x 2 x accumulation 4 give the same weights (fp32, no dropout, ragged
    lengths): L1 is a mean over the target tokens of the whole global batch, L2 over its examples (docs/model.md)."""
    data = ragged_data(16)
    results = []
    for per_device in (8, 4, 2):
        torch.manual_seed(0)
        if head == "lm":
            model, collate = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs(**NO_DROPOUT))), padded_collate
        else:
            model = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(num_labels=2, aux_lm_weight=0.5,
                                                                                  **NO_DROPOUT)))
            collate = lambda f: padded_collate(f, with_labels=True)  # noqa: E731
        loop = loop_for(model, args_for(tmp_path / f"{head}{per_device}", per_device_train_batch_size=per_device,
                                        global_batch_size=8, num_train_epochs=2, learning_rate=1e-2), data, collate)
        result = loop.fit()
        results.append((state_of(loop.finalize_model()), result.log_history))
    (ref, ref_log), others = results[0], results[1:]
    for weights, log in others:
        for k in ref:
            torch.testing.assert_close(weights[k], ref[k], rtol=0, atol=1e-5, msg=k)  # fp32 summation order
        assert [e["loss"] for e in log] == pytest.approx([e["loss"] for e in ref_log], rel=1e-5)
    if head == "classifier":  # L1 and L2 logged apart, and L3 = L2 + 0.5 L1
        entry = ref_log[0]
        assert entry["loss"] == pytest.approx(entry["clf_loss"] + 0.5 * entry["lm_loss"], rel=1e-5)


# ----------------------------------------------------------------------------------------------------------------------
# Kill and resume
# ----------------------------------------------------------------------------------------------------------------------


def test_resume_equivalence_after_kill(tmp_path, capsys):
    """Dropout on, shuffled, accumulation 2, 6 updates per epoch, 2 epochs. Killed after update 9 (last checkpoint:
    update 8, mid-epoch), resumed from 'latest': bitwise the same weights, metrics and losses as the uninterrupted
    run; the resumed run says where it resumed."""
    data, held_out = lm_data(22), lm_data(6, seed=1)
    common = dict(checkpointing_steps="4")
    kw = dict(eval_fn=_eval_fn(held_out), metric_for_best_model="loss", greater_is_better=False)
    ref = loop_for(tiny_lm(0), args_for(tmp_path / "ref", **common), data, **kw)
    ref_result = ref.fit()
    assert ref_result.global_step == 12 and len(ref_result.eval_history) == 2

    def kill_after_9(loop):
        if loop.state.global_step == 9:
            raise RuntimeError("simulated kill")

    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="simulated kill"):
        loop_for(tiny_lm(0), args_for(run_dir, **common), data, callbacks=[kill_after_9], **kw).fit()
    assert find_checkpoint(run_dir, "latest").name == "step-00000008"
    capsys.readouterr()
    resumed = loop_for(tiny_lm(123), args_for(run_dir, resume_from_checkpoint="latest", **common), data, **kw)
    resumed_result = resumed.fit()
    out = capsys.readouterr().out
    assert f"resumed from {run_dir / 'checkpoints' / 'step-00000008'} at step 8" in out
    assert "eval step 12 (epoch 2.00): loss=" in out  # one console line per evaluation
    assert resumed_result.global_step == 12
    s_ref, s_res = state_of(ref.finalize_model()), state_of(resumed.finalize_model())
    assert all(torch.equal(s_ref[k], s_res[k]) for k in s_ref)
    assert resumed_result.metrics == ref_result.metrics
    assert resumed_result.eval_history == ref_result.eval_history
    assert resumed_result.best_step == ref_result.best_step
    assert [e["loss"] for e in resumed_result.log_history] == [e["loss"] for e in ref_result.log_history]
    best = GPT1LMHeadModel.from_pretrained(run_dir / "best")  # best/ and checkpoints are loadable models
    assert json.loads((run_dir / "best" / "training_info.json").read_text())["step"] == ref_result.best_step
    ckpt = GPT1LMHeadModel.from_pretrained(find_checkpoint(run_dir, "latest"))
    assert best.config.n_layer == ckpt.config.n_layer == 2


def test_resume_with_length_grouping_and_budget_stop(tmp_path):
    """A run stopped by max_time after its first update, resumed without the budget, equals an uninterrupted run
    (transformers' LengthGroupedSampler order, ragged lengths with padding, mid-epoch resume)."""
    data = ragged_data(14)
    lengths = [len(d["input_ids"]) for d in data]
    kw = dict(group_by_length=True)
    ref = loop_for(tiny_lm(0), args_for(tmp_path / "ref", **kw), data, padded_collate, lengths=lengths)
    ref_result = ref.fit()
    stopped = loop_for(tiny_lm(0), args_for(tmp_path / "run", max_time=0.0, **kw), data, padded_collate,
                       lengths=lengths)
    r1 = stopped.fit()
    assert r1.stop_reason == "max_time" and r1.global_step == 1
    assert find_checkpoint(tmp_path / "run", "latest").name == "step-00000001"
    resumed = loop_for(tiny_lm(5), args_for(tmp_path / "run", resume_from_checkpoint="latest", **kw), data,
                       padded_collate, lengths=lengths)
    r2 = resumed.fit()
    assert r2.global_step == ref_result.global_step and r2.tokens_seen == ref_result.tokens_seen
    s_ref, s_res = state_of(ref.finalize_model()), state_of(resumed.finalize_model())
    assert all(torch.equal(s_ref[k], s_res[k]) for k in s_ref)


def test_length_grouped_batches_have_less_padding(tmp_path):
    from gpt1_hf.training import EpochSampler

    lengths = [len(d["input_ids"]) for d in ragged_data(64)]
    grouped = list(EpochSampler(64, seed=1, lengths=lengths, group_size=8))
    shuffled = list(EpochSampler(64, seed=1))
    assert sorted(grouped) == sorted(shuffled) == list(range(64))

    def padded(order):
        return sum(8 * max(lengths[i] for i in order[s:s + 8]) for s in range(0, 64, 8))

    assert padded(grouped) < padded(shuffled)
    assert list(EpochSampler(64, seed=1, lengths=lengths, group_size=8)) == grouped  # a function of (seed, epoch)


def test_failed_checkpoint_write_keeps_previous_latest(tmp_path, monkeypatch):
    """A failure in the middle of writing checkpoint 4 leaves 'latest' on checkpoint 2 and no step-4 folder; the
    temporary folder it left is removed at the next start, and the run resumes."""
    from accelerate import Accelerator

    real_save_state = Accelerator.save_state

    def failing(self, output_dir=None, **kw):
        if "step-00000004" in str(output_dir):
            real_save_state(self, output_dir, **kw)
            raise OSError(28, "No space left on device")
        return real_save_state(self, output_dir, **kw)

    monkeypatch.setattr(Accelerator, "save_state", failing)
    run_dir = tmp_path / "run"
    with pytest.raises(OSError, match="could not write .*step-00000004: no space left on device"):
        loop_for(tiny_lm(0), args_for(run_dir, checkpointing_steps="2"), lm_data(22)).fit()
    monkeypatch.undo()
    assert find_checkpoint(run_dir, "latest").name == "step-00000002"
    assert not (run_dir / "checkpoints" / "step-00000004").exists()
    assert (run_dir / "checkpoints" / ".tmp-step-00000004").exists()
    acc = create_accelerator(None, cpu=True)
    with open_run_folder(run_dir, acc, "latest", False):
        assert not (run_dir / "checkpoints" / ".tmp-step-00000004").exists()
    r = loop_for(tiny_lm(0), args_for(run_dir, checkpointing_steps="2", resume_from_checkpoint="latest"),
                 lm_data(22)).fit()
    assert r.global_step == 12


def test_budgets(tmp_path):
    r = loop_for(tiny_lm(), args_for(tmp_path / "tok", max_train_tokens=100), lm_data(22)).fit()
    assert r.stop_reason == "max_train_tokens" and r.tokens_seen == 3 * 4 * 12  # the update that reaches 100 tokens
    r = loop_for(tiny_lm(), args_for(tmp_path / "steps", max_train_steps=3), lm_data(22)).fit()
    assert r.stop_reason == "completed" and r.global_step == 3
    assert find_checkpoint(tmp_path / "tok", "latest").name == "step-00000003"  # a budget stop saves


def test_bf16_and_gradient_checkpointing(tmp_path):
    r = loop_for(tiny_lm(), args_for(tmp_path / "bf16", mixed_precision="bf16", max_train_steps=2), lm_data(8)).fit()
    assert r.global_step == 2 and math.isfinite(r.log_history[-1]["loss"])
    # activation checkpointing recomputes the forward: the same gradients as without it (dropout off)
    loops = [loop_for(tiny_lm(2, **NO_DROPOUT), args_for(tmp_path / str(gc), gradient_checkpointing=gc,
                                                           max_train_steps=2), lm_data(8)) for gc in (False, True)]
    results = [loop.fit() for loop in loops]
    assert loops[1].accelerator.unwrap_model(loops[1].model).is_gradient_checkpointing
    assert [e["grad_norm"] for e in results[0].log_history] == pytest.approx(
        [e["grad_norm"] for e in results[1].log_history], rel=1e-5)


def test_bf16_autocast_survives_saving_the_best_model(tmp_path):
    """Saving best/ during training must not strip Accelerate's autocast wrapper from the live model (accelerate's
    unwrap_model(keep_fp32_wrapper=False) does so in place): every training forward stays bf16."""
    model = tiny_lm()
    seen = []
    model.transformer.h[0].register_forward_pre_hook(
        lambda module, args: seen.append((module.training, torch.is_autocast_enabled("cpu"))))
    args = args_for(tmp_path, mixed_precision="bf16", max_train_steps=4, eval_steps=1)
    loop = loop_for(model, args, lm_data(8), eval_fn=lambda loop: {"score": float(loop.state.global_step)},
                    metric_for_best_model="score")
    loop.fit()
    assert (tmp_path / "best").is_dir()
    training = [autocast for is_training, autocast in seen if is_training]
    assert len(training) == 8 and all(training)  # 4 updates x 2 micro-batches, all after a best/ save but the first


def test_accelerator_settings_do_not_leak_between_runs(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert create_accelerator("bf16").mixed_precision == "bf16"
    assert create_accelerator(None).mixed_precision == "no"  # not the previous run's bf16
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision` sets
    assert create_accelerator(None).mixed_precision == "bf16"
    assert create_accelerator("no").mixed_precision == "no"


def test_auto_mixed_precision_follows_the_hardware(monkeypatch):
    """"auto" is bf16 only where bf16 is native (emulated bf16 on an AVX2-only CPU is ~10x slower than fp32)."""
    monkeypatch.setattr(T.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_mixed_precision("auto", cpu=True) == "bf16"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_mixed_precision("auto", cpu=True) == "no"
    for value in (None, "no", "bf16", "fp16"):
        assert precision.resolve_mixed_precision(value, cpu=True) == value
    assert create_accelerator("auto", cpu=True).mixed_precision == "no"
    with pytest.raises(ValueError, match="--mixed_precision must be one of auto, no, bf16, fp16"):
        create_accelerator("fp8", cpu=True)


# ----------------------------------------------------------------------------------------------------------------------
# Guards
# ----------------------------------------------------------------------------------------------------------------------


def test_nonfinite_loss_stops_before_the_step_and_saves_nothing(tmp_path):
    """lr 1e30: the first update's weights overflow, the next loss is NaN. The run stops at that update with an error
    naming it and the causes; nothing of it is saved (no best/, 'latest' stays the last good checkpoint)."""
    run_dir = tmp_path / "run"
    held_out = lm_data(4, seed=1)
    loop = loop_for(tiny_lm(0), args_for(run_dir, learning_rate=1e30, checkpointing_steps="1", max_grad_norm=0.0),
                    lm_data(22), eval_fn=_eval_fn(held_out), metric_for_best_model="loss", greater_is_better=False)
    with pytest.raises(NonFiniteError, match=r"non-finite (loss|gradient norm) at update \d+ .*learning rate too high"):
        loop.fit()
    step = loop.state.global_step
    latest = find_checkpoint(run_dir, "auto")
    assert latest is None or int(latest.name.split("-")[1]) <= step
    assert not (run_dir / "best").exists()


def test_nonfinite_updates_can_be_skipped(tmp_path):
    """--on_nonfinite skip: an update whose loss is NaN is dropped and counted, the run goes on."""
    data = lm_data(22)
    model = tiny_lm(0)
    calls = {"n": 0}
    real_forward = model.forward

    def forward(*a, **k):  # the third micro-batch's loss is NaN
        out = real_forward(*a, **k)
        calls["n"] += 1
        if calls["n"] == 3:
            out.loss = out.loss * float("nan")
        return out

    model.forward = forward
    r = loop_for(model, args_for(tmp_path, on_nonfinite="skip", max_train_steps=4), data)
    result = r.fit()
    assert r.state.skipped_updates == 1 and result.global_step == 4
    assert all(torch.isfinite(p).all() for p in r.finalize_model().parameters())


def test_nonfinite_weights_are_refused_at_resume(tmp_path):
    from safetensors.torch import load_file, save_file

    run_dir = tmp_path / "run"
    loop_for(tiny_lm(0), args_for(run_dir, max_train_steps=2), lm_data(22)).fit()
    ckpt = find_checkpoint(run_dir, "latest")
    weights = load_file(ckpt / "model.safetensors")
    name = next(iter(weights))
    weights[name][0] = float("nan")
    save_file(weights, ckpt / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"non-finite values in tensor '{name}' of .*model.safetensors"):
        loop_for(tiny_lm(0), args_for(run_dir, max_train_steps=2, resume_from_checkpoint="latest"),
                 lm_data(22)).fit()


def test_resuming_another_run_is_refused_naming_each_difference(tmp_path):
    run_dir = tmp_path / "run"
    loop_for(tiny_lm(0), args_for(run_dir, max_train_steps=2), lm_data(22), run_identity={"task": "sst2"}).fit()
    with pytest.raises(RunMismatchError) as err:
        loop_for(tiny_lm(0), args_for(run_dir, max_train_steps=2, seed=8, resume_from_checkpoint="latest"),
                 lm_data(22), run_identity={"task": "cola"}).fit()
    message = str(err.value)
    assert "another run (task 'sst2')" in message
    assert "task: checkpoint 'sst2', this run 'cola'" in message and "seed: checkpoint 7, this run 8" in message
    with pytest.raises(RunMismatchError, match="total_steps: checkpoint 2, this run 3"):
        loop_for(tiny_lm(0), args_for(run_dir, max_train_steps=3, resume_from_checkpoint="latest"), lm_data(22),
                 run_identity={"task": "sst2"}).fit()


def test_one_run_per_output_folder(tmp_path):
    """A folder in use: a second run exits at once, naming the holder; a dead holder leaves no stuck lock."""
    acc = create_accelerator(None, cpu=True)
    with RunLock(tmp_path / "run"):
        with pytest.raises(RunInUseError, match="in use"):
            with open_run_folder(tmp_path / "run", acc, None, False):
                pass
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from gpt1_hf.durable import RunLock; "
                               f"RunLock({str(tmp_path / 'dead')!r}).acquire(); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with open_run_folder(tmp_path / "dead", acc, None, False):
        pass


def test_fresh_run_into_a_folder_holding_a_run(tmp_path):
    """Refused without overwrite_output_dir; with it, the old run's files are gone before the new one starts."""
    acc = create_accelerator(None, cpu=True)
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "step-00000005").mkdir(parents=True)
    (run_dir / "results.json").write_text("{}")
    (run_dir / "best").mkdir()
    (run_dir / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already holds a run .*--overwrite_output_dir"):
        with open_run_folder(run_dir, acc, None, False):
            pass
    with open_run_folder(run_dir, acc, None, True):
        assert not (run_dir / "checkpoints").exists() and not (run_dir / "results.json").exists()
        assert not (run_dir / "best").exists()
    assert (run_dir / "notes.txt").read_text() == "mine"  # not a run's file: kept


def test_nonfinite_weights_are_refused_when_a_model_is_loaded(tmp_path):
    """A diverged run's saved model (NaN weights) is refused by the loaders of fine-tuning, pretraining and
    evaluation, naming the file, instead of training or evaluating on NaN."""
    from safetensors.torch import load_file, save_file

    from gpt1_hf.convert import load_as_gpt1

    model = tiny_lm(0)
    model.save_pretrained(tmp_path / "model")
    weights = load_file(tmp_path / "model" / "model.safetensors")
    weights["transformer.h.0.mlp.c_fc.weight"][0, 0] = float("inf")
    save_file(weights, tmp_path / "model" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"non-finite values in tensor 'transformer.h.0.mlp.c_fc.weight' of .*"
                                         r"model.safetensors"):
        load_as_gpt1(tmp_path / "model", GPT1ForSequenceClassification, num_labels=2)
    (tmp_path / "model" / "model.safetensors").write_bytes(b"\x00" * 20)  # truncated / corrupt
    with pytest.raises(ValueError, match=r"model.safetensors is not a readable safetensors file"):
        load_as_gpt1(tmp_path / "model", GPT1ForSequenceClassification, num_labels=2)


@pytest.mark.parametrize("shape", ["single", "choices"])
@pytest.mark.parametrize("as_hf_dataset", [True, False])
def test_prediction_batches_longest_first_and_returns_dataset_order(shape, as_hf_dataset):
    """`predict_logits` sorts examples by length (less padding) but returns logits and labels in dataset order:
    the same as predicting one example at a time, for flat and multiple-choice inputs, HF datasets and plain lists."""
    import datasets

    from gpt1_hf import GPT1ForMultipleChoice
    from gpt1_hf.data import GPT1Collator
    from gpt1_hf.evaluation import _longest_first, predict_logits

    torch.manual_seed(0)
    cls = GPT1ForSequenceClassification if shape == "single" else GPT1ForMultipleChoice
    model = cls(GPT1Config(**tiny_config_kwargs(num_labels=3))).eval()
    g = torch.Generator().manual_seed(1)
    lengths = [3, 11, 5, 11, 2, 8, 7, 4, 9]

    def seq(n):
        return torch.randint(0, 100, (n - 1,), generator=g).tolist() + [102]

    rows = [{"input_ids": seq(n) if shape == "single" else [seq(n), seq(max(2, n - 2))], "labels": i % 3}
            for i, n in enumerate(lengths)]
    data = datasets.Dataset.from_list(rows) if as_hf_dataset else rows
    acc, collate = create_accelerator("no", cpu=True), GPT1Collator(pad_token_id=103)
    with torch.no_grad():
        out = predict_logits(model, data, collate, acc, batch_size=4)
        one_by_one = predict_logits(model, data, collate, acc, batch_size=1)
    assert out["labels"].tolist() == [i % 3 for i in range(len(lengths))]
    torch.testing.assert_close(torch.from_numpy(out["logits"]), torch.from_numpy(one_by_one["logits"]),
                               rtol=1e-5, atol=1e-5)
    assert _longest_first(data)[:3] == [1, 3, 8]  # 11, 11 (dataset order kept for ties), 9
    assert _longest_first(datasets.Dataset.from_list([{"text": "a"}])) is None
