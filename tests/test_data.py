"""gpt1_hf.data: local layouts, split substitutions, input transformations, collation, grouping, predictions."""

import csv
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiny_tokenizer import build_tiny_tokenizer  # noqa: E402

from gpt1_hf.data import (  # noqa: E402
    GPT1Collator,
    LengthGroupedSampler,
    encode_dataset,
    encode_example,
    find_local_files,
    get_load_info,
    length_grouped_indices,
    load_task,
    load_task_split,
    padding_waste,
    write_predictions,
)
from gpt1_hf.tasks import get_task  # noqa: E402

FIX = Path(__file__).resolve().parent / "fixtures" / "tasks"


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


def tsv_rows(path, header=True):
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[1:] if header else rows


# ------------------------------------------------------------------------------------------ loading

# (task, data_dir relative to FIX, split, n_examples, layout)
LAYOUT_CASES = [
    ("sst2", ".", "train", 20, "glue_tsv"),
    ("sst2", "sst2", "validation", 15, "glue_tsv"),
    ("sst2", ".", "test", 10, "glue_tsv"),
    ("cola", ".", "train", 20, "glue_tsv"),
    ("cola", ".", "validation", 15, "glue_tsv"),
    ("cola", ".", "test", 10, "glue_tsv"),
    ("stsb", ".", "train", 20, "glue_tsv"),
    ("stsb", ".", "validation", 15, "glue_tsv"),
    ("stsb", ".", "test", 10, "glue_tsv"),
    ("rte", ".", "train", 15, "glue_tsv"),
    ("rte", ".", "validation", 12, "glue_tsv"),
    ("rte", ".", "test", 10, "glue_tsv"),
    ("wnli", ".", "train", 15, "glue_tsv"),
    ("wnli", ".", "validation", 12, "glue_tsv"),
    ("qnli", ".", "train", 20, "jsonl"),
    ("qnli", ".", "validation", 15, "glue_tsv"),
    ("qnli", ".", "test", 10, "glue_tsv"),
    ("mnli", ".", "train", 20, "jsonl"),
    ("mnli", ".", "validation", 15, "jsonl"),
    ("mnli", ".", "validation_mismatched", 15, "jsonl"),
    ("mnli_mm", ".", "validation", 15, "jsonl"),
    ("mnli_mm", ".", "validation_matched", 15, "jsonl"),
    ("mnli", "mnli_glue", "train", 12, "glue_tsv"),
    ("mnli", "mnli_glue", "validation", 10, "glue_tsv"),
    ("mnli", "mnli_glue", "validation_mismatched", 10, "glue_tsv"),
    ("mnli", "mnli_glue", "test", 6, "glue_tsv"),
    ("snli", ".", "train", 20, "jsonl"),
    ("snli", ".", "validation", 15, "jsonl"),
    ("snli", "snli_original", "train", 4, "jsonl"),
    ("snli", "snli_original", "validation", 7, "jsonl"),
    ("mrpc", ".", "train", 16, "glue_tsv"),
    ("mrpc", ".", "validation", 12, "glue_tsv"),
    ("mrpc", ".", "test", 8, "glue_tsv"),
    ("qqp", "qqp_glue", "train", 12, "glue_tsv"),
    ("qqp", "qqp_glue", "validation", 10, "glue_tsv"),
    ("qqp", "qqp_glue", "test", 6, "glue_tsv"),
    ("scitail", "scitail_tsv", "train", 12, "tsv_format"),
    ("scitail", "scitail_tsv", "validation", 8, "tsv_format"),
    ("scitail", "scitail_tsv", "test", 8, "tsv_format"),
    ("story_cloze", "story_cloze_csv", "test", 12, "csv"),
    ("race_original", "race_original", "test", None, "race_original"),
]


@pytest.mark.parametrize("task,sub,split,n,layout", LAYOUT_CASES)
def test_every_layout_loads(task, sub, split, n, layout):
    if task == "race_original":
        task = "race"
    ds, info = load_task_split(task, split, FIX / sub, return_info=True)
    spec = get_task(task)
    assert info.layout == layout and info.source == "local" and info.files
    if n is not None:
        assert len(ds) == n
    if spec.kind == "multiple_choice":
        assert {"context", "choices", "label", "idx"} <= set(ds.column_names)
    else:
        expected = ["text_a", "text_b", "label", "idx"] if spec.kind != "single" else ["text_a", "label", "idx"]
        assert ds.column_names == expected
        assert all(t.strip() for t in ds["text_a"])
    labels = ds["label"]
    assert info.unlabeled == (split.startswith("test") and task not in ("scitail", "story_cloze", "race"))
    if info.unlabeled:
        assert all(v == -1 for v in labels)
    elif spec.is_regression:
        assert all(0.0 <= v <= 5.0 for v in labels)
    else:
        assert all(0 <= v < spec.num_labels for v in labels)
    assert get_load_info(ds).num_examples == len(ds)


def test_data_root_or_task_folder():
    a = load_task_split("rte", "validation", FIX)
    b = load_task_split("rte", "validation", FIX / "rte")
    assert a["text_a"] == b["text_a"] and a["label"] == b["label"]


def test_glue_tsv_values_match_file():
    ds = load_task_split("rte", "train", FIX)
    rows = tsv_rows(FIX / "rte" / "train.tsv")
    names = get_task("rte").label_names
    assert ds["text_a"] == [r[1].strip() for r in rows]
    assert ds["text_b"] == [r[2].strip() for r in rows]
    assert [names[i] for i in ds["label"]] == [r[3] for r in rows]
    assert ds["idx"] == [int(r[0]) for r in rows]
    stsb = load_task_split("stsb", "train", FIX)
    assert stsb["label"] == pytest.approx([float(r[9]) for r in tsv_rows(FIX / "stsb" / "train.tsv")])
    wnli = load_task_split("wnli", "train", FIX)  # "0"/"1" -> not_entailment/entailment
    assert wnli["label"] == [int(r[3]) for r in tsv_rows(FIX / "wnli" / "train.tsv")]


def test_cola_headerless():
    ds = load_task_split("cola", "train", FIX)
    rows = tsv_rows(FIX / "cola" / "train.tsv", header=False)
    assert ds["text_a"] == [r[3].strip() for r in rows]
    assert ds["label"] == [int(r[1]) for r in rows]
    test = load_task_split("cola", "test", FIX)  # the test file has a header
    assert test["idx"] == list(range(10)) and test["text_a"][0] == tsv_rows(FIX / "cola" / "test_unlabeled.tsv")[0][1]


def test_mrpc_bom_header_and_quotes_kept():
    ds = load_task_split("mrpc", "train", FIX)
    rows = tsv_rows(FIX / "mrpc" / "train.tsv")
    assert ds["label"] == [int(r[0]) for r in rows]
    assert all(t.endswith('" quoted "') for t in ds["text_b"])  # QUOTE_NONE: quotes are text


def test_jsonl_layouts():
    mnli = load_task_split("mnli", "validation", FIX)
    rows = [json.loads(line) for line in open(FIX / "mnli" / "dev_matched.jsonl", encoding="utf-8")]
    names = get_task("mnli").label_names
    assert mnli["text_a"] == [r["premise"].strip() for r in rows]
    assert [names[i] for i in mnli["label"]] == [r["label"] for r in rows]
    qqp = load_task_split("qqp", "train", FIX / "qqp_glue")
    assert qqp["label"] == [int(r[5]) for r in tsv_rows(FIX / "qqp_glue" / "train.tsv")]


def test_snli_no_gold_rows_dropped_and_counted(caplog):
    ds, info = load_task_split("snli", "validation", FIX / "snli_original", return_info=True)
    rows = [json.loads(line) for line in open(FIX / "snli_original" / "snli_1.0_dev.jsonl", encoding="utf-8")]
    assert info.num_dropped_no_gold == sum(r["gold_label"] == "-" for r in rows) == 3
    assert info.num_rows_read == 10 and len(ds) == 7
    assert ds["text_a"] == [r["sentence1"] for r in rows if r["gold_label"] != "-"]
    assert ds["idx"] == [i for i, r in enumerate(rows) if r["gold_label"] != "-"]
    assert get_load_info(ds).num_dropped_no_gold == 3
    mm, info = load_task_split("mnli", "validation_mismatched", FIX / "mnli", return_info=True)
    assert info.layout == "jsonl"
    # the pairID csv export keeps the "-" rows: they are dropped and counted too
    spec = get_task("mnli")
    csv_only = type(spec)(**{**spec.__dict__, "layouts": (spec.layouts[2],)})
    ds, info = load_task_split(csv_only, "validation_mismatched", FIX / "mnli", return_info=True)
    with open(FIX / "mnli" / "dev_mismatched_pairid.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    n_dash = sum(r[3] == "-" for r in rows)
    assert info.layout == "pairid_csv" and info.num_dropped_no_gold == n_dash >= 3 and len(ds) == len(rows) - n_dash


def test_dropped_rows_are_a_warning_and_summarised(caplog):
    from gpt1_hf.data import describe_load_info

    with caplog.at_level(logging.WARNING, logger="gpt1_hf.data"):
        _, info = load_task_split("snli", "validation", FIX / "snli_original", return_info=True)
    assert "dropped 3 rows without a gold label" in caplog.text and info.warnings
    line = describe_load_info(info)
    assert "\n" not in line and "7 examples" in line and "DROPPED 3 rows" in line and "snli_1.0_dev.jsonl" in line
    _, info = load_task_split("qqp", "validation", FIX, return_info=True)
    assert (info.source_split, info.source_examples, info.substitution_part, info.substitution_examples) == (
        "train", 30, "held-out", 3)
    line = describe_load_info(info)
    assert "PARTIAL" in line and "SUBSTITUTED: the held-out 3 of 30 examples of the local 'train' split" in line
    assert get_load_info(load_task_split("qqp", "train", FIX)).substitution_part == "remaining"
    line = describe_load_info(load_task_split("sst2", "train", FIX, max_examples=5, return_info=True)[1])
    assert "5 examples" in line and "random subset (max_examples=5" in line


def _glue_diagnostic(root, n=4):
    """A synthetic GLUE diagnostic file (AX layout: index, sentence1, sentence2; no labels) under ``root``."""
    folder = root / "glue_diagnostic"
    folder.mkdir(parents=True)
    rows = ["index\tsentence1\tsentence2"] + [f"{i}\tthe blue box number {i} is here .\tno box is here ." for i in range(n)]
    (folder / "diagnostic_unlabeled.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def test_glue_diagnostic_ax_split(tmp_path):
    """The GLUE diagnostic set (AX) is a split of mnli / mnli_mm: found beside the MNLI folder or under the root."""
    shutil.copytree(FIX / "mnli_glue", tmp_path / "mnli")
    _glue_diagnostic(tmp_path)
    for task, data_dir in (("mnli", tmp_path / "mnli"), ("mnli", tmp_path), ("mnli_mm", tmp_path / "mnli")):
        ax, info = load_task_split(task, "ax", data_dir, return_info=True)
        assert len(ax) == 4 and ax["idx"] == [0, 1, 2, 3] and set(ax["label"]) == {-1} and info.unlabeled
        assert ax["text_a"][1] == "the blue box number 1 is here ." and info.files[0].endswith("diagnostic_unlabeled.tsv")
    with pytest.raises(FileNotFoundError, match="diagnostic"):
        load_task_split("mnli", "ax", FIX / "mnli_glue")
    (tmp_path / "out").mkdir()
    p = write_predictions("mnli", [0, 2, 1, 0], tmp_path / "out", indices=ax["idx"], split="ax")
    assert p.name == "AX.tsv" and p.read_text().splitlines()[:3] == ["index\tprediction", "0\tentailment",
                                                                     "1\tcontradiction"]


def test_hub_ax_uses_its_own_config(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, config=None, split=None, **kw):
        calls.append((path, config, split))
        return datasets.Dataset.from_dict(
            {"premise": ["a cat sat ."], "hypothesis": ["no cat sat ."], "label": [-1], "idx": [0]},
            features=datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                        "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
                                        "idx": datasets.Value("int32")}))

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds, info = load_task_split("mnli", "ax", return_info=True)
    assert calls == [("nyu-mll/glue", "ax", "test")] and (info.hub_config, info.hub_split) == ("ax", "test")
    assert ds["label"] == [-1] and info.unlabeled and info.num_dropped_no_gold == 0


def test_partial_files_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="gpt1_hf.data"):
        ds, info = load_task_split("mnli", "train", FIX, return_info=True)
    assert info.partial and "partial" in caplog.text
    _, info = load_task_split("mnli", "validation", FIX, return_info=True)
    assert not info.partial


def test_qqp_validation_substituted(caplog):
    with caplog.at_level(logging.WARNING, logger="gpt1_hf.data"):
        val, vinfo = load_task_split("qqp", "validation", FIX, return_info=True)
    train, tinfo = load_task_split("qqp", "train", FIX, return_info=True)
    assert vinfo.substituted and tinfo.substituted and "held out" in caplog.text
    assert "QQP dev is not available" in vinfo.substitution
    assert len(val) == 3 and len(train) == 27  # ceil(10% of 30)
    assert not set(val["idx"]) & set(train["idx"])
    assert sorted(list(val["idx"]) + list(train["idx"])) == list(range(30))
    again = load_task_split("qqp", "validation", FIX, seed=123)
    assert again["idx"] == val["idx"]  # fixed seed of the table, not the load seed
    assert get_load_info(val).substituted
    real, rinfo = load_task_split("qqp", "validation", FIX / "qqp_glue", return_info=True)
    assert not rinfo.substituted and len(real) == 10


def test_scitail_splits_carved_from_test():
    train, tinfo = load_task_split("scitail", "train", FIX, return_info=True)
    val, vinfo = load_task_split("scitail", "validation", FIX, return_info=True)
    assert tinfo.substituted and vinfo.substituted
    assert len(train) == 24 and len(val) == 6
    assert not set(train["idx"]) & set(val["idx"])
    with pytest.raises(ValueError, match="not available"):
        load_task_split("scitail", "test", FIX)
    # with the original layout present, nothing is substituted and the tsv labels are mapped
    ds, info = load_task_split("scitail", "train", FIX / "scitail_tsv", return_info=True)
    rows = tsv_rows(FIX / "scitail_tsv" / "tsv_format" / "scitail_1.0_train.tsv", header=False)
    assert not info.substituted
    assert ds["label"] == [0 if r[2] == "entails" else 1 for r in rows]


@pytest.mark.parametrize("sub", ["story_cloze", "story_cloze_csv"])
def test_story_cloze_protocol_split(sub):
    from sklearn.model_selection import train_test_split

    train, info = load_task_split("story_cloze", "train", FIX / sub, return_info=True)
    val = load_task_split("story_cloze", "validation", FIX / sub)
    assert info.substituted and "spring-2016 validation" in info.substitution
    assert len(val) == 374 and len(train) == 400 - 374
    tr_idx, va_idx = train_test_split(np.arange(400), test_size=374, random_state=3535999445)
    assert train["idx"] == sorted(tr_idx.tolist()) and val["idx"] == sorted(va_idx.tolist())
    if sub == "story_cloze":
        rows = tsv_rows(FIX / sub / "val_spring2016.tsv")
    else:
        with open(FIX / sub / "cloze_test_val__spring2016 - cloze_test_ALL_val.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))[1:]
    ex = train[0]
    r = rows[ex["idx"]]
    assert ex["context"] == " ".join(r[1:5]) and ex["choices"] == r[5:7] and ex["label"] == int(r[7]) - 1
    assert ex["id"] == r[0]


def test_story_cloze_csv_quoting():
    test = load_task_split("story_cloze", "test", FIX / "story_cloze_csv")
    with open(FIX / "story_cloze_csv" / "cloze_test_test__spring2016 - cloze_test_ALL_test.csv",
              newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    assert [c for ex in test["choices"] for c in ex] == [c for r in rows for c in r[5:7]]
    assert any('"sadly"' in c for ex in test["choices"] for c in ex)
    with pytest.raises(ValueError, match="no Hugging Face Hub source"):
        load_task_split("story_cloze", "validation")


def test_race_jsonl():
    ds = load_task_split("race", "validation", FIX)
    passages = {g: [json.loads(line) for line in open(FIX / "race" / f"dev_{g}.jsonl", encoding="utf-8")]
                for g in ("middle", "high")}
    expected = []
    for g in ("middle", "high"):
        for p in passages[g]:
            for q, opts, a in zip(p["questions"], p["options"], p["answers"], strict=True):
                expected.append((p["article"] + " " + q, opts, "ABCD".index(a), g, q))
    assert [(e["context"], e["choices"], e["label"], e["group"], e["question"]) for e in ds] == expected
    assert ds["idx"] == list(range(len(expected)))
    middle = load_task_split("race_middle", "validation", FIX)
    assert set(middle["group"]) == {"middle"} and len(middle) == sum(e[3] == "middle" for e in expected)


def test_race_original_per_passage_files():
    ds, info = load_task_split("race", "train", FIX / "race_original", return_info=True)
    names = [os.path.basename(f) for f in info.files]
    assert names == ["1.txt", "2.txt", "10.txt"] * 2  # numeric order, middle then high
    first = json.loads((FIX / "race_original" / "RACE" / "train" / "middle" / "1.txt").read_text())
    assert ds[0]["context"] == first["article"] + " " + first["questions"][0]
    assert ds[0]["choices"] == first["options"][0] and ds[0]["group"] == "middle"
    assert set(ds["group"]) == {"middle", "high"}


def test_max_examples_subsample():
    full = load_task_split("sst2", "train", FIX)
    a = load_task_split("sst2", "train", FIX, max_examples=7, seed=1)
    b = load_task_split("sst2", "train", FIX, max_examples=7, seed=1)
    c = load_task_split("sst2", "train", FIX, max_examples=7, seed=2)
    assert len(a) == 7 and a["idx"] == b["idx"] and a["idx"] != c["idx"]
    assert a["idx"] == sorted(a["idx"]) and set(a["idx"]) <= set(full["idx"])
    assert len(load_task_split("sst2", "train", FIX, max_examples=1000)) == len(full)


def test_load_task_dict():
    dd = load_task("rte", FIX)
    assert set(dd) == {"train", "validation", "test"}
    dd = load_task("wnli", FIX)  # no local test file: skipped
    assert set(dd) == {"train", "validation"}


# ------------------------------------------------------------------------------------------ errors


def _copy(tmp_path, task):
    dst = tmp_path / task
    shutil.copytree(FIX / task, dst)
    return dst


def _rewrite_line(path, lineno, fn):
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("\n".join(lines), encoding="utf-8")


def test_bad_label_names_file_and_row(tmp_path):
    d = _copy(tmp_path, "sst2")
    _rewrite_line(d / "train.tsv", 4, lambda line: line.rsplit("\t", 1)[0] + "\t7")
    with pytest.raises(ValueError) as err:
        load_task_split("sst2", "train", d)
    assert str(d / "train.tsv") in str(err.value) and "row 4" in str(err.value) and "'7'" in str(err.value)
    d = _copy(tmp_path, "mnli")
    _rewrite_line(d / "dev_matched.jsonl", 2, lambda line: line.replace('"label": "contradiction"', '"label": "maybe"'))
    with pytest.raises(ValueError, match=r"dev_matched\.jsonl: row 2: label 'maybe'"):
        load_task_split("mnli", "validation", d)


def test_missing_label_and_out_of_range_score(tmp_path):
    d = _copy(tmp_path, "stsb")
    _rewrite_line(d / "train.tsv", 3, lambda line: line.rsplit("\t", 1)[0] + "\t7.5")
    with pytest.raises(ValueError, match=r"train\.tsv: row 3: label '7\.5' outside"):
        load_task_split("stsb", "train", d)
    _rewrite_line(d / "dev.tsv", 5, lambda line: line.rsplit("\t", 1)[0] + "\t")
    with pytest.raises(ValueError, match=r"dev\.tsv: row 5: missing label"):
        load_task_split("stsb", "validation", d)


def test_empty_text_names_file_and_row(tmp_path):
    d = _copy(tmp_path, "rte")
    _rewrite_line(d / "dev.tsv", 6, lambda line: "\t".join([line.split("\t")[0], "  "] + line.split("\t")[2:]))
    with pytest.raises(ValueError) as err:
        load_task_split("rte", "validation", d)
    msg = str(err.value)
    assert str(d / "dev.tsv") in msg and "row 6" in msg and "sentence1" in msg
    d = _copy(tmp_path, "snli")
    _rewrite_line(d / "dev.jsonl", 3, lambda line: line.replace('"hypothesis"', '"hypo"'))
    with pytest.raises(ValueError, match=r"dev\.jsonl: row 3: empty or missing text field"):
        load_task_split("snli", "validation", d)
    d = _copy(tmp_path, "race")
    _rewrite_line(d / "dev_high.jsonl", 2, lambda line: line.replace('"answers": ["A"', '"answers": ["E"'))
    with pytest.raises(ValueError, match=r"dev_high\.jsonl: row 2 question 0: label 'E'"):
        load_task_split("race_high", "validation", d)


def test_wrong_column_count(tmp_path):
    d = _copy(tmp_path, "wnli")
    _rewrite_line(d / "train.tsv", 3, lambda line: line + "\textra")
    with pytest.raises(ValueError, match=r"train\.tsv: row 3: expected 4 columns"):
        load_task_split("wnli", "train", d)


def test_missing_split_names_expected_files(tmp_path):
    d = _copy(tmp_path, "rte")
    (d / "dev.tsv").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_task_split("rte", "validation", d)
    assert str(d / "dev.tsv") in str(err.value)
    with pytest.raises(FileNotFoundError, match="dev_high"):
        load_task_split("race_high", "validation", tmp_path / "nothing")
    with pytest.raises(ValueError, match="unknown split"):
        load_task_split("rte", "dev", d)
    assert find_local_files("rte", "validation", d) is None


# ------------------------------------------------------------------------------------------ Hub path


def test_hub_path_normalizes(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        if path == "nyu-mll/glue" and name == "wnli":
            feats = datasets.Features({"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                                       "label": datasets.ClassLabel(names=["not_entailment", "entailment"]),
                                       "idx": datasets.Value("int32")})
            return datasets.Dataset.from_dict({"sentence1": ["a b", "c d"], "sentence2": ["e", "f"],
                                               "label": [1, -1], "idx": [5, 6]}, features=feats)
        if path == "nyu-mll/glue" and name == "stsb":
            return datasets.Dataset.from_dict({"sentence1": ["a", "b"], "sentence2": ["c", "d"],
                                               "label": [-1.0, -1.0], "idx": [0, 1]})
        if path == "stanfordnlp/snli":
            feats = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                       "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])})
            return datasets.Dataset.from_dict({"premise": ["p1", "p2", "p3"], "hypothesis": ["h1", "h2", "h3"],
                                               "label": [2, -1, 0]}, features=feats)
        if path == "ehovy/race":
            return datasets.Dataset.from_dict({"example_id": ["high1.txt", "middle7.txt"], "article": ["art", "art2"],
                                               "answer": ["C", "A"], "question": ["q?", "q2?"],
                                               "options": [["w", "x", "y", "z"], ["a", "b", "c", "d"]]})
        raise AssertionError(path)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    wnli, info = load_task_split("wnli", "validation", return_info=True)
    assert calls[-1] == ("nyu-mll/glue", "wnli", "validation") and info.source == "hub"
    assert wnli["label"] == [1, -1] and wnli["idx"] == [5, 6] and wnli["text_a"] == ["a b", "c d"]
    stsb, info = load_task_split("stsb", "test", return_info=True)
    assert calls[-1] == ("nyu-mll/glue", "stsb", "test") and stsb["label"] == [-1.0, -1.0] and info.unlabeled
    snli, info = load_task_split("snli", "train", return_info=True)
    assert snli["label"] == [2, 0] and info.num_dropped_no_gold == 1
    race = load_task_split("race", "validation")
    assert calls[-1] == ("ehovy/race", "all", "validation")
    assert race["label"] == [2, 0] and race["group"] == ["high", "middle"] and race["context"][0] == "art q?"
    assert get_task("mnli_mm").hub.splits["validation"] == "validation_mismatched"


# ------------------------------------------------------------------------------------------ transformations


def test_single_transformation(tok):
    ex = {"text_a": "Ada found a kite .", "label": 1, "idx": 0}
    out = encode_example(ex, "sst2", tok, max_length=64)
    s, e = tok.start_token_id, tok.classify_token_id
    assert out["input_ids"] == [s] + ids(tok, "Ada found a kite .") + [e]
    assert out["labels"] == 1 and not out["truncated"] and out["length"] == 7
    short = encode_example(ex, "sst2", tok, max_length=4)
    assert short["input_ids"] == [s] + ids(tok, "Ada found") + [e] and short["truncated"]


def test_pair_transformation_and_truncation(tok):
    s, d, e = tok.start_token_id, tok.delimiter_token_id, tok.classify_token_id
    prem, hyp = "Ada found a kite near the park .", "Ada lost a kite ."
    P, H = ids(tok, prem), ids(tok, hyp)
    ex = {"text_a": prem, "text_b": hyp, "label": 2, "idx": 3}
    assert encode_example(ex, "mnli", tok, 64)["input_ids"] == [s] + P + [d] + H + [e]
    # too long: the premise is cut from its end, the hypothesis and special tokens are kept
    out = encode_example(ex, "mnli", tok, max_length=3 + len(H) + 2)
    assert out["input_ids"] == [s] + P[:2] + [d] + H + [e] and out["truncated"]
    # the hypothesis alone does not fit: premise dropped, hypothesis cut, still ends with classify
    out = encode_example(ex, "mnli", tok, max_length=5)
    assert out["input_ids"] == [s, d] + H[:2] + [e] and len(out["input_ids"]) == 5
    with pytest.raises(ValueError, match="max_length"):
        encode_example(ex, "mnli", tok, max_length=3)
    # QNLI cuts the context sentence (text_b), keeping the question
    q = {"text_a": "Where did Ada go ?", "text_b": prem, "label": 0, "idx": 0}
    Q = ids(tok, "Where did Ada go ?")
    out = encode_example(q, "qnli", tok, max_length=3 + len(Q) + 3)
    assert out["input_ids"] == [s] + Q + [d] + P[:3] + [e]


def test_similarity_both_orderings(tok):
    s, d, e = tok.start_token_id, tok.delimiter_token_id, tok.classify_token_id
    a, b = "Ada found a kite .", "Ben lost a boat ."
    A, B = ids(tok, a), ids(tok, b)
    out = encode_example({"text_a": a, "text_b": b, "label": 3.4, "idx": 0}, "stsb", tok, 64)
    assert out["input_ids"] == [[s] + A + [d] + B + [e], [s] + B + [d] + A + [e]]
    assert out["labels"] == pytest.approx(3.4)
    cut = encode_example({"text_a": a, "text_b": b, "label": 1, "idx": 0}, "mrpc", tok, 3 + len(B) + 1)
    assert cut["input_ids"] == [[s] + A[:1] + [d] + B + [e], [s] + B + [d] + A[:1] + [e]] and cut["truncated"]


def test_multiple_choice_transformation(tok):
    s, d, e = tok.start_token_id, tok.delimiter_token_id, tok.classify_token_id
    article, question = "Ada found a kite near the park . Ada went home .", "Where did Ada go _ ?"
    choices = ["home", "the lake", "the farm", "school"]
    ex = {"context": article + " " + question, "question": question, "choices": choices, "label": 0, "idx": 0,
          "group": "middle", "id": "x"}
    Art, Q = ids(tok, article), ids(tok, question)
    out = encode_example(ex, "race", tok, 128)
    assert out["input_ids"] == [[s] + Art + Q + [d] + ids(tok, c) + [e] for c in choices]
    assert out["labels"] == 0 and not out["truncated"]
    # too long: the end of the article is cut, the question and every answer are kept
    longest = max(len(ids(tok, c)) for c in choices)
    out = encode_example(ex, "race", tok, max_length=3 + 4 + len(Q) + longest)
    assert out["input_ids"] == [[s] + Art[:4] + Q + [d] + ids(tok, c) + [e] for c in choices] and out["truncated"]
    assert max(len(x) for x in out["input_ids"]) == 3 + 4 + len(Q) + longest
    # Story Cloze: context = the four sentences, choices = the two endings
    st = {"context": "Ada wanted a kite . Ada went to the park .", "choices": ["Ada was happy .", "Ada hated the kite ."],
          "label": 1, "idx": 0, "id": "s"}
    out = encode_example(st, "story_cloze", tok, 64)
    C = ids(tok, st["context"])
    assert out["input_ids"] == [[s] + C + [d] + ids(tok, c) + [e] for c in st["choices"]]


def test_encode_dataset_counts_truncation(tok):
    ds = load_task_split("rte", "train", FIX)
    enc, n_trunc = encode_dataset(ds, "rte", tok, max_length=40)
    lengths = [len(ids(tok, a)) + len(ids(tok, b)) + 3 for a, b in zip(ds["text_a"], ds["text_b"], strict=True)]
    assert n_trunc == sum(n > 40 for n in lengths) > 0
    assert set(enc.column_names) == {"input_ids", "labels", "length", "idx"}
    assert all(len(x) <= 40 and x[-1] == tok.classify_token_id for x in enc["input_ids"])
    assert enc["labels"] == ds["label"] and enc["length"] == [len(x) for x in enc["input_ids"]]
    for i in range(len(ds)):
        assert enc[i]["input_ids"] == encode_example(ds[i], "rte", tok, 40)["input_ids"]
    _, none = encode_dataset(ds, "rte", tok, max_length=512)
    assert none == 0


def test_encoding_long_pieces_gives_no_false_length_warning():
    # each piece is tokenized whole and cut afterwards: transformers' "indexing errors" warning must not fire
    tok = build_tiny_tokenizer()
    tok.model_max_length = 8
    ds = load_task_split("rte", "train", FIX)
    enc, n_trunc = encode_dataset(ds, "rte", tok, max_length=40)
    assert n_trunc > 0 and max(enc["length"]) <= 40
    assert not tok.deprecation_warnings.get("sequence-length-is-longer-than-the-specified-maximum")
    tok(" ".join(ds["text_a"]))  # the check itself: a plain call does record the warning
    assert tok.deprecation_warnings.get("sequence-length-is-longer-than-the-specified-maximum")


def test_encode_dataset_race_and_num_proc(tok):
    ds = load_task_split("race", "train", FIX)
    enc, n = encode_dataset(ds, "race", tok, max_length=30, num_proc=2)
    assert "group" in enc.column_names and n > 0
    for x, choices in zip(enc["input_ids"], ds["choices"], strict=True):
        assert len(x) == len(choices) == 4
        assert all(seq[-1] == tok.classify_token_id and len(seq) <= 30 for seq in x)


# ------------------------------------------------------------------------------------------ collator


def test_collator_flat():
    col = GPT1Collator(pad_token_id=0)
    batch = col([{"input_ids": [5, 6, 7], "labels": 1}, {"input_ids": [5, 8], "labels": 0, "idx": 3}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 8, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]
    assert batch["input_ids"].dtype == torch.long and set(batch) == {"input_ids", "attention_mask", "labels"}


def test_collator_similarity_and_regression():
    col = GPT1Collator(pad_token_id=9, pad_to_multiple_of=4)
    batch = col([{"input_ids": [[1, 2, 3], [1, 3, 2]], "labels": 2.5}, {"input_ids": [[1, 4], [4, 1]], "labels": 0.0}])
    assert batch["input_ids"].shape == (2, 2, 4) and batch["attention_mask"].shape == (2, 2, 4)
    assert batch["input_ids"][1, 0].tolist() == [1, 4, 9, 9]
    assert batch["attention_mask"][0, 1].tolist() == [1, 1, 1, 0]
    assert batch["labels"].dtype == torch.float32 and batch["labels"].tolist() == [2.5, 0.0]


def test_collator_rounds_up_but_never_past_the_models_positions():
    col = GPT1Collator(pad_token_id=0, pad_to_multiple_of=8, max_length=10)
    assert col([{"input_ids": [1, 2, 3]}])["input_ids"].shape == (1, 8)
    assert col([{"input_ids": list(range(1, 10))}])["input_ids"].shape == (1, 10)  # 16 would pass 10 positions
    assert GPT1Collator(pad_token_id=0, pad_to_multiple_of=8)([{"input_ids": [1] * 9}])["input_ids"].shape == (1, 16)


def test_collator_multiple_choice():
    col = GPT1Collator(pad_token_id=0, pad_to_max_length=6)
    feats = [{"input_ids": [[1, 2], [1, 2, 3], [1], [1, 5, 5]], "labels": 3},
             {"input_ids": [[1], [1], [1, 2, 3, 4], [1]], "labels": 0}]
    batch = col(feats)
    assert batch["input_ids"].shape == (2, 4, 6)
    assert (batch["attention_mask"].sum(-1) == torch.tensor([[2, 3, 1, 3], [1, 1, 4, 1]])).all()
    last = batch["attention_mask"].sum(-1) - 1  # classify token position
    assert batch["input_ids"][1, 2, last[1, 2]] == 4
    with pytest.raises(ValueError, match="different numbers"):
        col([feats[0], {"input_ids": [[1], [1]], "labels": 0}])
    with pytest.raises(ValueError, match="pad_to_max_length"):
        GPT1Collator(0, pad_to_max_length=2)(feats)
    with pytest.raises(ValueError, match="mixes"):
        col([{"input_ids": [1, 2], "labels": 0}, feats[0]])


def test_collator_on_encoded_dataset(tok):
    ds = load_task_split("story_cloze", "test", FIX / "story_cloze_csv")
    enc, _ = encode_dataset(ds, "story_cloze", tok, max_length=64)
    loader = torch.utils.data.DataLoader(enc.with_format(None), batch_size=5,
                                         collate_fn=GPT1Collator(tok.pad_token_id))
    batch = next(iter(loader))
    assert batch["input_ids"].shape[:2] == (5, 2) and batch["labels"].shape == (5,)
    assert batch["input_ids"].shape[2] == max(enc["length"][:5])


# ------------------------------------------------------------------------------------------ length grouping


def test_length_grouping_reduces_padding():
    rng = np.random.RandomState(0)
    lengths = rng.randint(5, 500, size=2000).tolist()
    order = length_grouped_indices(lengths, batch_size=16, seed=1)
    assert sorted(order) == list(range(2000))
    random_order = rng.permutation(2000).tolist()
    grouped, baseline = padding_waste(lengths, order, 16), padding_waste(lengths, random_order, 16)
    assert grouped < baseline / 3
    assert lengths[order[0]] == max(lengths)
    assert order == length_grouped_indices(lengths, batch_size=16, seed=1)
    assert order != length_grouped_indices(lengths, batch_size=16, seed=2)


def test_length_grouped_sampler(tok):
    enc, _ = encode_dataset(load_task_split("sst2", "train", FIX), "sst2", tok, 64)
    sampler = LengthGroupedSampler(dataset=enc, batch_size=4, seed=0, mega_batch_mult=5)
    first = list(sampler)
    assert sorted(first) == list(range(len(enc))) and len(sampler) == len(enc)
    sampler.set_epoch(1)
    assert list(sampler) != first
    lengths = list(enc["length"])
    assert padding_waste(lengths, first, 4) <= padding_waste(lengths, list(range(len(enc))), 4)


# ------------------------------------------------------------------------------------------ predictions


def test_write_glue_predictions(tmp_path):
    p = write_predictions("rte", [0, 1, 1], tmp_path / "rte.tsv")
    assert p.read_text().splitlines() == ["index\tprediction", "0\tentailment", "1\tnot_entailment",
                                          "2\tnot_entailment"]
    p = write_predictions("sst2", np.array([[0.2, 0.8], [0.9, 0.1]]), tmp_path)
    assert p.name == "SST-2.tsv" and p.read_text().splitlines() == ["index\tprediction", "0\t1", "1\t0"]
    p = write_predictions("stsb", [4.25, 0.5], tmp_path, indices=[10, 11])
    assert p.name == "STS-B.tsv" and p.read_text().splitlines() == ["index\tprediction", "10\t4.25", "11\t0.5"]
    p = write_predictions("mnli_mm", [2], tmp_path)
    assert p.name == "MNLI-mm.tsv" and p.read_text().splitlines()[1] == "0\tcontradiction"
    # one GLUE file per MNLI split: matched -> MNLI-m.tsv, mismatched -> MNLI-mm.tsv, diagnostic -> AX.tsv
    for task, split, name in (("mnli", "test", "MNLI-m.tsv"), ("mnli", "test_mismatched", "MNLI-mm.tsv"),
                              ("mnli", "validation_mismatched", "MNLI-mm.tsv"), ("mnli_mm", "test", "MNLI-mm.tsv"),
                              ("mnli_mm", "test_matched", "MNLI-m.tsv"), ("mnli", "ax", "AX.tsv"),
                              ("mnli_mm", "ax", "AX.tsv"), ("rte", "test", "RTE.tsv")):
        folder = tmp_path / task / split
        folder.mkdir(parents=True)
        assert write_predictions(task, [0], folder, split=split).name == name
    with pytest.raises(ValueError):
        write_predictions("rte", [0, 1], tmp_path / "x.tsv", indices=[0])


def test_write_jsonl_predictions(tmp_path):
    p = write_predictions("race", torch.tensor([2, 0]), tmp_path)
    assert p.name == "race.jsonl"
    assert [json.loads(line) for line in p.read_text().splitlines()] == [
        {"index": 0, "prediction": "C", "label_id": 2}, {"index": 1, "prediction": "A", "label_id": 0}]
    p = write_predictions("snli", [1], tmp_path / "out" / "snli.jsonl")
    assert json.loads(p.read_text())["prediction"] == "neutral"
