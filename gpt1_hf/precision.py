"""bf16 training without per-use weight casts: bf16 working weights, fp32 master weights held by the optimizer.

Autocast keeps the weights in fp32 and casts every weight to bf16 at every use (forward and backward): at GPT-1's
small widths those casts are a large share of a CPU step (docs/benchmarks.md). Here, as in Megatron-LM and apex's O2,
the model itself is bf16 and the optimizer owns an fp32 copy of every trainable parameter:

1. forward and backward run on the bf16 working weights (no casts; gradients arrive in bf16);
2. `MasterWeightsAdamW.step` copies the gradients to the fp32 masters, takes the AdamW step there in fp32, and
   refreshes the bf16 working weights from the masters -- one cast per weight per optimizer step;
3. the optimizer's ``state_dict`` carries the masters, so a resumed run continues from the fp32 values (bitwise).

`resolve_mixed_precision` / `bf16_master_weights` decide what a run trains in (``"auto"``: bf16 where it is native).
`fp32_model` gives the trained model with the master values for saving. Loss computations stay in fp32 inside the
model (the LM loss and the classifier's softmax cast their logits). Not for FSDP / DeepSpeed, whose own mixed
precision keeps the masters sharded (`gpt1_hf.training` refuses the combination).
"""

from __future__ import annotations

import copy
import os

import torch

__all__ = ["MIXED_PRECISION_CHOICES", "cpu_has_native_bf16", "resolve_mixed_precision", "bf16_master_weights",
           "MasterWeightsAdamW", "fp32_model"]


MIXED_PRECISION_CHOICES = ("auto", "no", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16 in /proc/cpuinfo: there bf16 autocast beats fp32 (~4x on AMX); elsewhere torch emulates
    bf16 and training runs 5-10x slower than fp32 (docs/finetuning.md)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            flags = handle.read()
    except OSError:  # not Linux: do not guess
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_mixed_precision(mixed_precision: str | None, cpu: bool = False) -> str | None:
    """``"auto"`` -> ``"bf16"`` where it is fast (a CUDA GPU with bf16, a CPU with native bf16), else ``"no"``."""
    if mixed_precision != "auto":
        return mixed_precision
    if not cpu and torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"


def bf16_master_weights(mixed_precision: str | None, bf16_implementation: str = "auto", cpu: bool = False) -> bool:
    """Whether bf16 trains with bf16 working weights and fp32 masters (`gpt1_hf.precision`) instead of autocast:
    asked for ("auto" stays with autocast: see docs/benchmarks.md for the measurements)."""
    if resolve_mixed_precision(mixed_precision, cpu) != "bf16" and not (
            mixed_precision is None and os.environ.get("ACCELERATE_MIXED_PRECISION", "").lower() == "bf16"):
        return False
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true", "yes") or \
            os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes"):
        if bf16_implementation == "master_weights":
            raise ValueError("--bf16_implementation master_weights is for one process or DDP; FSDP and DeepSpeed "
                             "keep their own (sharded) master weights: use --bf16_implementation autocast")
        return False
    return bf16_implementation == "master_weights"  # "auto": autocast until a benchmark shows master weights faster


class MasterWeightsAdamW(torch.optim.AdamW):
    """AdamW over fp32 master copies of bf16 parameters (see the module docstring).

    ``params``: parameter groups of the bf16 model (as for `torch.optim.AdamW`); the optimizer's own groups hold the
    fp32 masters, in the same order, so schedulers and checkpoints see an ordinary AdamW."""

    def __init__(self, params, **kwargs):
        groups = [dict(g) for g in params] if isinstance(params, (list, tuple)) and params and isinstance(
            params[0], dict) else [{"params": list(params)}]
        self.working: list[torch.Tensor] = []
        for group in groups:
            working = list(group["params"])
            self.working += working
            group["params"] = [torch.nn.Parameter(p.detach().float().clone()) for p in working]
        super().__init__(groups, **kwargs)
        self.masters = [p for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def step(self, closure=None):
        for master, work in zip(self.masters, self.working, strict=True):
            master.grad = None if work.grad is None else work.grad.float()
        loss = super().step(closure)
        for master, work in zip(self.masters, self.working, strict=True):
            work.copy_(master)  # the one cast of this weight in this step
        return loss

    def zero_grad(self, set_to_none: bool = True):
        super().zero_grad(set_to_none)
        for work in self.working:
            if set_to_none:
                work.grad = None
            elif work.grad is not None:
                work.grad.zero_()

    def state_dict(self):
        state = super().state_dict()
        state["master_weights"] = [m.detach().clone() for m in self.masters]
        return state

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        masters = state_dict.pop("master_weights", None)
        super().load_state_dict(state_dict)
        if masters is None:  # a checkpoint without masters: start them from the working weights
            masters = [w.detach().float() for w in self.working]
        with torch.no_grad():
            for master, saved, work in zip(self.masters, masters, self.working, strict=True):
                master.copy_(saved)
                work.copy_(master)


def fp32_model(model: torch.nn.Module, optimizer: MasterWeightsAdamW) -> torch.nn.Module:
    """A float32 copy of the bf16 ``model`` holding the optimizer's master values (what is saved)."""
    masters = {id(work): master for work, master in zip(optimizer.working, optimizer.masters, strict=True)}
    plain = copy.deepcopy(model).float()
    with torch.no_grad():
        for (_, p_plain), p_work in zip(plain.named_parameters(), model.parameters(), strict=True):
            master = masters.get(id(p_work))
            if master is not None:
                p_plain.copy_(master)
    return plain
