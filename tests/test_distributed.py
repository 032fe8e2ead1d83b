"""Multi-process training on CPUs (gloo) and the distributed configs (docs/distributed.md).

* 2 processes (`accelerate launch --config_file configs/multi_cpu.yaml scripts/finetune.py`) fine-tune a tiny GPT-1 on
  the SST-2 fixture; the trained weights and the evaluation metrics (15 dev examples: not divisible by 2, so
  `gather_for_metrics` must drop the padded tail) equal those of one process with the same global batch.
* FSDP: `configs/fsdp.yaml` is launched with 2 CPU processes. Accelerate never enables FSDP on CPU (the processes come
  up as MULTI_CPU -- asserted), so the worker below switches Accelerate's state to FSDP after the fact and runs the same
  `scripts/finetune.py`: Accelerate's own FSDP2 code path wraps every GPT1Block, trains and evaluates over gloo, and
  the weights/metrics equal the single-process run. Saving is stubbed in that worker: the training loop saves on the
  main process only, which under FSDP deadlocks (see docs/distributed.md).
* The FSDP / DeepSpeed / DDP configs parse with Accelerate's own launcher code and give the expected plugins.
* Pre-flight errors (gpt1_hf.distributed): GPU configs on a machine without CUDA, batch sizes that do not divide.

This file is also the FSDP worker script (``python tests/test_distributed.py fsdp-worker ...``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tasks"
CONFIGS = ROOT / "configs"
LAUNCH_TIMEOUT = 300

# one fine-tuning recipe for every run: fp32, no dropout (each process has its own RNG stream), 2 epochs x 5 updates
FINETUNE_ARGS = dict(
    task="sst2", data_dir=str(FIXTURES / "sst2"), max_length=64, num_train_epochs=2, global_batch_size=4,
    learning_rate=1e-3, warmup_ratio=0.1, clf_pdrop=0.0, aux_lm_weight=0.5, seed=0, mixed_precision="no",
    eval_batch_size=4, predict_splits=[],
)
TINY = dict(n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=64, embd_pdrop=0.0, attn_pdrop=0.0,
            resid_pdrop=0.0)


def _cli(args: dict) -> list[str]:
    out = []
    for key, value in args.items():
        if key == "predict_splits":
            out += ["--predict_splits", ",".join(value) or "none"]
        else:
            out += [f"--{key}", str(value)]
    return out


# ======================================================================================================================
# FSDP worker (runs under `accelerate launch --config_file configs/fsdp.yaml`, one copy per process)
# ======================================================================================================================


def _fsdp_worker(argv: list[str]) -> int:
    """scripts/finetune.py under Accelerate's FSDP code path on CPU processes; writes fsdp_report.json and the
    gathered weights to <output_dir>."""
    import torch
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    import gpt1_hf.distributed as distributed
    import gpt1_hf.training as training

    fsdp_env = {k: v for k, v in os.environ.items() if k.startswith("FSDP_") or k == "ACCELERATE_USE_FSDP"}
    report: dict = {"fsdp_env": fsdp_env}
    original_create = training.create_accelerator

    # the pre-flight check exists to refuse exactly this launch (FSDP without CUDA): bypass it here
    def no_check(*args, cpu=False, **kwargs):
        return distributed.LaunchInfo(config_file=None, engine="fsdp", num_processes=int(os.environ["WORLD_SIZE"]),
                                      requires_cuda=True, reason=None, cuda_available=False, cpu=cpu)

    for module in (distributed, training, sys.modules.get("gpt1_hf.finetuning")):
        if module is not None and hasattr(module, "check_launch_environment"):
            module.check_launch_environment = no_check

    def create_fsdp_accelerator(mixed_precision=None, cpu=False):
        acc = original_create(mixed_precision, cpu)
        report["distributed_type_from_accelerate"] = str(acc.distributed_type)
        # Accelerate only turns ACCELERATE_USE_FSDP into FSDP for accelerator process groups (accelerate/state.py);
        # on CPU the processes are MULTI_CPU. Switch to FSDP with the plugin the launcher's FSDP_* environment gives.
        # (PartialState too: every later AcceleratorState() copies PartialState's fields over its own)
        PartialState().distributed_type = acc.state.distributed_type = DistributedType.FSDP
        acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        return acc

    training.create_accelerator = create_fsdp_accelerator
    trainers = []
    original_init = training.Trainer.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        trainers.append(self)

    training.Trainer.__init__ = init
    # the loop saves on the main process only: under FSDP that deadlocks (the other ranks never join the gather)
    training.Trainer.save_model = lambda self, folder, extra=None: self.accelerator.wait_for_everyone()
    training.Trainer.save_checkpoint = lambda self: self.accelerator.wait_for_everyone()

    sys.path.insert(0, str(ROOT / "scripts"))
    import finetune as finetune_script

    finetune_script.main(argv)

    trainer = trainers[0]
    acc = trainer.accelerator
    from torch.distributed.fsdp import FSDPModule

    model = trainer.model
    report["distributed_type"] = str(acc.distributed_type)
    report["fsdp_version"] = acc.state.fsdp_plugin.fsdp_version
    report["fsdp_units"] = [name for name, m in model.named_modules() if isinstance(m, FSDPModule)]
    report["sharded_params"] = sorted(
        name for name, p in model.named_parameters() if type(p).__name__ == "DTensor" or
        type(getattr(p, "data", None)).__name__ == "DTensor"
    )
    report["world_size"] = acc.num_processes
    state = acc.get_state_dict(model)  # collective: every process
    if acc.is_main_process:
        from safetensors.torch import save_file

        out = Path(argv[argv.index("--output_dir") + 1])
        report["state_dict_types"] = sorted({type(v).__name__ for v in state.values()})
        (out / "fsdp_report.json").write_text(json.dumps(report, indent=2))
        save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(out / "fsdp_weights.safetensors"))
        (out / "fsdp_report.json").write_text(json.dumps(report, indent=2))
    acc.wait_for_everyone()
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "fsdp-worker":
    sys.exit(_fsdp_worker(sys.argv[2:]))


# ======================================================================================================================
# Tests
# ======================================================================================================================

import pytest  # noqa: E402
import torch  # noqa: E402


def _launch(cmd: list[str], timeout: int = LAUNCH_TIMEOUT) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    for name in [k for k in env if k.startswith(("ACCELERATE_", "FSDP_"))]:
        env.pop(name)  # a clean launch: only the config file decides
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _accelerate(config: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / config),
            "--main_process_port", "0", *args]


def _check(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"launch failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny GPT1LMHeadModel (dropout 0) + a 300-entry GPT1Tokenizer trained on the fixture texts."""
    from gpt1_hf import GPT1Config, GPT1LMHeadModel
    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    texts = [p.read_text(encoding="utf-8-sig") for p in sorted(FIXTURES.rglob("*"))
             if p.is_file() and p.suffix in (".tsv", ".jsonl", ".csv", ".txt")]
    tok = GPT1Tokenizer(vocab={"<unk>": 0, "a</w>": 1}, merges=[]).train_new_from_iterator([texts], 300)
    torch.manual_seed(0)
    model = GPT1LMHeadModel(GPT1Config(vocab_size=len(tok), **TINY))
    path = tmp_path_factory.mktemp("tiny_pretrained")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def single_run(model_dir, tmp_path_factory):
    """One process, global batch 4 = 2 per micro-batch x 2 accumulation (the micro-batches the 2 processes see)."""
    from gpt1_hf.finetuning import FinetuneArguments, finetune

    out = tmp_path_factory.mktemp("single")
    results = finetune(FinetuneArguments(model_name_or_path=str(model_dir), output_dir=str(out),
                                         per_device_batch_size=2, progress_bar=False, **FINETUNE_ARGS))
    return out, results


@pytest.fixture(scope="module")
def ddp_run(model_dir, tmp_path_factory):
    """2 CPU processes (gloo) via the multi-CPU config, scripts/finetune.py unchanged, 2 examples per process."""
    out = tmp_path_factory.mktemp("ddp")
    proc = _launch(_accelerate("multi_cpu.yaml", str(ROOT / "scripts" / "finetune.py"),
                               "--model_name_or_path", str(model_dir), "--output_dir", str(out),
                               "--per_device_batch_size", "2", "--no_progress_bar", *_cli(FINETUNE_ARGS)))
    _check(proc)
    return out, json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def fsdp_run(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    proc = _launch(_accelerate("fsdp.yaml", "--num_processes", "2", "--mixed_precision", "no",
                               str(Path(__file__).resolve()), "fsdp-worker",
                               "--model_name_or_path", str(model_dir), "--output_dir", str(out),
                               "--per_device_batch_size", "2", "--no_progress_bar", "--no_save_model",
                               *_cli(FINETUNE_ARGS)))
    _check(proc)
    return out, json.loads((out / "results.json").read_text()), json.loads((out / "fsdp_report.json").read_text())


def _assert_same_weights(reference: dict, other: dict, initial: dict) -> None:
    missing = sorted(set(reference) - set(other))
    assert not missing, f"missing tensors: {missing}"
    moved = 0.0
    for name, ref in reference.items():
        torch.testing.assert_close(other[name].float(), ref.float(), rtol=1e-4, atol=2e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")
        if name in initial:
            moved = max(moved, float((ref.float() - initial[name].float()).abs().max()))
    assert moved > 1e-3, "training did not change the weights"


def _assert_same_metrics(ref_results: dict, other_results: dict) -> None:
    assert other_results["sizes"]["validation"] == ref_results["sizes"]["validation"] == 15  # odd: padded tail
    assert set(other_results["metrics"]) == set(ref_results["metrics"])
    for key, value in ref_results["metrics"].items():
        assert other_results["metrics"][key] == pytest.approx(value, abs=1e-6), key
    # evaluated after each epoch: the per-epoch metrics agree too
    assert len(other_results["eval_history"]) == len(ref_results["eval_history"]) == 2
    for ours, ref in zip(other_results["eval_history"], ref_results["eval_history"], strict=True):
        assert ours["step"] == ref["step"]
        for key in ref_results["metrics"]:
            assert ours[key] == pytest.approx(ref[key], abs=1e-6), key
    ref_losses = [e["loss"] for e in ref_results["log_history"]]
    assert [e["loss"] for e in other_results["log_history"]] == pytest.approx(ref_losses, rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_two_processes_match_single_process(model_dir, single_run, ddp_run):
    ref_dir, ref = single_run
    ddp_dir, ddp = ddp_run
    assert ddp["batch"] == {"per_device": 2, "processes": 2, "gradient_accumulation_steps": 1, "global": 4}
    assert ref["batch"] == {"per_device": 2, "processes": 1, "gradient_accumulation_steps": 2, "global": 4}
    assert ddp["global_step"] == ref["global_step"] == ddp["total_steps"] == 10  # 20 examples / 4 x 2 epochs
    assert ddp["examples_seen"] == ref["examples_seen"] == 40
    assert ddp["tokens_seen"] == ref["tokens_seen"]
    _assert_same_weights(_weights(ref_dir / "model.safetensors"), _weights(ddp_dir / "model.safetensors"),
                         _weights(model_dir / "model.safetensors"))
    _assert_same_metrics(ref, ddp)
    # the gathered predictions are the same, in dataset order, without the duplicated tail
    ref_pred = sorted((ref_dir / "predictions" / "validation").iterdir())
    ddp_pred = sorted((ddp_dir / "predictions" / "validation").iterdir())
    assert [p.name for p in ddp_pred] == [p.name for p in ref_pred]
    for a, b in zip(ref_pred, ddp_pred, strict=True):
        assert a.read_text() == b.read_text()
    # only the main process wrote: one results.json, no leftovers of concurrent atomic writes
    assert not [p.name for p in ddp_dir.iterdir() if p.name.startswith(".tmp")]
    assert (ddp_dir / "best" / "model.safetensors").is_file()
    assert (ddp_dir / "checkpoints" / "latest").is_file()


@pytest.mark.slow
def test_fsdp_on_cpu_wraps_gpt1_blocks_and_matches_single_process(model_dir, single_run, fsdp_run):
    ref_dir, ref = single_run
    out, fsdp, report = fsdp_run
    # what `accelerate launch --config_file configs/fsdp.yaml` exports, and what Accelerate makes of it on CPU
    assert report["fsdp_env"]["ACCELERATE_USE_FSDP"] == "true"
    assert report["fsdp_env"]["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "GPT1Block"
    assert report["distributed_type_from_accelerate"] == "DistributedType.MULTI_CPU"  # FSDP is ignored on CPU
    assert report["distributed_type"] == "DistributedType.FSDP" and report["fsdp_version"] == 2
    assert report["world_size"] == 2
    # the wrap unit is the GPT-1 block (never split inside); the root holds the rest. (Accelerate >= 1.1x also carves
    # the tied tokens_embed + lm_head into one extra group of their own.)
    units = report["fsdp_units"]
    assert "" in units and {"transformer.h.0", "transformer.h.1"} <= set(units)
    assert not [u for u in units if u.startswith("transformer.h.") and u.count(".") > 2]
    assert "transformer.h.0.attn.c_attn.weight" in report["sharded_params"]
    assert fsdp["batch"] == {"per_device": 2, "processes": 2, "gradient_accumulation_steps": 1, "global": 4}
    _assert_same_weights(_weights(ref_dir / "model.safetensors"), _weights(out / "fsdp_weights.safetensors"),
                         _weights(model_dir / "model.safetensors"))
    _assert_same_metrics(ref, fsdp)


@pytest.mark.slow
def test_batch_that_does_not_divide_fails_before_training_in_two_processes(model_dir, tmp_path):
    """training.resolve_batch_config (called by the Trainer) refuses it with the numbers, on every process."""
    proc = _launch(_accelerate("multi_cpu.yaml", str(ROOT / "scripts" / "finetune.py"),
                               "--model_name_or_path", str(model_dir), "--output_dir", str(tmp_path / "out"),
                               "--task", "sst2", "--data_dir", str(FIXTURES / "sst2"), "--max_length", "64",
                               "--global_batch_size", "6", "--per_device_batch_size", "2", "--no_progress_bar"))
    assert proc.returncode != 0
    assert "global_batch_size=6 is not a multiple of per_device_batch_size (2) x num_processes (2) = 4" in proc.stderr
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.slow
def test_gpu_config_on_cpu_machine_is_refused_under_accelerate_launch():
    """The launcher's --config_file is found and named; the fix is given."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = _launch(_accelerate("ddp_gpu.yaml", "--num_processes", "1", "-m", "gpt1_hf.distributed",
                               "--global_batch_size", "32"), timeout=120)
    assert proc.returncode != 0
    err = proc.stderr
    assert "configs/ddp_gpu.yaml asks for GPUs" in err
    assert "configs/multi_cpu.yaml" in err and "--cpu" in err


# ----------------------------------------------------------------------------------------------------------------------
# Configs parse (Accelerate's own launcher code) and give the expected engines
# ----------------------------------------------------------------------------------------------------------------------


def _launch_env(config: str, *extra: str):
    """What `accelerate launch --config_file configs/<config> <extra> script.py` resolves and exports."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / config), *extra, "scripts/finetune.py"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    if args.use_deepspeed:  # as accelerate.commands.launch.launch_command does
        fields = list(defaults.deepspeed_config.keys()) if defaults else []
        args.deepspeed_fields_from_accelerate_config = ",".join(fields + (["mixed_precision"] if mp_from_config else []))
        _, env = prepare_deepspeed_cmd_env(args)
    else:
        env = prepare_multi_gpu_env(args)
    return args, {k: v for k, v in env.items() if os.environ.get(k) != v}


@pytest.fixture
def tiny_classifier():
    from gpt1_hf import GPT1Config, GPT1ForSequenceClassification

    return GPT1ForSequenceClassification(GPT1Config(vocab_size=104, num_labels=2, **TINY))


def test_ddp_gpu_config_parses():
    args, env = _launch_env("ddp_gpu.yaml")
    assert args.multi_gpu and not args.use_fsdp and not args.use_deepspeed and not args.cpu
    assert args.num_processes == 8 and args.mixed_precision == "bf16"
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"


def test_multi_node_launch_arguments():
    """The multi-node command of docs/distributed.md: torchrun gets nnodes/node_rank/master address."""
    args, env = _launch_env("ddp_gpu.yaml", "--num_machines", "2", "--num_processes", "16", "--machine_rank", "1",
                            "--main_process_ip", "10.0.0.1", "--main_process_port", "29500")
    assert (int(args.nnodes), int(args.node_rank)) == (2, 1)
    endpoint = getattr(args, "rdzv_endpoint", None) or f"{args.master_addr}:{args.master_port}"
    assert endpoint == "10.0.0.1:29500"
    assert int(args.nproc_per_node) == 8  # 16 processes over 2 machines


def test_fsdp_config_parses_and_wraps_gpt1_block(monkeypatch, tiny_classifier):
    from accelerate.utils import FullyShardedDataParallelPlugin

    from gpt1_hf.modeling_gpt1 import GPT1Block, GPT1PreTrainedModel

    args, env = _launch_env("fsdp.yaml")
    assert args.use_fsdp and args.num_processes == 8
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["FSDP_AUTO_WRAP_POLICY"] == "TRANSFORMER_BASED_WRAP"
    assert env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == "GPT1Block"
    assert GPT1PreTrainedModel._no_split_modules == ["GPT1Block"]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    plugin = FullyShardedDataParallelPlugin()
    plugin.set_auto_wrap_policy(tiny_classifier)
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert plugin.auto_wrap_policy.keywords["transformer_layer_cls"] == {GPT1Block}
    assert str(plugin.state_dict_type).endswith("FULL_STATE_DICT")
    # without the explicit class name Accelerate falls back to the model's _no_split_modules: the same unit
    monkeypatch.delenv("FSDP_TRANSFORMER_CLS_TO_WRAP")
    plugin = FullyShardedDataParallelPlugin()
    plugin.set_auto_wrap_policy(tiny_classifier)
    assert plugin.auto_wrap_policy.keywords["transformer_layer_cls"] == {GPT1Block}


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_config_parses(monkeypatch, stage):
    args, env = _launch_env(f"deepspeed_zero{stage}.yaml")
    assert args.use_deepspeed and args.num_processes == 8
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
    assert env["ACCELERATE_DEEPSPEED_CONFIG_FILE"] == f"configs/deepspeed_zero{stage}.json"
    assert "mixed_precision" not in env["ACCELERATE_CONFIG_DS_FIELDS"].split(",")
    ds = json.loads((CONFIGS / f"deepspeed_zero{stage}.json").read_text())
    assert ds["zero_optimization"]["stage"] == stage
    assert "optimizer" not in ds and "scheduler" not in ds  # the loop's AdamW and LR schedule are used
    if stage == 3:
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    from accelerate.utils import DeepSpeedPlugin  # reads the config without deepspeed installed


    monkeypatch.chdir(ROOT)  # the JSON path is relative to the launch directory
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == stage
    assert plugin.deepspeed_config["train_micro_batch_size_per_gpu"] == "auto"
    plugin.set_mixed_precision("bf16")
    assert plugin.deepspeed_config["bf16"]["enabled"] is True


# ----------------------------------------------------------------------------------------------------------------------
# Pre-flight checks (in-process)
# ----------------------------------------------------------------------------------------------------------------------


def test_describe_configs():
    from gpt1_hf.distributed import describe_config

    expected = {"multi_cpu.yaml": ("ddp", False), "ddp_gpu.yaml": ("ddp", True), "fsdp.yaml": ("fsdp", True),
                "deepspeed_zero2.yaml": ("deepspeed", True), "deepspeed_zero3.yaml": ("deepspeed", True)}
    for name, (engine, requires_cuda) in expected.items():
        info = describe_config(str(CONFIGS / name))
        assert (info.engine, info.requires_cuda) == (engine, requires_cuda), name


def test_gpu_config_without_cuda_names_config_and_fix():
    from gpt1_hf.distributed import LaunchConfigError, check_launch_environment

    cfg = str(CONFIGS / "ddp_gpu.yaml")
    with pytest.raises(LaunchConfigError) as e:
        check_launch_environment(config_file=cfg, cuda_available=False, environ={})
    msg = str(e.value)
    assert "ddp_gpu.yaml asks for GPUs" in msg and "configs/multi_cpu.yaml" in msg and "--cpu" in msg
    # --cpu: the same config runs its processes on CPUs (DDP over gloo)
    info = check_launch_environment(config_file=cfg, cuda_available=False, cpu=True, environ={})
    assert info.engine == "ddp" and info.num_processes == 8
    # the multi-CPU config is fine without CUDA
    info = check_launch_environment(config_file=str(CONFIGS / "multi_cpu.yaml"), cuda_available=False,
                                    environ={"WORLD_SIZE": "2"})
    assert (info.engine, info.num_processes, info.requires_cuda) == ("ddp", 2, False)
    # and the GPU config is fine with CUDA
    assert check_launch_environment(config_file=cfg, cuda_available=True, environ={}).engine == "ddp"


@pytest.mark.parametrize("config, env_name, label", [("fsdp.yaml", "ACCELERATE_USE_FSDP", "FSDP"),
                                                     ("deepspeed_zero3.yaml", "ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_sharded_engines_refused_on_cpu(config, env_name, label):
    from gpt1_hf.distributed import LaunchConfigError, check_launch_environment

    for kwargs in (dict(cuda_available=False), dict(cuda_available=True, cpu=True)):
        with pytest.raises(LaunchConfigError, match=f"asks for {label}.*silently train with plain DDP"):
            check_launch_environment(config_file=str(CONFIGS / config), environ={}, **kwargs)
    # from the launcher's environment alone (config not found, e.g. a custom launcher)
    with pytest.raises(LaunchConfigError, match=f"{env_name}=true"):
        check_launch_environment(environ={env_name: "true", "WORLD_SIZE": "2"}, cuda_available=False,
                                 locate_config=False)


def test_sharded_engines_on_gpu_need_trainer_support():
    from gpt1_hf.distributed import LaunchConfigError, check_launch_environment, sharded_engines_supported

    cfg = str(CONFIGS / "fsdp.yaml")
    if sharded_engines_supported():
        assert check_launch_environment(config_file=cfg, cuda_available=True, environ={}).engine == "fsdp"
    else:
        with pytest.raises(LaunchConfigError, match="does not support yet.*get_state_dict"):
            check_launch_environment(config_file=cfg, cuda_available=True, environ={})


def test_batch_sizes_checked_with_the_launch_process_count():
    from gpt1_hf.distributed import check_batch_sizes, preflight
    from gpt1_hf.training import resolve_batch_config

    with pytest.raises(ValueError, match=r"global_batch_size=32 is not a multiple of per_device_batch_size \(3\) x "
                                         r"num_processes \(8\) = 24"):
        check_batch_sizes(3, 32, environ={"WORLD_SIZE": "8"})
    assert check_batch_sizes(2, 32, environ={"WORLD_SIZE": "8"}) == resolve_batch_config(2, 32, 8)
    assert check_batch_sizes(None, 32, environ={}).per_device_batch_size == 32
    info, batch = preflight(4, 32, config_file=str(CONFIGS / "multi_cpu.yaml"), cuda_available=False,
                            environ={"WORLD_SIZE": "2"})
    assert (batch.per_device_batch_size, batch.num_processes, batch.gradient_accumulation_steps) == (4, 2, 4)
    with pytest.raises(ValueError, match="not divisible by num_processes"):
        preflight(None, 5, config_file=str(CONFIGS / "multi_cpu.yaml"), cuda_available=False,
                  environ={"WORLD_SIZE": "2"})


def test_deepspeed_with_accumulation_refused(monkeypatch):
    import gpt1_hf.training as training
    from gpt1_hf.distributed import LaunchConfigError, preflight

    monkeypatch.setattr(training.Trainer, "supports_sharded_engines", True, raising=False)
    cfg = str(CONFIGS / "deepspeed_zero2.yaml")
    info, batch = preflight(4, 32, config_file=cfg, cuda_available=True, environ={"WORLD_SIZE": "8"})
    assert info.engine == "deepspeed" and batch.gradient_accumulation_steps == 1
    with pytest.raises(LaunchConfigError, match="--per_device_batch_size 4"):
        preflight(2, 32, config_file=cfg, cuda_available=True, environ={"WORLD_SIZE": "8"})
