"""Evaluation: logits and metrics over a dataset on every process (``gather_for_metrics``), the held-out LM loss,
prediction files, and `evaluate_checkpoint` (a fine-tuned folder on one split of a paper task or of your data)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .distributed import create_accelerator
from .durable import write_text_atomically
from .task_models import (
    check_head_compatibility,
    check_tokenizer_matches,
    head_class_for,
    load_tokenizer,
    read_config_json,
)
from .tasks import get_task
from .user_data import DataOptions, has_user_data

__all__ = ["predict_logits", "lm_heldout_loss", "model_inputs", "task_groups", "task_metrics",
           "write_prediction_files", "evaluate_checkpoint", "plot_heldout_curve"]


def _longest_first(dataset) -> list[int] | None:
    """Example indices by decreasing length of ``input_ids`` (for choices, the longest choice), for a `datasets`
    dataset or a list of examples; None for anything else (then it is read in its own order)."""
    if hasattr(dataset, "column_names"):
        if "input_ids" not in dataset.column_names:
            return None
        ids = dataset["input_ids"]
    elif isinstance(dataset, (list, tuple)) and all(isinstance(x, dict) and "input_ids" in x for x in dataset):
        ids = [x["input_ids"] for x in dataset]
    else:
        return None
    lengths = [max(map(len, x)) if x and isinstance(x[0], (list, tuple)) else len(x) for x in ids]
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])  # stable: ties keep dataset order


def predict_logits(model, dataset, collate_fn: Callable, accelerator, batch_size: int = 32,
                   num_workers: int = 0) -> dict[str, np.ndarray]:
    """Logits (and ``labels`` when the batches have them) over ``dataset``, gathered from every process in dataset
    order without the duplicates that even out the last batch (``gather_for_metrics``). Call in eval mode.

    Batches are made longest first and the results put back in dataset order: each batch pads to its longest
    example, and in dataset order SST-2's dev set would run 1.9x its real tokens (sorted: 1.05x)."""
    order = _longest_first(dataset)
    if order is not None and hasattr(dataset, "select"):
        dataset = dataset.select(order)
    elif order is not None:
        dataset = torch.utils.data.Subset(dataset, order)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn,
                                         num_workers=num_workers)
    loader = accelerator.prepare_data_loader(loader, device_placement=True)
    logits, labels = [], []
    for batch in loader:
        batch_labels = batch.pop("labels", None)
        out = model(**batch).logits
        logits.append(accelerator.gather_for_metrics(out.float().contiguous()).cpu())
        if batch_labels is not None:
            labels.append(accelerator.gather_for_metrics(batch_labels.contiguous()).cpu())
    result = {"logits": torch.cat(logits).numpy() if logits else np.zeros((0,))}
    if labels:
        result["labels"] = torch.cat(labels).numpy()
    if order is not None and len(order):
        back = np.argsort(np.asarray(order))  # position of each dataset example in the sorted order
        result = {key: value[back] for key, value in result.items()}
    return result


def lm_heldout_loss(model, dataset, collate_fn: Callable, accelerator, batch_size: int) -> dict[str, float]:
    """Token-weighted mean next-token loss and perplexity over ``dataset`` (one row per example, so
    ``gather_for_metrics`` drops the duplicates of the last batch)."""
    loader = accelerator.prepare_data_loader(torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn), device_placement=True)
    totals = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
    for batch in loader:
        mask = batch.get("attention_mask")
        logits = model(input_ids=batch["input_ids"], attention_mask=mask).logits[:, :-1].float()
        targets = batch.get("labels", batch["input_ids"])[:, 1:]
        keep = targets != -100
        if mask is not None:
            keep = keep & mask[:, 1:].bool() & mask[:, :-1].bool()
        nll = F.cross_entropy(logits.transpose(1, 2), targets.clamp_min(0), reduction="none")
        rows = torch.stack([(nll * keep).sum(1).double(), keep.sum(1).double()], dim=1)
        totals += accelerator.gather_for_metrics(rows).sum(0)
    loss = float(totals[0] / totals[1]) if float(totals[1]) > 0 else float("nan")
    return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}


def model_inputs(encoded):
    return encoded.select_columns(["input_ids", "labels"])


def task_groups(encoded):
    return list(encoded["group"]) if "group" in encoded.column_names else None


def task_metrics(spec, logits, labels, groups, metric=None):
    """The task's metrics; ``metric``: its evaluate module loaded once (`gpt1_hf.metrics.load_metric`), else loaded
    here."""
    from .metrics import compute_task_metrics

    return compute_task_metrics(spec, logits, labels, groups=groups, metric=metric)


def write_prediction_files(spec, split: str, logits, idx, out_dir: Path) -> Path:
    from .data import write_predictions

    folder = out_dir / "predictions" / split
    folder.mkdir(parents=True, exist_ok=True)
    return write_predictions(spec, logits, folder, indices=idx, split=split)


def _user_split(data, model_name_or_path: str, split: str, max_examples: int | None, seed: int):
    """(task, raw split, load info) of your data for `evaluate_checkpoint`: classes from the checkpoint's
    ``id2label`` when not given (there may be no training file now)."""
    from dataclasses import replace

    from .user_data import load_user_task

    cfg = read_config_json(model_name_or_path) or {}
    id2label = cfg.get("id2label") or {}
    if data.label_names is None and id2label and cfg.get("problem_type") != "regression":
        data = replace(data, label_names=[id2label[k] for k in sorted(id2label, key=int)])
    spec, raw = load_user_task(data, splits=(split,), max_samples={split: max_examples}, seed=seed)
    if split not in raw:
        raise ValueError(f"no {split} data: pass --{'validation' if split == 'validation' else split}_file")
    dataset, info = raw[split]
    return spec, dataset, info


def evaluate_checkpoint(
    model_name_or_path: str,
    task: str | None,
    split: str = "validation",
    data_dir: str | None = None,
    tokenizer_name_or_path: str | None = None,
    max_examples: int | None = None,
    max_length: int | None = None,
    batch_size: int = 32,
    output_dir: str | None = None,
    mixed_precision: str | None = None,
    seed: int = 0,
    cpu: bool = False,
    data: DataOptions | None = None,
    pad_to_multiple_of: int | None = None,
) -> dict[str, Any]:
    """Evaluate a fine-tuned checkpoint on one split of a task (a paper task, or your data with the data options of
    fine-tuning: ``data``): metrics (when the split is labeled) and predictions.

    Writes ``<output_dir>/eval_<task>_<split>.json`` and ``<output_dir>/predictions/<split>/...`` when ``output_dir``
    is given (main process only)."""
    from .data import GPT1Collator, encode_dataset, load_task_split

    if data is not None and has_user_data(data):
        spec, raw, info = _user_split(data, model_name_or_path, split, max_examples, seed)
    else:
        spec = get_task(task)
        raw, info = load_task_split(spec, split, data_dir=data_dir, max_examples=max_examples, seed=seed,
                                    return_info=True)
        info = asdict(info)
    tokenizer = load_tokenizer(tokenizer_name_or_path, model_name_or_path)
    check_head_compatibility(spec, model_name_or_path, reinit_head=False)
    cfg = read_config_json(model_name_or_path) or {}
    archs = cfg.get("architectures") or []
    if not any(a in archs for a in ("GPT1ForSequenceClassification", "GPT1ForMultipleChoice")):
        raise ValueError(f"{model_name_or_path} is not a fine-tuned gpt1 task checkpoint (architectures {archs}); "
                         "fine-tune it first with scripts/finetune.py.")
    if Path(model_name_or_path).is_dir():  # NaN/inf weights (a diverged run) are refused, naming the file
        from .durable import check_finite_weights

        check_finite_weights(model_name_or_path)
    model = head_class_for(spec).from_pretrained(model_name_or_path)
    check_tokenizer_matches(model.config, tokenizer)
    max_length = min(int(max_length or model.config.n_positions), int(model.config.n_positions))
    encoded, n_truncated = encode_dataset(raw, spec, tokenizer, max_length=max_length)
    acc = create_accelerator(mixed_precision, cpu)
    model = acc.prepare_model(model, evaluation_mode=True)
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        collator = GPT1Collator(tokenizer.pad_token_id, pad_to_multiple_of=pad_to_multiple_of, max_length=max_length)
        out = predict_logits(model, model_inputs(encoded), collator, acc, batch_size)
    labels = out.get("labels")
    labeled = labels is not None and len(labels) and (spec.is_regression and (labels >= 0).all()
                                                      or not spec.is_regression and (labels >= 0).all())
    metrics = task_metrics(spec, out["logits"], labels, task_groups(encoded)) if labeled else None
    report: dict[str, Any] = {
        "task": spec.name,
        "split": split,
        "model": str(model_name_or_path),
        "metrics": metrics,
        "num_examples": len(encoded),
        "truncated": n_truncated,
        "max_length": max_length,
        "data": {split: info},
        "eval_time_s": time.perf_counter() - start,
    }
    if output_dir is not None and acc.is_main_process:
        out_dir = Path(output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        report["prediction_file"] = str(write_prediction_files(spec, split, out["logits"], list(encoded["idx"]),
                                                                out_dir))
        write_text_atomically(out_dir / f"eval_{spec.name}_{split}.json",
                              json.dumps(report, indent=2, default=str) + "\n")
    return report


def plot_heldout_curve(history: list[dict], path: Path) -> bool:
    """The held-out perplexity curve of a pretraining run as a PNG (False where matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    points = [(h["step"], h["perplexity"]) for h in history if "perplexity" in h]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
    ax.set_xlabel("optimizer updates")
    ax.set_ylabel("held-out perplexity")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.set_title("GPT-1 pretraining: held-out perplexity")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
