"""bf16 with fp32 master weights (gpt1_hf.precision) against Accelerate's autocast, and its resume."""

import pytest
import torch
from conftest import tiny_config_kwargs

from gpt1_hf import GPT1Config, GPT1LMHeadModel
from gpt1_hf.arguments import RunArguments
from gpt1_hf.distributed import create_accelerator
from gpt1_hf.precision import MasterWeightsAdamW, bf16_master_weights
from gpt1_hf.training import TrainingLoop

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(n=64, length=16):
    g = torch.Generator().manual_seed(0)
    # a learnable pattern (each row counts up from a random start) so that the loss falls over the run
    starts = torch.randint(0, 60, (n,), generator=g)
    return [{"input_ids": (torch.arange(length) + s).tolist()} for s in starts]


def _collate(features):
    ids = torch.tensor([f["input_ids"] for f in features])
    return {"input_ids": ids, "labels": ids}


def _run(tmp_path, impl, **kw):
    torch.manual_seed(0)
    model = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0)))
    args = RunArguments(output_dir=str(tmp_path / impl), learning_rate=3e-3, per_device_train_batch_size=8,
                        global_batch_size=8, disable_tqdm=True, logging_steps=1, weight_decay=0.01, max_grad_norm=1.0,
                        lr_scheduler_type="linear", warmup_ratio=0.05, mixed_precision="bf16",
                        bf16_implementation=impl, cpu=True, **{"num_train_epochs": 1, "max_train_steps": 300, **kw})
    acc = create_accelerator("bf16", cpu=True, bf16_implementation=impl)
    loop = TrainingLoop(model, args, _data(), _collate, acc)
    result = loop.fit()
    loop.trained_with = (acc.mixed_precision, next(loop.model.parameters()).dtype)  # the state is process-wide
    return loop, result


def test_master_weights_follow_autocast_over_300_updates(tmp_path):
    """The loss curve of bf16 working weights + fp32 masters stays within 3% (mean) of autocast's over 300 updates,
    and both learn; the model is bf16 while training and the saved one holds the fp32 masters."""
    auto_loop, auto = _run(tmp_path, "autocast")
    mw_loop, mw = _run(tmp_path, "master_weights")
    assert auto_loop.trained_with == ("bf16", torch.float32)  # autocast: fp32 weights
    assert mw_loop.trained_with == ("no", torch.bfloat16)  # no autocast: the model itself is bf16
    a = torch.tensor([e["loss"] for e in auto.log_history])
    m = torch.tensor([e["loss"] for e in mw.log_history])
    assert len(a) == len(m) == 300
    assert a[-20:].mean() < 0.5 * a[:20].mean() and m[-20:].mean() < 0.5 * m[:20].mean()  # both learned
    assert float(((m - a).abs() / a).mean()) < 0.03
    final = mw_loop.finalize_model()
    assert next(final.parameters()).dtype == torch.float32
    masters = mw_loop.optimizer.optimizer.masters
    assert torch.equal(final.transformer.h[0].attn.c_attn.weight, masters[[
        p is mw_loop.model.transformer.h[0].attn.c_attn.weight for p in mw_loop.optimizer.optimizer.working
    ].index(True)])


def test_master_weights_resume_bitwise(tmp_path):
    """The masters travel in the optimizer's state: a run stopped after 5 updates and resumed ends bitwise equal."""
    ref_loop, _ = _run(tmp_path / "ref", "master_weights", max_train_steps=10)
    stopped_loop, r = _run(tmp_path / "run", "master_weights", max_train_steps=10, max_time=0.0)
    assert r.global_step == 1
    resumed_loop, r2 = _run(tmp_path / "run", "master_weights", max_train_steps=10, resume_from_checkpoint="latest")
    assert r2.global_step == 10
    ref, res = ref_loop.finalize_model().state_dict(), resumed_loop.finalize_model().state_dict()
    assert all(torch.equal(ref[k], res[k]) for k in ref)


def test_master_weights_optimizer_state_dict_round_trip():
    model = torch.nn.Linear(4, 3).to(torch.bfloat16)
    opt = MasterWeightsAdamW(model.parameters(), lr=0.1)
    model(torch.ones(2, 4, dtype=torch.bfloat16)).sum().backward()
    opt.step()
    state = opt.state_dict()
    assert [m.dtype for m in state["master_weights"]] == [torch.float32, torch.float32]
    other = MasterWeightsAdamW(torch.nn.Linear(4, 3).to(torch.bfloat16).parameters(), lr=0.1)
    other.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(other.masters, opt.masters, strict=True))
    assert all(torch.equal(w, m.to(torch.bfloat16)) for w, m in zip(other.working, other.masters, strict=True))


def test_master_weights_refused_under_fsdp(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="master_weights is for one process or DDP"):
        bf16_master_weights("bf16", "master_weights", cpu=True)
    assert not bf16_master_weights("bf16", "auto", cpu=True)
