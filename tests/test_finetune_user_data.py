"""Fine-tuning on your own data end to end (scripts/finetune.py --train_file ...): every task kind and file format,
label names in the config, predictions and the text-classification pipeline, the card written at save, the same data
options in scripts/evaluate_checkpoint.py, and the errors that name the file and the flag."""

import json
from pathlib import Path

import pytest
import torch
from conftest import load_script

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "fixtures" / "user_data"
TINY = '{"n_positions": 64, "n_embd": 32, "n_layer": 1, "n_head": 2, "n_inner": 64}'


pytestmark = pytest.mark.usefixtures("one_thread")




def finetune_cli(out, *flags):
    """The embedded tiny model from scratch (no model given) on the given data, 2 epochs."""
    args = [*flags, "--output_dir", str(out), "--model_config", TINY, "--num_train_epochs", "2",
            "--global_batch_size", "2", "--learning_rate", "1e-3", "--disable_tqdm"]
    assert load_script("finetune").main(args) == 0
    return json.loads((out / "results.json").read_text())


def test_single_text_classification_csv_with_string_labels(tmp_path):
    """A csv with string labels: the classes are the sorted training labels, kept as the config's id2label; the
    predictions and the pipeline give label names; the output folder has its card."""
    out = tmp_path / "reviews"
    results = finetune_cli(out, "--train_file", str(DATA / "reviews_train.csv"), "--validation_file",
                           str(DATA / "reviews_validation.csv"), "--test_file", str(DATA / "reviews_test.csv"))
    assert results["task_kind"] == "single" and results["primary_metric"] == "accuracy"
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    rows = [json.loads(line) for line in Path(results["prediction_files"]["test"]).read_text().splitlines()]
    assert len(rows) == 2 and {r["prediction"] for r in rows} <= {"negative", "neutral", "positive"}
    card = (out / "README.md").read_text()
    assert "reviews" in card and "model-index" in card and "accuracy" in card
    assert "\ndatasets:" not in card  # local files: no Hub dataset is claimed

    from transformers import pipeline

    import gpt1_hf  # noqa: F401  (registers gpt1 with the Auto classes)

    classify = pipeline("text-classification", model=str(out))
    long_review = "The soup was warm and the bread was fresh. " * 40
    labels = [r["label"] for r in classify(["A quiet room with tea.", long_review], truncation=True)]
    assert set(labels) <= {"negative", "neutral", "positive"}


def test_sentence_pair_jsonl_uses_the_entailment_transformation(tmp_path):
    results = finetune_cli(tmp_path / "nli", "--train_file", str(DATA / "nli_train.jsonl"), "--validation_file",
                           str(DATA / "nli_validation.jsonl"), "--text_columns", "premise", "hypothesis")
    assert results["task_kind"] == "pair" and set(results["metrics"]) == {"accuracy"}


def test_similarity_regression_tsv(tmp_path):
    """Float labels are regression (pearson, spearmanr); similarity feeds both orderings (batch, 2, seq)."""
    results = finetune_cli(tmp_path / "sim", "--train_file", str(DATA / "sim_train.tsv"), "--validation_file",
                           str(DATA / "sim_validation.tsv"), "--task_type", "similarity", "--label_column", "score")
    assert results["task_kind"] == "similarity"
    assert set(results["metrics"]) == {"pearson", "spearmanr"}
    config = json.loads((tmp_path / "sim" / "config.json").read_text())
    assert len(config["id2label"]) == 1 and config["problem_type"] == "regression"


def test_multiple_choice_from_a_list_column_and_evaluate_checkpoint(tmp_path, capsys):
    out = tmp_path / "mc"
    results = finetune_cli(out, "--train_file", str(DATA / "mc_train.json"), "--validation_file",
                           str(DATA / "mc_validation.json"), "--task_type", "multiple_choice", "--text_columns",
                           "story", "question", "--choices_column", "options", "--label_column", "answer")
    assert results["task_kind"] == "multiple_choice"
    assert json.loads((out / "config.json").read_text())["architectures"] == ["GPT1ForMultipleChoice"]
    # the same data options evaluate the checkpoint
    evaluate = load_script("evaluate_checkpoint")
    assert evaluate.main(["--model_name_or_path", str(out), "--validation_file", str(DATA / "mc_validation.json"),
                          "--task_type", "multiple_choice", "--text_columns", "story", "question",
                          "--choices_column", "options", "--label_column", "answer",
                          "--output_dir", str(tmp_path / "eval")]) == 0
    report = json.loads(next((tmp_path / "eval").glob("eval_*.json")).read_text())
    assert report["metrics"]["accuracy"] == pytest.approx(results["metrics"]["accuracy"])


def test_multiple_choice_from_separate_columns_parquet(tmp_path):
    import datasets

    rows = {"context": ["The kettle boiled.", "The door was locked.", "Snow covered the road.", "The cat was hungry."],
            "ending1": ["Tea was made.", "He used a key.", "Cars drove slowly.", "It slept on the moon."],
            "ending2": ["The kettle sang opera.", "The door flew away.", "The snow was hot.", "It ate its food."],
            "label": [0, 0, 0, 1]}
    for split in ("train", "validation"):
        datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / f"{split}.parquet"))
    results = finetune_cli(tmp_path / "out", "--train_file", str(tmp_path / "train.parquet"), "--validation_file",
                           str(tmp_path / "validation.parquet"), "--task_type", "multiple_choice",
                           "--text_columns", "context", "--choice_columns", "ending1", "ending2")
    assert results["task_kind"] == "multiple_choice" and results["sizes"]["validation"] == 4


def test_errors_name_the_file_and_the_flag(tmp_path):
    from gpt1_hf.finetuning import finetune

    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,target\nA fine day.,positive\nA bad day.,negative\n")
    with pytest.raises(ValueError, match=r"bad.csv.*no label column 'label'.*\['sentence', 'target'\].*--label_column"):
        finetune(train_file=str(bad), validation_file=str(bad), output_dir=str(tmp_path / "o1"), disable_tqdm=True)
    unseen = tmp_path / "dev.csv"
    unseen.write_text("sentence,target\nA fine day.,mixed\n")
    with pytest.raises(ValueError, match=r"dev.csv: row 1: label 'mixed' is not one of the known labels"):
        finetune(train_file=str(bad), validation_file=str(unseen), label_column="target",
                 output_dir=str(tmp_path / "o2"), disable_tqdm=True)
    with pytest.raises(ValueError, match="no validation data .*--validation_file"):
        finetune(train_file=str(bad), label_column="target", output_dir=str(tmp_path / "o3"), disable_tqdm=True)


def test_lora_output_folder_keeps_its_labels_for_the_pipeline(tmp_path):
    """A LoRA output folder holds the adapter, our card (not PEFT's stub) and task_config.json: the
    text-classification pipeline on the folder builds the head with the task's classes and returns their names."""
    import gpt1_hf  # noqa: F401
    from gpt1_hf import GPT1Config, GPT1LMHeadModel
    from gpt1_hf.task_models import load_tokenizer

    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    GPT1LMHeadModel(GPT1Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                               n_inner=64)).save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    out = tmp_path / "lora"
    assert load_script("finetune").main([
        "--model_name_or_path", str(tmp_path / "base"), "--lora", "--train_file", str(DATA / "reviews_train.csv"),
        "--validation_file", str(DATA / "reviews_validation.csv"), "--output_dir", str(out), "--num_train_epochs",
        "1", "--global_batch_size", "2", "--max_length", "64", "--disable_tqdm"]) == 0
    assert (out / "adapter_config.json").is_file() and not (out / "config.json").exists()
    assert json.loads((out / "task_config.json").read_text())["id2label"]["2"] == "positive"
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "More Information Needed" not in card

    from transformers import pipeline

    classify = pipeline("text-classification", model=str(out))
    assert classify.model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert classify("The noodles were bright.")[0]["label"] in {"negative", "neutral", "positive"}
