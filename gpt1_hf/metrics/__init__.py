"""Task metrics through `evaluate`, using the module bundled in ``gpt1_metrics/`` (no Hub access needed).

* `METRIC_MODULE_PATH`: folder of the bundled evaluate module (``evaluate.load(METRIC_MODULE_PATH, config_name)``)
* `load_metric(task)`: the loaded evaluate module configured for a task's metrics
* `compute_task_metrics(task, predictions, references, groups=None)`: plain-float dict of the task's metrics
  (RACE: plus ``accuracy_middle`` / ``accuracy_high`` when ``groups`` are given). ``task`` may be a name or any
  `TaskSpec`, e.g. a user task of `gpt1_hf.user_data.load_user_task`; ``f1`` is binary F1 of class 1 for 2 classes
  and macro F1 for more (``f1_macro`` is always macro).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..tasks import TaskSpec, get_task

__all__ = ["METRIC_MODULE_PATH", "load_metric", "load_metric_module", "compute_task_metrics"]

#: path of the bundled evaluate metric module folder (``gpt1_metrics/gpt1_metrics.py``)
METRIC_MODULE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpt1_metrics")


def load_metric_module(config_name: str = "default", **kwargs):
    """``evaluate.load`` of the bundled module with ``config_name`` (in memory unless told otherwise)."""
    import evaluate

    kwargs.setdefault("keep_in_memory", True)
    return evaluate.load(METRIC_MODULE_PATH, config_name=config_name, **kwargs)


def load_metric(task: str | TaskSpec, **kwargs):
    """The bundled evaluate module configured for ``task``'s metrics (e.g. ``accuracy_f1`` for MRPC/QQP)."""
    return load_metric_module(get_task(task).metric_config, **kwargs)


def _as_array(x, regression: bool):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if regression:
        return arr.reshape(len(arr), -1)[:, 0].astype(np.float64) if arr.ndim > 1 else arr.astype(np.float64)
    if arr.ndim == 2:  # logits
        arr = arr.argmax(-1)
    return arr.astype(np.int64)


def compute_task_metrics(
    task: str | TaskSpec,
    predictions,
    references,
    groups: Sequence[str] | None = None,
    metric=None,
) -> dict[str, float]:
    """The task's metrics as plain floats, keyed by metric name.

    ``predictions`` are class indices or logits (argmax is taken), scores for STS-B. With ``groups``
    (RACE's per-example "middle"/"high"), ``accuracy_<group>`` is added for each group present.
    ``metric`` may pass an already loaded module (see `load_metric`).
    """
    spec = get_task(task)
    preds = _as_array(predictions, spec.is_regression)
    refs = _as_array(references, spec.is_regression)
    if len(preds) != len(refs):
        raise ValueError(f"{len(preds)} predictions for {len(refs)} references")
    module = metric if metric is not None else load_metric(spec)
    # binary F1 is undefined for 3+ classes (a user task with --metric f1): average it over the classes instead
    extra = {"average": "macro"} if "f1" in spec.metrics and spec.num_labels > 2 else {}
    out = {k: float(v) for k, v in module.compute(predictions=preds, references=refs, **extra).items()}
    if groups is not None:
        groups = np.asarray(list(groups))
        if len(groups) != len(preds):
            raise ValueError(f"{len(groups)} groups for {len(preds)} predictions")
        for g in sorted(set(groups.tolist())):
            if not g:
                continue
            sel = groups == g
            sub = module.compute(predictions=preds[sel], references=refs[sel], metrics=["accuracy"])
            out[f"accuracy_{g}"] = float(sub["accuracy"])
    return {name: out[name] for name in list(spec.metrics) + sorted(set(out) - set(spec.metrics))}
