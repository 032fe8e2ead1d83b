"""Fine-tuning end to end (gpt1_hf.finetuning, scripts/finetune.py, scripts/evaluate_checkpoint.py,
scripts/layer_transfer.py) on tiny models and the task fixtures of tests/fixtures/tasks (synthetic / tiny samples)."""

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import assert_help_lists_every_field, load_script

from gpt1_hf import GPT1Config, GPT1ForMultipleChoice, GPT1ForSequenceClassification, GPT1LMHeadModel
from gpt1_hf.arguments import FINETUNE_EMBEDDED_DEFAULTS, FinetuneArguments, parse_cli
from gpt1_hf.finetuning import finetune
from gpt1_hf.task_models import build_task_model, bundled_data_path
from gpt1_hf.tasks import get_task

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tasks"
TINY = dict(n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=64)


pytestmark = pytest.mark.usefixtures("one_thread")




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
    args = dict(task_name=task, data_dir=str(FIXTURES / task), output_dir=str(out), model_name_or_path=model,
                max_length=64, num_train_epochs=2, global_batch_size=4, learning_rate=1e-3, disable_tqdm=True,
                seed=0)
    if model is None:
        args["model_config"] = dict(TINY)
    args.update(kw)
    return finetune(FinetuneArguments(**args))


def resolved(**kw) -> FinetuneArguments:
    """Arguments with the recipe's values filled in, as `finetune` sees them."""
    return FinetuneArguments(**kw).resolved()


def nothing_written(out: Path) -> bool:
    """No run output in ``out``: at most the run lock a refused run took (the lock file itself always stays)."""
    return not out.exists() or {p.name for p in out.iterdir()} <= {".run.lock"}


KINDS = [  # task, data folder, kind, head
    ("sst2", "single", GPT1ForSequenceClassification),
    ("rte", "pair", GPT1ForSequenceClassification),
    ("mrpc", "similarity", GPT1ForSequenceClassification),
    ("stsb", "similarity", GPT1ForSequenceClassification),  # regression
    ("race", "multiple_choice", GPT1ForMultipleChoice),
]


@pytest.mark.parametrize("task,kind,head", KINDS, ids=[k[0] for k in KINDS])
def test_finetune_each_task_kind(task, kind, head, pretrained_dir, tmp_path, capsys):
    spec = get_task(task)
    results = run(task, tmp_path, model=str(pretrained_dir))
    # each evaluation prints one console line with its metrics
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("eval step ")]
    assert len(lines) == len(results["eval_history"]) == 2
    for line, entry in zip(lines, results["eval_history"], strict=True):
        assert line.startswith(f"eval step {entry['step']} (epoch ") and f"{spec.primary_metric}=" in line
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
    results = run("snli", tmp_path, model=str(pretrained_dir), per_device_train_batch_size=2, global_batch_size=4,
                  group_by_length=True, num_train_epochs=1, aux_lm_weight=0.0, predict_splits=[])
    assert results["batch"] == {"per_device": 2, "processes": 1, "gradient_accumulation_steps": 2, "global": 4}
    assert list(results["prediction_files"]) == ["validation"]
    assert results["model"]["config"]["aux_lm_weight"] == 0.0


def test_resume_gives_the_same_final_metrics(pretrained_dir, tmp_path, capsys):
    from gpt1_hf.run_folder import find_checkpoint

    ref = run("sst2", tmp_path / "ref", model=str(pretrained_dir), predict_splits=[])
    first = run("sst2", tmp_path / "run", model=str(pretrained_dir), predict_splits=[], max_time=0.0)
    assert first["stop_reason"] == "max_time" and first["global_step"] == 1
    ckpt = find_checkpoint(tmp_path / "run", "latest")
    assert ckpt.name == "step-00000001" and "resumed from" not in capsys.readouterr().out
    resumed = run("sst2", tmp_path / "run", model=str(pretrained_dir), predict_splits=[],
                  resume_from_checkpoint="latest")
    assert f"resumed from {ckpt} at step 1" in capsys.readouterr().out
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
    args = resolved(task_name="rte", model_name_or_path=str(pretrained_dir), transfer_layers=1)
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
    args0 = resolved(task_name="rte", model_name_or_path=str(pretrained_dir), transfer_layers=0)
    m0, _ = build_task_model(get_task("rte"), args0, tok)
    assert torch.equal(m0.state_dict()["transformer.tokens_embed.weight"], lm["transformer.tokens_embed.weight"])
    assert not torch.equal(m0.state_dict()["transformer.h.0.attn.c_attn.weight"], lm["transformer.h.0.attn.c_attn.weight"])
    with pytest.raises(ValueError, match="transfer_layers=3 but the model has 2 layers"):
        build_task_model(get_task("rte"), resolved(
            task_name="rte", model_name_or_path=str(pretrained_dir), transfer_layers=3), tok)


def test_from_scratch_ablation_uses_same_config_random_weights(pretrained_dir, tmp_path):
    results = run("sst2", tmp_path, model=str(pretrained_dir), from_scratch=True, num_train_epochs=1,
                  predict_splits=[])
    assert results["model"]["init"] == "from_scratch"
    lm = GPT1LMHeadModel.from_pretrained(pretrained_dir)
    ft = GPT1ForSequenceClassification.from_pretrained(tmp_path)
    for k in ("n_layer", "n_embd", "n_head", "vocab_size", "n_positions"):
        assert getattr(ft.config, k) == getattr(lm.config, k)
    torch.manual_seed(1)  # (the fixture "pretrained" model was drawn with seed 0)
    args = resolved(task_name="sst2", model_name_or_path=str(pretrained_dir), from_scratch=True)
    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    fresh, _ = build_task_model(get_task("sst2"), args, GPT1Tokenizer.from_pretrained(pretrained_dir))
    assert not torch.allclose(fresh.transformer.h[0].mlp.c_fc.weight, lm.transformer.h[0].mlp.c_fc.weight)


def test_openai_gpt_checkpoint_is_converted_on_load(tokenizer_dir, tmp_path):
    from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    tok = GPT1Tokenizer.from_pretrained(tokenizer_dir)
    src = OpenAIGPTLMHeadModel(OpenAIGPTConfig(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=4))
    src.save_pretrained(tmp_path / "openai")
    results = run("rte", tmp_path / "out", model=str(tmp_path / "openai"), tokenizer_name=str(tokenizer_dir),
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
    with pytest.raises(ValueError, match="global_batch_size 5 is not a multiple of --per_device_train_batch_size 2"):
        run("sst2", tmp_path / "o2", model=str(pretrained_dir), per_device_train_batch_size=2, global_batch_size=5)
    assert nothing_written(tmp_path / "o2")


def test_paper_and_embedded_defaults(pretrained_dir):
    paper = resolved(task_name="rte", model_name_or_path=str(pretrained_dir))
    assert (paper.learning_rate, paper.global_batch_size, paper.num_train_epochs, paper.warmup_ratio) == (
        6.25e-5, 32, 3, 0.002)
    assert (paper.aux_lm_weight, paper.clf_pdrop, paper.weight_decay, paper.max_grad_norm) == (0.5, 0.1, 0.01, 1.0)
    assert paper.lr_scheduler_type == "linear" and not paper.from_scratch and paper.max_length == 512
    assert paper.overwrite_output_dir is False and paper.checkpointing_steps == "epoch"
    embedded = resolved()
    assert embedded.task_name == "sst2" and embedded.from_scratch and embedded.mixed_precision == "auto"
    assert embedded.num_threads == 1 and paper.num_threads is None
    assert embedded.overwrite_output_dir is True  # the README's main command runs again into the same folder
    assert embedded.output_dir == "outputs/finetune-embedded-sst2"
    assert Path(embedded.data_dir) == bundled_data_path("sst2")
    from gpt1_hf.data import load_task_split

    assert len(load_task_split("sst2", "train", data_dir=embedded.data_dir)) == 5000
    assert len(load_task_split("sst2", "validation", data_dir=embedded.data_dir)) == 872
    assert (bundled_data_path("gpt1_bpe") / "LICENSE.txt").is_file()
    assert FINETUNE_EMBEDDED_DEFAULTS["max_length"] <= 128
    with pytest.raises(ValueError, match="bundled SST-2 sample only"):
        resolved(task_name="rte")
    with pytest.raises(ValueError, match="--task_name is required"):
        resolved(model_name_or_path=str(pretrained_dir))


def test_readme_main_command_runs_twice_into_the_same_folder(tmp_path, monkeypatch, capsys):
    """The README's main command, `python scripts/finetune.py` with no model: the embedded default (bundled data, real
    GPT-1 BPE, from scratch), cut to a few steps here, run twice in a row into its default output folder (the second
    run replaces the first: the embedded default has overwrite_output_dir=True)."""
    from gpt1_hf.cli import run_main
    from gpt1_hf.precision import resolve_mixed_precision

    cli = load_script("finetune")
    monkeypatch.chdir(tmp_path)
    argv = ["--max_train_steps", "3", "--max_train_samples", "48", "--max_eval_samples", "40", "--disable_tqdm"]
    out = tmp_path / "outputs" / "finetune-embedded-sst2"
    for i in range(2):
        assert run_main(lambda: cli.main(argv)) == 0, capsys.readouterr().err
        printed = capsys.readouterr().out
        assert "accuracy:" in printed and "sst2 validation (40 examples)" in printed and "resumed" not in printed
        results = json.loads((out / "results.json").read_text())
        assert results["model"]["init"] == "from_scratch" and results["model"]["config"]["vocab_size"] == 40482
        assert results["mixed_precision"] == resolve_mixed_precision("auto", cpu=True)
        assert results["global_step"] == 3 and results["stop_reason"] == "completed"
        # 48 examples in batches of 32: 2 updates an epoch, a checkpoint at the end of epoch 1 and at the stop
        assert [p.name for p in sorted((out / "checkpoints").glob("step-*"))] == ["step-00000002", "step-00000003"]
        assert (out / "model.safetensors").is_file() and (out / "best" / "config.json").is_file()
        # only this run's files: the first run's were replaced, not mixed in
        marker = out / "checkpoints" / "step-00000002" / "first-run"
        assert not marker.exists()
        if i == 0:
            marker.touch()


def test_evaluate_checkpoint_script_matches_training_metrics(pretrained_dir, tmp_path, capsys):
    results = run("mrpc", tmp_path / "ft", model=str(pretrained_dir), num_train_epochs=1, predict_splits=[])
    cli = load_script("evaluate_checkpoint")
    assert cli.main(["--model_name_or_path", str(tmp_path / "ft"), "--task_name", "mrpc", "--data_dir",
                     str(FIXTURES / "mrpc"), "--output_dir", str(tmp_path / "eval"),
                     "--per_device_eval_batch_size", "3"]) == 0
    report = json.loads((tmp_path / "eval" / "eval_mrpc_validation.json").read_text())
    assert report["metrics"] == pytest.approx(results["metrics"])
    assert Path(report["prediction_file"]).name == "MRPC.tsv"
    # the run's own prediction file (reused from its last evaluation) is the saved final model's
    assert Path(report["prediction_file"]).read_text() == Path(results["prediction_files"]["validation"]).read_text()
    assert '"f1"' in capsys.readouterr().out
    # padded to a multiple of 8: the padding is masked, the metrics do not move
    assert cli.main(["--model_name_or_path", str(tmp_path / "ft"), "--task_name", "mrpc", "--data_dir",
                     str(FIXTURES / "mrpc"), "--output_dir", str(tmp_path / "eval8"),
                     "--per_device_eval_batch_size", "3", "--pad_to_multiple_of", "8"]) == 0
    padded = json.loads((tmp_path / "eval8" / "eval_mrpc_validation.json").read_text())
    assert padded["metrics"] == pytest.approx(results["metrics"])
    # an unlabeled split: predictions only
    assert cli.main(["--model_name_or_path", str(tmp_path / "ft"), "--task_name", "mrpc", "--data_dir",
                     str(FIXTURES / "mrpc"), "--split", "test", "--output_dir", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "eval_mrpc_test.json").read_text())
    assert report["metrics"] is None and Path(report["prediction_file"]).is_file()
    # a pretrained LM is not a fine-tuned checkpoint
    with pytest.raises(ValueError, match="not a fine-tuned gpt1 task checkpoint"):
        cli.main(["--model_name_or_path", str(pretrained_dir), "--task_name", "mrpc", "--data_dir",
                  str(FIXTURES / "mrpc")])
    # the checkpoint is required (run_main turns this into one line and exit status 2)
    with pytest.raises(ValueError, match="--model_name_or_path is required"):
        cli.main(["--task_name", "mrpc"])


def test_final_predictions_reuse_the_evaluation_after_the_last_update(pretrained_dir, tmp_path, monkeypatch):
    """An evaluation after the last update already has the final model's eval-split logits: no second pass; the
    metric module is loaded once."""
    from gpt1_hf.training import TrainingLoop

    calls = []
    original = TrainingLoop.predict
    monkeypatch.setattr(TrainingLoop, "predict", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    from gpt1_hf import metrics

    loads = []
    load_metric = metrics.load_metric
    monkeypatch.setattr(metrics, "load_metric", lambda *a, **k: loads.append(1) or load_metric(*a, **k))
    results = run("sst2", tmp_path / "ft", model=str(pretrained_dir), num_train_epochs=2, predict_splits=[])
    assert len(results["eval_history"]) == 2 and len(calls) == 2  # one per epoch, none after training
    assert len(loads) == 1  # the evaluate module is loaded once, before training, not at every evaluation


def test_a_metric_that_cannot_load_fails_before_training(pretrained_dir, tmp_path, monkeypatch):
    from gpt1_hf import metrics

    def broken(*args, **kwargs):
        raise FileNotFoundError("no metric module here")

    monkeypatch.setattr(metrics, "load_metric", broken)
    with pytest.raises(FileNotFoundError, match="no metric module"):
        run("sst2", tmp_path / "ft", model=str(pretrained_dir), num_train_epochs=1, predict_splits=[])
    assert not (tmp_path / "ft" / "checkpoints").exists() or not any((tmp_path / "ft" / "checkpoints").iterdir())


def test_layer_transfer_sweep(pretrained_dir, tmp_path):
    cli = load_script("layer_transfer")
    assert cli.main(["--layers", "0,2", "--output_dir", str(tmp_path), "--task_name", "rte", "--model_name_or_path",
                     str(pretrained_dir), "--data_dir", str(FIXTURES / "rte"), "--num_train_epochs", "1",
                     "--global_batch_size", "4", "--max_length", "64", "--disable_tqdm",
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
        assert nothing_written(out), kw


def test_head_check_reads_a_hub_checkpoint_config(pretrained_dir, tmp_path, monkeypatch):
    """A Hub id with the wrong number of labels: the friendly error from its config.json (fetched with
    transformers.utils.cached_file, mocked here: no network), before any weight is loaded."""
    import transformers.utils

    from gpt1_hf.task_models import check_head_compatibility

    run("sst2", tmp_path / "sst2", model=str(pretrained_dir), num_train_epochs=1, predict_splits=[])
    asked = []

    def fake_cached_file(repo, filename, **kw):
        asked.append((repo, filename))
        return str(tmp_path / "sst2" / filename) if repo == "someone/gpt1-sst2" else None

    monkeypatch.setattr(transformers.utils, "cached_file", fake_cached_file)
    with pytest.raises(ValueError, match="someone/gpt1-sst2 was fine-tuned with 2 labels but task snli has 3"):
        run("snli", tmp_path / "snli", model="someone/gpt1-sst2", tokenizer_name=str(pretrained_dir))
    assert asked == [("someone/gpt1-sst2", "config.json")] and nothing_written(tmp_path / "snli")
    with pytest.raises(ValueError, match="multiple choice"):
        check_head_compatibility(get_task("race"), "someone/gpt1-sst2", reinit_head=False)
    check_head_compatibility(get_task("snli"), "someone/gpt1-sst2", reinit_head=True)  # --reinit_head: allowed
    check_head_compatibility(get_task("snli"), "someone/unknown", reinit_head=False)  # no config: loading decides


def test_final_model_install_is_never_a_silent_mix(pretrained_dir, tmp_path, monkeypatch):
    """The final model is staged complete in .final-pending, then installed with config.json last: a kill during the
    install leaves a folder without config.json (not a loadable mix of two models), and the next start into that
    folder finishes the install (`gpt1_hf.durable.remove_leftovers`) before anything else."""
    import os

    from gpt1_hf import durable as D

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

    monkeypatch.setattr(D.os, "replace", killed_after_the_weights)
    with pytest.raises(KeyboardInterrupt):
        run("sst2", out, model=str(pretrained_dir), num_train_epochs=1, predict_splits=[], seed=1,
            overwrite_output_dir=True)
    monkeypatch.setattr(D.os, "replace", real_replace)
    assert "model.safetensors" in moved and not (out / "config.json").exists()  # anchors move last: none yet
    assert (out / ".final-pending" / "config.json").is_file()  # the complete new model is staged
    with pytest.raises((OSError, RuntimeError)):  # no config.json: not loadable as the fine-tuned model
        GPT1ForSequenceClassification.from_pretrained(out)
    # the next start finishes the install, then refuses a fresh run into the folder that now holds a whole model
    with pytest.raises(FileExistsError, match="--overwrite_output_dir"):
        run("sst2", out, model=str(pretrained_dir), num_train_epochs=1, predict_splits=[], seed=2)
    assert (out / "config.json").is_file() and not (out / ".final-pending").exists()
    assert not D.install_final_model(out)  # nothing left to install
    new = GPT1ForSequenceClassification.from_pretrained(out).state_dict()
    assert not all(torch.equal(old[k], new[k]) for k in old)
    # a staged folder without its manifest (never renamed into place completely) is discarded
    (out / ".final-pending").mkdir()
    assert not D.install_final_model(out) and not (out / ".final-pending").exists()


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


# ----------------------------------------------------------------------------------------------------------------------
# The command line: run_glue_no_trainer's flags, --help, one run per folder, tracking
# ----------------------------------------------------------------------------------------------------------------------


def test_cli_accepts_run_glue_no_trainer_flags(tmp_path):
    """The flags of transformers' run_glue_no_trainer.py, read into FinetuneArguments; old names are refused."""
    args = parse_cli(FinetuneArguments, [
        "--task_name", "rte", "--model_name_or_path", "some/model", "--tokenizer_name", "some/tokenizer",
        "--max_length", "128", "--pad_to_max_length", "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "8", "--learning_rate", "2e-5", "--weight_decay", "0.0",
        "--num_train_epochs", "2", "--max_train_steps", "10", "--gradient_accumulation_steps", "2",
        "--lr_scheduler_type", "cosine", "--num_warmup_steps", "3", "--output_dir", str(tmp_path), "--seed", "7",
        "--checkpointing_steps", "epoch", "--resume_from_checkpoint", "latest", "--with_tracking",
        "--report_to", "tensorboard", "--push_to_hub", "--hub_model_id", "someone/gpt1-rte", "--hub_token", "hf_x",
        "--overwrite_output_dir"])
    r = args.resolved()
    assert (r.task_name, r.model_name_or_path, r.tokenizer_name, r.max_length, r.pad_to_max_length) == (
        "rte", "some/model", "some/tokenizer", 128, True)
    assert (r.per_device_train_batch_size, r.per_device_eval_batch_size, r.gradient_accumulation_steps) == (4, 8, 2)
    assert r.global_batch_size is None  # the layout given in full defines the batch (4 x 2), not the paper's 32
    assert (r.learning_rate, r.weight_decay, r.num_train_epochs, r.max_train_steps) == (2e-5, 0.0, 2, 10)
    assert (r.lr_scheduler_type, r.num_warmup_steps, r.output_dir, r.seed) == ("cosine", 3, str(tmp_path), 7)
    assert (r.checkpointing_steps, r.resume_from_checkpoint, r.with_tracking, r.report_to) == (
        "epoch", "latest", True, "tensorboard")
    assert (r.push_to_hub, r.hub_model_id, r.hub_token, r.overwrite_output_dir) == (
        True, "someone/gpt1-rte", "hf_x", True)
    assert "hub_token" not in r.to_dict()  # never written into results.json or a card
    from gpt1_hf.distributed import resolve_batch_config

    assert resolve_batch_config(r.per_device_train_batch_size, r.global_batch_size, 1,
                                r.gradient_accumulation_steps).global_batch_size == 8
    # unset: the paper's recipe; --checkpointing_steps N; a bool defaulting to True is switched off with --no_<name>
    args = parse_cli(FinetuneArguments, ["--task_name", "rte", "--model_name_or_path", "m",
                                         "--checkpointing_steps", "5", "--no_save_model", "--model_config",
                                         '{"n_layer": 4}']).resolved()
    assert (args.global_batch_size, args.learning_rate, args.checkpointing_steps) == (32, 6.25e-5, "5")
    assert args.save_model is False and args.model_config_overrides() == {"n_layer": 4}
    # a single .json argument is the arguments file (as in transformers' examples)
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"task_name": "cola", "max_train_steps": 3, "with_tracking": True}))
    args = parse_cli(FinetuneArguments, [str(path)])
    assert (args.task_name, args.max_train_steps, args.with_tracking) == ("cola", 3, True)
    # the old names are gone (0.x): refused (an ambiguous prefix by argparse, an unknown flag by HfArgumentParser)
    for old in (["--task", "rte"], ["--per_device_batch_size", "4"], ["--max_steps", "3"], ["--warmup_steps", "1"],
                ["--save_every_steps", "5"], ["--eval_every_steps", "5"], ["--no_progress_bar"],
                ["--max_train_examples", "4"], ["--tokenizer_name_or_path", "t"], ["--eval_batch_size", "4"]):
        with pytest.raises((SystemExit, ValueError)) as refused:
            parse_cli(FinetuneArguments, old)
        if refused.type is SystemExit:
            assert refused.value.code == 2, old
        else:
            assert old[0] in str(refused.value), old


def test_help_lists_every_option_with_its_help(capsys):
    assert_help_lists_every_field("finetune", FinetuneArguments, capsys)


def test_fresh_run_into_a_folder_holding_a_run_is_refused(pretrained_dir, tmp_path, capsys):
    """One run per output folder: a fresh run into a folder holding another run exits at once with one error line
    naming --overwrite_output_dir, and leaves that run untouched; with --overwrite_output_dir it replaces it."""
    from gpt1_hf.cli import run_main

    out = tmp_path / "out"
    run("sst2", out, model=str(pretrained_dir), max_train_steps=1, predict_splits=[])
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".run.lock"}
    assert (out / "checkpoints" / "step-00000001").is_dir()
    cli = load_script("finetune")
    argv = ["--task_name", "sst2", "--model_name_or_path", str(pretrained_dir), "--data_dir", str(FIXTURES / "sst2"),
            "--output_dir", str(out), "--max_length", "64", "--global_batch_size", "4", "--max_train_steps", "2",
            "--predict_splits", "none", "--disable_tqdm", "--seed", "1"]
    capsys.readouterr()
    assert run_main(lambda: cli.main(argv)) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"--output_dir {out} already holds a run" in errors[0], errors
    assert "--overwrite_output_dir" in errors[0] and "--resume_from_checkpoint" in errors[0]
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != ".run.lock"}
    assert after == before  # the earlier run is untouched
    with pytest.raises(FileExistsError, match="--overwrite_output_dir"):  # the same through the Python API
        run("sst2", out, model=str(pretrained_dir), max_train_steps=1, predict_splits=[])
    assert run_main(lambda: cli.main(argv + ["--overwrite_output_dir"])) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["seed"] == 1 and results["global_step"] == 2
    assert [p.name for p in sorted((out / "checkpoints").glob("step-*"))] == ["step-00000002"]  # no mix


def _tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files under ``folder``, read back with tensorboard's EventAccumulator."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    for run_dir in sorted({p.parent for p in folder.rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return scalars


def test_with_tracking_writes_tensorboard_scalars(pretrained_dir, tmp_path, capsys):
    """`--with_tracking --report_to tensorboard` (with run_glue_no_trainer's flags): L3, L1 and L2 separately, the
    learning rate, the gradient norm, tokens/s and every evaluation's metrics, under <output_dir>/runs, offline."""
    cli = load_script("finetune")
    out = tmp_path / "out"
    assert cli.main(["--task_name", "sst2", "--model_name_or_path", str(pretrained_dir),
                     "--data_dir", str(FIXTURES / "sst2"), "--output_dir", str(out), "--max_length", "64",
                     "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2",
                     "--per_device_eval_batch_size", "8", "--learning_rate", "1e-3", "--lr_scheduler_type", "linear",
                     "--num_warmup_steps", "2", "--max_train_steps", "4", "--checkpointing_steps", "2",
                     "--eval_steps", "2", "--logging_steps", "1", "--with_tracking", "--report_to", "tensorboard",
                     "--predict_splits", "none", "--disable_tqdm"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["batch"] == {"per_device": 2, "processes": 1, "gradient_accumulation_steps": 2, "global": 4}
    scalars = _tensorboard_scalars(out / "runs")
    expected = {"train/loss", "train/lm_loss", "train/clf_loss", "train/learning_rate", "train/grad_norm",
                "train/tokens_per_s", "eval/accuracy"}
    assert expected <= set(scalars), sorted(scalars)
    values = {tag: dict(points) for tag, points in scalars.items()}
    assert sorted(values["train/loss"]) == [1, 2, 3, 4] and sorted(values["eval/accuracy"]) == [2, 4]
    for step in range(1, 5):  # L3 = L2 + 0.5 L1 (the paper's aux weight), as logged
        l3, l2, l1 = (values[f"train/{k}"][step] for k in ("loss", "clf_loss", "lm_loss"))
        assert l3 == pytest.approx(l2 + 0.5 * l1, rel=1e-5) and l1 > 0 and l2 > 0
        assert values["train/grad_norm"][step] > 0 and values["train/tokens_per_s"][step] > 0
    # transformers' linear schedule: warmup from 0 over 2 updates, then linear decay to 0 at update 4
    lrs = [values["train/learning_rate"][step] for step in range(1, 5)]
    assert lrs == pytest.approx([0.0, 5e-4, 1e-3, 5e-4])
    # the same numbers as results.json
    logged = {e["step"]: e for e in results["log_history"]}
    assert all(values["train/loss"][s] == pytest.approx(logged[s]["loss"], rel=1e-6) for s in range(1, 5))
    history = {e["step"]: e["accuracy"] for e in results["eval_history"]}
    assert all(values["eval/accuracy"][s] == pytest.approx(history[s]) for s in (2, 4))
    # and on the console: one line per evaluation
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("eval step ")]
    assert [line.split()[2] for line in lines] == ["2", "4"] and all("accuracy=" in line for line in lines)


def test_flag_table_in_the_docs_is_current():
    """docs/finetuning.md's flag table is the one scripts/flag_table.py generates from FinetuneArguments."""
    table = load_script("flag_table").flag_table("finetune")
    assert table in (ROOT / "docs" / "finetuning.md").read_text(encoding="utf-8"), (
        "docs/finetuning.md's flag table is out of date: run python scripts/flag_table.py finetune --write_docs")
