"""Multi-process training on CPUs (gloo) and the distributed configs (docs/distributed.md).

* 2 processes (`accelerate launch --config_file configs/multi_cpu.yaml scripts/finetune.py`) fine-tune a tiny GPT-1 on
  the SST-2 fixture; the trained weights and the evaluation metrics (15 dev examples: not divisible by 2, so
  `gather_for_metrics` must drop the padded tail) equal those of one process with the same global batch.
* FSDP: `configs/fsdp.yaml` launched with 2 processes and the script's `--cpu` runs FSDP2 over gloo
  (`gpt1_hf.distributed.create_accelerator` switches the CPU processes, which Accelerate leaves as MULTI_CPU, to FSDP).
  `scripts/finetune.py` unchanged: checkpoints, best/ and the final folder are saved from weights gathered on every
  process; weights/metrics equal the single-process run; a resumed run ends bitwise equal to the uninterrupted one.
  `scripts/pretrain.py` with the shipped bf16 and gradient accumulation: loss goes down, the folder loads.
* The FSDP / DeepSpeed / DDP configs parse with Accelerate's own launcher code and give the expected plugins.
* Pre-flight errors (gpt1_hf.distributed): GPU configs on a machine without CUDA, DeepSpeed on CPU or not installed,
  batch sizes that do not divide.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tasks"
CONFIGS = ROOT / "configs"
LAUNCH_TIMEOUT = 300

# one fine-tuning recipe for every run: fp32, no dropout (each process has its own RNG stream), 2 epochs x 5 updates
FINETUNE_ARGS = dict(
    task_name="sst2", data_dir=str(FIXTURES / "sst2"), max_length=64, num_train_epochs=2, global_batch_size=4,
    learning_rate=1e-3, warmup_ratio=0.1, clf_pdrop=0.0, aux_lm_weight=0.5, seed=0, mixed_precision="no",
    per_device_eval_batch_size=4, predict_splits=["none"], checkpointing_steps="epoch",
)
TINY = dict(n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=64, embd_pdrop=0.0, attn_pdrop=0.0,
            resid_pdrop=0.0)


def _cli(args: dict) -> list[str]:
    out = []
    for key, value in args.items():
        if isinstance(value, list):
            out += [f"--{key}", *value]
        else:
            out += [f"--{key}", str(value)]
    return out


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
                                         per_device_train_batch_size=2, disable_tqdm=True, **FINETUNE_ARGS))
    return out, results


@pytest.fixture(scope="module")
def ddp_run(model_dir, tmp_path_factory):
    """2 CPU processes (gloo) via the multi-CPU config, scripts/finetune.py unchanged, 2 examples per process."""
    out = tmp_path_factory.mktemp("ddp")
    proc = _launch(_accelerate("multi_cpu.yaml", str(ROOT / "scripts" / "finetune.py"),
                               "--model_name_or_path", str(model_dir), "--output_dir", str(out),
                               "--per_device_train_batch_size", "2", "--disable_tqdm", *_cli(FINETUNE_ARGS)))
    _check(proc)
    return out, json.loads((out / "results.json").read_text())


def _fsdp_finetune(model_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """configs/fsdp.yaml as shipped, with the CPU overrides: 2 processes, fp32, and the script's --cpu (FSDP2 over
    gloo on CPU processes, see gpt1_hf.distributed.create_accelerator)."""
    return _launch(_accelerate("fsdp.yaml", "--num_processes", "2", "--mixed_precision", "no",
                               str(ROOT / "scripts" / "finetune.py"), "--cpu",
                               "--model_name_or_path", str(model_dir), "--output_dir", str(out),
                               "--per_device_train_batch_size", "2", "--disable_tqdm", *_cli(FINETUNE_ARGS), *extra))


@pytest.fixture(scope="module")
def fsdp_run(model_dir, tmp_path_factory):
    """2 CPU processes under configs/fsdp.yaml, scripts/finetune.py unchanged: checkpoints after each epoch, best/ and
    the final model, all saved through the gathering path."""
    out = tmp_path_factory.mktemp("fsdp")
    _check(_fsdp_finetune(model_dir, out))
    return out, json.loads((out / "results.json").read_text())


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


def _assert_fsdp_checkpoint(folder: Path) -> dict:
    """A complete checkpoint written under FSDP2 that sharded every GPT1Block over 2 processes."""
    from gpt1_hf.run_folder import find_checkpoint

    assert find_checkpoint(folder.parent.parent, str(folder)) == folder
    state = json.loads((folder / "training_state.json").read_text())
    assert state["run"]["engine"] == "fsdp"
    fsdp = state["fsdp"]
    assert fsdp["version"] == 2 and fsdp["processes"] == 2 and fsdp["sharded_parameters"] > 0
    # the wrap unit is the GPT-1 block (never split inside); the root holds the rest
    assert "" in fsdp["units"] and {"transformer.h.0", "transformer.h.1"} <= set(fsdp["units"])
    assert not [u for u in fsdp["units"] if u.startswith("transformer.h.") and u.count(".") > 2]
    # Accelerate's FSDP files (full state dicts under FULL_STATE_DICT) and the gathered model for from_pretrained
    optim = torch.load(folder / "optimizer.bin", map_location="cpu", weights_only=True)
    assert optim["state"] and (folder / "pytorch_model_fsdp.bin").is_file()
    assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    return state


@pytest.mark.slow
def test_fsdp_finetune_saves_resumes_and_matches_single_process(model_dir, single_run, fsdp_run, tmp_path):
    """configs/fsdp.yaml on 2 CPU processes (FSDP2 over gloo): the final folder, best/ and every checkpoint are written
    by the main process from weights gathered on all processes; they equal the single-process run with the same
    global batch; the final folder loads with AutoModelForSequenceClassification; a run resumed from the epoch-1
    checkpoint (weights + full optimizer state broadcast and re-sharded) ends bitwise equal to the uninterrupted one."""
    from transformers import AutoModelForSequenceClassification

    ref_dir, ref = single_run
    out, fsdp = fsdp_run
    assert fsdp["batch"] == {"per_device": 2, "processes": 2, "gradient_accumulation_steps": 1, "global": 4}
    assert fsdp["global_step"] == ref["global_step"] == 10 and fsdp["examples_seen"] == ref["examples_seen"] == 40
    initial = _weights(model_dir / "model.safetensors")
    final = _weights(out / "model.safetensors")
    assert sorted(final) == sorted(_weights(ref_dir / "model.safetensors"))  # same tensors (tied lm_head once)
    _assert_same_weights(_weights(ref_dir / "model.safetensors"), final, initial)
    _assert_same_metrics(ref, fsdp)
    # checkpoints after each epoch (steps 5 and 10): complete, FSDP, same weights as the single-process ones
    for step in (5, 10):
        name = f"step-{step:08d}"
        _assert_fsdp_checkpoint(out / "checkpoints" / name)
        _assert_same_weights(_weights(ref_dir / "checkpoints" / name / "model.safetensors"),
                             _weights(out / "checkpoints" / name / "model.safetensors"), initial)
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000010"
    assert (out / "best" / "model.safetensors").is_file()
    assert not [p.name for p in out.rglob(".tmp*")]  # atomic saves left nothing behind
    # the final folder is a normal gpt1 folder
    model = AutoModelForSequenceClassification.from_pretrained(out)
    for name, tensor in model.state_dict().items():
        if name in final:
            torch.testing.assert_close(tensor, final[name], rtol=0, atol=0)

    # resume from the epoch-1 checkpoint in a fresh output folder: the same end, bitwise
    resumed = tmp_path / "resumed"
    shutil.copytree(out / "checkpoints" / "step-00000005", resumed / "checkpoints" / "step-00000005")
    (resumed / "checkpoints" / "latest").write_text("step-00000005")
    _check(_fsdp_finetune(model_dir, resumed, "--resume_from_checkpoint", "latest"))
    again = json.loads((resumed / "results.json").read_text())
    assert again["global_step"] == 10 and again["metrics"] == fsdp["metrics"]
    for name, tensor in final.items():
        assert torch.equal(_weights(resumed / "model.safetensors")[name], tensor), name


@pytest.mark.slow
def test_fsdp_pretraining_bf16_with_accumulation(tmp_path):
    """scripts/pretrain.py under configs/fsdp.yaml as shipped (bf16) on 2 CPU processes, 2 micro-batches per update
    (accumulation under FSDP2: no gradient sync but the last): the held-out loss goes down (bf16 FSDP numerics differ
    from one process, so no weight comparison), the periodic checkpoints are FSDP ones, and the final folder loads with
    AutoModelForCausalLM, lm_head tied to the token embedding."""
    import random

    from transformers import AutoModelForCausalLM

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    rng = random.Random(0)
    words = ["anna", "ben", "sees", "likes", "a cat", "the ball", "near the lake", "in the garden"]
    for i in range(3):
        (corpus / f"book_{i}.txt").write_text("\n".join(
            " ".join(f"{rng.choice(words[:2])} {rng.choice(words[2:4])} {rng.choice(words[4:6])} "
                     f"{rng.choice(words[6:])}." for _ in range(6)) for _ in range(25)))
    out = tmp_path / "out"
    proc = _launch(_accelerate("fsdp.yaml", "--num_processes", "2", str(ROOT / "scripts" / "pretrain.py"), "--cpu",
                               "--train_files", str(corpus), "--train_tokenizer", "--vocab_size", "120", "--block_size",
                               "32", "--n_embd", "32", "--n_layer", "2", "--n_head", "4", "--global_batch_size", "8",
                               "--per_device_train_batch_size", "2", "--learning_rate", "3e-3", "--max_train_steps", "8",
                               "--eval_steps", "4", "--checkpointing_steps", "4", "--validation_split_percentage", "10",
                               "--output_dir", str(out), "--cache_dir", str(tmp_path / "cache"), "--disable_tqdm",
                               "--no_plot", "--seed", "0", "--dropout", "0"))
    _check(proc)
    results = json.loads((out / "results.json").read_text())
    assert results["batch"]["processes"] == 2 and results["batch"]["gradient_accumulation_steps"] == 2
    assert results["global_step"] == 8
    assert results["final_heldout"]["loss"] < results["initial_heldout"]["loss"] - 0.2
    for step in (4, 8):
        _assert_fsdp_checkpoint(out / "checkpoints" / f"step-{step:08d}")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.lm_head.weight is model.transformer.tokens_embed.weight
    weights = _weights(out / "model.safetensors")
    assert "lm_head.weight" not in weights  # stored once, as save_pretrained does for a plain model
    torch.testing.assert_close(model.transformer.tokens_embed.weight, weights["transformer.tokens_embed.weight"])


@pytest.mark.slow
def test_batch_that_does_not_divide_fails_before_training_in_two_processes(model_dir, tmp_path):
    """distributed.resolve_batch_config (called by the loop) refuses it with the numbers, on every process."""
    proc = _launch(_accelerate("multi_cpu.yaml", str(ROOT / "scripts" / "finetune.py"),
                               "--model_name_or_path", str(model_dir), "--output_dir", str(tmp_path / "out"),
                               "--task_name", "sst2", "--data_dir", str(FIXTURES / "sst2"), "--max_length", "64",
                               "--global_batch_size", "6", "--per_device_train_batch_size", "2", "--disable_tqdm"))
    assert proc.returncode != 0
    assert "--global_batch_size 6 is not a multiple of --per_device_train_batch_size 2 x 2 processes = 4" in proc.stderr
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


def test_deepspeed_refused_on_cpu():
    """Accelerate never enables DeepSpeed for CPU processes: the run would silently be DDP."""
    from gpt1_hf.distributed import LaunchConfigError, check_launch_environment

    for kwargs in (dict(cuda_available=False), dict(cuda_available=True, cpu=True)):
        with pytest.raises(LaunchConfigError, match="asks for DeepSpeed.*silently train with plain DDP"):
            check_launch_environment(config_file=str(CONFIGS / "deepspeed_zero3.yaml"), environ={},
                                     deepspeed_installed=True, **kwargs)
    # from the launcher's environment alone (config not found, e.g. a custom launcher)
    with pytest.raises(LaunchConfigError, match="ACCELERATE_USE_DEEPSPEED=true"):
        check_launch_environment(environ={"ACCELERATE_USE_DEEPSPEED": "true", "WORLD_SIZE": "2"},
                                 cuda_available=False, locate_config=False)


def test_fsdp_on_cpu_needs_the_cpu_flag():
    """Without CUDA, configs/fsdp.yaml needs the script's --cpu (then FSDP2 runs over gloo, see the launch tests)."""
    from gpt1_hf.distributed import LaunchConfigError, check_launch_environment

    cfg = str(CONFIGS / "fsdp.yaml")
    with pytest.raises(LaunchConfigError, match="asks for FSDP on GPUs.*Add --cpu.*configs/multi_cpu.yaml"):
        check_launch_environment(config_file=cfg, cuda_available=False, environ={})
    with pytest.raises(LaunchConfigError, match="ACCELERATE_USE_FSDP=true.*Add --cpu"):
        check_launch_environment(environ={"ACCELERATE_USE_FSDP": "true", "WORLD_SIZE": "2"}, cuda_available=False,
                                 locate_config=False)
    for kwargs in (dict(cuda_available=False), dict(cuda_available=True)):
        info = check_launch_environment(config_file=cfg, cpu=True, environ={"WORLD_SIZE": "2"}, **kwargs)
        assert (info.engine, info.num_processes) == ("fsdp", 2)


def test_sharded_engines_accepted_on_gpu_deepspeed_only_when_installed():
    from gpt1_hf.distributed import LaunchConfigError, check_launch_environment, sharded_engines_supported

    assert sharded_engines_supported()
    assert check_launch_environment(config_file=str(CONFIGS / "fsdp.yaml"), cuda_available=True,
                                    environ={}).engine == "fsdp"
    for stage in (2, 3):
        cfg = str(CONFIGS / f"deepspeed_zero{stage}.yaml")
        with pytest.raises(LaunchConfigError, match="deepspeed package is not installed.*pip install deepspeed"):
            check_launch_environment(config_file=cfg, cuda_available=True, environ={}, deepspeed_installed=False)
        info = check_launch_environment(config_file=cfg, cuda_available=True, environ={}, deepspeed_installed=True)
        assert info.engine == "deepspeed"


def test_loop_fills_deepspeed_batch_entries(monkeypatch):
    """What the training loop writes into the DeepSpeed config before accelerator.prepare (Accelerate cannot resolve the
    "auto" micro-batch without a dataloader). DeepSpeed itself is not run here."""
    from types import SimpleNamespace

    from accelerate.utils import DeepSpeedPlugin

    from gpt1_hf.distributed import resolve_batch_config
    from gpt1_hf.training import TrainingLoop

    monkeypatch.chdir(ROOT)
    _, env = _launch_env("deepspeed_zero2.yaml")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    plugin = DeepSpeedPlugin()
    assert plugin.is_auto("train_micro_batch_size_per_gpu")
    acc = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin), gradient_accumulation_steps=1)
    fake = SimpleNamespace(accelerator=acc, batch=resolve_batch_config(4, 32, 8))
    TrainingLoop._configure_deepspeed(fake)
    cfg = plugin.deepspeed_config
    assert (cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"], cfg["train_batch_size"]) == \
        (4, 1, 32)
    assert not plugin.is_auto("train_micro_batch_size_per_gpu")
    fake.batch = resolve_batch_config(2, 32, 8)  # accumulation 2: the loop does not accumulate under DeepSpeed
    with pytest.raises(ValueError, match="--per_device_train_batch_size 4"):
        TrainingLoop._configure_deepspeed(fake)


def test_batch_sizes_checked_with_the_launch_process_count():
    from gpt1_hf.distributed import check_batch_sizes, preflight, resolve_batch_config

    with pytest.raises(ValueError, match=r"--global_batch_size 32 is not a multiple of --per_device_train_batch_size 3 "
                                         r"x 8 processes = 24"):
        check_batch_sizes(3, 32, environ={"WORLD_SIZE": "8"})
    assert check_batch_sizes(2, 32, environ={"WORLD_SIZE": "8"}) == resolve_batch_config(2, 32, 8)
    assert check_batch_sizes(None, 32, environ={}).per_device_batch_size == 32
    info, batch = preflight(4, 32, config_file=str(CONFIGS / "multi_cpu.yaml"), cuda_available=False,
                            environ={"WORLD_SIZE": "2"})
    assert (batch.per_device_batch_size, batch.num_processes, batch.gradient_accumulation_steps) == (4, 2, 4)
    with pytest.raises(ValueError, match="not divisible by the 2 processes"):
        preflight(None, 5, config_file=str(CONFIGS / "multi_cpu.yaml"), cuda_available=False,
                  environ={"WORLD_SIZE": "2"})


def test_deepspeed_with_accumulation_refused():
    from gpt1_hf.distributed import LaunchConfigError, preflight
    from gpt1_hf.training import TrainingLoop

    assert TrainingLoop.supports_sharded_engines
    cfg = str(CONFIGS / "deepspeed_zero2.yaml")
    info, batch = preflight(4, 32, config_file=cfg, cuda_available=True, environ={"WORLD_SIZE": "8"},
                            deepspeed_installed=True)
    assert info.engine == "deepspeed" and batch.gradient_accumulation_steps == 1
    with pytest.raises(LaunchConfigError, match="--per_device_train_batch_size 4"):
        preflight(2, 32, config_file=cfg, cuda_available=True, environ={"WORLD_SIZE": "8"}, deepspeed_installed=True)


def test_lora_refused_under_fsdp_before_training(tmp_path, monkeypatch):
    """LoRA's trainable special-token rows (PEFT trainable_token_indices on the tied embeddings) crash FSDP2 inside
    accelerator.prepare: the pre-flight refuses the combination and names the fix (DDP); other engines pass."""
    from gpt1_hf.distributed import LaunchConfigError, check_lora_engine, preflight
    from gpt1_hf.finetuning import finetune

    fsdp = str(CONFIGS / "fsdp.yaml")
    refused = r"asks for FSDP, but --lora .*trainable_token_indices.*Use DDP for LoRA.*configs/ddp_gpu.yaml"
    for kwargs in (dict(cuda_available=True), dict(cuda_available=False, cpu=True)):
        with pytest.raises(LaunchConfigError, match=refused):
            preflight(4, 32, config_file=fsdp, environ={"WORLD_SIZE": "2"}, launch_argv=[],
                      lora_trainable_tokens=True, **kwargs)
        info, _ = preflight(4, 32, config_file=fsdp, environ={"WORLD_SIZE": "2"}, launch_argv=[], **kwargs)
        assert info.engine == "fsdp"  # FSDP without LoRA is fine
    with pytest.raises(LaunchConfigError, match="Use DDP for LoRA"):  # FSDP from the launch environment alone
        preflight(environ={"ACCELERATE_USE_FSDP": "true", "WORLD_SIZE": "2"}, cuda_available=True, launch_argv=[],
                  lora_trainable_tokens=True)
    for config, cuda in (("ddp_gpu.yaml", True), ("multi_cpu.yaml", False)):
        info, _ = preflight(4, 32, config_file=str(CONFIGS / config), cuda_available=cuda,
                            environ={"WORLD_SIZE": "2"}, launch_argv=[], lora_trainable_tokens=True)
        assert info.engine == "ddp"
        check_lora_engine(info)
    # finetune(lora=True) stops there, before the tokenizer or model is loaded (the model path does not exist)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(LaunchConfigError, match="Use DDP for LoRA"):
        finetune(task_name="sst2", model_name_or_path=str(tmp_path / "missing"), output_dir=str(tmp_path / "out"),
                 lora=True, cpu=True, global_batch_size=4, disable_tqdm=True)
    assert not (tmp_path / "out").exists()


def test_multi_gpu_launcher_flags_ask_for_gpus():
    """`accelerate launch --multi_gpu --num_processes 2 ...` (or --gpu_ids) without a config file asks for GPUs like a
    GPU config; configs/multi_cpu.yaml stays accepted, and the script's own arguments are not the launcher's."""
    from gpt1_hf.distributed import LaunchConfigError, check_launch_environment, launch_gpu_request

    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    for flags in (["--multi_gpu"], ["--multi-gpu"], ["--gpu_ids", "0,1"], ["--gpu-ids=0,1"]):
        argv = [*launch, *flags, "--num_processes", "2", "scripts/finetune.py", "--task", "sst2"]
        assert launch_gpu_request(argv)
        with pytest.raises(LaunchConfigError, match=r"this accelerate launch asks for GPUs \(--(multi_gpu|gpu_ids)"
                                                    r".*configs/multi_cpu.yaml.*--cpu"):
            check_launch_environment(cuda_available=False, environ={"WORLD_SIZE": "2"}, locate_config=False,
                                     launch_argv=argv)
        # with CUDA, or the script's --cpu (DDP over gloo), it runs
        for kwargs in (dict(cuda_available=True), dict(cuda_available=False, cpu=True)):
            info = check_launch_environment(environ={"WORLD_SIZE": "2"}, locate_config=False, launch_argv=argv,
                                            **kwargs)
            assert (info.engine, info.num_processes) == ("ddp", 2)
    assert launch_gpu_request(["/usr/bin/accelerate", "launch", "--multi_gpu", "-m", "gpt1_hf.distributed"])
    # the CPU config, and a --multi_gpu that belongs to the training script
    cpu_argv = [*launch, "--config_file", str(CONFIGS / "multi_cpu.yaml"), "--main_process_port", "0",
                "scripts/finetune.py", "--multi_gpu", "--gpu_ids", "0"]
    assert launch_gpu_request(cpu_argv) is None
    info = check_launch_environment(config_file=str(CONFIGS / "multi_cpu.yaml"), cuda_available=False,
                                    environ={"WORLD_SIZE": "2"}, launch_argv=cpu_argv)
    assert (info.engine, info.requires_cuda) == ("ddp", False)
    # a CPU config that the launcher's --multi_gpu overrides
    with pytest.raises(LaunchConfigError, match=r"asks for GPUs \(--multi_gpu given to accelerate launch\)"):
        check_launch_environment(config_file=str(CONFIGS / "multi_cpu.yaml"), cuda_available=False,
                                 environ={"WORLD_SIZE": "2"}, launch_argv=[*launch, "--multi_gpu", "x.py"])


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads the launcher's command line from /proc")
def test_multi_gpu_flag_found_on_the_launcher_command_line(tmp_path):
    """The launcher's argv is read from /proc: a parent process whose command line is `... accelerate launch
    --multi_gpu ...` (no config file; HF_HOME empty, so no default config either) makes the check refuse on CPU."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    child = "import subprocess, sys; sys.exit(subprocess.call([sys.executable, '-m', 'gpt1_hf.distributed']))"
    env = dict(os.environ, HF_HOME=str(tmp_path), WORLD_SIZE="2",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    for name in [k for k in env if k.startswith(("ACCELERATE_", "FSDP_"))]:
        env.pop(name)
    proc = subprocess.run([sys.executable, "-c", child, "accelerate", "launch", "--multi_gpu", "--num_processes", "2",
                           "scripts/finetune.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "this accelerate launch asks for GPUs (--multi_gpu given to accelerate launch)" in proc.stderr
    assert "configs/multi_cpu.yaml" in proc.stderr
