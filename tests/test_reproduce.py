"""The results study (gpt1_hf.reproduce, scripts/reproduce.py): end to end on fixtures, resumability, the report."""

import json
import random
from pathlib import Path

import pytest
import torch

from gpt1_hf.reproduce import PAPER, StudyConfig, plan_runs, run_study, write_report

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tasks"
WORDS = ["Ada", "found", "a", "lamp", "near", "the", "lake", "Ben", "lost", "map", "in", "garden", "old", "clock"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    for i in range(3):
        text = "\n".join(" ".join(rng.choice(WORDS) for _ in range(12)) + "." for _ in range(60))
        (root / f"book{i}.txt").write_text(text)
    return root


def tiny(tmp_path, corpus, **kw):
    args = dict(data_dir=str(FIXTURES), corpus=[str(corpus)], output_dir=str(tmp_path / "study"), budget_minutes=0.05,
                n_layer=2, n_embd=32, n_head=4, n_ctx=48, vocab_size=150, pretrain_batch_size=8,
                tasks=["sst2", "rte", "stsb", "race"], ablation_tasks=["sst2", "stsb"], small_tasks=["stsb"], seeds=2,
                max_train_examples=24, max_eval_examples=24, mc_max_train_examples=8, mc_max_length=48,
                max_length=48, num_train_epochs=1, learning_rate=1e-3, zero_shot_tasks=["sst2", "race"],
                zero_shot_examples=12, zero_shot_points=2, layer_transfer_task="sst2", lora_task="sst2", jobs=1,
                progress_bar=False, docs_dir=str(tmp_path / "docs"), full_scale_estimate=False)
    args.update(kw)
    return StudyConfig(**args)


def test_study_end_to_end_and_resume(tmp_path, corpus):
    cfg = tiny(tmp_path, corpus)
    report = run_study(cfg, command="python scripts/reproduce.py (test)")
    out = Path(cfg.output_dir)
    text = report.read_text()
    for heading in ("Table 2", "Table 3", "Table 4", "Table 5", "Figure 2 (left)", "Figure 2 (right)", "LoRA"):
        assert heading in text
    assert "python scripts/reproduce.py (test)" in text  # the command that made the numbers
    plan = json.loads((out / "pretrain_plan.json").read_text())
    pre = json.loads((out / "pretrain" / "results.json").read_text())
    assert plan["max_steps"] >= 10 and pre["global_step"] <= plan["max_steps"]
    assert pre["final_heldout"]["loss"] < pre["initial_heldout"]["loss"]
    summary = json.loads((out / "report" / "summary.json").read_text())
    runs = summary["runs"]
    # every planned run finished: Tables 2-4 (stsb with 2 seeds), both ablations, layer transfer K=0,1, LoRA
    assert sorted(runs["full"]) == ["race", "rte", "sst2", "stsb"]
    assert len(runs["full"]["stsb"]) == 2 and len(runs["no_pretrain"]["stsb"]) == 2 and len(runs["no_aux"]["sst2"]) == 1
    assert "transfer0" in runs and "transfer1" in runs and "lora" in runs
    assert set(summary["table5_means"]["full"]) >= {"sst2", "stsb"}
    assert [p["layers"] for p in summary["layer_transfer"]] == [0, 1, 2]
    zs = json.loads((out / "zero_shot.json").read_text())["points"]
    assert "0" in zs and len(zs) >= 2 and set(zs["0"]) == {"sst2", "race"}
    # the no-pretraining ablation really starts from a random model, the others from the pretrained one
    r = json.loads((out / "runs" / "no_pretrain" / "sst2" / "seed0" / "results.json").read_text())
    assert r["model"]["init"] == "from_scratch" and r["config"]["aux_lm_weight"] == 0.5
    r = json.loads((out / "runs" / "no_aux" / "sst2" / "seed0" / "results.json").read_text())
    assert r["model"]["init"] == "pretrained" and r["config"]["aux_lm_weight"] == 0.0

    # resume: a second run redoes nothing; a run whose results are missing (killed) is redone, alone
    stamp = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/*/seed*/results.json")}
    victim = out / "runs" / "full" / "sst2" / "seed0" / "results.json"
    victim.unlink()
    run_study(cfg)
    after = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/*/seed*/results.json")}
    assert victim.is_file()
    assert {p for p in after if after[p] != stamp.get(p)} == {victim}

    # write_docs puts the report and its figures in the docs folder
    cfg.write_docs = True
    cfg.stages = ["report"]
    target = run_study(cfg)
    assert target == tmp_path / "docs" / "results.md"
    assert (tmp_path / "docs" / "img" / "results_layer_transfer.png").is_file()
    assert (tmp_path / "docs" / "img" / "results_zero_shot.png").is_file()


def _fake_run(out, variant, task, seed, metrics, mm=None, n_layer=4):
    d = out / "runs" / variant / task / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({
        "task": task, "seed": seed, "metrics": metrics, "primary_metric": "accuracy", "wall_time_s": 1.0,
        "train_time_s": 1.0, "config": {"learning_rate": 1e-3}, "model": {"config": {"n_layer": n_layer},
                                                                           "num_parameters": 10}}))
    if mm is not None:
        (d / "eval_mnli_mm.json").write_text(json.dumps({"metrics": {"accuracy": mm}}))


def test_report_tables_aggregate_seeds_and_derived_columns(tmp_path):
    out = tmp_path / "study"
    _fake_run(out, "full", "rte", 0, {"accuracy": 0.50})
    _fake_run(out, "full", "rte", 1, {"accuracy": 0.60})
    _fake_run(out, "full", "mnli", 0, {"accuracy": 0.40}, mm=0.30)
    _fake_run(out, "full", "race", 0, {"accuracy": 0.30, "accuracy_middle": 0.35, "accuracy_high": 0.28})
    _fake_run(out, "no_pretrain", "rte", 0, {"accuracy": 0.52})
    _fake_run(out, "no_pretrain", "mnli", 0, {"accuracy": 0.38}, mm=0.40)
    cfg = StudyConfig(data_dir=str(FIXTURES), output_dir=str(out), model_name_or_path="some/model",
                      layer_transfer_task=None, lora_task=None, full_scale_estimate=False)
    text = write_report(cfg, out).read_text()
    table2 = text.split("## Table 2")[1].split("##")[0]
    assert "| ours (this study) | – | 40.0 | 30.0 | – | – | 55.0 ± 7.1 |" in table2
    assert f"| paper (GPT-1, 117M) | {PAPER['table2']['snli']:.1f} |" in table2
    table3 = text.split("## Table 3")[1].split("##")[0]
    assert "| ours (this study) | – | 35.0 | 28.0 | 30.0 |" in table3
    table5 = text.split("## Table 5")[1].split("## Figure")[0]
    # MNLI in Table 5 = mean of matched and mismatched; a missing task leaves the average blank
    assert "| **ours: Transformer w/ aux LM (full)** | – | – | – | – | – | – | 35.0 | – | 55.0 ± 7.1 |" in table5
    assert "beats the no-pretraining ablation on **1 of 2** tasks (RTE); not on MNLI." in table5


def test_bad_configurations_are_refused_early(tmp_path):
    with pytest.raises(ValueError, match="--model_name_or_path"):
        StudyConfig(data_dir="x", preset="full").resolved()
    with pytest.raises(ValueError, match="unknown stages"):
        StudyConfig(data_dir="x", stages=["pretrain", "finetuning"]).resolved()
    with pytest.raises(ValueError, match="preset"):
        StudyConfig(data_dir="x", preset="gpu").resolved()
    with pytest.raises(ValueError, match="nosuchtask"):
        StudyConfig(data_dir="x", tasks=["nosuchtask"]).resolved()


def test_plan_counts_seeds_and_ablations(tmp_path):
    cfg = StudyConfig(data_dir=str(FIXTURES), output_dir=str(tmp_path), budget_minutes=1).resolved()
    runs = plan_runs(cfg, tmp_path, "finetune")
    names = {r["name"] for r in runs}
    # 12 tasks, 4 small ones with 3 seeds: 8 + 12 = 20 "full" runs; ablations on the 8 GLUE tasks: 2 x (4 + 12)
    assert sum(r["variant"] == "full" for r in runs) == 20
    assert sum(r["variant"] == "no_pretrain" for r in runs) == 16
    assert sum(r["variant"] == "no_aux" for r in runs) == 16
    assert "no_pretrain/cola/seed2" in names and "no_aux/snli/seed0" not in names
    race = next(r for r in runs if r["task"] == "race")
    assert race["args"]["max_length"] == cfg.mc_max_length and race["args"]["max_train_examples"] == 400
    assert all(r["args"]["from_scratch"] for r in runs if r["variant"] == "no_pretrain")


def test_full_scale_estimate_counts_every_sequence(tmp_path):
    from gpt1_hf.reproduce import FULL_TRAIN_SIZES, full_scale_estimate

    est = full_scale_estimate(str(FIXTURES), sample=4, tokens_per_s={"x": 1000.0})
    rows = {r["task"]: r for r in est["rows"]}
    assert set(rows) == set(FULL_TRAIN_SIZES)
    # similarity pairs are read in both orderings, multiple choice once per choice: more tokens than a single text
    assert rows["stsb"]["mean_tokens"] > rows["sst2"]["mean_tokens"]
    assert rows["race"]["mean_tokens"] > 4 * 10
    assert rows["cola"]["runs"] == 9 and rows["snli"]["runs"] == 1 and rows["sst2"]["runs"] == 3
    total = sum(r["train_examples"] * r["mean_tokens"] * 3 * r["runs"] for r in est["rows"])
    assert abs(est["total_tokens"] - total) < 1e-6 * total
    assert abs(est["hours"]["x"] - total / 1000 / 3600) < 1e-9 * total


def test_report_keeps_hand_written_discussion(tmp_path):
    out = tmp_path / "study"
    _fake_run(out, "full", "rte", 0, {"accuracy": 0.5})
    cfg = StudyConfig(data_dir=str(FIXTURES), output_dir=str(out), model_name_or_path="some/model",
                      layer_transfer_task=None, lora_task=None, full_scale_estimate=False)
    target = write_report(cfg, out)
    text = target.read_text().replace("<!-- DISCUSSION -->", "<!-- DISCUSSION -->\nWhy RTE is hard.\n<!-- /DISCUSSION -->")
    target.write_text(text)
    _fake_run(out, "full", "rte", 1, {"accuracy": 0.7})
    again = write_report(cfg, out).read_text()
    assert again.count("Why RTE is hard.") == 1 and "60.0 ± 14.1" in again
