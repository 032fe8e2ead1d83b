"""The task registry (gpt1_hf.tasks): one data table covering the GPT-1 paper's Tables 2-4 plus WNLI."""

import dataclasses
from pathlib import Path

import pytest

from gpt1_hf.tasks import SPLITS, TASK_NAMES, TASKS, TaskSpec, get_task, list_tasks

PAPER = {  # Radford et al. 2018, Tables 2-4
    "snli": (89.9, "accuracy"), "mnli": (82.1, "accuracy"), "mnli_mm": (81.4, "accuracy"),
    "scitail": (88.3, "accuracy"), "qnli": (88.1, "accuracy"), "rte": (56.0, "accuracy"),
    "story_cloze": (86.5, "accuracy"), "race_middle": (62.9, "accuracy"), "race_high": (57.4, "accuracy"),
    "race": (59.0, "accuracy"), "cola": (45.4, "matthews_correlation"), "sst2": (91.3, "accuracy"),
    "mrpc": (82.3, "f1"), "stsb": (82.0, "pearson"), "qqp": (70.3, "f1"), "wnli": (None, None),
}
KINDS = {
    "single": {"cola", "sst2"},
    "pair": {"snli", "mnli", "mnli_mm", "qnli", "rte", "scitail", "wnli"},
    "similarity": {"stsb", "qqp", "mrpc"},
    "multiple_choice": {"race", "race_middle", "race_high", "story_cloze"},
}


def test_every_paper_task_is_registered():
    assert set(TASK_NAMES) == set(PAPER)
    assert list_tasks() == list(TASK_NAMES)
    for kind, names in KINDS.items():
        assert {n for n, s in TASKS.items() if s.kind == kind} == names


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_scores_and_metrics(name):
    spec = get_task(name)
    score, metric = PAPER[name]
    assert spec.paper_score == score
    assert spec.paper_metric == metric
    if metric:
        assert metric in spec.metrics and spec.primary_metric == metric
        assert spec.paper_table in (2, 3, 4)


def test_metric_names():
    assert get_task("cola").metrics == ("matthews_correlation",)
    assert get_task("stsb").metrics == ("pearson", "spearmanr")
    assert set(get_task("mrpc").metrics) == set(get_task("qqp").metrics) == {"f1", "accuracy"}
    for name in set(TASK_NAMES) - {"cola", "stsb", "mrpc", "qqp"}:
        assert get_task(name).metrics == ("accuracy",)


def test_metric_configs_exist_in_bundled_module():
    import importlib.util

    from gpt1_hf.metrics import METRIC_MODULE_PATH

    path = Path(METRIC_MODULE_PATH) / "gpt1_metrics.py"
    mod_spec = importlib.util.spec_from_file_location("_gpt1_metrics_check", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    for spec in TASKS.values():
        assert set(mod.parse_config_name(spec.metric_config)) == set(spec.metrics)


def test_labels():
    stsb = get_task("stsb")
    assert stsb.label_names is None and stsb.is_regression and stsb.num_labels == 1
    assert stsb.label_range == (0.0, 5.0)
    for spec in TASKS.values():
        if spec.label_names is not None:
            assert len(spec.label_names) == len(spec.label_values) == spec.num_labels
            assert spec.id2label == dict(enumerate(spec.label_names))
    assert get_task("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert get_task("race").num_choices == 4 and get_task("story_cloze").num_choices == 2
    assert get_task("sst2").num_choices is None
    # HF GLUE ClassLabel order (so Hub label ids and local label values agree)
    assert get_task("wnli").label_names == ("not_entailment", "entailment")
    assert get_task("wnli").label_values == ("0", "1")


def test_hub_sources():
    glue = {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "mnli_mm", "qnli", "rte", "wnli"}
    for name in glue:
        hub = get_task(name).hub
        assert hub.path == "nyu-mll/glue" and hub.config == name.replace("_mm", "")
    assert get_task("mnli").hub.splits["validation"] == "validation_matched"
    assert get_task("mnli_mm").hub.splits["validation"] == "validation_mismatched"
    assert get_task("mnli").hub.splits["validation_mismatched"] == "validation_mismatched"
    assert get_task("snli").hub.path == "stanfordnlp/snli"
    assert (get_task("scitail").hub.path, get_task("scitail").hub.config) == ("allenai/scitail", "tsv_format")
    assert {get_task(n).hub.config for n in ("race", "race_middle", "race_high")} == {"all", "middle", "high"}
    assert all(get_task(n).hub.path == "ehovy/race" for n in ("race", "race_middle", "race_high"))
    sc = get_task("story_cloze")
    assert sc.hub is None and "no public hub" in sc.hub_note.lower()


def test_layouts_and_substitutions_are_consistent():
    for spec in TASKS.values():
        assert spec.layouts, spec.name
        for layout in spec.layouts:
            assert set(layout.files) <= set(spec.splits), (spec.name, layout.name)
        for sub in spec.substitutions:
            for s in (sub.missing, sub.source, sub.holdout_split, sub.rest_split):
                assert s in spec.splits
            assert sub.reason
    assert {n for n, s in TASKS.items() if s.substitutions} == {"qqp", "scitail", "story_cloze"}
    assert get_task("story_cloze").substitutions[0].holdout == 374
    assert get_task("race").groups == ("middle", "high")
    assert get_task("race_high").groups == ("high",)
    assert get_task("snli").drop_labels == ("-",)
    assert set(get_task("mnli").splits) == set(SPLITS) | {"validation_mismatched", "test_mismatched", "ax"}
    assert set(get_task("mnli_mm").splits) == set(SPLITS) | {"validation_matched", "test_matched", "ax"}


def test_glue_submission_file_per_split():
    """GLUE wants MNLI-m.tsv (matched), MNLI-mm.tsv (mismatched) and AX.tsv (diagnostic), whichever of mnli / mnli_mm
    the model was trained as."""
    mnli, mm = get_task("mnli"), get_task("mnli_mm")
    for split in ("validation", "test", None):
        assert mnli.submission_file(split) == "MNLI-m.tsv" and mm.submission_file(split) == "MNLI-mm.tsv"
    assert mnli.submission_file("test_mismatched") == mnli.submission_file("validation_mismatched") == "MNLI-mm.tsv"
    assert mm.submission_file("test_matched") == mm.submission_file("validation_matched") == "MNLI-m.tsv"
    assert mnli.submission_file("ax") == mm.submission_file("ax") == "AX.tsv"
    assert "ax" in mnli.default_predict_splits and "test_mismatched" in mnli.default_predict_splits
    assert get_task("rte").submission_file("test") == "RTE.tsv" and get_task("race").submission_file("test") is None
    assert get_task("rte").default_predict_splits == ("test",)
    # the Hub: ax is nyu-mll/glue config "ax", split "test"; the other MNLI splits are in config "mnli"
    hub = mnli.hub
    assert (hub.config_for("ax"), hub.splits["ax"]) == ("ax", "test") and hub.config_for("test") == "mnli"
    assert mm.hub_split("validation") == "validation_mismatched" and mnli.hub_split("validation") == "validation_matched"
    assert get_task("sst2").hub_split("validation") == "validation"


def test_get_task():
    assert get_task("SST-2") is TASKS["sst2"]
    assert get_task("sts-b") is TASKS["stsb"]
    assert get_task(TASKS["rte"]) is TASKS["rte"]
    with pytest.raises(ValueError) as err:
        get_task("imdb")
    msg = str(err.value)
    assert "imdb" in msg and all(name in msg for name in TASK_NAMES)


def test_taskspec_is_frozen_and_hashable():
    spec = get_task("rte")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "x"
    assert isinstance(spec, TaskSpec)
    assert len({spec, get_task("rte"), get_task("sst2")}) == 2


def test_docs_table_lists_every_task():
    doc = Path(__file__).resolve().parents[1] / "docs" / "tasks.md"
    text = doc.read_text(encoding="utf-8")
    for name in TASK_NAMES:
        assert f"`{name}`" in text, name
