# Copyright gpt1-hf contributors. MIT License.
"""GPT-1 benchmark metrics as a self-contained `evaluate` module (works offline).

Load it with ``evaluate.load("<path to this folder>", config_name=...)``. The module computes
accuracy, F1 (binary by default, ``average=`` selects others), macro F1, Matthews correlation (scikit-learn) and
Pearson / Spearman correlation (SciPy), i.e. every metric of the GPT-1 paper's Tables 2-4 and of GLUE, plus macro
F1 for multi-class user tasks.

Config names select the metrics (and the input feature type):

* ``"accuracy"``, ``"f1"``, ``"f1_macro"``, ``"matthews_correlation"``, ``"accuracy_f1"`` and ``"default"``
  (= accuracy):
  integer class indices (int64 features);
* ``"pearson"``, ``"spearmanr"``, ``"pearson_spearmanr"``: real-valued scores (float64 features);
* any ``+``-joined list of the six metric names, e.g. ``"accuracy+matthews_correlation"``;
  float64 features when it includes a correlation metric.

``compute(..., metrics=[...])`` overrides the metric list for one call (the feature type still comes
from the config).
"""

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

_CITATION = """\
@article{radford2018improving,
  title={Improving Language Understanding by Generative Pre-Training},
  author={Radford, Alec and Narasimhan, Karthik and Salimans, Tim and Sutskever, Ilya},
  year={2018}
}
"""

_DESCRIPTION = """\
Accuracy, binary F1, Matthews correlation, Pearson and Spearman correlation for the GPT-1 benchmark tasks
(GLUE, SNLI, SciTail, RACE, Story Cloze), computed with scikit-learn and SciPy.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class indices (classification configs) or scores (correlation configs).
    references: gold class indices or scores.
    metrics: optional list of metric names overriding the config's list for this call.
    pos_label: positive class for binary F1 (default 1).
    average: averaging for "f1" (default "binary"; "macro" for more than 2 classes). "f1_macro" is always macro.
Returns:
    dict mapping each selected metric name to a float.
Examples:
    >>> m = evaluate.load("gpt1_hf/metrics/gpt1_metrics", config_name="accuracy_f1")
    >>> m.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666, 'f1': 0.6666666666666666}
"""

METRIC_NAMES = ("accuracy", "f1", "f1_macro", "matthews_correlation", "pearson", "spearmanr")
REGRESSION_METRICS = frozenset({"pearson", "spearmanr"})
NAMED_CONFIGS = {
    "default": ("accuracy",),
    "accuracy": ("accuracy",),
    "f1": ("f1",),
    "f1_macro": ("f1_macro",),
    "matthews_correlation": ("matthews_correlation",),
    "pearson": ("pearson",),
    "spearmanr": ("spearmanr",),
    "accuracy_f1": ("accuracy", "f1"),
    "pearson_spearmanr": ("pearson", "spearmanr"),
}


def parse_config_name(config_name):
    """Metric names selected by a config name (see module docstring)."""
    name = config_name or "default"
    if name in NAMED_CONFIGS:
        return NAMED_CONFIGS[name]
    parts = tuple(p.strip() for p in name.split("+") if p.strip())
    unknown = [p for p in parts if p not in METRIC_NAMES]
    if not parts or unknown:
        raise KeyError(
            f"unknown gpt1_metrics config {config_name!r}; use one of {sorted(NAMED_CONFIGS)} "
            f"or a '+'-joined list of {list(METRIC_NAMES)}"
        )
    return parts


def _check_metrics(metrics):
    if isinstance(metrics, str):
        metrics = [metrics]
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in METRIC_NAMES]
    if not metrics or unknown:
        raise ValueError(f"unknown metric(s) {unknown or metrics}; known: {list(METRIC_NAMES)}")
    return metrics


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Gpt1Metrics(evaluate.Metric):
    def _info(self):
        metrics = parse_config_name(self.config_name)
        dtype = "float64" if REGRESSION_METRICS.intersection(metrics) else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value(dtype), "references": datasets.Value(dtype)}
            ),
            reference_urls=[
                "https://scikit-learn.org/stable/modules/model_evaluation.html",
                "https://docs.scipy.org/doc/scipy/reference/stats.html",
            ],
        )

    def _compute(self, predictions, references, metrics=None, pos_label=1, average="binary"):
        names = _check_metrics(metrics) if metrics is not None else parse_config_name(self.config_name)
        preds = np.asarray(predictions)
        refs = np.asarray(references)
        if preds.shape != refs.shape:
            raise ValueError(f"predictions {preds.shape} and references {refs.shape} differ in shape")
        out = {}
        for name in names:
            if name == "accuracy":
                out[name] = float(accuracy_score(refs, preds))
            elif name == "f1":
                out[name] = float(f1_score(refs, preds, pos_label=pos_label, average=average))
            elif name == "f1_macro":
                out[name] = float(f1_score(refs, preds, average="macro"))
            elif name == "matthews_correlation":
                out[name] = float(matthews_corrcoef(refs, preds))
            elif name == "pearson":
                out[name] = float(pearsonr(refs, preds)[0])
            elif name == "spearmanr":
                out[name] = float(spearmanr(refs, preds)[0])
        return out
