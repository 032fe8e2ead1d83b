"""Bring your own data (issue #14): every file format and task kind through `gpt1_hf.user_data.load_user_task`,
then the paper's input transformations (`encode_dataset`) and the task metrics (`compute_task_metrics`).

The fixture files under tests/fixtures/user_data are synthetic (written for these tests); parquet files and the
error cases are written into tmp_path.
"""

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from gpt1_hf.data import describe_load_info, encode_dataset, get_load_info
from gpt1_hf.metrics import compute_task_metrics
from gpt1_hf.user_data import DataOptions, _task_name, check_data_options, has_user_data, load_user_task

FIX = Path(__file__).parent / "fixtures" / "user_data"


@pytest.fixture(scope="module")
def tok():
    from gpt1_hf.task_models import load_tokenizer  # lazily: the bundled GPT-1 BPE tokenizer

    return load_tokenizer()


@pytest.fixture
def cache(tmp_path):
    return str(tmp_path / "hf_cache")


def _load(cache, **options):
    return load_user_task(DataOptions(**options), cache_dir=cache)


def _check_encoded_and_metrics(spec, ds, tok, max_length=64):
    """encode_dataset gives the paper's input shape for the kind; compute_task_metrics gives every metric of spec."""
    enc, _ = encode_dataset(ds, spec, tok, max_length=max_length)
    ids = enc[0]["input_ids"]
    e = tok.classify_token_id
    if spec.kind in ("single", "pair"):
        assert ids[0] == tok.start_token_id and ids[-1] == e
        assert (tok.delimiter_token_id in ids) == (spec.kind == "pair")
    elif spec.kind == "similarity":
        assert len(ids) == 2 and all(seq[-1] == e for seq in ids)
    else:
        assert len(ids) == spec.num_choices and all(seq[-1] == e for seq in ids)
    labels = np.asarray(enc["labels"])
    if spec.is_regression:
        preds = labels + np.linspace(-0.3, 0.3, len(labels))
    else:
        preds = np.eye(spec.num_labels)[labels]  # logits of perfect predictions
    out = compute_task_metrics(spec, preds, labels)
    assert list(out)[: len(spec.metrics)] == list(spec.metrics)
    assert all(type(v) is float and not math.isnan(v) for v in out.values())
    return enc, out


# ----------------------------------------------------------------------------------------------------------------------
# Every kind, every format
# ----------------------------------------------------------------------------------------------------------------------


def test_single_text_classification_csv_string_labels(cache, tok):
    spec, data = _load(cache, train_file=str(FIX / "reviews_train.csv"),
                       validation_file=str(FIX / "reviews_validation.csv"), test_file=str(FIX / "reviews_test.csv"))
    assert (spec.name, spec.kind, spec.metrics, spec.metric_config) == ("reviews", "single", ("accuracy",), "accuracy")
    assert spec.label_names == spec.label_values == ("negative", "neutral", "positive")  # sorted training labels
    assert spec.id2label == {0: "negative", 1: "neutral", 2: "positive"} and spec.hub is None
    assert spec.primary_metric == "accuracy" and "reviews_train.csv" in spec.hub_note
    train, info = data["train"]
    assert train.column_names == ["text_a", "label", "idx"] and train.features["label"].dtype == "int64"
    assert train[2]["text_a"] == 'A quiet room with "soft" chairs and tea.' and train[0]["label"] == 2
    assert train["idx"][:2] == [1, 2]  # the file's id column
    assert info["num_examples"] == 8 and info["layout"] == "csv" and get_load_info(train).files == info["files"]
    test, test_info = data["test"]
    assert test["label"] == [-1, -1] and test_info["unlabeled"]  # no label column: unlabeled
    line = describe_load_info(test_info)
    assert "reviews test: 2 examples from local reviews_test.csv" in line and "unlabeled" in line
    _check_encoded_and_metrics(spec, data["validation"][0], tok)


def test_sentence_pair_entailment_jsonl(cache, tok):
    spec, data = _load(cache, train_file=str(FIX / "nli_train.jsonl"), validation_file=str(FIX / "nli_validation.jsonl"))
    assert spec.kind == "pair" and spec.label_names == ("contradiction", "entailment")
    assert not spec.is_regression and "test" not in data
    row = data["train"][0][0]
    assert (row["text_a"], row["text_b"], row["label"]) == ("A red kite flies over the hill.",
                                                            "Something is in the air.", 1)
    enc, _ = _check_encoded_and_metrics(spec, data["validation"][0], tok)
    # entailment transformation: [s] premise [d] hypothesis [e]
    ids = enc[0]["input_ids"]
    a = tok("A man paints a fence white.", add_special_tokens=False)["input_ids"]
    assert ids[1: 1 + len(a)] == a and ids[1 + len(a)] == tok.delimiter_token_id
    # truncation cuts the premise's end, never the hypothesis or the extract token
    enc, n_cut = encode_dataset(data["train"][0], spec, tok, max_length=9)
    hyp = tok("Something is in the air.", add_special_tokens=False)["input_ids"]
    assert n_cut >= 1 and len(enc[0]["input_ids"]) == 9 and enc[0]["input_ids"][-1 - len(hyp): -1] == hyp


def test_similarity_regression_tsv_reads_quotes_literally(cache, tok):
    spec, data = _load(cache, train_file=str(FIX / "sim_train.tsv"), validation_file=str(FIX / "sim_validation.tsv"),
                       task_type="similarity", label_column="score")
    assert spec.kind == "similarity" and spec.is_regression and spec.num_labels == 1
    assert spec.metrics == ("pearson", "spearmanr") and spec.metric_config == "pearson+spearmanr"
    train = data["train"][0]
    assert train.features["label"].dtype == "float32" and train[0]["label"] == pytest.approx(4.5)
    # GLUE tsvs are QUOTE_NONE: a `"` at the start or in the middle of a field is text, not quoting
    assert train[0]["text_a"] == '"Quoted" words open this line.'
    assert train[1]["text_b"] == 'A "fast" dog runs on grass.'
    enc, out = _check_encoded_and_metrics(spec, data["validation"][0], tok)
    first, second = enc[0]["input_ids"]  # both orderings
    assert first != second and sorted(first) == sorted(second)
    assert set(out) == {"pearson", "spearmanr"}


def test_multiple_choice_list_column_json(cache, tok):
    spec, data = _load(cache, train_file=str(FIX / "mc_train.json"), validation_file=str(FIX / "mc_validation.json"),
                       task_type="multiple_choice", text_columns=["story", "question"], choices_column="options",
                       label_column="answer")
    assert spec.kind == "multiple_choice" and spec.label_names == ("A", "B", "C") and spec.num_choices == 3
    assert spec.metrics == ("accuracy",)
    train = data["train"][0]
    assert train["label"] == [0, 1, 2] and data["validation"][0]["label"] == [0, 0]  # letters, any case
    assert train[0]["context"].endswith(" What happened in summer?") and train[0]["question"] == "What happened in summer?"
    _check_encoded_and_metrics(spec, data["validation"][0], tok)
    # truncation cuts the story, never the question, a choice or the extract token
    enc, n_cut = encode_dataset(train, spec, tok, max_length=16)
    assert n_cut == 3
    question = tok("What happened in summer?", add_special_tokens=False)["input_ids"]
    for seq, choice in zip(enc[0]["input_ids"], train[0]["choices"], strict=True):
        answer = tok(choice, add_special_tokens=False)["input_ids"]
        d = seq.index(tok.delimiter_token_id)
        assert len(seq) <= 16 and seq[-1] == tok.classify_token_id and seq[d + 1: -1] == answer
        assert seq[d - len(question): d] == question


def _write_parquet(path, rows):
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(path))
    return str(path)


_PIQA_LIKE = [
    {"goal": "Keep bread fresh for longer.", "sol1": "Store it in a sealed bag.", "sol2": "Leave it in the sun.",
     "sol3": "Soak it in water.", "label": 0},
    {"goal": "Open a stuck jar lid.", "sol1": "Paint the lid.", "sol2": "Run warm water over the lid.",
     "sol3": "Freeze the jar.", "label": 1},
    {"goal": "Dry wet shoes.", "sol1": "Put them in the fridge.", "sol2": "Fill them with sand.",
     "sol3": "Stuff them with newspaper.", "label": 2},
]


def test_multiple_choice_separate_columns_parquet(cache, tmp_path, tok):
    train = _write_parquet(tmp_path / "train.parquet", _PIQA_LIKE)
    val = _write_parquet(tmp_path / "validation.parquet", _PIQA_LIKE[1:])
    spec, data = _load(cache, train_file=train, validation_file=val, task_type="multiple_choice",
                       choice_columns=["sol1", "sol2", "sol3"])
    assert spec.name == tmp_path.name  # a generic stem ("train") gives the folder's name
    assert spec.kind == "multiple_choice" and spec.label_names == ("0", "1", "2")  # 0-based positions
    ds = data["train"][0]
    assert ds["label"] == [0, 1, 2] and ds[0]["context"] == "Keep bread fresh for longer."  # inferred context column
    assert ds[1]["choices"] == ["Paint the lid.", "Run warm water over the lid.", "Freeze the jar."]
    assert "question" not in ds.column_names
    _check_encoded_and_metrics(spec, data["validation"][0], tok)


def test_one_based_choice_labels_and_choice_column_names(cache, tmp_path):
    rows = [{**r, "label": r["label"] + 1} for r in _PIQA_LIKE]
    spec, data = load_user_task(DataOptions(train_file=_write_parquet(tmp_path / "a.parquet", rows),
                                            task_type="multiple_choice", choice_columns=["sol1", "sol2", "sol3"]),
                                cache_dir=cache)
    assert spec.label_names == ("1", "2", "3") and data["train"][0]["label"] == [0, 1, 2]
    rows = [{**r, "label": ["sol1", "sol2", "sol3"][r["label"]]} for r in _PIQA_LIKE]
    spec, data = load_user_task(DataOptions(train_file=_write_parquet(tmp_path / "b.parquet", rows),
                                            task_type="multiple_choice", choice_columns=["sol1", "sol2", "sol3"]),
                                cache_dir=cache)
    assert spec.label_names == ("sol1", "sol2", "sol3") and data["train"][0]["label"] == [0, 1, 2]


# ----------------------------------------------------------------------------------------------------------------------
# Columns, labels, presets, options
# ----------------------------------------------------------------------------------------------------------------------


def _csv(path, text):
    Path(path).write_text(text, encoding="utf-8")
    return str(path)


def test_column_inference_like_run_glue(cache, tmp_path):
    # sentence1/sentence2 win; ids and the label are never text
    f = _csv(tmp_path / "t.csv", "idx,note,sentence1,sentence2,label\n1,x,A b.,C d.,yes\n2,y,E f.,G h.,no\n")
    spec, data = _load(cache, train_file=f)
    assert spec.kind == "pair" and data["train"][0][0]["text_a"] == "A b." and spec.label_names == ("no", "yes")
    # otherwise the first 1 or 2 string columns (integer labels sorted numerically, names kept as written)
    f = _csv(tmp_path / "u.csv", "id,title,body,label\n1,T1,B1,10\n2,T2,B2,2\n3,T3,B3,2\n")
    spec, data = _load(cache, train_file=f)
    assert spec.kind == "pair" and spec.label_names == ("2", "10") and data["train"][0]["label"] == [1, 0, 0]
    assert data["train"][0][0]["text_b"] == "B1"
    spec, _ = _load(cache, train_file=f, text_columns=["body"])
    assert spec.kind == "single"


def test_csv_keeps_na_like_words_as_text(cache, tmp_path):
    f = _csv(tmp_path / "t.csv", "text,label\nNA,None\nnull,1\nN/A,None\n")
    spec, data = _load(cache, train_file=f)
    assert spec.label_names == ("1", "None") and data["train"][0]["text_a"] == ["NA", "null", "N/A"]
    t = _csv(tmp_path / "test.csv", "text,label\nSome text.,\n")  # a blank test label is unlabeled
    assert _load(cache, train_file=f, test_file=t)[1]["test"][0]["label"] == [-1]


def test_compressed_csv_and_json_lines_in_a_json_file(cache, tmp_path):
    import gzip

    gz = tmp_path / "reviews.csv.gz"
    gz.write_bytes(gzip.compress((FIX / "reviews_train.csv").read_bytes()))
    spec, data = _load(cache, train_file=str(gz))
    assert spec.name == "reviews" and len(data["train"][0]) == 8
    lines = tmp_path / "lines.json"
    lines.write_text((FIX / "nli_train.jsonl").read_text())
    assert _load(cache, train_file=str(lines))[0].kind == "pair"


def test_label_names_flag_and_integer_labels(cache, tmp_path):
    f = _csv(tmp_path / "t.csv", "sentence,label\nGood day.,1\nBad day.,0\nFine day.,1\n")
    spec, data = _load(cache, train_file=f, label_names=["bad", "good"], metric=["f1", "accuracy"])
    assert spec.label_names == ("bad", "good") and data["train"][0]["label"] == [1, 0, 1]  # integers are indices
    assert spec.metrics == ("f1", "accuracy") and spec.primary_metric == "f1"
    # float labels mean regression (as run_glue), for classification too
    g = _csv(tmp_path / "g.csv", "sentence,label\nGood day.,0.9\nBad day.,0.1\n")
    spec, data = _load(cache, train_file=g)
    assert spec.is_regression and spec.kind == "single" and data["train"][0]["label"] == pytest.approx([0.9, 0.1])


def test_preset_with_user_files(cache, tmp_path, tok):
    f = _csv(tmp_path / "my_sst_train.csv", "sentence,label\nA warm and witty film.,1\nDull and slow.,0\n")
    v = _csv(tmp_path / "my_sst_dev.csv", "sentence,label\nWitty.,1\nSlow.,0\n")
    spec, data = _load(cache, task_name="sst2", train_file=f, validation_file=v)
    assert (spec.name, spec.kind, spec.label_names, spec.metrics) == ("sst2", "single", ("negative", "positive"),
                                                                        ("accuracy",))
    assert spec.hub is None and spec.layouts == () and "my_sst_train.csv" in spec.hub_note
    assert data["train"][0]["label"] == [1, 0]
    # MRPC's own GLUE tsv header (BOM-free copy): the preset knows the "#1 String"/"Quality" columns
    m = _csv(tmp_path / "mrpc.tsv", 'Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tHe said "yes".\tHe agreed.\n'
                                    "0\t3\t4\tIt is red.\tThe sky is wide.\n")
    spec, data = _load(cache, task_name="mrpc", train_file=m)
    assert spec.kind == "similarity" and spec.metrics == ("f1", "accuracy") and spec.primary_metric == "f1"
    assert data["train"][0][0]["text_a"] == 'He said "yes".' and data["train"][0]["label"] == [1, 0]
    _check_encoded_and_metrics(spec, data["train"][0], tok)
    with pytest.raises(ValueError, match="--task_name rte is a classification task, but --task_type is similarity"):
        check_data_options(DataOptions(task_name="rte", task_type="similarity", train_file=f))


def test_multiple_choice_presets(cache, tmp_path, tok):
    """story_cloze (four context columns joined, two ending columns, 1/2 labels) and race (article + question,
    an options list, letter answers) read the user's files with the preset's column names."""
    header = "InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,RandomFifthSentenceQuiz1," \
             "RandomFifthSentenceQuiz2,AnswerRightEnding\n"
    f = _csv(tmp_path / "stories.csv", header + "s1,Ann woke up.,She made tea.,It was hot.,She waited.,"
                                               "She drank it.,She ate the cup.,1\n"
                                               "s2,Bo ran.,He fell.,He cried.,A friend came.,The friend flew away.,"
                                               "The friend helped him up.,2\n")
    spec, data = _load(cache, task_name="story_cloze", train_file=f)
    ds = data["train"][0]
    assert spec.kind == "multiple_choice" and spec.label_names == ("1", "2") and ds["label"] == [0, 1]
    assert ds[0]["context"] == "Ann woke up. She made tea. It was hot. She waited." and ds[0]["id"] == "s1"
    race = tmp_path / "race.jsonl"
    race.write_text(json.dumps({"example_id": "q1", "article": "The fox slept all day in the barn.",
                                "question": "Where did the fox sleep?", "options": ["A den", "The barn", "A tree",
                                                                                   "A car"], "answer": "B"}) + "\n")
    spec, data = _load(cache, task_name="race", train_file=str(race))
    ds = data["train"][0]
    assert spec.label_names == ("A", "B", "C", "D") and ds["label"] == [1] and ds[0]["question"] == "Where did the fox sleep?"
    assert ds[0]["context"] == "The fox slept all day in the barn. Where did the fox sleep?"
    _check_encoded_and_metrics(spec, ds, tok)


def test_hub_style_dataset_dir_with_class_labels(cache, tmp_path):
    """--dataset_name also takes a local dataset folder (datasets' own loader); ClassLabel names become the labels
    and -1 ("no gold label") rows are dropped from train, kept unlabeled in test."""
    import datasets

    feats = datasets.Features({"text": datasets.Value("string"),
                               "label": datasets.ClassLabel(names=["sad", "happy"])})
    folder = tmp_path / "moods"
    folder.mkdir()
    rows = {"text": ["I smile.", "I cry.", "Unsure."], "label": [1, 0, -1]}
    datasets.Dataset.from_dict(rows, features=feats).to_parquet(str(folder / "train.parquet"))
    datasets.Dataset.from_dict(rows, features=feats).to_parquet(str(folder / "test.parquet"))
    spec, data = load_user_task(DataOptions(dataset_name=str(folder)), cache_dir=cache)
    assert spec.name == "moods" and spec.label_names == ("sad", "happy") and spec.hub.path == str(folder)
    train, info = data["train"]
    assert train["label"] == [1, 0] and info["num_dropped_no_gold"] == 1 and info["source"] == "hub"
    assert "DROPPED 1 rows" in describe_load_info(info)
    assert data["test"][0]["label"] == [1, 0, -1]


def test_max_samples_and_names(cache, tmp_path):
    spec, data = load_user_task(DataOptions(train_file=str(FIX / "reviews_train.csv")), splits=("train",),
                                max_samples={"train": 3}, seed=1, cache_dir=cache)
    ds, info = data["train"]
    assert len(ds) == 3 and info["max_examples"] == 3 and info["num_rows_read"] == 8
    assert ds["idx"] == sorted(ds["idx"]) and "random subset" in describe_load_info(info)
    assert spec.label_names == ("negative", "neutral", "positive")  # from the whole training file
    d = tmp_path / "rte"
    d.mkdir()
    spec, _ = _load(cache, train_file=_csv(d / "train.csv", "sentence,label\nA.,x\nB.,y\n"))
    assert spec.name == "custom_rte"  # never the paper task's name
    assert has_user_data(DataOptions(train_file="x.csv")) and not has_user_data(DataOptions(task_name="rte"))
    assert _task_name(DataOptions(dataset_name="nyu-mll/glue", dataset_config_name="sst2"), None) == "glue_sst2"
    assert _task_name(DataOptions(dataset_name="stanfordnlp/sst2"), None) == "custom_sst2"
    assert _task_name(DataOptions(validation_file="data/My Reviews.v2.jsonl"), None) == "My_Reviews"


def test_options_from_argument_dataclass():
    from types import SimpleNamespace

    args = SimpleNamespace(train_file="a.csv", text_columns=["x"], label_column=None, seed=3, output_dir="o")
    opts = DataOptions.from_args(args)
    assert (opts.train_file, opts.text_columns, opts.label_column, opts.dataset_name) == ("a.csv", ["x"], "label", None)
    assert opts.files() == {"train": "a.csv"}


# ----------------------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------------------


def test_missing_columns_name_file_columns_and_flag(cache, tmp_path):
    f = _csv(tmp_path / "t.csv", "review,stars\nNice.,good\nBad.,bad\n")
    with pytest.raises(ValueError) as e:
        _load(cache, train_file=f, text_columns=["review"])
    msg = str(e.value)
    assert "t.csv" in msg and "'label'" in msg and "['review', 'stars']" in msg and "--label_column" in msg
    with pytest.raises(ValueError, match=r"no text column 'text'.*\['review', 'stars'\]: set --text_columns"):
        _load(cache, train_file=f, text_columns=["text"], label_column="stars")
    v = _csv(tmp_path / "v.csv", "review\nNice.\n")  # a validation file without labels is an error, not unlabeled
    with pytest.raises(ValueError, match=r"--validation_file .*v.csv: no label column 'stars'.*--label_column"):
        _load(cache, train_file=f, validation_file=v, label_column="stars")
    with pytest.raises(ValueError, match=r"no choice column 'sol4'.*set --choice_columns"):
        _load(cache, train_file=_write_parquet(tmp_path / "p.parquet", _PIQA_LIKE), task_type="multiple_choice",
              choice_columns=["sol1", "sol4"])
    with pytest.raises(ValueError, match="which columns hold the choices.*--choice_columns"):
        _load(cache, train_file=_write_parquet(tmp_path / "p.parquet", _PIQA_LIKE), task_type="multiple_choice")


def test_unknown_validation_label_is_named(cache, tmp_path):
    v = _csv(tmp_path / "dev.csv", "text,label\nOkay food.,mixed\n")
    with pytest.raises(ValueError) as e:
        _load(cache, train_file=str(FIX / "reviews_train.csv"), validation_file=v)
    msg = str(e.value)
    assert "dev.csv: row 1: label 'mixed'" in msg and "['negative', 'neutral', 'positive']" in msg
    assert "reviews_train.csv" in msg and "--label_names" in msg


def test_empty_split_names_the_file(cache, tmp_path):
    for name, text in (("header_only.csv", "text,label\n"), ("zero.csv", ""), ("empty.jsonl", "")):
        v = _csv(tmp_path / name, text)
        with pytest.raises(ValueError, match=rf"--validation_file .*{name} is empty"):
            _load(cache, train_file=str(FIX / "reviews_train.csv"), validation_file=v)


def test_unknown_extension_names_the_supported_ones(cache, tmp_path):
    with pytest.raises(ValueError, match=r"--train_file .*data.xlsx: unknown file type '.xlsx'; supported: .csv, "
                                         r".tsv, .json, .jsonl, .parquet"):
        _load(cache, train_file=_csv(tmp_path / "data.xlsx", "x"))
    with pytest.raises(FileNotFoundError, match="--train_file .*nope.csv: no such file"):
        _load(cache, train_file=str(tmp_path / "nope.csv"))


def test_offline_dataset_name_is_one_clear_error(cache, monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    start = time.time()
    with pytest.raises(ValueError) as e:
        _load(cache, dataset_name="someone/surely-not-cached-gpt1-test")
    assert time.time() - start < 30
    msg = str(e.value)
    assert "cannot load --dataset_name 'someone/surely-not-cached-gpt1-test'" in msg and "--train_file" in msg
    assert "\n" not in msg and e.value.__cause__ is None and e.value.__suppress_context__  # no chain to read


def test_option_errors(cache, tmp_path):
    f = str(FIX / "reviews_train.csv")
    with pytest.raises(ValueError, match="--metric pearson: not available for a classification task"):
        _load(cache, train_file=f, metric=["pearson"])
    with pytest.raises(ValueError, match="either --dataset_name or --train_file"):
        check_data_options(DataOptions(dataset_name="x/y", train_file=f))
    with pytest.raises(ValueError, match="no data: pass --train_file"):
        check_data_options(DataOptions())
    with pytest.raises(ValueError, match="--task_type 'regression'"):
        check_data_options(DataOptions(train_file=f, task_type="regression"))
    with pytest.raises(ValueError, match="need --task_type multiple_choice"):
        check_data_options(DataOptions(train_file=f, choices_column="options"))
    with pytest.raises(ValueError, match="similarity needs 2 --text_columns"):
        check_data_options(DataOptions(train_file=f, task_type="similarity", text_columns=["a"]))
    with pytest.raises(ValueError, match="no training split to read the label names from"):
        _load(cache, validation_file=str(FIX / "reviews_validation.csv"))
    bad = _csv(tmp_path / "bad.jsonl", '{"text": "a", "label": "x"}\n{not json\n')
    with pytest.raises(ValueError, match="--train_file .*bad.jsonl: cannot read it as jsonl"):
        _load(cache, train_file=bad)
    blank = _csv(tmp_path / "blank.csv", "text,label\nGood.,a\n,b\n")
    with pytest.raises(ValueError, match=r"blank.csv: row 2: empty text in column 'text' \(--text_columns\)"):
        _load(cache, train_file=blank)


def test_multiclass_f1_metric(cache):
    spec, data = _load(cache, train_file=str(FIX / "reviews_train.csv"), metric=["f1", "f1_macro"])
    from sklearn.metrics import f1_score

    refs = np.array(data["train"][0]["label"])
    preds = np.array([2, 0, 2, 1, 0, 2, 0, 0])
    out = compute_task_metrics(spec, preds, refs)
    assert out["f1"] == pytest.approx(f1_score(refs, preds, average="macro")) == pytest.approx(out["f1_macro"])
    assert json.dumps(out)
