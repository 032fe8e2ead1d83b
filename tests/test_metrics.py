"""The bundled evaluate metric module: loads offline and agrees with scikit-learn / SciPy."""

import math

import evaluate
import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from gpt1_hf.metrics import METRIC_MODULE_PATH, compute_task_metrics, load_metric, load_metric_module
from gpt1_hf.tasks import TASKS

SEEDS = [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def modules():
    names = ["accuracy", "f1", "matthews_correlation", "pearson", "spearmanr", "accuracy_f1", "pearson_spearmanr"]
    return {n: evaluate.load(METRIC_MODULE_PATH, config_name=n, keep_in_memory=True) for n in names}


def _cls(seed, n=200, k=2):
    rng = np.random.RandomState(seed)
    refs = rng.randint(0, k, size=n)
    preds = np.where(rng.rand(n) < 0.7, refs, rng.randint(0, k, size=n))
    return preds, refs


def _reg(seed, n=150):
    rng = np.random.RandomState(seed)
    refs = rng.uniform(0, 5, size=n)
    preds = refs + rng.normal(0, 1.0 + seed / 2, size=n)
    return preds, refs


@pytest.mark.parametrize("seed", SEEDS)
def test_classification_parity(modules, seed):
    preds, refs = _cls(seed)
    assert modules["accuracy"].compute(predictions=preds, references=refs)["accuracy"] == pytest.approx(
        accuracy_score(refs, preds), abs=1e-12)
    assert modules["f1"].compute(predictions=preds, references=refs)["f1"] == pytest.approx(
        f1_score(refs, preds), abs=1e-12)
    assert modules["matthews_correlation"].compute(predictions=preds, references=refs)[
        "matthews_correlation"] == pytest.approx(matthews_corrcoef(refs, preds), abs=1e-12)
    both = modules["accuracy_f1"].compute(predictions=preds, references=refs)
    assert both == pytest.approx({"accuracy": accuracy_score(refs, preds), "f1": f1_score(refs, preds)}, abs=1e-12)
    # multi-class accuracy / MCC (MNLI, RACE)
    p3, r3 = _cls(seed, k=4)
    assert modules["accuracy"].compute(predictions=p3, references=r3)["accuracy"] == pytest.approx(
        accuracy_score(r3, p3), abs=1e-12)
    assert modules["accuracy"].compute(predictions=p3, references=r3, metrics=["matthews_correlation"])[
        "matthews_correlation"] == pytest.approx(matthews_corrcoef(r3, p3), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_regression_parity(modules, seed):
    preds, refs = _reg(seed)
    assert modules["pearson"].compute(predictions=preds, references=refs)["pearson"] == pytest.approx(
        pearsonr(refs, preds)[0], abs=1e-10)
    assert modules["spearmanr"].compute(predictions=preds, references=refs)["spearmanr"] == pytest.approx(
        spearmanr(refs, preds)[0], abs=1e-10)
    out = modules["pearson_spearmanr"].compute(predictions=preds, references=refs)
    assert set(out) == {"pearson", "spearmanr"} and all(isinstance(v, float) for v in out.values())


def test_incremental_add_batch(modules):
    preds, refs = _cls(7)
    m = modules["accuracy_f1"]
    for i in range(0, len(preds), 50):
        m.add_batch(predictions=preds[i:i + 50], references=refs[i:i + 50])
    assert m.compute() == pytest.approx({"accuracy": accuracy_score(refs, preds), "f1": f1_score(refs, preds)})


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_macro_f1_parity(seed):
    p3, r3 = _cls(seed, k=3)
    m = load_metric_module("f1_macro")
    assert m.compute(predictions=p3, references=r3)["f1_macro"] == pytest.approx(
        f1_score(r3, p3, average="macro"), abs=1e-12)
    assert load_metric_module("f1").compute(predictions=p3, references=r3, average="macro")["f1"] == pytest.approx(
        f1_score(r3, p3, average="macro"), abs=1e-12)


def test_config_names():
    m = load_metric_module("accuracy+matthews_correlation")
    assert set(m.compute(predictions=[0, 1, 1], references=[0, 1, 0])) == {"accuracy", "matthews_correlation"}
    assert set(load_metric_module().compute(predictions=[0, 1], references=[0, 1])) == {"accuracy"}
    with pytest.raises(Exception, match="unknown gpt1_metrics config"):
        load_metric_module("bleu")
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric_module("accuracy").compute(predictions=[0], references=[0], metrics=["rouge"])


@pytest.mark.parametrize("name", sorted(TASKS))
def test_compute_task_metrics_every_task(name):
    spec = TASKS[name]
    if spec.is_regression:
        preds, refs = _reg(3)
    else:
        preds, refs = _cls(3, k=spec.num_labels)
    out = compute_task_metrics(name, preds, refs)
    assert list(out)[: len(spec.metrics)] == list(spec.metrics)
    assert all(type(v) is float and not math.isnan(v) for v in out.values())
    assert spec.primary_metric in out


def test_task_metric_values_and_logits():
    preds, refs = _cls(11)
    logits = np.eye(2)[preds] + 0.1
    out = compute_task_metrics("mrpc", logits, refs)
    assert out == pytest.approx({"f1": f1_score(refs, preds), "accuracy": accuracy_score(refs, preds)})
    assert compute_task_metrics("cola", preds, refs)["matthews_correlation"] == pytest.approx(
        matthews_corrcoef(refs, preds))
    p, r = _reg(5)
    assert compute_task_metrics("stsb", p.reshape(-1, 1), r)["pearson"] == pytest.approx(pearsonr(r, p)[0])


def test_race_group_accuracy():
    preds, refs = _cls(2, n=120, k=4)
    groups = np.where(np.arange(120) % 3 == 0, "middle", "high")
    out = compute_task_metrics("race", preds, refs, groups=groups.tolist())
    assert out["accuracy"] == pytest.approx(accuracy_score(refs, preds))
    for g in ("middle", "high"):
        sel = groups == g
        assert out[f"accuracy_{g}"] == pytest.approx(accuracy_score(refs[sel], preds[sel]))
    module = load_metric("race")
    assert compute_task_metrics("race", preds, refs, metric=module) == {"accuracy": out["accuracy"]}
    with pytest.raises(ValueError):
        compute_task_metrics("race", preds, refs, groups=["middle"])
