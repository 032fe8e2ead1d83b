"""The paper's results study (Radford et al. 2018, Tables 2-5 and Figure 2) in one resumable command.

`run_study(StudyConfig(...))` (what ``scripts/reproduce.py`` runs) goes through these stages, each of which skips
the work it finds finished in ``output_dir`` (so a killed study continues where it stopped, and stages can be run in
separate sittings with ``stages=[...]``):

``pretrain``
    L1 pretraining of a small GPT-1 on a local corpus (`gpt1_hf.pretraining.pretrain`), sized to a wall-clock budget:
    a few timed training steps measure this machine's tokens/s, and the number of updates is set so that the cosine
    schedule ends inside ``budget_minutes``. Checkpoints are kept at ``zero_shot_points`` evenly spaced updates.
    Skipped when ``model_name_or_path`` is given (a real GPT-1: Hub id, openai-gpt folder or original release).
``zero_shot``
    The paper's zero-shot heuristics (`gpt1_hf.zero_shot`) at every kept pretraining checkpoint (Figure 2 right).
``finetune``
    Every task of Tables 2-4 with the paper's recipe (L3 = L2 + 0.5 L1), and the Table 5 ablations on its eight GLUE
    tasks: no pretraining (same model, random initialisation) and no auxiliary LM loss (lambda = 0). The small tasks
    run with several seeds (mean +- std). Runs go to a pool of ``jobs`` worker processes.
``layer_transfer``
    Figure 2 left: the task of ``layer_transfer_task`` with only the embeddings and the first K pretrained blocks.
``lora``
    LoRA (`gpt1_hf.lora`) against full fine-tuning on ``lora_task``: trainable parameters, metric and time.
``report``
    ``<output_dir>/report/results.md`` (and, with ``write_docs``, ``docs/results.md`` + ``docs/img/results_*.png``):
    tables laid out like the paper's, the paper's numbers beside ours, the figures, budget, sizes and wall times
    (pretraining: tokens seen and tokens per minute). The text is ``gpt1_hf/templates/results.md`` filled with
    `report_data`'s data by `render_report`.

Presets (`PRESETS`): ``cpu`` (the default without ``model_name_or_path``) is the miniature study: about two hours of
a 2-core CPU with the small tasks on their whole sets (``small_tasks_whole``) and the large ones on 5,000 examples
(docs/results.md, "Budget": 99 minutes in one sitting on an Intel Xeon with AMX, 64 of them fine-tuning, 2 runs
at a time); ``full`` (the default with ``model_name_or_path``) is the paper's scale (needs ``model_name_or_path``, no
subsampling, 512-token inputs, lr 6.25e-5).

Wall times: every stage's elapsed time is written to ``study_log.json`` while it runs (after each run and every
``HEARTBEAT_S`` seconds), so a killed sitting's time is kept; the pretraining budget is a total over sittings (a
resumed pretraining gets what earlier sittings left of it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
import statistics
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["StudyConfig", "StudyMismatchError", "PRESETS", "STAGES", "PAPER", "plan_runs", "run_study", "write_report"]

STAGES = ("pretrain", "zero_shot", "finetune", "layer_transfer", "lora", "report")

#: The paper's numbers (Radford et al. 2018), in percent; MNLI in Table 5 is the mean of matched and mismatched.
PAPER: dict[str, dict[str, float]] = {
    "table2": {"mnli": 82.1, "mnli_mm": 81.4, "snli": 89.9, "scitail": 88.3, "qnli": 88.1, "rte": 56.0},
    "table3": {"story_cloze": 86.5, "race_middle": 62.9, "race_high": 57.4, "race": 59.0},
    "table4": {"cola": 45.4, "sst2": 91.3, "mrpc": 82.3, "stsb": 82.0, "qqp": 70.3, "glue": 72.8},
    "table5": {
        "full": {"avg": 74.7, "cola": 45.4, "sst2": 91.3, "mrpc": 82.3, "stsb": 82.0, "qqp": 70.3, "mnli": 81.8,
                 "qnli": 88.1, "rte": 56.0},
        "no_pretrain": {"avg": 59.9, "cola": 18.9, "sst2": 84.0, "mrpc": 79.4, "stsb": 30.9, "qqp": 65.5,
                        "mnli": 75.7, "qnli": 71.2, "rte": 53.8},
        "no_aux": {"avg": 75.0, "cola": 47.9, "sst2": 92.0, "mrpc": 84.9, "stsb": 83.2, "qqp": 69.8, "mnli": 81.1,
                   "qnli": 86.9, "rte": 54.4},
        "lstm": {"avg": 69.1, "cola": 30.3, "sst2": 90.5, "mrpc": 83.2, "stsb": 71.8, "qqp": 68.1, "mnli": 73.7,
                 "qnli": 81.1, "rte": 54.6},
    },
}

#: The tasks fine-tuned for Tables 2-4 (RACE-m / RACE-h come from the RACE run's per-group accuracy; MNLI-mm from
#: evaluating the MNLI model on the mismatched dev set).
TABLE_TASKS = ("snli", "mnli", "scitail", "qnli", "rte", "story_cloze", "race", "cola", "sst2", "mrpc", "stsb", "qqp")
#: Table 5 (ablations) covers these eight GLUE tasks.
ABLATION_TASKS = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte")
#: The paper's small datasets (Story Cloze: 1,497 training examples, fewer than RTE): run with several seeds.
SMALL_TASKS = ("cola", "mrpc", "stsb", "rte", "story_cloze")
#: The stages made of fine-tuning runs (`plan_runs`).
RUN_STAGES = ("finetune", "layer_transfer", "lora")
#: How the report names the tasks in prose.
TASK_NAMES = {"cola": "CoLA", "mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE", "story_cloze": "Story Cloze",
              "sst2": "SST-2", "qqp": "QQP", "mnli": "MNLI", "qnli": "QNLI", "snli": "SNLI", "scitail": "SciTail",
              "race": "RACE"}
VARIANTS = {
    "full": "pretrained, aux LM (λ = 0.5)",
    "no_pretrain": "no pretraining (random init), aux LM (λ = 0.5)",
    "no_aux": "pretrained, no aux LM (λ = 0)",
}

PRESETS: dict[str, dict[str, Any]] = {
    # miniature study: a 30-minute pretraining budget, then the fine-tuning runs (about 1.5 hours on a 2-core CPU)
    "cpu": dict(budget_minutes=30.0, n_layer=4, n_embd=256, n_head=4, n_ctx=128, vocab_size=16000,
                pretrain_learning_rate=6e-4, pretrain_batch_size=32, pretrain_warmup_ratio=0.05,
                max_train_examples=5000, max_eval_examples=2000, max_length=96, mc_max_train_examples=1000,
                mc_max_length=160, learning_rate=2.5e-4, num_train_epochs=3, seeds=3, jobs=2,
                small_tasks_whole=True),
    # the paper's scale: a real GPT-1 checkpoint, full training sets, 512-token inputs, the paper's learning rate
    "full": dict(max_train_examples=None, max_eval_examples=None, max_length=512, mc_max_train_examples=None,
                 mc_max_length=512, learning_rate=6.25e-5, num_train_epochs=3, seeds=3, jobs=1,
                 small_tasks_whole=True),
}


@dataclass
class StudyConfig:
    data_dir: str  # the root holding <task>/ folders (the layout of shared/data), also passed to every task loader
    output_dir: str = "outputs/study"
    preset: str | None = None  # None: "full" when model_name_or_path is given, else "cpu"
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    tasks: list[str] = field(default_factory=lambda: list(TABLE_TASKS))
    ablation_tasks: list[str] = field(default_factory=lambda: list(ABLATION_TASKS))
    small_tasks: list[str] = field(default_factory=lambda: list(SMALL_TASKS))
    # a real pretrained model instead of the pretraining stage (full-scale study)
    model_name_or_path: str | None = None
    tokenizer_name_or_path: str | None = None  # None: train one on the corpus (vocab_size > 0) or GPT-1's BPE
    # pretraining (None -> the preset's value)
    corpus: list[str] | None = None  # None: <data_dir>/pretrain_corpus
    budget_minutes: float | None = None
    n_layer: int | None = None
    n_embd: int | None = None
    n_head: int | None = None
    n_ctx: int | None = None
    vocab_size: int | None = None  # 0: GPT-1's original BPE (40,478 + 4)
    pretrain_learning_rate: float | None = None
    pretrain_batch_size: int | None = None
    pretrain_warmup_ratio: float | None = None
    zero_shot_points: int = 6
    zero_shot_tasks: list[str] = field(default_factory=lambda: ["sst2", "cola", "race", "story_cloze", "wnli"])
    zero_shot_examples: int | None = 500
    # fine-tuning (None -> the preset's value)
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    max_length: int | None = None
    mc_max_train_examples: int | None = None
    # the small tasks train on their whole training sets (they are where a subsample costs most and saves least)
    small_tasks_whole: bool | None = None
    mc_max_length: int | None = None
    learning_rate: float | None = None
    num_train_epochs: int | None = None
    seeds: int | None = None
    ablations: bool = True
    layer_transfer_task: str | None = "mnli"
    lora_task: str | None = "sst2"
    lora_learning_rate: float = 1e-3
    jobs: int | None = None
    mixed_precision: str = "auto"  # auto: bf16 where this machine has it natively, else fp32 (see training.py)
    seed: int = 0
    full_scale_estimate: bool = True  # report: tokens and time of the full-scale study, measured on this machine
    write_docs: bool = False
    docs_dir: str | None = None  # where write_docs puts results.md (default: the repository's docs/)
    progress_bar: bool = True

    def resolved(self) -> StudyConfig:
        """A copy with every None taken from the preset (no preset: "full" with a given model, else "cpu")."""
        preset = self.preset if self.preset is not None else ("full" if self.model_name_or_path else "cpu")
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        unknown = set(self.stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stages {sorted(unknown)}; the stages are {list(STAGES)}")
        from .tasks import get_task

        for t in [*self.tasks, *self.zero_shot_tasks, self.layer_transfer_task, self.lora_task]:
            if t is not None:
                get_task(t)  # raises with the list of known tasks
        values = asdict(self)
        values["preset"] = preset
        for k, v in PRESETS[preset].items():
            if values.get(k) is None:
                values[k] = v
        import torch

        from .precision import resolve_mixed_precision

        values["mixed_precision"] = resolve_mixed_precision(values["mixed_precision"], cpu=not torch.cuda.is_available())
        out = StudyConfig(**values)
        if out.preset == "full" and out.model_name_or_path is None:
            raise ValueError("preset 'full' fine-tunes a real GPT-1: pass --model_name_or_path (e.g. "
                             "openai-community/openai-gpt or a folder converted by scripts/convert_checkpoint.py)")
        if out.model_name_or_path is None and out.budget_minutes is None:
            raise ValueError("pretraining needs --budget_minutes")
        return out


class StudyMismatchError(ValueError):
    """The output folder holds finished work made with other settings than the study now asks for."""


def _refuse_mismatch(folder: Path, work: str, diffs: list[str], fixes: str) -> None:
    """Raise `StudyMismatchError` naming `folder`, each differing setting (``diffs``) and the fixes, if any differ."""
    if diffs:
        raise StudyMismatchError(f"{folder} holds {work} made with other settings: {'; '.join(diffs)}. Pass the "
                                 f"settings it was made with, {fixes}.")


# ======================================================================================================================
# Pretraining stage
# ======================================================================================================================


def _write_json(path: Path, data) -> None:
    from .durable import write_text_atomically

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(data, indent=2, default=str) + "\n")


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def measure_pretrain_throughput(cfg: StudyConfig, vocab_size: int, steps: int = 4, warmup: int = 2,
                                batch_size: int | None = None) -> float:
    """Tokens/s of one training step of the study's model on this machine (its mixed precision, fused AdamW), median."""
    import torch

    from .configuration_gpt1 import GPT1Config
    from .modeling_gpt1 import GPT1LMHeadModel
    from .process_settings import keep_freed_memory

    keep_freed_memory()  # as the run it plans: pretrain() keeps freed memory (--keep_freed_memory)
    v = vocab_size
    config = GPT1Config(vocab_size=v, n_positions=cfg.n_ctx, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
                        n_head=cfg.n_head, n_inner=4 * cfg.n_embd, start_token_id=v - 4, delimiter_token_id=v - 3,
                        clf_token_id=v - 2, pad_token_id=v - 1)
    torch.manual_seed(0)
    model = GPT1LMHeadModel(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, v - 4, (batch_size or cfg.pretrain_batch_size, cfg.n_ctx))
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=cfg.mixed_precision == "bf16"):
            loss = model(x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return x.numel() / statistics.median(times)


def pretrain_time_left(cfg: StudyConfig, spent_s: float = 0.0) -> float:
    """Seconds of the pretraining safety stop (``max_time``) for a sitting after `spent_s` seconds of earlier ones.

    ``max_time`` counts one invocation only; the study's budget (``budget_minutes``, with 15% slack over the schedule
    sized to it) is a total, so a resumed pretraining gets what is left of it (at least one second: the loop then
    stops after one update, saves and finishes with the latest weights).
    """
    return max(1.0, cfg.budget_minutes * 60 * 1.15 - spent_s)


def stage_pretrain(cfg: StudyConfig, out: Path, spent_s: float = 0.0) -> dict:
    """The pretraining stage; `spent_s`: pretraining wall time of earlier sittings (from ``study_log.json``)."""
    from .pretraining import PretrainArguments, pretrain

    folder = out / "pretrain"
    done = _read_json(folder / "results.json")
    plan_path = out / "pretrain_plan.json"
    plan = _read_json(plan_path)
    _check_same_pretraining(cfg, plan, done, out)
    if done is not None:
        logger.info("pretrain: done (%s)", folder)
        return done
    corpus = cfg.corpus or [str(Path(cfg.data_dir) / "pretrain_corpus")]
    if plan is None:
        vocab = (cfg.vocab_size + 4) if cfg.vocab_size else 40482
        tps = measure_pretrain_throughput(cfg, vocab)
        tokens_per_update = cfg.pretrain_batch_size * cfg.n_ctx
        # 88% of the measured rate: the loop adds held-out evaluations, checkpoints and logging to the bare step
        steps = max(10, int(cfg.budget_minutes * 60 * tps * 0.88 / tokens_per_update))
        # rounded up to a multiple of the zero-shot points, so that the last evenly spaced checkpoint is the final model
        max_steps = math.ceil(steps / cfg.zero_shot_points) * cfg.zero_shot_points
        plan = {"measured_tokens_per_s": tps, "max_steps": max_steps, "tokens_per_update": tokens_per_update,
                "budget_minutes": cfg.budget_minutes, "save_every_steps": max(1, max_steps // cfg.zero_shot_points)}
        _write_json(plan_path, plan)
        logger.info("pretrain plan: %s", plan)
    max_time = pretrain_time_left(cfg, spent_s)
    if spent_s:
        logger.info("pretrain: %.1f min spent in earlier sittings, %.1f min left of the budget", spent_s / 60,
                    max_time / 60)
    args = PretrainArguments(
        train_files=corpus,
        tokenizer_name=cfg.tokenizer_name_or_path,
        train_tokenizer=bool(cfg.vocab_size) and cfg.tokenizer_name_or_path is None,
        vocab_size=cfg.vocab_size or 40000,
        block_size=cfg.n_ctx, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
        learning_rate=cfg.pretrain_learning_rate,
        warmup_ratio=cfg.pretrain_warmup_ratio,
        global_batch_size=cfg.pretrain_batch_size,
        max_train_steps=plan["max_steps"],
        max_time=max_time,  # a safety stop only; the schedule is sized to end before it
        mixed_precision=cfg.mixed_precision,
        seed=cfg.seed,
        output_dir=str(folder),
        cache_dir=str(out / "cache"),
        eval_steps=plan["save_every_steps"],
        checkpointing_steps=str(plan["save_every_steps"]),
        save_total_limit=None,  # keep every checkpoint: the zero-shot curves read them
        resume_from_checkpoint="auto",  # a later sitting continues the stage
        overwrite_output_dir=True,  # what a sitting killed before its first checkpoint left is started again
        disable_tqdm=not cfg.progress_bar,
    )
    return pretrain(args)


def _check_same_pretraining(cfg: StudyConfig, plan: dict | None, done: dict | None, out: Path) -> None:
    """Raise `StudyMismatchError` when `out`'s pretraining plan or model was made with other settings than `cfg`."""
    want = {"budget_minutes": cfg.budget_minutes, "tokens_per_update": cfg.pretrain_batch_size * cfg.n_ctx,
            "n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "n_head": cfg.n_head, "n_positions": cfg.n_ctx}
    have = {**{k: (plan or {}).get(k) for k in ("budget_minutes", "tokens_per_update")},
            **{k: (done or {}).get("model", {}).get(k) for k in ("n_layer", "n_embd", "n_head", "n_positions")}}
    diffs = [f"{k}={have[k]!r} (this study: {want[k]!r})" for k in want if have[k] is not None and have[k] != want[k]]
    _refuse_mismatch(out, "a pretraining stage", diffs, "or give the study a new --output_dir")


# ======================================================================================================================
# Zero-shot stage
# ======================================================================================================================


def _pretrain_checkpoints(out: Path) -> list[tuple[int, Path]]:
    root = out / "pretrain" / "checkpoints"
    found = []
    for p in sorted(root.glob("step-*")):
        if p.is_dir() and (p / "config.json").is_file():
            found.append((int(p.name.split("-")[1]), p))
    return found


#: The key of the given model (``model_name_or_path``) in ``zero_shot.json``: its number of updates is unknown here.
#: Older study folders stored it as step "-1".
GIVEN = "given"


def stage_zero_shot(cfg: StudyConfig, out: Path, on_progress=None) -> dict:
    import torch

    from .configuration_gpt1 import GPT1Config
    from .modeling_gpt1 import GPT1LMHeadModel
    from .task_models import load_tokenizer
    from .zero_shot import evaluate_zero_shot

    path = out / "zero_shot.json"
    results = _read_json(path) or {"points": {}}
    if "-1" in results["points"]:  # written before the given model had its own key
        results["points"][GIVEN] = results["points"].pop("-1")
    model_dir = _pretrained_path(cfg, out)
    tokenizer = load_tokenizer(cfg.tokenizer_name_or_path, model_dir)
    points: list[tuple[int | str, Any]] = [(0, None)]  # step 0: the random initialisation
    if cfg.model_name_or_path is None:
        every = (_read_json(out / "pretrain_plan.json") or {}).get("save_every_steps") or 1
        # the planned, evenly spaced checkpoints (the loop also saves one at each epoch end: not used here)
        points += [(s, p) for s, p in _pretrain_checkpoints(out) if s % every == 0]
        final = _read_json(out / "pretrain" / "results.json") or {}
        if final.get("global_step") and final["global_step"] not in [s for s, _ in points]:
            points.append((int(final["global_step"]), Path(model_dir)))
    else:
        points.append((GIVEN, model_dir))  # the given model (its number of updates is unknown here)
        results["given_model"] = cfg.model_name_or_path
    for step, folder in points:
        key = str(step)
        if key in results["points"]:
            continue
        if folder is None:
            config = GPT1Config.from_pretrained(model_dir)
            torch.manual_seed(cfg.seed)
            model = GPT1LMHeadModel(config)
        else:
            from .convert import load_as_gpt1

            model = load_as_gpt1(str(folder), GPT1LMHeadModel)
        row = {}
        for task in cfg.zero_shot_tasks:
            t = time.perf_counter()
            r = evaluate_zero_shot(task, model, tokenizer, data_dir=cfg.data_dir, split="validation",
                                   max_examples=cfg.zero_shot_examples, seed=cfg.seed, bf16=cfg.mixed_precision == "bf16",
                                   threshold_examples=cfg.zero_shot_examples, max_length=cfg.n_ctx)
            row[task] = {"metrics": r.get("metrics"), "num_examples": r["num_examples"],
                         "heuristic": r["heuristic"], "time_s": time.perf_counter() - t}
        results["points"][key] = row
        _write_json(path, results)
        logger.info("zero-shot at step %s: %s", step, {t: v["metrics"] for t, v in row.items()})
        if on_progress is not None:
            on_progress()
    return results


# ======================================================================================================================
# Fine-tuning runs (finetune, layer_transfer, lora stages)
# ======================================================================================================================


def _pretrained_path(cfg: StudyConfig, out: Path) -> str:
    return cfg.model_name_or_path or str(out / "pretrain")


def _task_args(cfg: StudyConfig, task: str) -> dict[str, Any]:
    from .tasks import get_task

    mc = get_task(task).kind == "multiple_choice"
    whole = cfg.small_tasks_whole and task in cfg.small_tasks
    return dict(
        max_train_samples=None if whole else cfg.mc_max_train_examples if mc else cfg.max_train_examples,
        max_eval_samples=cfg.max_eval_examples,
        max_length=cfg.mc_max_length if mc else cfg.max_length,
        global_batch_size=32,
        per_device_train_batch_size=8 if mc else None,
    )


def plan_runs(cfg: StudyConfig, out: Path, stage: str, n_layer: int | None = None) -> list[dict[str, Any]]:
    """The fine-tuning runs of one stage: dicts with ``name``, ``variant``, ``task``, ``seed`` and ``args``
    (`FinetuneArguments` fields). `n_layer`: blocks of the pretrained model, for ``layer_transfer`` (default: read
    from ``model_name_or_path``'s config, or ``cfg.n_layer``)."""
    model = _pretrained_path(cfg, out)
    runs = []

    def add(variant, task, seed, **extra):
        name = f"{variant}/{task}/seed{seed}"
        args = dict(task_name=task, model_name_or_path=model, tokenizer_name=cfg.tokenizer_name_or_path,
                    data_dir=cfg.data_dir, output_dir=str(out / "runs" / name), learning_rate=cfg.learning_rate,
                    num_train_epochs=cfg.num_train_epochs, aux_lm_weight=0.5, mixed_precision=cfg.mixed_precision,
                    seed=seed, group_by_length=True, predict_splits=[], save_model=task == "mnli",
                    save_total_limit=1, disable_tqdm=True, num_threads=None,
                    resume_from_checkpoint="auto", overwrite_output_dir=True)  # a killed run continues
        args.update(_task_args(cfg, task))
        args.update(extra)
        runs.append({"name": name, "variant": variant, "task": task, "seed": seed, "args": args,
                     "own_model": cfg.model_name_or_path is None})  # the study's pretraining: moves with the folder

    def seeds(task):
        return range(cfg.seed, cfg.seed + (cfg.seeds if task in cfg.small_tasks else 1))

    if stage == "finetune":
        for task in cfg.tasks:
            for s in seeds(task):
                add("full", task, s)
        if cfg.ablations:
            for task in cfg.ablation_tasks:
                for s in seeds(task):
                    add("no_pretrain", task, s, from_scratch=True)
                    add("no_aux", task, s, aux_lm_weight=0.0)
    elif stage == "layer_transfer" and cfg.layer_transfer_task:
        from transformers import AutoConfig

        if n_layer is None:
            n_layer = AutoConfig.from_pretrained(model).num_hidden_layers if cfg.model_name_or_path else cfg.n_layer
        for k in range(n_layer):  # K = n_layer is the "full" run of the same task and seed
            add(f"transfer{k}", cfg.layer_transfer_task, cfg.seed, transfer_layers=k)
    elif stage == "lora" and cfg.lora_task:
        add("lora", cfg.lora_task, cfg.seed, lora=True, learning_rate=cfg.lora_learning_rate)
    return runs


def _run_one(run: dict[str, Any], num_threads: int | None) -> dict[str, Any]:
    """Worker: one fine-tuning run (+ MNLI's mismatched evaluation). Returns a small summary or the error."""
    import torch

    from .evaluation import evaluate_checkpoint
    from .finetuning import FinetuneArguments, finetune

    if num_threads:
        torch.set_num_threads(num_threads)
    out_dir = Path(run["args"]["output_dir"])
    t = time.perf_counter()
    try:
        results = finetune(FinetuneArguments(**run["args"]))
        if run["task"] == "mnli":
            mm = evaluate_checkpoint(str(out_dir), "mnli_mm", split="validation", data_dir=run["args"]["data_dir"],
                                     max_examples=run["args"]["max_eval_samples"], seed=0,
                                     mixed_precision=run["args"]["mixed_precision"])
            _write_json(out_dir / "eval_mnli_mm.json", {k: v for k, v in mm.items() if k != "predictions"})
            for f in out_dir.glob("model*.safetensors"):  # only needed for the mismatched evaluation
                f.unlink()
        return {"name": run["name"], "ok": True, "metrics": results["metrics"], "time_s": time.perf_counter() - t}
    except Exception as e:  # one failed run is reported, the others go on
        logger.exception("run %s failed", run["name"])
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "error.txt").write_text(f"{type(e).__name__}: {e}\n")
        return {"name": run["name"], "ok": False, "error": f"{type(e).__name__}: {e}", "time_s": time.perf_counter() - t}


#: Planned arguments that do not change a run's result: a later sitting may differ in them.
_INCIDENTAL_ARGS = ("output_dir", "disable_tqdm", "num_threads", "resume_from_checkpoint", "overwrite_output_dir")


def _differs(recorded, planned) -> bool:
    """Whether a recorded argument differs from the planned one (in the form results.json stores it); two paths to
    the same existing folder (relative / absolute) are the same."""
    planned = json.loads(json.dumps(planned, default=str))
    if recorded == planned:
        return False
    if isinstance(recorded, str) and isinstance(planned, str) and os.path.exists(recorded) and os.path.exists(planned):
        return not os.path.samefile(recorded, planned)
    return True


def _is_done(run: dict[str, Any]) -> bool:
    """Whether `run` finished; a finished run made with other arguments raises `StudyMismatchError` (the report
    would otherwise show it as this study's)."""
    out_dir = Path(run["args"]["output_dir"])
    done = _read_json(out_dir / "results.json")
    if done is None:
        return False
    recorded = done.get("config", {})
    skip = (*_INCIDENTAL_ARGS, "model_name_or_path") if run.get("own_model") else _INCIDENTAL_ARGS
    diffs = [f"{k}={recorded[k]!r} (this study: {v!r})" for k, v in run["args"].items()
             if k not in skip and k in recorded and _differs(recorded[k], v)]
    _refuse_mismatch(out_dir, "a finished run", diffs,
                     "give the study a new --output_dir, or delete that run's folder to redo it")
    return run["task"] != "mnli" or (out_dir / "eval_mnli_mm.json").is_file()


def run_finetuning(cfg: StudyConfig, out: Path, stage: str, on_progress=None) -> list[dict[str, Any]]:
    """The runs of `stage` not finished yet; `on_progress()` is called after each run."""
    runs = plan_runs(cfg, out, stage)
    todo = [r for r in runs if not _is_done(r)]
    logger.info("%s: %d runs, %d to do", stage, len(runs), len(todo))
    if not todo:
        return []
    jobs = max(1, min(int(cfg.jobs or 1), len(todo)))
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    summaries = []
    bar = None
    if cfg.progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=stage, unit="run")
    if jobs == 1:
        for r in todo:
            summaries.append(_run_one(r, threads))
            _log_run(summaries[-1], bar)
            if on_progress is not None:
                on_progress()
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_run_one, r, threads) for r in todo]
            for f in as_completed(futures):
                summaries.append(f.result())
                _log_run(summaries[-1], bar)
                if on_progress is not None:
                    on_progress()
    if bar is not None:
        bar.close()
    failed = [s for s in summaries if not s["ok"]]
    if failed:
        logger.warning("%d run(s) failed: %s", len(failed), "; ".join(f"{s['name']}: {s['error']}" for s in failed))
    return summaries


def _log_run(summary, bar):
    msg = (f"{summary['name']}: {summary.get('metrics') if summary['ok'] else 'FAILED ' + summary['error']} "
           f"({summary['time_s']:.0f} s)")
    if bar is not None:
        bar.update(1)
        bar.write(msg)
    else:
        logger.info(msg)


# ======================================================================================================================
# The study
# ======================================================================================================================


def machine_info() -> dict[str, Any]:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


#: Seconds between two writes of the running stage's elapsed time to ``study_log.json`` (besides one after each run).
HEARTBEAT_S = 30.0


class _StageClock:
    """Keeps ``session["stages"][stage]`` (seconds so far) in ``study_log.json`` up to date while a stage runs: on
    `tick` (called after each run) and every `interval` seconds from a background thread, so the time of a stage
    that is killed is kept (up to the last write) and the report's "summed over sittings" covers it."""

    def __init__(self, log: dict, session: dict, path: Path, interval: float | None = None):
        self.log, self.session, self.path = log, session, path
        self.interval = HEARTBEAT_S if interval is None else interval
        self._lock = threading.Lock()
        self._stage: str | None = None
        self._t0 = 0.0
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, stage: str) -> None:
        with self._lock:
            self._stage, self._t0 = stage, time.perf_counter()
        self.tick()
        if self._thread is None and self.interval > 0:
            self._thread = threading.Thread(target=self._beat, name="study-stage-clock", daemon=True)
            self._thread.start()

    def tick(self) -> None:
        with self._lock:
            if self._stage is not None:
                self.session["stages"][self._stage] = time.perf_counter() - self._t0
            _write_json(self.path, self.log)

    def stop(self) -> None:
        """The running stage has finished: record its final time."""
        self.tick()
        with self._lock:
            self._stage = None

    def close(self) -> None:
        """End the heartbeat; a stage still running (an exception, Ctrl-C) gets its time so far recorded."""
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        self.stop()

    def _beat(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self.tick()
            except OSError as e:  # a full disk must not kill the study from this thread
                logger.warning("could not update the study log: %s", e)


def run_study(cfg: StudyConfig, command: str | None = None) -> Path:
    """Run the stages of `cfg` (see module docstring); returns the path of the written report."""
    cfg = cfg.resolved()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "study_log.json"
    log = _read_json(log_path) or {"sessions": []}
    # pretraining wall time of earlier sittings: the budget is a total, not one per sitting
    pretrain_spent = sum(s.get("stages", {}).get("pretrain", 0.0) for s in log["sessions"])
    session = {"command": command, "config": asdict(cfg), "machine": machine_info(), "stages": {},
               "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    log["sessions"].append(session)
    _write_json(out / "study_config.json", asdict(cfg))
    report = None
    clock = _StageClock(log, session, log_path)
    try:
        for stage in STAGES:
            if stage not in cfg.stages:
                continue
            if stage == "pretrain" and cfg.model_name_or_path is not None:
                continue
            logger.info("=== stage %s ===", stage)
            clock.start(stage)
            if stage == "pretrain":
                stage_pretrain(cfg, out, spent_s=pretrain_spent)
            elif stage == "zero_shot":
                stage_zero_shot(cfg, out, on_progress=clock.tick)
            elif stage in RUN_STAGES:
                run_finetuning(cfg, out, stage, on_progress=clock.tick)
            elif stage == "report":
                report = write_report(cfg, out)
            clock.stop()
    finally:
        clock.close()
    return report or out / "report" / "results.md"


# ======================================================================================================================
# Report
# ======================================================================================================================


def _collect(out: Path) -> dict[str, dict[str, list[dict]]]:
    """{variant: {task: [results.json, ...]}} for every finished run."""
    found: dict[str, dict[str, list[dict]]] = {}
    for path in sorted((out / "runs").glob("*/*/seed*/results.json")):
        variant, task = path.parts[-4], path.parts[-3]
        r = json.loads(path.read_text())
        mm = _read_json(path.parent / "eval_mnli_mm.json")
        if mm is not None:
            r["mnli_mm_metrics"] = mm.get("metrics")
        found.setdefault(variant, {}).setdefault(task, []).append(r)
    return found


def _scores(runs: list[dict], task: str) -> list[float]:
    """The paper's metric of `task` (in percent) for each run; MNLI-mm / RACE-m / RACE-h from their sources."""
    from .tasks import get_task

    vals = []
    for r in runs:
        m = r.get("metrics") or {}
        if task == "mnli_mm":
            v = (r.get("mnli_mm_metrics") or {}).get("accuracy")
        elif task in ("race_middle", "race_high"):
            v = m.get("accuracy_" + task.split("_")[1])
        elif task == "mnli_avg":
            a, b = m.get("accuracy"), (r.get("mnli_mm_metrics") or {}).get("accuracy")
            v = None if a is None or b is None else (a + b) / 2
        else:
            v = m.get(get_task(task).primary_metric)
        if v is not None:
            vals.append(100.0 * float(v))
    return vals


def _fmt(vals: list[float]) -> str:
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.1f}"
    return f"{statistics.mean(vals):.1f} ± {statistics.stdev(vals):.1f}"


def _mean(vals):
    return statistics.mean(vals) if vals else None


def _names(tasks) -> str:
    """"CoLA, MRPC and RTE"."""
    return _and_join([TASK_NAMES.get(t, t) for t in tasks])


def _source_task(task: str) -> str:
    return {"mnli_mm": "mnli", "mnli_avg": "mnli", "race_middle": "race", "race_high": "race"}.get(task, task)


def _table(rows: list[tuple[str, str]], results, variant: str, paper: dict[str, float]) -> dict[str, Any]:
    """A paper-style table: one column per task, rows 'paper' and 'ours'."""
    ours = [_fmt(_scores(results.get(variant, {}).get(_source_task(t), []), t)) for t, _ in rows]
    return {"header": ["", *(label for _, label in rows)],
            "rows": [["paper (GPT-1, 117M)", *(f"{paper[t]:.1f}" if t in paper else "–" for t, _ in rows)],
                     ["ours (this study)", *ours]]}


def _md_table(table: dict[str, Any] | None) -> str:
    """A table of the report data as markdown: first column left-aligned (right with ``numeric_first``), the rest
    right-aligned; an empty cell is written ``| |``."""
    if not table:
        return ""

    def line(cells):
        return "|" + "|".join(f" {c} " if c != "" else " " for c in cells) + "|"

    rule = "|" + ("---:|" if table.get("numeric_first") else "---|") + "---:|" * (len(table["header"]) - 1)
    return "\n".join([line(table["header"]), rule, *(line(r) for r in table["rows"])])


def _plot_layer_transfer(out: Path, cfg: StudyConfig, results, path: Path) -> list[dict] | None:
    task = cfg.layer_transfer_task
    if not task:
        return None
    from .tasks import get_task

    metric = get_task(task).primary_metric
    pts = []
    for variant, by_task in results.items():
        if variant.startswith("transfer") and task in by_task:
            pts.append((int(variant[len("transfer"):]), by_task[task][0]))
    full = [r for r in results.get("full", {}).get(task, []) if r["seed"] == cfg.seed]
    if full:
        pts.append((full[0]["model"]["config"]["n_layer"], full[0]))
    pts = [{"layers": k, "value": 100 * r["metrics"][metric],
            "mismatched": None if not r.get("mnli_mm_metrics") else 100 * r["mnli_mm_metrics"]["accuracy"]}
           for k, r in pts]
    pts.sort(key=lambda p: p["layers"])
    if not pts:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.plot([p["layers"] for p in pts], [p["value"] for p in pts], "o-", label=f"{task} (dev, {metric})")
        if any(p.get("mismatched") is not None for p in pts):
            ax.plot([p["layers"] for p in pts], [p.get("mismatched") for p in pts], "s--", label="mnli mismatched")
        ax.set_xlabel("# of pretrained layers transferred")
        ax.set_xticks([p["layers"] for p in pts])
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title("Layer transfer (cf. paper Figure 2 left)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
    except ImportError:
        pass
    return pts


#: Chance level of each zero-shot task's metric (in percent), for the plot.
_CHANCE = {"sst2": 50.0, "cola": 0.0, "race": 25.0, "story_cloze": 50.0, "wnli": 50.0}


def _plot_zero_shot(zs: dict | None, path: Path) -> tuple[list[dict] | None, bool]:
    """The zero-shot rows (pretraining steps in order, then the given model, step ``GIVEN``) and whether the curve
    over pretraining was drawn: only with pretraining checkpoints (steps > 0); the given model, whose number of
    updates is unknown, is never placed on the pretraining axis."""
    if not zs or not zs.get("points"):
        return None, False
    from .tasks import get_task

    points = dict(zs["points"])
    if "-1" in points:  # older folders stored the given model as step -1
        points.setdefault(GIVEN, points.pop("-1"))
    steps: list[int | str] = sorted(int(s) for s in points if s != GIVEN)
    if GIVEN in points:
        steps.append(GIVEN)
    tasks = sorted({t for row in points.values() for t in row})
    series = {}
    for t in tasks:
        metric = get_task(t).primary_metric
        series[t] = [100 * ((points[str(s)].get(t) or {}).get("metrics") or {}).get(metric, float("nan"))
                     for s in steps]
    curve = [i for i, s in enumerate(steps) if s != GIVEN]
    plotted = any(steps[i] != 0 for i in curve)
    if plotted:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(figsize=(6, 3.8))
            for t in tasks:
                ax.plot([steps[i] for i in curve], [series[t][i] - _CHANCE.get(t, 0.0) for i in curve], "o-",
                        label=f"{t} ({get_task(t).primary_metric})")
            ax.axhline(0.0, color="grey", lw=0.8, ls="--")
            ax.set_xlabel("pretraining updates")
            ax.set_ylabel("zero-shot score − chance (points)")
            ax.set_title("Zero-shot behaviour during pretraining (cf. paper Figure 2 right)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=120)
            plt.close(fig)
        except ImportError:
            plotted = False
    return [{"step": s, **{t: series[t][i] for t in tasks}} for i, s in enumerate(steps)], plotted


#: Official training-set sizes (examples; RACE: questions) of the paper's tasks, for the full-scale estimate.
FULL_TRAIN_SIZES = {"snli": 549_367, "mnli": 392_702, "qnli": 104_743, "rte": 2_490, "scitail": 23_596,
                    "story_cloze": 1_497, "race": 87_866, "cola": 8_551, "sst2": 67_349, "mrpc": 3_668,
                    "stsb": 5_749, "qqp": 363_846}


#: The model and depth of the full-scale study's estimate (GPT-1: 12 blocks).
FULL_SCALE_MODEL = "openai-community/openai-gpt"
FULL_SCALE_N_LAYER = 12


def full_scale_config(data_dir: str) -> StudyConfig:
    """The full-scale command of the report (``--model_name_or_path <GPT-1>``, every other option at its default)."""
    return StudyConfig(data_dir=data_dir, preset="full", model_name_or_path=FULL_SCALE_MODEL).resolved()


def full_scale_estimate(data_dir: str, sample: int = 300, cfg: StudyConfig | None = None,
                        n_layer: int = FULL_SCALE_N_LAYER,
                        tokens_per_s: dict[str, float] | None = None) -> dict[str, Any]:
    """Tokens the full-scale study trains on, from GPT-1's BPE lengths of `sample` training examples per task.

    The runs are those `plan_runs` makes for every fine-tuning stage (finetune: the tasks × their seeds + the Table 5
    ablations; layer_transfer: K = 0 .. n_layer - 1 blocks of its task, K = n_layer being the finetune run; lora) of
    `cfg` (default: `full_scale_config`), each counted with its own length cut, epochs and training-set size (the
    official size, or the run's subsample). Counts every sequence a model reads (both orderings of a similarity pair,
    every choice). A LoRA run reads the same tokens as full fine-tuning and is counted at its cost (an upper bound).
    Dividing by a training throughput (tokens/s) gives the time.
    """
    from .data import encode_dataset, load_task_split
    from .task_models import load_tokenizer

    cfg = (cfg or full_scale_config(data_dir)).resolved()
    out = Path(cfg.output_dir)
    by_stage = {stage: plan_runs(cfg, out, stage, n_layer=n_layer) for stage in RUN_STAGES}
    tokenizer = load_tokenizer(None, None)  # GPT-1's original BPE (bundled)
    means: dict[tuple[str, int], float] = {}

    def mean_tokens(task: str, max_length: int) -> float:
        if (task, max_length) not in means:
            ds = load_task_split(task, "train", data_dir=data_dir, max_examples=sample, seed=0)
            enc, _ = encode_dataset(ds, task, tokenizer, max_length=max_length)

            def count(x):
                return sum(count(y) for y in x) if x and isinstance(x[0], list) else len(x)

            means[(task, max_length)] = sum(count(ids) for ids in enc["input_ids"]) / len(enc)
        return means[(task, max_length)]

    rows: dict[str, dict[str, Any]] = {}
    for stage, runs in by_stage.items():
        for run in runs:
            task, a = run["task"], run["args"]
            n = FULL_TRAIN_SIZES[task] if a.get("max_train_samples") is None else min(FULL_TRAIN_SIZES[task],
                                                                                        a["max_train_samples"])
            mean = mean_tokens(task, a["max_length"])
            row = rows.setdefault(task, {"task": task, "train_examples": n, "mean_tokens": mean, "runs": 0,
                                         "tokens": 0.0, "runs_by_stage": {}})
            row["runs"] += 1
            row["runs_by_stage"][stage] = row["runs_by_stage"].get(stage, 0) + 1
            row["tokens"] += n * mean * a["num_train_epochs"]
    order = [*cfg.tasks, *(t for t in rows if t not in cfg.tasks)]
    rows_list = [rows[t] for t in order if t in rows]
    total = sum(r["tokens"] for r in rows_list)
    seeds_of = {t: len({r["seed"] for r in by_stage["finetune"] if r["task"] == t and r["variant"] == "full"})
                for t in dict.fromkeys([*cfg.small_tasks, *cfg.tasks]) if t in cfg.tasks}
    return {"rows": rows_list, "total_tokens": total, "sample": sample, "epochs": cfg.num_train_epochs,
            "runs": {stage: len(runs) for stage, runs in by_stage.items()},
            "multi_seed": {t: n for t, n in seeds_of.items() if n > 1}, "ablations": cfg.ablations,
            "layer_transfer_task": cfg.layer_transfer_task, "n_layer": n_layer, "lora_task": cfg.lora_task,
            "hours": {k: total / v / 3600 for k, v in (tokens_per_s or {}).items()}}


def _full_scale(cfg: StudyConfig, out: Path) -> dict[str, Any] | None:
    """`full_scale_estimate` + the measured full-config training throughput, computed once per study folder."""
    path = out / "full_scale_estimate.json"
    cached = _read_json(path)
    if cached is not None and "runs" in cached:
        return cached
    # none yet, or one written before the estimate counted every stage's runs: recount (keeping its measurement)
    try:
        est = full_scale_estimate(cfg.data_dir)
    except (FileNotFoundError, ValueError) as e:  # a data folder without every task
        logger.warning("no full-scale estimate: %s", e)
        return None
    if cached is not None and cached.get("measured"):
        est["measured"] = cached["measured"]
    else:
        full = StudyConfig(**{**asdict(cfg), "n_layer": 12, "n_embd": 768, "n_head": 12, "n_ctx": 128})
        est["measured"] = {"tokens_per_s": measure_pretrain_throughput(full, 40482, steps=3, warmup=1, batch_size=8),
                           "batch": 8, "n_ctx": 128, "config": "12x768", "mixed_precision": full.mixed_precision}
    _write_json(path, est)
    return est


def _precision_words(mixed_precision: str | None) -> str:
    return {"bf16": "bf16 autocast", "fp16": "fp16 autocast"}.get(mixed_precision or "no", "fp32")


def _repo_docs() -> Path:
    return Path(__file__).resolve().parent.parent / "docs"


#: The columns of Tables 2-4, in the paper's order: (task or derived score, label). GLUE: the paper's score needs the
#: test server; ours is never computed, so its cell is always "–".
PAPER_TABLE_COLUMNS = {
    "table2": [("mnli", "MNLI-m"), ("mnli_mm", "MNLI-mm"), ("snli", "SNLI"), ("scitail", "SciTail"),
               ("qnli", "QNLI"), ("rte", "RTE")],
    "table3": [("story_cloze", "Story Cloze"), ("race_middle", "RACE-m"), ("race_high", "RACE-h"), ("race", "RACE")],
    "table4": [("cola", "CoLA (mc)"), ("sst2", "SST2 (acc)"), ("mrpc", "MRPC (F1)"), ("stsb", "STSB (pc)"),
               ("qqp", "QQP (F1)"), ("glue", "GLUE")],
}
#: Table 5's columns (MNLI: mean of matched and mismatched) and its rows of ours.
TABLE5_COLUMNS = [("cola", "CoLA"), ("sst2", "SST2"), ("mrpc", "MRPC"), ("stsb", "STSB"), ("qqp", "QQP"),
                  ("mnli_avg", "MNLI"), ("qnli", "QNLI"), ("rte", "RTE")]
TABLE5_ROWS = [("full", "Transformer w/ aux LM (full)"), ("no_pretrain", "Transformer w/o pre-training"),
               ("no_aux", "Transformer w/o aux LM")]
#: The GPU line of the full-scale estimate: one H100's dense bf16 peak and an assumed (not measured) MFU.
H100_BF16_FLOPS = 989e12
ASSUMED_MFU = 0.4
#: The report's template (`render_report`), shipped as package data.
REPORT_TEMPLATE = "templates/results.md"


def _and_join(items: list[str]) -> str:
    """"a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _pretrain_data(cfg: StudyConfig, pre: dict | None, plan: dict | None) -> dict[str, Any] | None:
    """The pretraining run's numbers (``pretrain/results.json``, ``pretrain_plan.json``), tokens per minute included."""
    if not pre:
        return None
    m, params, minutes = pre["model"], pre["num_parameters"] / 1e6, pre["train_time_s"] / 60
    return {"params_millions": params, "n_layer": m["n_layer"], "n_embd": m["n_embd"], "n_head": m["n_head"],
            "n_positions": m["n_positions"], "vocab_size": pre["tokenizer"]["vocab_size"],
            "documents": pre["corpus"]["documents"], "corpus_tokens_millions": pre["corpus"]["tokens"] / 1e6,
            "heldout_tokens": pre["corpus"]["heldout_tokens"], "global_step": pre["global_step"],
            "tokens_per_update": pre["batch"]["tokens_per_update"], "tokens_seen": pre["tokens_seen"],
            "tokens_seen_millions": pre["tokens_seen"] / 1e6, "train_minutes": minutes,
            "tokens_per_s": pre["train_tokens_per_s"],
            "tokens_per_minute": pre["tokens_seen"] / minutes if minutes > 0 else None,
            "times_smaller": 117 / params, "times_fewer_tokens": 25e9 / max(pre["tokens_seen"], 1),
            "budget_minutes": cfg.budget_minutes, "planned_tokens_per_s": (plan or {}).get("measured_tokens_per_s"),
            "initial_perplexity": pre["initial_heldout"]["perplexity"],
            "final_perplexity": pre["final_heldout"]["perplexity"]}


def _count(n: int | None) -> str:
    """A subset size as the report writes it: 5,000, or "all" for none."""
    return f"{n:,}" if n else "all"


def _finetune_data(cfg: StudyConfig, results) -> dict[str, Any] | None:
    """The fine-tuning recipe, and the seeds of the tasks that ran several (read from the runs, not the config: an
    older folder may differ)."""
    from .tasks import get_task

    if not results.get("full"):
        return None
    seeds_of = {t: len({r["seed"] for r in rs}) for t, rs in results["full"].items()}
    multi = [t for t in dict.fromkeys([*cfg.small_tasks, *seeds_of]) if seeds_of.get(t, 0) > 1]
    whole = [t for t in cfg.small_tasks if t in seeds_of] if cfg.small_tasks_whole else []
    # the multiple-choice tasks that were subsampled (a whole-set task is not, whatever its kind)
    mc = [t for t in seeds_of if t not in whole and get_task(t).kind == "multiple_choice"]
    return {"epochs": cfg.num_train_epochs, "learning_rate": cfg.learning_rate,
            "precision": _precision_words(cfg.mixed_precision), "max_train_examples": _count(cfg.max_train_examples),
            "mc_max_train_examples": _count(cfg.mc_max_train_examples), "mc_tasks": _names(mc) if mc else "multiple choice",
            "max_length": cfg.max_length, "whole_sets": _names(whole),
            "mc_max_length": cfg.mc_max_length, "max_eval_examples": _count(cfg.max_eval_examples),
            "multi_seed": {t: seeds_of[t] for t in multi}}


def _table5(results) -> tuple[dict[str, Any], dict[str, dict[str, float | None]]]:
    """Table 5 (the paper's rows and ours, the LSTM row the paper's only) and our mean per variant and column."""
    rows, means = [], {}
    for variant, label in TABLE5_ROWS:
        p = PAPER["table5"][variant]
        rows.append([f"paper: {label}", f"{p['avg']:.1f}", *(f"{p[_source_task(t)]:.1f}" for t, _ in TABLE5_COLUMNS)])
        vals = {t: _scores(results.get(variant, {}).get(_source_task(t), []), t) for t, _ in TABLE5_COLUMNS}
        means[variant] = {t: _mean(v) for t, v in vals.items()}
        known = [v for v in means[variant].values() if v is not None]
        avg = f"{statistics.mean(known):.1f}" if len(known) == len(TABLE5_COLUMNS) else "–"
        rows.append([f"**ours: {label}**", avg, *(_fmt(vals[t]) for t, _ in TABLE5_COLUMNS)])
    p = PAPER["table5"]["lstm"]
    rows.append(["paper: LSTM w/ aux LM", f"{p['avg']:.1f}", *(f"{p[_source_task(t)]:.1f}" for t, _ in TABLE5_COLUMNS)])
    return {"header": ["method", "Avg", *(label for _, label in TABLE5_COLUMNS)], "rows": rows}, means


def _ablation_verdicts(means) -> tuple[dict | None, dict | None]:
    """Does pretraining help, does the aux LM loss help: the columns each wins, of those both variants have."""
    label = dict(TABLE5_COLUMNS)
    full, scratch, no_aux = (means.get(v, {}) for v in ("full", "no_pretrain", "no_aux"))
    compared = [t for t, _ in TABLE5_COLUMNS if full.get(t) is not None and scratch.get(t) is not None]
    if not compared:
        return None, None
    helps = {"compared": len(compared), "winners": [label[t] for t in compared if full[t] > scratch[t]],
             "losers": [label[t] for t in compared if not full[t] > scratch[t]]}
    both = [t for t in compared if no_aux.get(t) is not None]
    aux = {"compared": len(both), "winners": [label[t] for t in both if full[t] > no_aux[t]]} if both else None
    return helps, aux


def _layer_transfer_table(task: str | None, lt: list[dict] | None) -> dict[str, Any] | None:
    if not lt:
        return None
    rows = [[f"{task} dev", *(f"{p['value']:.1f}" for p in lt)]]
    if any(p.get("mismatched") is not None for p in lt):
        rows.append(["mnli mismatched", *("–" if p.get("mismatched") is None else f"{p['mismatched']:.1f}"
                                          for p in lt)])
    return {"header": ["layers transferred", *(str(p["layers"]) for p in lt)], "rows": rows}


def _zero_shot_table(zsc: list[dict] | None, given: str | None) -> dict[str, Any] | None:
    if not zsc:
        return None
    tasks = [k for k in zsc[0] if k != "step"]
    rows = []
    for row in zsc:
        if row["step"] == GIVEN:
            label = f"given model (`{given}`)" if given else "given model"
        else:
            label = f"{row['step']:,}"
        rows.append([label, *(f"{row[t]:.1f}" for t in tasks)])
    return {"header": ["pretraining updates", *tasks], "rows": rows, "numeric_first": True}


def _lora_table(cfg: StudyConfig, results) -> dict[str, Any] | None:
    """LoRA against full fine-tuning of the same task and seed."""
    lora = results.get("lora", {}).get(cfg.lora_task or "", [])
    full = [r for r in results.get("full", {}).get(cfg.lora_task or "", []) if r["seed"] == cfg.seed]
    if not (lora and full):
        return None
    lo, fr = lora[0], full[0]
    metric = lo["primary_metric"]
    info = lo["model"].get("lora") or {}
    tp, tot = info.get("trainable_parameters"), info.get("total_parameters")
    share = f" ({100 * tp / tot:.1f}%)" if tp and tot else ""
    return {"header": ["method", "trainable parameters", "lr", f"{cfg.lora_task} {metric}", "train time",
                       "wall time"],
            "rows": [["full fine-tuning", f"{fr['model']['num_parameters']:,} (100%)",
                      f"{fr['config']['learning_rate']:g}", f"{100 * fr['metrics'][metric]:.1f}",
                      f"{fr['train_time_s']:.0f} s", f"{fr['wall_time_s']:.0f} s"],
                     [f"LoRA r={info.get('r')}, α={info.get('alpha')} (c_attn, c_proj, c_fc; `score` + special-token "
                      "rows trained in full)", f"{tp:,}{share}", f"{lo['config']['learning_rate']:g}",
                      f"{100 * lo['metrics'][metric]:.1f}", f"{lo['train_time_s']:.0f} s",
                      f"{lo['wall_time_s']:.0f} s"]]}


def _budget_data(cfg: StudyConfig, results, log: dict) -> dict[str, Any]:
    """Fine-tuning runs and their time, wall time per stage summed over sittings, the machine of the last one."""
    run_times = [r.get("wall_time_s") or 0 for by_task in results.values() for rs in by_task.values() for r in rs]
    stage_s: dict[str, float] = {}
    for s in log["sessions"]:
        for k, v in s.get("stages", {}).items():
            stage_s[k] = stage_s.get(k, 0.0) + v
    return {"runs": sum(len(rs) for by in results.values() for rs in by.values()), "run_minutes": sum(run_times) / 60,
            "jobs": cfg.jobs, "stage_minutes": {k: v / 60 for k, v in stage_s.items()},
            "total_minutes": sum(stage_s.values()) / 60,
            "machine": log["sessions"][-1]["machine"] if log["sessions"] else machine_info()}


def _estimate_data(est: dict[str, Any] | None) -> dict[str, Any] | None:
    """The full-scale estimate (`_full_scale`) with its times on this CPU and on one H100, and its table."""
    if not est:
        return None
    measured, total = est["measured"], est["total_tokens"]
    tps = measured["tokens_per_s"]
    race = sum(r["tokens"] for r in est["rows"] if r["task"] == "race")
    rows = [[r["task"], f"{r['train_examples']:,}", f"{r['mean_tokens']:.0f}", str(r["runs"]),
             f"{r['tokens'] / 1e6:,.1f}M"] for r in est["rows"]]
    rows.append(["**total**", "", "", "", f"**{total / 1e6:,.0f}M**"])
    return {"sample": est["sample"], "epochs": est["epochs"], "runs": est["runs"], "multi_seed": est["multi_seed"],
            "ablations": est["ablations"], "layer_transfer_task": est["layer_transfer_task"],
            "n_layer": est["n_layer"], "lora_task": est["lora_task"],
            "precision": _precision_words(measured.get("mixed_precision", "bf16")), "batch": measured["batch"],
            "n_ctx": measured["n_ctx"], "tokens_per_s": tps, "total_tokens": total,
            "cpu_hours": total / tps / 3600, "cpu_days": total / tps / 86400,
            "h100_hours": total * 6 * 117e6 / (ASSUMED_MFU * H100_BF16_FLOPS) / 3600,
            "h100_tflops": H100_BF16_FLOPS / 1e12, "mfu_percent": 100 * ASSUMED_MFU, "race_percent": 100 * race / total,
            "table": {"header": ["task", "training examples", "mean tokens read per example", "runs",
                                 "tokens trained on"], "rows": rows}}


def report_data(cfg: StudyConfig, out: Path, target: Path) -> dict[str, Any]:
    """Everything the report shows, as plain data: numbers, table cells, figure paths (relative to `target`, next to
    which the figures are drawn), machine, the full-scale estimate, and every run's metrics."""
    cfg = cfg.resolved()
    results = _collect(out)
    log = _read_json(out / "study_log.json") or {"sessions": []}
    zs = _read_json(out / "zero_shot.json")
    img = target.parent / "img"
    lt_png, zs_png = img / "results_layer_transfer.png", img / "results_zero_shot.png"
    lt = _plot_layer_transfer(out, cfg, results, lt_png)
    zsc, zs_plotted = _plot_zero_shot(zs, zs_png)
    given = (zs or {}).get("given_model") or cfg.model_name_or_path
    table5, means = _table5(results)
    helps, aux = _ablation_verdicts(means)
    tables = {name: _table(cols, results, "full", PAPER[name]) for name, cols in PAPER_TABLE_COLUMNS.items()}
    tables.update(table5=table5, layer_transfer=_layer_transfer_table(cfg.layer_transfer_task, lt),
                  zero_shot=_zero_shot_table(zsc, given), lora=_lora_table(cfg, results))
    return {
        "out": str(out), "model_name_or_path": cfg.model_name_or_path,
        "commands": list(dict.fromkeys(s["command"] for s in log["sessions"] if s.get("command"))),
        "pretrain": _pretrain_data(cfg, _read_json(out / "pretrain" / "results.json"),
                                   _read_json(out / "pretrain_plan.json")),
        "finetune": _finetune_data(cfg, results), "tables": tables, "paper_glue": PAPER["table4"]["glue"],
        "table5_means": means, "pretraining_helps": helps, "aux_helps": aux,
        "figures": {"layer_transfer": os.path.relpath(lt_png, target.parent) if lt else None,
                    "zero_shot": os.path.relpath(zs_png, target.parent) if zs_plotted else None},
        "layer_transfer": lt, "zero_shot": zsc, "zero_shot_examples": cfg.zero_shot_examples,
        "budget": _budget_data(cfg, results, log),
        "estimate": _estimate_data(_full_scale(cfg, out) if cfg.full_scale_estimate else None),
        "runs": {v: {t: [{"seed": r["seed"], "metrics": r["metrics"], "mnli_mm": r.get("mnli_mm_metrics"),
                          "wall_time_s": r.get("wall_time_s")} for r in rs] for t, rs in by.items()}
                 for v, by in results.items()},
    }


# ---------------------------------------------------------------------------------------------------------------------
# the report's text: the template's blocks filled with the data
# ---------------------------------------------------------------------------------------------------------------------


def report_template() -> dict[str, str]:
    """The blocks of ``gpt1_hf/templates/results.md`` by name (its head note says how they are read)."""
    from importlib import resources

    text = (resources.files(__package__) / REPORT_TEMPLATE).read_text(encoding="utf-8")
    parts = re.split(r"^<!-- template: (\w+) -->\n", text, flags=re.MULTILINE)
    return {name: body.strip("\n") for name, body in zip(parts[1::2], parts[2::2], strict=True)}


class _Blocks:
    """The template's blocks, filled by name: ``blocks("name", key=value, ...)``."""

    def __init__(self, blocks: dict[str, str]):
        self.blocks = blocks

    def __call__(self, name: str, **values) -> str:
        # a line that holds only an empty value is dropped: an optional paragraph needs no condition in the template
        lines = [ln for ln in self.blocks[name].split("\n")
                 if not ((m := re.fullmatch(r"\{(\w+)\}", ln)) and values.get(m[1], 0) in ("", None))]
        return "\n".join(lines).format_map(values)


def _render_intro(data: dict[str, Any], fill: _Blocks) -> dict[str, str]:
    """What was run, and the fine-tuning recipe."""
    pre, ft = data["pretrain"], data["finetune"]
    if data["model_name_or_path"] is None and pre:
        what = fill("what_pretrained", **pre)
    elif data["model_name_or_path"]:
        what = fill("what_given", model=data["model_name_or_path"])
    else:
        what = ""
    setup = ""
    if ft:
        multi = ft["multi_seed"]
        counts = "/".join(str(n) for n in sorted(set(multi.values())))
        seeds = fill("seeds_several", tasks=_names(multi), counts=counts) if multi else fill("seeds_one")
        whole = f", except {ft['whole_sets']}: their whole training sets" if ft.get("whole_sets") else ""
        setup = fill("finetune_setup", **ft, seeds=seeds, whole_sets_words=whole)
    return {"what_was_run": what, "finetune_setup": setup}


def _render_ablations(data: dict[str, Any], fill: _Blocks) -> dict[str, str]:
    """The two verdicts under Table 5."""
    helps, aux = data["pretraining_helps"], data["aux_helps"]
    out = {"pretraining_helps": "", "aux_helps": ""}
    if helps:
        rest = (fill("pretraining_helps_not_everywhere", losers=", ".join(helps["losers"])) if helps["losers"]
                else fill("pretraining_helps_everywhere"))
        out["pretraining_helps"] = fill("pretraining_helps", wins=len(helps["winners"]), compared=helps["compared"],
                                        winners=", ".join(helps["winners"]) or "none", rest=rest)
    if aux:
        out["aux_helps"] = fill("aux_helps", wins=len(aux["winners"]), compared=aux["compared"],
                                winners=", ".join(aux["winners"]) or "none")
    return out


def _render_figures(data: dict[str, Any], fill: _Blocks) -> dict[str, str]:
    """Figure 2 left (layer transfer), Figure 2 right (zero-shot) and LoRA: each "Not run." without its data."""
    tables, figures = data["tables"], data["figures"]
    out = {}
    out["layer_transfer"] = (fill("layer_transfer", figure=figures["layer_transfer"],
                                  table=_md_table(tables["layer_transfer"]))
                             if tables["layer_transfer"] else fill("not_run"))
    zsc = data["zero_shot"]
    if zsc:
        given_note = ""
        if any(row["step"] == GIVEN for row in zsc):
            given_note = fill("zero_shot_given", no_curve="" if figures["zero_shot"] else fill("zero_shot_no_curve"))
        figure = fill("zero_shot_figure", figure=figures["zero_shot"]) if figures["zero_shot"] else ""
        out["zero_shot"] = fill("zero_shot", figure=figure, table=_md_table(tables["zero_shot"]),
                                examples=data["zero_shot_examples"], given_note=given_note)
    else:
        out["zero_shot"] = fill("not_run")
    out["lora"] = fill("lora", table=_md_table(tables["lora"])) if tables["lora"] else fill("not_run")
    return out


def _render_budget(data: dict[str, Any], fill: _Blocks) -> dict[str, Any]:
    budget = data["budget"]
    stages = ", ".join(f"{k} {v:.1f} min" for k, v in budget["stage_minutes"].items())
    return {"budget_pretrain": fill("budget_pretrain", **data["pretrain"]) if data["pretrain"] else "",
            "budget_stages": fill("budget_stages", stages=stages, total_minutes=budget["total_minutes"])
            if budget["stage_minutes"] else "",
            "runs": budget["runs"], "run_minutes": budget["run_minutes"], "jobs": budget["jobs"],
            "machine": budget["machine"], "gpu": budget["machine"].get("gpu") or "no GPU"}


def _render_full_scale(est: dict[str, Any] | None, fill: _Blocks) -> str:
    """The full-scale estimate: what it counts (its planned runs), its table and its times."""
    if not est:
        return ""
    n, seeds = est["runs"], est["multi_seed"]
    parts = [fill("full_scale_finetune_runs", runs=n["finetune"],
                  seeds=fill("full_scale_seeds_several", tasks=_names(seeds),
                             counts="/".join(str(k) for k in sorted(set(seeds.values()))))
                  if seeds else fill("full_scale_seeds_one"),
                  ablations=fill("full_scale_ablations" if est["ablations"] else "full_scale_no_ablations"))]
    if n.get("layer_transfer"):
        parts.append(fill("full_scale_layer_transfer", runs=n["layer_transfer"], n_layer=est["n_layer"],
                          task=TASK_NAMES.get(est["layer_transfer_task"], est["layer_transfer_task"]),
                          last_k=est["n_layer"] - 1))
    if n.get("lora"):
        parts.append(fill("full_scale_lora", runs=n["lora"], task=TASK_NAMES.get(est["lora_task"], est["lora_task"])))
    return fill("full_scale", **{**est, "table": _md_table(est["table"]), "total_runs": sum(n.values()),
                                 "runs_described": _and_join(parts)})


def render_report(data: dict[str, Any], blocks: dict[str, str] | None = None) -> str:
    """The report's markdown: `report_data`'s data in the blocks of `report_template` (or `blocks`)."""
    fill = _Blocks(blocks if blocks is not None else report_template())
    tables = data["tables"]
    values = {**_render_intro(data, fill), **_render_ablations(data, fill), **_render_figures(data, fill),
              **_render_budget(data, fill), "full_scale": _render_full_scale(data["estimate"], fill),
              **{name: _md_table(tables[name]) for name in (*PAPER_TABLE_COLUMNS, "table5")},
              "paper_glue": data["paper_glue"], "commands": "\n".join(data["commands"]), "out": data["out"]}
    # an optional paragraph left out leaves two blank lines: one is enough
    return re.sub(r"\n{3,}", "\n\n", fill("report", **values)) + "\n"


#: Hand-written text lives between ``<!-- X -->`` and ``<!-- /X -->``; a regenerated report keeps it.
HAND_WRITTEN_MARKERS = ("<!-- DISCUSSION -->", "<!-- FULLSCALE -->")


def _keep_hand_written(text: str, old: str) -> str:
    """`text` with each marker replaced by the marked section of the earlier report `old` (when it has one)."""
    for marker in HAND_WRITTEN_MARKERS:
        closing = marker.replace("<!-- ", "<!-- /")
        start, end = old.find(marker), old.find(closing)
        if start != -1 and end != -1:
            text = text.replace(marker, old[start:end + len(closing)])
    return text


def write_report(cfg: StudyConfig, out: Path) -> Path:
    """Write the results report from what ``out`` holds (any subset of stages: missing cells show "–")."""
    cfg = cfg.resolved()
    docs = Path(cfg.docs_dir) if cfg.docs_dir else _repo_docs()
    target = docs / "results.md" if cfg.write_docs else out / "report" / "results.md"
    data = report_data(cfg, out, target)
    text = render_report(data)
    if target.is_file():  # keep hand-written sections between the markers of an earlier report
        text = _keep_hand_written(text, target.read_text())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    pre = data["pretrain"] or {}
    summary = {"table5_means": data["table5_means"], "layer_transfer": data["layer_transfer"],
               "zero_shot": data["zero_shot"], "runs": data["runs"],
               "pretrain": {k: pre[k] for k in ("tokens_seen", "train_minutes", "tokens_per_minute")} if pre else None}
    _write_json(out / "report" / "summary.json", summary)
    return target


def config_fields() -> list[str]:
    return [f.name for f in fields(StudyConfig)]


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run scripts/reproduce.py")
