"""The processes of a run: `create_accelerator` (the `accelerate.Accelerator` every run trains with: precision,
trackers, FSDP on CPU processes) and the pre-flight checks of multi-process runs (``accelerate launch`` /
``torchrun``), run before any model or data is loaded. See docs/distributed.md.

These mistakes are caught with an error that says what to do instead:

* **A launch that asks for GPUs on a machine without CUDA.** Accelerate does not refuse such a launch itself: on a
  CPU-only machine `create_accelerator` joins the processes as DDP over gloo (that is how
  ``configs/multi_cpu.yaml`` works). A config asks for GPUs when it is an FSDP or DeepSpeed config, names explicit
  ``gpu_ids``, or carries the line ``# gpt1_hf-requires: cuda`` (the GPU configs in ``configs/`` do); so does a
  launcher command line with ``--multi_gpu`` or ``--gpu_ids`` (``accelerate launch --multi_gpu --num_processes 2 ...``
  without a config file). The script's ``--cpu`` runs such a launch's processes on CPUs instead.
* **DeepSpeed where it cannot run.** Accelerate enables DeepSpeed only when ``cpu`` is false, so a DeepSpeed config
  on CPU processes would silently train with plain DDP: refused. DeepSpeed without the ``deepspeed`` package:
  refused before anything is loaded. (FSDP on CPU processes is different: Accelerate ignores it there too, but
  `create_accelerator` switches such processes to FSDP2 over gloo, so ``--cpu`` with
  ``configs/fsdp.yaml`` really shards.) The config is the one given to the launcher (``--config_file`` of the ``accelerate launch``
  process above this one, else Accelerate's default config) or ``config_file=``; the FSDP/DeepSpeed environment that
  ``accelerate launch`` exports (``ACCELERATE_USE_FSDP`` / ``ACCELERATE_USE_DEEPSPEED``) is checked too, so a config
  that cannot be located is still caught.
* **LoRA under FSDP** (``preflight(lora_trainable_tokens=True)``, what ``finetune(lora=True)`` passes): PEFT's
  trainable special-token rows on the tied embeddings make FSDP2's ``fully_shard`` fail inside
  ``accelerator.prepare``; refused with the fix (DDP: the adapters are small).
* **Batch sizes that do not divide.** ``global = per_device x processes x gradient accumulation`` is resolved by
  `resolve_batch_config` (the function the training loop itself uses, so the rule lives in one place);
  `preflight` only calls it earlier, with the number of processes of the launch (``WORLD_SIZE``).

`preflight` runs them all. ``python -m gpt1_hf.distributed`` runs them from the command line, e.g. to check a config
before a long job::

    accelerate launch --config_file configs/ddp_gpu.yaml -m gpt1_hf.distributed --global_batch_size 32 \
        --per_device_train_batch_size 4
    python -m gpt1_hf.distributed --config_file configs/fsdp.yaml --global_batch_size 32   # no launch needed
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "LaunchConfigError",
    "LaunchInfo",
    "ENGINES_NEEDING_CUDA",
    "find_launch_config_file",
    "describe_config",
    "check_launch_environment",
    "check_lora_engine",
    "find_launch_arguments",
    "launch_gpu_request",
    "BatchConfig",
    "resolve_batch_config",
    "check_batch_sizes",
    "preflight",
    "sharded_engines_supported",
    "deepspeed_available",
    "create_accelerator",
    "main",
]

#: Engines that Accelerate runs only on GPUs / accelerators (never over gloo on CPUs).
ENGINES_NEEDING_CUDA = ("fsdp", "deepspeed")

REQUIRES_CUDA_MARK = re.compile(r"^\s*#\s*gpt1_hf-requires:\s*cuda\b", re.MULTILINE)
CPU_CONFIG = "configs/multi_cpu.yaml"


class LaunchConfigError(ValueError):
    """The launch cannot run as configured on this machine (raised before any training)."""


@dataclass(frozen=True)
class LaunchInfo:
    """What a launch asks for. ``engine``: "single", "ddp", "fsdp" or "deepspeed"."""

    config_file: str | None
    engine: str
    num_processes: int
    requires_cuda: bool
    reason: str | None  # why it requires CUDA
    cuda_available: bool
    cpu: bool

    def summary(self) -> str:
        where = "CPU (gloo)" if (self.cpu or not self.cuda_available) else "CUDA"
        cfg = self.config_file or "no accelerate config found"
        return f"engine={self.engine} processes={self.num_processes} device={where} config={cfg}"


# ======================================================================================================================
# Which config did the launcher use?
# ======================================================================================================================


def _proc_cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _proc_parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may contain spaces/parentheses, so split after the last ")"
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[1]) if len(fields) > 1 else None


def _proc_cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def _is_accelerate_launch(argv: list[str]) -> bool:
    for i, token in enumerate(argv):
        name = os.path.basename(token)
        if name == "accelerate-launch" or token == "accelerate.commands.launch":
            return True
        if name == "accelerate" or token == "accelerate.commands.accelerate_cli":
            return i + 1 < len(argv) and argv[i + 1] == "launch"
    return False


def _config_file_from_argv(argv: list[str]) -> str | None:
    for i, token in enumerate(argv):
        if token == "--config_file" and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith("--config_file="):
            return token.split("=", 1)[1]
    return None


def _find_accelerate_launch(max_depth: int = 6) -> int | None:
    """The pid of the ``accelerate launch`` process among this process's ancestors (Linux ``/proc``), else None."""
    pid = os.getppid()
    for _ in range(max_depth):
        if pid is None or pid <= 1:
            return None
        argv = _proc_cmdline(pid)
        if argv and _is_accelerate_launch(argv):
            return pid
        pid = _proc_parent(pid)
    return None


def find_launch_config_file(max_depth: int = 6) -> str | None:
    """The Accelerate config file of the ``accelerate launch`` that started this process (Linux ``/proc``): its
    ``--config_file`` (resolved against the launcher's working directory), else Accelerate's default config file when
    it exists. None when no ``accelerate launch`` is found among the ancestors (torchrun, plain python, other OSes)."""
    pid = _find_accelerate_launch(max_depth)
    if pid is None:
        return None
    path = _config_file_from_argv(_proc_cmdline(pid) or [])
    if path is None:
        from accelerate.commands.config.config_args import default_config_file

        return default_config_file if os.path.isfile(default_config_file) else None
    if not os.path.isabs(path):
        cwd = _proc_cwd(pid)
        if cwd:
            path = os.path.join(cwd, path)
    return path


def find_launch_arguments(max_depth: int = 6) -> list[str] | None:
    """The command line of the ``accelerate launch`` that started this process (Linux ``/proc``), else None."""
    pid = _find_accelerate_launch(max_depth)
    return None if pid is None else _proc_cmdline(pid)


def _launcher_options(argv: list[str]) -> list[str]:
    """The launcher's own options of an ``accelerate launch`` command line: the tokens after ``launch`` (or
    ``accelerate-launch`` / ``-m accelerate.commands.launch``) and before the training script; an argv that is not an
    accelerate launch is taken as those options already."""
    start = 0
    for i, token in enumerate(argv):
        name = os.path.basename(token)
        if name == "accelerate-launch" or token == "accelerate.commands.launch":
            start = i + 1
            break
        if (name == "accelerate" or token == "accelerate.commands.accelerate_cli") and i + 1 < len(argv) \
                and argv[i + 1] == "launch":
            start = i + 2
            break
    options = list(argv[start:])
    try:  # Accelerate's own parser knows which options take a value, so the script's arguments are left out
        from accelerate.commands.launch import launch_command_parser

        parsed = launch_command_parser().parse_args(options)
        end = len(options) - len(parsed.training_script_args) - 1
        if 0 <= end < len(options) and options[end] == parsed.training_script:
            return options[:end]
    except (SystemExit, Exception):  # noqa: BLE001 -- not parseable: scan every token
        pass
    return options


def launch_gpu_request(argv: list[str] | None) -> str | None:
    """Why an ``accelerate launch`` command line asks for GPUs whatever its config says: ``--multi_gpu`` or
    ``--gpu_ids`` among the launcher's options (hyphens or underscores, as Accelerate accepts). None otherwise."""
    if not argv:
        return None
    options = _launcher_options(argv)
    for i, token in enumerate(options):
        flag, has_value, value = token.partition("=")
        flag = "--" + flag[2:].replace("-", "_") if flag.startswith("--") else flag
        if flag == "--multi_gpu":
            return "--multi_gpu given to accelerate launch"
        if flag == "--gpu_ids":
            if not has_value:
                value = options[i + 1] if i + 1 < len(options) else ""
            return f"--gpu_ids {value} given to accelerate launch" if value else "--gpu_ids given to accelerate launch"
    return None


def _display(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("..") else path


def describe_config(config_file: str) -> LaunchInfo:
    """Read an Accelerate config file with Accelerate's own loader and say what it asks for (this machine aside)."""
    from accelerate.commands.config.config_args import load_config_from_file

    if not os.path.isfile(config_file):
        raise LaunchConfigError(f"accelerate config file {config_file} does not exist")
    config = load_config_from_file(config_file)
    dtype = str(getattr(config.distributed_type, "value", config.distributed_type)).upper()
    use_cpu = bool(getattr(config, "use_cpu", False))
    num_processes = int(getattr(config, "num_processes", 1) or 1)
    engine = {"FSDP": "fsdp", "DEEPSPEED": "deepspeed", "NO": "single"}.get(dtype, "ddp")
    if engine == "single" and num_processes > 1:
        engine = "ddp"
    reason = None
    if use_cpu:
        pass
    elif engine in ENGINES_NEEDING_CUDA:
        reason = f"distributed_type {dtype}: Accelerate runs {engine.upper() if engine == 'fsdp' else 'DeepSpeed'} " \
                 "on GPUs only"
    elif REQUIRES_CUDA_MARK.search(Path(config_file).read_text(encoding="utf-8", errors="replace")):
        reason = f"distributed_type {dtype}, marked '# gpt1_hf-requires: cuda'"
    else:
        gpu_ids = getattr(config, "gpu_ids", None)
        if gpu_ids not in (None, "", "all") and dtype in ("MULTI_GPU", "NO"):
            reason = f"gpu_ids: {gpu_ids}"
    return LaunchInfo(config_file=_display(config_file), engine=engine, num_processes=num_processes,
                      requires_cuda=reason is not None, reason=reason, cuda_available=False, cpu=use_cpu)


# ======================================================================================================================
# Checks
# ======================================================================================================================


def _truthy(value: str | None) -> bool:
    return str(value or "").strip().lower() in ("1", "true", "yes")


def _engine_from_environment(environ: Mapping[str, str]) -> str | None:
    if _truthy(environ.get("ACCELERATE_USE_DEEPSPEED")):
        return "deepspeed"
    if _truthy(environ.get("ACCELERATE_USE_FSDP")):
        return "fsdp"
    return None


def _world_size(environ: Mapping[str, str]) -> int | None:
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        if environ.get(name):
            try:
                return int(environ[name])
            except ValueError:
                pass
    return None


def deepspeed_available() -> bool:
    """Whether the ``deepspeed`` package can be imported (it is not a dependency of gpt1_hf)."""
    import importlib.util

    return importlib.util.find_spec("deepspeed") is not None


def sharded_engines_supported() -> bool:
    """Whether `gpt1_hf.training.TrainingLoop` declares FSDP/DeepSpeed support (``supports_sharded_engines``): saving
    a model, checkpoint or ``best/`` under FSDP / ZeRO-3 must gather the weights on every process
    (``accelerator.get_state_dict``), which the loop has to do before these engines can train (see
    docs/distributed.md)."""
    from .training import TrainingLoop

    return bool(getattr(TrainingLoop, "supports_sharded_engines", False))


def check_launch_environment(
    cpu: bool = False,
    config_file: str | None = None,
    cuda_available: bool | None = None,
    environ: Mapping[str, str] | None = None,
    locate_config: bool = True,
    deepspeed_installed: bool | None = None,
    launch_argv: list[str] | None = None,
) -> LaunchInfo:
    """Raise `LaunchConfigError` when the launch asks for something this machine (or ``--cpu``) cannot give.

    Args:
        cpu: the script's ``--cpu``: run on CPU processes even where there are GPUs.
        config_file: the Accelerate config to judge (default: the launcher's, see `find_launch_config_file`).
        cuda_available: default ``torch.cuda.is_available()``.
        environ: default ``os.environ`` (``ACCELERATE_USE_FSDP`` / ``ACCELERATE_USE_DEEPSPEED`` / ``WORLD_SIZE``).
        locate_config: look for the launcher's config (and command line) when ``config_file`` (``launch_argv``) is
            None.
        deepspeed_installed: default `deepspeed_available()`.
        launch_argv: the ``accelerate launch`` command line (default: the launcher's, see `find_launch_arguments`);
            ``--multi_gpu`` / ``--gpu_ids`` there ask for GPUs like a GPU config does.
    """
    environ = os.environ if environ is None else environ
    if cuda_available is None:
        import torch

        cuda_available = torch.cuda.is_available()
    if config_file is None and locate_config:
        config_file = find_launch_config_file()
    if launch_argv is None and locate_config:
        launch_argv = find_launch_arguments()

    info = describe_config(config_file) if config_file is not None else None
    argv_reason = launch_gpu_request(launch_argv)
    env_engine = _engine_from_environment(environ)
    engine = env_engine or (info.engine if info else None)
    world = _world_size(environ)
    num_processes = world or (info.num_processes if info else 1)
    if engine is None:
        engine = "ddp" if num_processes > 1 else "single"
    requires_cuda = bool(info and info.requires_cuda) or engine in ENGINES_NEEDING_CUDA or argv_reason is not None
    reason = (info.reason if info and info.requires_cuda else None) or (
        f"{'ACCELERATE_USE_DEEPSPEED' if engine == 'deepspeed' else 'ACCELERATE_USE_FSDP'}=true in the launch "
        "environment: Accelerate runs this engine on GPUs only" if engine in ENGINES_NEEDING_CUDA else None
    ) or argv_reason
    if info and (info.requires_cuda or not argv_reason):
        name = info.config_file
    else:  # no config, or a CPU config that the launcher's own --multi_gpu / --gpu_ids overrides
        name = "this accelerate launch" if argv_reason else "the accelerate launch environment"
    result = LaunchInfo(config_file=info.config_file if info else None, engine=engine, num_processes=num_processes,
                        requires_cuda=requires_cuda, reason=reason, cuda_available=bool(cuda_available), cpu=cpu)

    if engine == "deepspeed" and (cpu or not cuda_available):
        why = "--cpu was given" if cpu else "this machine has no CUDA device (torch.cuda.is_available() is False)"
        raise LaunchConfigError(
            f"{name} asks for DeepSpeed ({reason}), but {why}. Accelerate enables DeepSpeed only for GPU processes; "
            f"on CPU processes it would silently train with plain DDP instead. To run on CPUs use "
            f"`accelerate launch --config_file {CPU_CONFIG} ...` (DDP over gloo) or `--config_file configs/fsdp.yaml "
            "... --cpu` (FSDP2 over gloo); to use DeepSpeed, run on a machine with GPUs"
            + (" without --cpu." if cpu else ".")
        )
    if engine == "fsdp" and not cuda_available and not cpu:
        raise LaunchConfigError(
            f"{name} asks for FSDP on GPUs ({reason}), but this machine has no CUDA device "
            "(torch.cuda.is_available() is False). Add --cpu to the script to run FSDP2 over gloo on CPU processes "
            f"(slow; for testing), or use `accelerate launch --config_file {CPU_CONFIG} ...` (DDP over gloo)."
        )
    if requires_cuda and not cuda_available and not cpu:
        raise LaunchConfigError(
            f"{name} asks for GPUs ({reason}), but this machine has no CUDA device "
            "(torch.cuda.is_available() is False). Use `accelerate launch --config_file "
            f"{CPU_CONFIG} ...` to run {num_processes if num_processes > 1 else 'several'} processes on the CPUs "
            "(DDP over gloo), or add --cpu to the script to run this config's processes on the CPU."
        )
    if engine == "deepspeed" and not (deepspeed_available() if deepspeed_installed is None else deepspeed_installed):
        raise LaunchConfigError(
            f"{name} asks for DeepSpeed, but the deepspeed package is not installed (`import deepspeed` fails; it is "
            "not a dependency of gpt1_hf): `pip install deepspeed` on the GPU machines, or use configs/fsdp.yaml "
            "(FSDP2, no extra package) or configs/ddp_gpu.yaml."
        )
    if engine in ENGINES_NEEDING_CUDA and not sharded_engines_supported():
        label = "FSDP" if engine == "fsdp" else "DeepSpeed"
        raise LaunchConfigError(
            f"{name} asks for {label}, which this gpt1_hf training loop does not support "
            "(TrainingLoop.supports_sharded_engines is False): saving under FSDP / ZeRO-3 needs the weights gathered on "
            "every process first (accelerator.get_state_dict). Use configs/ddp_gpu.yaml; see docs/distributed.md."
        )
    return result


def check_lora_engine(info: LaunchInfo) -> None:
    """LoRA with trainable special-token rows (PEFT ``trainable_token_indices`` on the tied ``tokens_embed`` /
    ``lm_head``) cannot be sharded by FSDP: FSDP2's ``fully_shard`` inside ``accelerator.prepare`` fails ("TypeError:
    Invariant encountered: value was None") on PEFT's token wrapper around the tied embedding. Raise
    `LaunchConfigError` before anything is loaded; DDP (or one process) runs it."""
    if info.engine != "fsdp":
        return
    name = info.config_file or "the accelerate launch environment"
    raise LaunchConfigError(
        f"{name} asks for FSDP, but --lora trains the special-token embedding rows through PEFT's "
        "trainable_token_indices on the tied tokens_embed / lm_head, which FSDP cannot shard (accelerator.prepare "
        "fails with 'TypeError: Invariant encountered: value was None'). Use DDP for LoRA: the adapters and their "
        "optimizer state are small and the frozen base fits on one device, so there is nothing to shard -- "
        "`accelerate launch --config_file configs/ddp_gpu.yaml ...` on GPUs, "
        f"`--config_file {CPU_CONFIG}` on CPUs; or fine-tune without --lora under FSDP. See docs/lora.md."
    )


@dataclass(frozen=True)
class BatchConfig:
    per_device_batch_size: int
    num_processes: int
    gradient_accumulation_steps: int

    @property
    def global_batch_size(self) -> int:
        return self.per_device_batch_size * self.num_processes * self.gradient_accumulation_steps

    @property
    def micro_batch_size(self) -> int:
        """Examples per micro-step over all processes."""
        return self.per_device_batch_size * self.num_processes

    def as_results(self) -> dict[str, int]:
        """The layout as results.json records it."""
        return {"per_device": self.per_device_batch_size, "processes": self.num_processes,
                "gradient_accumulation_steps": self.gradient_accumulation_steps, "global": self.global_batch_size}


def resolve_batch_config(per_device_batch_size: int | None, global_batch_size: int | None, num_processes: int = 1,
                         gradient_accumulation_steps: int | None = None) -> BatchConfig:
    """global = per_device x processes x accumulation; any two determine the third, all three must agree (raised
    before any training)."""
    for name, value in (("per_device_train_batch_size", per_device_batch_size),
                        ("global_batch_size", global_batch_size),
                        ("gradient_accumulation_steps", gradient_accumulation_steps)):
        if value is not None and int(value) < 1:
            raise ValueError(f"--{name} must be >= 1, got {value}")
    p = int(num_processes)
    if per_device_batch_size is None and global_batch_size is None:
        raise ValueError("set --per_device_train_batch_size or --global_batch_size")
    if global_batch_size is None:
        return BatchConfig(int(per_device_batch_size), p, int(gradient_accumulation_steps or 1))
    g = int(global_batch_size)
    if per_device_batch_size is None:
        accum = int(gradient_accumulation_steps or 1)
        if g % (p * accum):
            raise ValueError(f"--global_batch_size {g} is not divisible by the {p} processes x "
                             f"--gradient_accumulation_steps {accum}; pick a global batch that is, or set "
                             "--per_device_train_batch_size.")
        return BatchConfig(g // (p * accum), p, accum)
    b = int(per_device_batch_size)
    if g % (b * p):
        raise ValueError(f"--global_batch_size {g} is not a multiple of --per_device_train_batch_size {b} x {p} "
                         f"processes = {b * p}: global = per_device x processes x gradient accumulation must hold.")
    accum = g // (b * p)
    if gradient_accumulation_steps is not None and int(gradient_accumulation_steps) != accum:
        raise ValueError(f"--gradient_accumulation_steps {gradient_accumulation_steps} contradicts --global_batch_size "
                         f"{g} = per_device {b} x {p} processes x {accum}.")
    return BatchConfig(b, p, accum)


def check_batch_sizes(
    per_device_batch_size: int | None,
    global_batch_size: int | None,
    gradient_accumulation_steps: int | None = None,
    num_processes: int | None = None,
    environ: Mapping[str, str] | None = None,
):
    """`resolve_batch_config` with the launch's number of processes (``WORLD_SIZE``, else 1):
    ``global = per_device x processes x accumulation`` or a ValueError naming the numbers."""
    environ = os.environ if environ is None else environ
    if num_processes is None:
        num_processes = _world_size(environ) or 1
    return resolve_batch_config(per_device_batch_size, global_batch_size, num_processes, gradient_accumulation_steps)


def preflight(
    per_device_batch_size: int | None = None,
    global_batch_size: int | None = None,
    gradient_accumulation_steps: int | None = None,
    cpu: bool = False,
    config_file: str | None = None,
    cuda_available: bool | None = None,
    environ: Mapping[str, str] | None = None,
    deepspeed_installed: bool | None = None,
    lora_trainable_tokens: bool = False,
    launch_argv: list[str] | None = None,
):
    """Both checks, before any model or data is loaded. Returns ``(LaunchInfo, BatchConfig or None)``; raises
    `LaunchConfigError` / ValueError. Without batch sizes only the launch is checked.

    ``lora_trainable_tokens``: the run trains LoRA adapters with PEFT ``trainable_token_indices`` (what
    ``finetune(lora=True)`` does for the special-token rows); refused under FSDP, where it crashes inside
    ``accelerator.prepare`` (see `check_lora_engine`)."""
    info = check_launch_environment(cpu=cpu, config_file=config_file, cuda_available=cuda_available,
                                    environ=environ, deepspeed_installed=deepspeed_installed,
                                    launch_argv=launch_argv)
    if lora_trainable_tokens:
        check_lora_engine(info)
    batch = None
    if per_device_batch_size is not None or global_batch_size is not None:
        batch = check_batch_sizes(per_device_batch_size, global_batch_size, gradient_accumulation_steps,
                                  num_processes=info.num_processes)
        if info.engine == "deepspeed" and batch.gradient_accumulation_steps > 1:
            # the loop accumulates itself (no_sync + example-weighted loss); DeepSpeed's engine steps at every
            # accelerator.backward unless told otherwise and rescales the loss by its own accumulation count
            raise LaunchConfigError(
                f"global_batch_size={batch.global_batch_size} with per_device_batch_size="
                f"{batch.per_device_batch_size} x {batch.num_processes} processes needs gradient accumulation "
                f"({batch.gradient_accumulation_steps}), which gpt1_hf's loop does not do under DeepSpeed: use "
                f"--per_device_train_batch_size {batch.global_batch_size // batch.num_processes} (or more processes)."
            )
    return info, batch


# ======================================================================================================================
# Command line
# ======================================================================================================================


# ---- the accelerator -------------------------------------------------------------------------------------------------
def _trackers(with_tracking: bool, report_to: str | None) -> list[str] | str | None:
    if not with_tracking:
        return None
    names = [n.strip() for n in (report_to or "tensorboard").split(",") if n.strip()]
    return "all" if names == ["all"] else names


def create_accelerator(mixed_precision: str | None = None, cpu: bool = False, with_tracking: bool = False,
                       report_to: str | None = None, project_dir: str | os.PathLike | None = None,
                       bf16_implementation: str = "autocast"):
    """An `accelerate.Accelerator` with trackers under ``<project_dir>/runs``. ``mixed_precision=None`` takes the
    ``accelerate launch`` / config value, else "no"; bf16 with master weights (`bf16_master_weights`) needs no
    autocast, so Accelerate's precision is then "no". In a single process, an earlier state with other settings
    (several runs in one Python process: tests, the layer-transfer sweep) is reset first."""
    import torch
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import ProjectConfiguration

    from .precision import MIXED_PRECISION_CHOICES, bf16_master_weights, resolve_mixed_precision
    from .run_folder import TRACKING_DIR

    if mixed_precision not in (None, *MIXED_PRECISION_CHOICES):
        raise ValueError(f"--mixed_precision must be one of {', '.join(MIXED_PRECISION_CHOICES)}, got "
                         f"{mixed_precision!r}")
    # without an accelerator, processes started by torchrun / `accelerate launch --multi_gpu` join as MULTI_CPU (gloo)
    cpu = cpu or not torch.cuda.is_available()
    if bf16_master_weights(mixed_precision, bf16_implementation, cpu):
        mixed_precision = "no"  # the model itself is bf16 (gpt1_hf.precision)
    mixed_precision = resolve_mixed_precision(mixed_precision, cpu)
    if mixed_precision is None:  # resolved here: an existing state of an earlier run must not leak its setting
        mixed_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower() or "no"
    kwargs: dict[str, Any] = dict(mixed_precision=mixed_precision, cpu=cpu, log_with=_trackers(with_tracking,
                                                                                                report_to))
    if project_dir is not None:
        kwargs["project_config"] = ProjectConfiguration(project_dir=str(project_dir),
                                                        logging_dir=str(Path(project_dir) / TRACKING_DIR))
    try:
        acc = Accelerator(**kwargs)
    except ValueError as e:
        if "already been initialized" not in str(e) or PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state()
        acc = Accelerator(**kwargs)
    _enable_fsdp_on_cpu_processes(acc, mixed_precision)
    return acc


def _enable_fsdp_on_cpu_processes(acc, mixed_precision: str) -> None:
    """FSDP2 over gloo for an FSDP launch whose processes came up as MULTI_CPU (``--cpu`` or no CUDA): Accelerate only
    enables FSDP for accelerator process groups and would silently train plain DDP; its FSDP2 code path itself runs on
    a CPU mesh, so the state is switched here with the plugin the launcher's ``FSDP_*`` environment describes."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if os.environ.get("ACCELERATE_USE_FSDP", "false").strip().lower() not in ("1", "true", "yes"):
        return
    if acc.distributed_type != DistributedType.MULTI_CPU:
        return
    plugin = FullyShardedDataParallelPlugin()
    if mixed_precision not in (None, "no"):
        plugin.set_mixed_precision(mixed_precision)
    # PartialState too: every later AcceleratorState() copies PartialState's fields over its own
    PartialState().distributed_type = acc.state.distributed_type = DistributedType.FSDP
    acc.state.fsdp_plugin = plugin
    logger.info("FSDP%s over gloo on %d CPU processes", plugin.fsdp_version, acc.num_processes)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gpt1_hf.distributed",
                                description="Check a launch (config, devices, batch sizes) before training.")
    p.add_argument("--config_file", default=None,
                   help="accelerate config to check (default: the one of the accelerate launch running this)")
    p.add_argument("--per_device_train_batch_size", type=int, default=None)
    p.add_argument("--global_batch_size", type=int, default=None)
    p.add_argument("--gradient_accumulation_steps", type=int, default=None)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--lora", action="store_true", help="the run fine-tunes with --lora (refused under FSDP)")
    ns = p.parse_args(argv)
    rank = int(os.environ.get("RANK", "0") or 0)
    try:
        info, batch = preflight(ns.per_device_train_batch_size, ns.global_batch_size, ns.gradient_accumulation_steps,
                                cpu=ns.cpu, config_file=ns.config_file, lora_trainable_tokens=ns.lora)
    except ValueError as e:  # LaunchConfigError included
        if rank == 0:
            print(f"error: {e}", file=sys.stderr)
        return 2
    if rank == 0:
        line = info.summary()
        if batch is not None:
            line += (f" global_batch={batch.global_batch_size} = per_device {batch.per_device_batch_size} x "
                     f"{batch.num_processes} processes x {batch.gradient_accumulation_steps} accumulation")
        print("ok: " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
