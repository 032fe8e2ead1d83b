"""Fine-tuning end to end (gpt1_hf.finetuning, scripts/finetune.py, scripts/evaluate_checkpoint.py,
scripts/layer_transfer.py) on tiny models and the task fixtures of tests/fixtures/tasks (synthetic / tiny samples)."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from gpt1_hf import GPT1Config, GPT1ForMultipleChoice, GPT1ForSequenceClassification, GPT1LMHeadModel
from gpt1_hf.finetuning import (
    EMBEDDED_DEFAULTS,
    FinetuneArguments,
    build_task_model,
    bundled_data_path,
    finetune,
    resolve_finetune_arguments,
)
from gpt1_hf.tasks import get_task

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tasks"
TINY = dict(n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=64)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models run fastest (and do not fight other jobs for the cores) on one intra-op thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _script(name):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    """A real GPT1Tokenizer (GPT-1's pipeline) with a 600-entry BPE vocabulary trained on the fixture texts."""
    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    texts = [p.read_text(encoding="utf-8-sig") for p in sorted(FIXTURES.rglob("*"))
             if p.is_file() and p.suffix in (".tsv", ".jsonl", ".csv", ".txt")]
    base = GPT1Tokenizer(vocab={"<unk>": 0, "a</w>": 1}, merges=[])
    tok = base.train_new_from_iterator([texts], 600)
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pretrained_dir(tokenizer_dir, tmp_path_factory):
    """A tiny GPT1LMHeadModel + tokenizer folder, as scripts/pretrain.py writes it."""
    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    tok = GPT1Tokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = GPT1LMHeadModel(GPT1Config(vocab_size=len(tok), **TINY))
    path = tmp_path_factory.mktemp("pretrained")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def run(task, out, model=None, **kw):
    args = dict(task=task, data_dir=str(FIXTURES / task), output_dir=str(out), model_name_or_path=model,
                max_length=64, num_train_epochs=2, global_batch_size=4, learning_rate=1e-3, progress_bar=False,
                seed=0)
    if model is None:
        args["model_config_overrides"] = dict(TINY)
    args.update(kw)
    return finetune(FinetuneArguments(**args))


KINDS = [  # task, data folder, kind, head
    ("sst2", "single", GPT1ForSequenceClassification),
    ("rte", "pair", GPT1ForSequenceClassification),
    ("mrpc", "similarity", GPT1ForSequenceClassification),
    ("stsb", "similarity", GPT1ForSequenceClassification),  # regression
    ("race", "multiple_choice", GPT1ForMultipleChoice),
]


@pytest.mark.parametrize("task,kind,head", KINDS, ids=[k[0] for k in KINDS])
def test_finetune_each_task_kind(task, kind, head, pretrained_dir, tmp_path):
    spec = get_task(task)
    results = run(task, tmp_path, model=str(pretrained_dir))
    assert results["task"] == spec.name and results["task_kind"] == kind == spec.kind
    # every metric of the task, from the bundled evaluate module
    assert set(spec.metrics) <= set(results["metrics"])
    if task == "race":
        assert {"accuracy_middle", "accuracy_high"} <= set(results["metrics"])
    assert results["model"]["head"] == head.__name__ and results["model"]["init"] == "pretrained"
    assert len(results["eval_history"]) == 2 and results["global_step"] == results["total_steps"]
    assert results["sizes"]["train"] > 0 and results["sizes"]["validation"] > 0
    assert set(results["truncated"]) >= {"train", "validation"}
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["metrics"] == results["metrics"] and saved["seed"] == 0 and saved["wall_time_s"] > 0
    assert saved["config"]["learning_rate"] == 1e-3 and saved["config"]["aux_lm_weight"] == 0.5
    # prediction files: GLUE submission TSVs for GLUE tasks, jsonl otherwise; one row per example
    pred = Path(results["prediction_files"]["validation"])
    rows = pred.read_text().strip().split("\n")
    if spec.glue_submission:
        assert pred.name == spec.glue_submission and rows[0] == "index\tprediction"
        assert len(rows) - 1 == results["sizes"]["validation"]
        values = [r.split("\t")[1] for r in rows[1:]]
        if spec.is_regression:
            assert all(isinstance(float(v), float) for v in values)
        else:
            assert set(values) <= set(spec.label_values)
        assert "test" in results["prediction_files"]  # the fixtures have an unlabeled test split
    else:
        assert len(rows) == results["sizes"]["validation"] and "prediction" in json.loads(rows[0])
    # the output folder is the fine-tuned model with its tokenizer
    model = head.from_pretrained(tmp_path)
    if kind != "multiple_choice":
        assert model.config.num_labels == spec.num_labels
        assert model.config.problem_type == ("regression" if spec.is_regression else "single_label_classification")
    assert (tmp_path / "tokenizer_config.json").is_file() and (tmp_path / "best" / "config.json").is_file()
    assert (tmp_path / "checkpoints" / "latest").is_file()


def test_finetune_pair_task_with_accumulation_and_grouping(pretrained_dir, tmp_path):
    results = run("snli", tmp_path, model=str(pretrained_dir), per_device_batch_size=2, global_batch_size=4,
                  group_by_length=True, num_train_epochs=1, aux_lm_weight=0.0, predict_splits=[])
    assert results["batch"] == {"per_device": 2, "processes": 1, "gradient_accumulation_steps": 2, "global": 4}
    assert list(results["prediction_files"]) == ["validation"]
    assert results["model"]["config"]["aux_lm_weight"] == 0.0


def test_resume_gives_the_same_final_metrics(pretrained_dir, tmp_path):
    ref = run("sst2", tmp_path / "ref", model=str(pretrained_dir), predict_splits=[])
    first = run("sst2", tmp_path / "run", model=str(pretrained_dir), predict_splits=[], max_time=0.0)
    assert first["stop_reason"] == "max_time" and first["global_step"] == 1
    resumed = run("sst2", tmp_path / "run", model=str(pretrained_dir), predict_splits=[],
                  resume_from_checkpoint="latest")
    assert resumed["global_step"] == ref["global_step"]
    assert resumed["metrics"] == ref["metrics"] and resumed["eval_history"] == ref["eval_history"]
    a = GPT1ForSequenceClassification.from_pretrained(tmp_path / "ref").state_dict()
    b = GPT1ForSequenceClassification.from_pretrained(tmp_path / "run").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_label_count_mismatch_is_a_clear_error(pretrained_dir, tmp_path):
    run("sst2", tmp_path / "sst2", model=str(pretrained_dir), num_train_epochs=1, predict_splits=[])
    with pytest.raises(ValueError, match="fine-tuned with 2 labels but task snli has 3"):
        run("snli", tmp_path / "snli", model=str(tmp_path / "sst2"))
    assert not (tmp_path / "snli" / "results.json").exists()
    with pytest.raises(ValueError, match="multiple choice"):
        run("race", tmp_path / "race", model=str(tmp_path / "sst2"))
    # --reinit_head: a new 3-way head on the fine-tuned backbone
    results = run("snli", tmp_path / "snli2", model=str(tmp_path / "sst2"), reinit_head=True, num_train_epochs=1,
                  predict_splits=[])
    assert GPT1ForSequenceClassification.from_pretrained(tmp_path / "snli2").config.num_labels == 3
    assert results["metrics"]["accuracy"] >= 0


def test_transfer_layers_keeps_first_k_blocks(pretrained_dir):
    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    tok = GPT1Tokenizer.from_pretrained(pretrained_dir)
    lm = GPT1LMHeadModel.from_pretrained(pretrained_dir).state_dict()
    args = resolve_finetune_arguments(task="rte", model_name_or_path=str(pretrained_dir), transfer_layers=1)
    torch.manual_seed(1)
    model, info = build_task_model(get_task("rte"), args, tok)
    sd = model.state_dict()
    for k in ("transformer.tokens_embed.weight", "transformer.positions_embed.weight",
              "transformer.h.0.attn.c_attn.weight", "transformer.h.0.ln_2.weight"):
        assert torch.equal(sd[k], lm[k]), k
    w = sd["transformer.h.1.mlp.c_fc.weight"]
    assert not torch.allclose(w, lm["transformer.h.1.mlp.c_fc.weight"])
    assert abs(float(w.std()) - model.config.initializer_range) < 0.005
    assert torch.equal(sd["transformer.h.1.attn.c_attn.bias"], torch.zeros_like(sd["transformer.h.1.attn.c_attn.bias"]))
    assert info["transfer_layers"] == 1 and any(n.startswith("transformer.h.1.") for n in info["reinitialized"])
    assert not any(n.startswith("transformer.h.0.") for n in info["reinitialized"])
    args0 = resolve_finetune_arguments(task="rte", model_name_or_path=str(pretrained_dir), transfer_layers=0)
    m0, _ = build_task_model(get_task("rte"), args0, tok)
    assert torch.equal(m0.state_dict()["transformer.tokens_embed.weight"], lm["transformer.tokens_embed.weight"])
    assert not torch.equal(m0.state_dict()["transformer.h.0.attn.c_attn.weight"], lm["transformer.h.0.attn.c_attn.weight"])
    with pytest.raises(ValueError, match="transfer_layers=3 but the model has 2 layers"):
        build_task_model(get_task("rte"), resolve_finetune_arguments(
            task="rte", model_name_or_path=str(pretrained_dir), transfer_layers=3), tok)


def test_from_scratch_ablation_uses_same_config_random_weights(pretrained_dir, tmp_path):
    results = run("sst2", tmp_path, model=str(pretrained_dir), from_scratch=True, num_train_epochs=1,
                  predict_splits=[])
    assert results["model"]["init"] == "from_scratch"
    lm = GPT1LMHeadModel.from_pretrained(pretrained_dir)
    ft = GPT1ForSequenceClassification.from_pretrained(tmp_path)
    for k in ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions"):
        assert getattr(ft.config, k) == getattr(lm.config, k)
    torch.manual_seed(1)  # (the fixture "pretrained" model was drawn with seed 0)
    args = resolve_finetune_arguments(task="sst2", model_name_or_path=str(pretrained_dir), from_scratch=True)
    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    fresh, _ = build_task_model(get_task("sst2"), args, GPT1Tokenizer.from_pretrained(pretrained_dir))
    assert not torch.allclose(fresh.transformer.h[0].mlp.c_fc.weight, lm.transformer.h[0].mlp.c_fc.weight)


def test_openai_gpt_checkpoint_is_converted_on_load(tokenizer_dir, tmp_path):
    from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    tok = GPT1Tokenizer.from_pretrained(tokenizer_dir)
    src = OpenAIGPTLMHeadModel(OpenAIGPTConfig(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=4))
    src.save_pretrained(tmp_path / "openai")
    results = run("rte", tmp_path / "out", model=str(tmp_path / "openai"), tokenizer_name_or_path=str(tokenizer_dir),
                  num_train_epochs=1, predict_splits=[])
    ft = GPT1ForSequenceClassification.from_pretrained(tmp_path / "out")
    assert results["model"]["init"] == "pretrained" and ft.config.model_type == "gpt1"


def test_bad_inputs(pretrained_dir, tmp_path):
    with pytest.raises(ValueError, match="unknown task 'nope'; known tasks: .*sst2"):
        run("nope", tmp_path, model=str(pretrained_dir))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="train.tsv"):
        run("sst2", tmp_path / "o", model=str(pretrained_dir), data_dir=str(empty))
    with pytest.raises(ValueError, match="global_batch_size=5 is not a multiple"):
        run("sst2", tmp_path / "o2", model=str(pretrained_dir), per_device_batch_size=2, global_batch_size=5)
    assert not (tmp_path / "o2" / "results.json").exists()


def test_paper_and_embedded_defaults(pretrained_dir):
    paper = resolve_finetune_arguments(task="rte", model_name_or_path=str(pretrained_dir))
    assert (paper.learning_rate, paper.global_batch_size, paper.num_train_epochs, paper.warmup_ratio) == (
        6.25e-5, 32, 3, 0.002)
    assert (paper.aux_lm_weight, paper.clf_pdrop, paper.weight_decay, paper.max_grad_norm) == (0.5, 0.1, 0.01, 1.0)
    assert paper.lr_scheduler_type == "linear" and not paper.from_scratch and paper.max_length == 512
    embedded = resolve_finetune_arguments()
    assert embedded.task == "sst2" and embedded.from_scratch and embedded.mixed_precision == "auto"
    assert embedded.num_threads == 1 and paper.num_threads is None
    assert Path(embedded.data_dir) == bundled_data_path("sst2")
    from gpt1_hf.data import load_task_split

    assert len(load_task_split("sst2", "train", data_dir=embedded.data_dir)) == 5000
    assert len(load_task_split("sst2", "validation", data_dir=embedded.data_dir)) == 872
    assert (bundled_data_path("gpt1_bpe") / "LICENSE.txt").is_file()
    assert EMBEDDED_DEFAULTS["max_length"] <= 128
    with pytest.raises(ValueError, match="bundled SST-2 sample only"):
        resolve_finetune_arguments(task="rte")


def test_cli_embedded_default_smoke(tmp_path, capsys):
    """`python scripts/finetune.py` with no model: the embedded default path (bundled data, real GPT-1 BPE,
    from scratch), cut to a few steps here."""
    cli = _script("finetune")
    assert cli.main(["--max_steps", "3", "--max_train_examples", "48", "--max_eval_examples", "40",
                     "--output_dir", str(tmp_path), "--no_progress_bar"]) == 0
    out = capsys.readouterr().out
    assert "accuracy:" in out and "sst2 validation (40 examples)" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["model"]["init"] == "from_scratch" and results["model"]["config"]["vocab_size"] == 40482
    from gpt1_hf.training import resolve_mixed_precision

    assert results["mixed_precision"] == resolve_mixed_precision("auto", cpu=True) and results["global_step"] == 3


def test_evaluate_checkpoint_script_matches_training_metrics(pretrained_dir, tmp_path, capsys):
    results = run("mrpc", tmp_path / "ft", model=str(pretrained_dir), num_train_epochs=1, predict_splits=[])
    cli = _script("evaluate_checkpoint")
    assert cli.main(["--model", str(tmp_path / "ft"), "--task", "mrpc", "--data_dir", str(FIXTURES / "mrpc"),
                     "--output_dir", str(tmp_path / "eval"), "--batch_size", "3"]) == 0
    report = json.loads((tmp_path / "eval" / "eval_mrpc_validation.json").read_text())
    assert report["metrics"] == pytest.approx(results["metrics"])
    assert Path(report["prediction_file"]).name == "MRPC.tsv"
    assert '"f1"' in capsys.readouterr().out
    # an unlabeled split: predictions only
    assert cli.main(["--model", str(tmp_path / "ft"), "--task", "mrpc", "--data_dir", str(FIXTURES / "mrpc"),
                     "--split", "test", "--output_dir", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "eval_mrpc_test.json").read_text())
    assert report["metrics"] is None and Path(report["prediction_file"]).is_file()
    # a pretrained LM is not a fine-tuned checkpoint
    with pytest.raises(ValueError, match="not a fine-tuned gpt1 task checkpoint"):
        cli.main(["--model", str(pretrained_dir), "--task", "mrpc", "--data_dir", str(FIXTURES / "mrpc")])


def test_layer_transfer_sweep(pretrained_dir, tmp_path):
    cli = _script("layer_transfer")
    assert cli.main(["--layers", "0,2", "--output_dir", str(tmp_path), "--task", "rte", "--model_name_or_path",
                     str(pretrained_dir), "--data_dir", str(FIXTURES / "rte"), "--num_train_epochs", "1",
                     "--global_batch_size", "4", "--max_length", "64", "--no_progress_bar",
                     "--predict_splits", "none"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "layer_transfer.csv")))
    assert [int(r["transfer_layers"]) for r in rows] == [0, 2] and "accuracy" in rows[0]
    assert (tmp_path / "layer_transfer.png").stat().st_size > 1000
    assert json.loads((tmp_path / "K0" / "results.json").read_text())["model"]["transfer_layers"] == 0


def test_results_record_the_data_of_each_split(pretrained_dir, tmp_path, capsys):
    """results.json["data"]: per split what was loaded and done to it (here SNLI: a partial train file and "-" rows
    dropped from dev; QQP: validation held out from the local train file), and one printed line per split."""
    results = run("snli", tmp_path / "snli", model=str(pretrained_dir), num_train_epochs=1, predict_splits=[],
                  data_dir=str(FIXTURES / "snli_original"))
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "snli" / "results.json").read_text())["data"]
    assert set(data) == {"train", "validation"} and results["data"] == data
    assert data["validation"]["num_examples"] == results["sizes"]["validation"]
    assert data["validation"]["num_dropped_no_gold"] == 3 and data["validation"]["files"][0].endswith("dev.jsonl")
    assert not data["train"]["partial"] and not data["validation"]["substituted"]
    lines = [line for line in out.splitlines() if line.startswith("data: snli")]
    assert len(lines) == 2 and "DROPPED 3 rows without a gold label" in lines[1] and "DROPPED" not in lines[0]
    results = run("qqp", tmp_path / "qqp", model=str(pretrained_dir), num_train_epochs=1, predict_splits=[])
    val, train = results["data"]["validation"], results["data"]["train"]
    assert train["partial"] and train["files"][0].endswith("train_partial.jsonl")
    assert val["substituted"] and val["source_split"] == "train" and val["substitution_part"] == "held-out"
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("data: qqp")]
    assert len(lines) == 2 and all("PARTIAL" in line and "SUBSTITUTED" in line for line in lines)


def test_bad_output_options_fail_before_training(pretrained_dir, tmp_path):
    """Options that used to fail only after training (an explicit --predict_splits that cannot be loaded,
    --push_to_hub with --no_save_model) fail before it, with nothing written."""
    cases = [
        (dict(predict_splits=["tset"]), "unknown split 'tset' for task 'sst2'"),
        (dict(task="wnli", data_dir=str(FIXTURES / "wnli"), predict_splits=["test"]), "'test' cannot be loaded"),
        (dict(task="scitail", data_dir=str(FIXTURES / "scitail"), predict_splits=["test"]), "not available"),
        (dict(push_to_hub=True, save_model=False), "--no_save_model"),
    ]
    for i, (kw, match) in enumerate(cases):
        out = tmp_path / f"o{i}"
        task = kw.pop("task", "sst2")
        with pytest.raises(ValueError, match=match):
            run(task, out, model=str(pretrained_dir), **kw)
        assert not out.exists(), kw


def test_head_check_reads_a_hub_checkpoint_config(pretrained_dir, tmp_path, monkeypatch):
    """A Hub id with the wrong number of labels: the friendly error from its config.json (fetched with
    transformers.utils.cached_file, mocked here: no network), before any weight is loaded."""
    import transformers.utils

    from gpt1_hf.finetuning import _check_head_compatibility

    run("sst2", tmp_path / "sst2", model=str(pretrained_dir), num_train_epochs=1, predict_splits=[])
    asked = []

    def fake_cached_file(repo, filename, **kw):
        asked.append((repo, filename))
        return str(tmp_path / "sst2" / filename) if repo == "someone/gpt1-sst2" else None

    monkeypatch.setattr(transformers.utils, "cached_file", fake_cached_file)
    with pytest.raises(ValueError, match="someone/gpt1-sst2 was fine-tuned with 2 labels but task snli has 3"):
        run("snli", tmp_path / "snli", model="someone/gpt1-sst2", tokenizer_name_or_path=str(pretrained_dir))
    assert asked == [("someone/gpt1-sst2", "config.json")] and not (tmp_path / "snli").exists()
    with pytest.raises(ValueError, match="multiple choice"):
        _check_head_compatibility(get_task("race"), "someone/gpt1-sst2", reinit_head=False)
    _check_head_compatibility(get_task("snli"), "someone/gpt1-sst2", reinit_head=True)  # --reinit_head: allowed
    _check_head_compatibility(get_task("snli"), "someone/unknown", reinit_head=False)  # no config: loading decides


def test_final_model_install_is_never_a_silent_mix(pretrained_dir, tmp_path, monkeypatch):
    """The final model is staged complete in .final-pending, then installed with config.json last: a kill during the
    install leaves a folder without config.json (not a loadable mix of two models), and the next run finishes it."""
    import os

    from gpt1_hf import finetuning as F

    out = tmp_path / "run"
    run("sst2", out, model=str(pretrained_dir), num_train_epochs=1, predict_splits=[], seed=0)
    old = GPT1ForSequenceClassification.from_pretrained(out).state_dict()
    real_replace = os.replace
    moved = []

    def killed_after_the_weights(src, dst):
        if ".final-pending" in str(src) and Path(dst).parent == out:
            moved.append(Path(dst).name)
            if Path(dst).name == "tokenizer.json":
                raise KeyboardInterrupt("killed (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(F.os, "replace", killed_after_the_weights)
    with pytest.raises(KeyboardInterrupt):
        run("sst2", out, model=str(pretrained_dir), num_train_epochs=1, predict_splits=[], seed=1)
    monkeypatch.setattr(F.os, "replace", real_replace)
    assert "model.safetensors" in moved and not (out / "config.json").exists()  # the old config is gone first
    assert (out / ".final-pending" / "config.json").is_file()  # the complete new model is staged
    with pytest.raises((OSError, RuntimeError)):  # no config.json: not loadable as the fine-tuned model
        GPT1ForSequenceClassification.from_pretrained(out)
    assert F._install_final_model(out) and not (out / ".final-pending").exists()
    new = GPT1ForSequenceClassification.from_pretrained(out).state_dict()
    assert not all(torch.equal(old[k], new[k]) for k in old)
    # a staged folder without its manifest (never renamed into place completely) is discarded
    (out / ".final-pending").mkdir()
    assert not F._install_final_model(out) and not (out / ".final-pending").exists()


def test_mnli_glue_submission_files_and_ax(pretrained_dir, tmp_path):
    """MNLI predictions: MNLI-m.tsv for the matched splits, MNLI-mm.tsv for the mismatched ones and AX.tsv for the
    GLUE diagnostic set (synthetic here), which an MNLI model predicts by default when the file is there."""
    import shutil

    shutil.copytree(FIXTURES / "mnli_glue", tmp_path / "data" / "mnli")
    (tmp_path / "data" / "glue_diagnostic").mkdir()
    rows = ["index\tsentence1\tsentence2"] + [f"{i}\tthe red cup {i} is full .\tthe cup is empty ." for i in range(5)]
    (tmp_path / "data" / "glue_diagnostic" / "diagnostic_unlabeled.tsv").write_text("\n".join(rows) + "\n")
    results = run("mnli", tmp_path / "out", model=str(pretrained_dir), data_dir=str(tmp_path / "data" / "mnli"),
                  num_train_epochs=1)
    files = {split: Path(p) for split, p in results["prediction_files"].items()}
    assert set(files) == {"validation", "test", "ax"}  # no test_mismatched file: skipped
    assert files["validation"].name == files["test"].name == "MNLI-m.tsv" and files["ax"].name == "AX.tsv"
    ax = files["ax"].read_text().splitlines()
    assert ax[0] == "index\tprediction" and [r.split("\t")[0] for r in ax[1:]] == ["0", "1", "2", "3", "4"]
    assert {r.split("\t")[1] for r in ax[1:]} <= {"entailment", "neutral", "contradiction"}
    assert results["data"]["ax"]["unlabeled"] and results["sizes"]["ax"] == 5
    results = run("mnli", tmp_path / "out2", model=str(pretrained_dir), data_dir=str(tmp_path / "data" / "mnli"),
                  num_train_epochs=1, predict_splits=["validation_mismatched"])
    assert Path(results["prediction_files"]["validation_mismatched"]).name == "MNLI-mm.tsv"
    results = run("mnli_mm", tmp_path / "out3", model=str(pretrained_dir), data_dir=str(tmp_path / "data" / "mnli"),
                  num_train_epochs=1, predict_splits=["test_matched", "ax"])
    assert Path(results["prediction_files"]["validation"]).name == "MNLI-mm.tsv"
    assert Path(results["prediction_files"]["test_matched"]).name == "MNLI-m.tsv"
    assert Path(results["prediction_files"]["ax"]).name == "AX.tsv"
