"""The results study (gpt1_hf.reproduce, scripts/reproduce.py): end to end on fixtures, resumability, the report."""

import json
import os
import random
from dataclasses import replace
from pathlib import Path

import pytest

from gpt1_hf.reproduce import PAPER, StudyConfig, plan_runs, run_study, write_report

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tasks"
WORDS = ["Ada", "found", "a", "lamp", "near", "the", "lake", "Ben", "lost", "map", "in", "garden", "old", "clock"]


pytestmark = pytest.mark.usefixtures("one_thread")


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
    assert plan["max_steps"] % cfg.zero_shot_points == 0  # the last zero-shot point is the final model
    zero_shot = json.loads((out / "zero_shot.json").read_text())
    steps = sorted(int(s) for s in zero_shot["points"])
    grid = [plan["save_every_steps"] * i for i in range(cfg.zero_shot_points + 1)]
    if pre["global_step"] == plan["max_steps"]:  # not cut short by the time budget on a slow machine
        assert steps == grid, steps
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
    # the paper's column order: MNLI-m, MNLI-mm, SNLI, SciTail, QNLI, RTE
    assert "| | MNLI-m | MNLI-mm | SNLI | SciTail | QNLI | RTE |" in table2
    assert "| ours (this study) | 40.0 | 30.0 | – | – | – | 55.0 ± 7.1 |" in table2
    assert f"| paper (GPT-1, 117M) | {PAPER['table2']['mnli']:.1f} | {PAPER['table2']['mnli_mm']:.1f} | " \
           f"{PAPER['table2']['snli']:.1f} |" in table2
    table3 = text.split("## Table 3")[1].split("##")[0]
    assert "| ours (this study) | – | 35.0 | 28.0 | 30.0 |" in table3
    table4 = text.split("## Table 4")[1].split("##")[0]
    # a GLUE column: the paper's score, none of ours (it needs the GLUE test server); the note stays
    assert "| | CoLA (mc) | SST2 (acc) | MRPC (F1) | STSB (pc) | QQP (F1) | GLUE |" in table4
    assert "| paper (GPT-1, 117M) | 45.4 | 91.3 | 82.3 | 82.0 | 70.3 | 72.8 |" in table4
    assert "| ours (this study) | – | – | – | – | – | – |" in table4
    assert "72.8, needs the GLUE test server" in table4
    # the seeds sentence names the tasks that did run several seeds (RTE here), not a fixed list
    assert "RTE: mean ± std over 2 seeds; the other tasks: one seed." in text
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
    # 12 tasks, 5 small ones (Story Cloze too) with 3 seeds: 7 + 15 = 22 "full" runs; ablations on the 8 GLUE
    # tasks (4 of them small): 2 x (4 + 12)
    assert sum(r["variant"] == "full" for r in runs) == 22
    assert {"full/story_cloze/seed0", "full/story_cloze/seed1", "full/story_cloze/seed2"} <= names
    assert sum(r["variant"] == "no_pretrain" for r in runs) == 16
    assert sum(r["variant"] == "no_aux" for r in runs) == 16
    assert "no_pretrain/cola/seed2" in names and "no_aux/snli/seed0" not in names
    race = next(r for r in runs if r["task"] == "race")
    assert race["args"]["max_length"] == cfg.mc_max_length and race["args"]["max_train_samples"] == 1000
    assert all(r["args"]["from_scratch"] for r in runs if r["variant"] == "no_pretrain")


def test_full_scale_estimate_counts_every_sequence(tmp_path):
    from gpt1_hf.reproduce import FULL_TRAIN_SIZES, full_scale_estimate

    est = full_scale_estimate(str(FIXTURES), sample=4, tokens_per_s={"x": 1000.0})
    rows = {r["task"]: r for r in est["rows"]}
    assert set(rows) == set(FULL_TRAIN_SIZES)
    # similarity pairs are read in both orderings, multiple choice once per choice: more tokens than a single text
    assert rows["stsb"]["mean_tokens"] > rows["sst2"]["mean_tokens"]
    assert rows["race"]["mean_tokens"] > 4 * 10
    # every stage's runs: SST-2 = 3 (full + 2 ablations) + 1 LoRA; MNLI = 3 + 12 layer-transfer runs (K = 0..11)
    assert rows["cola"]["runs"] == 9 and rows["snli"]["runs"] == 1 and rows["sst2"]["runs"] == 4
    assert rows["mnli"]["runs"] == 15 and rows["story_cloze"]["runs"] == 3
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


# ---------------------------------------------------------------------------------------------------------------------
# full-scale estimate: every run of every stage
# ---------------------------------------------------------------------------------------------------------------------


def test_full_scale_estimate_counts_every_planned_run(tmp_path):
    from gpt1_hf.reproduce import RUN_STAGES, _full_scale, full_scale_config, full_scale_estimate

    cfg = full_scale_config(str(FIXTURES))
    assert cfg.preset == "full" and cfg.max_length == 512 and cfg.max_train_examples is None
    planned = [r for stage in RUN_STAGES for r in plan_runs(cfg, tmp_path, stage, n_layer=12)]
    est = full_scale_estimate(str(FIXTURES), sample=4)
    # 54 fine-tuning runs (22 full + 2 x 16 ablations), 12 layer-transfer runs, 1 LoRA run
    assert est["runs"] == {"finetune": 54, "layer_transfer": 12, "lora": 1}
    assert sum(r["runs"] for r in est["rows"]) == len(planned) == 67
    rows = {r["task"]: r for r in est["rows"]}
    assert rows["mnli"]["runs_by_stage"] == {"finetune": 3, "layer_transfer": 12}
    assert rows["sst2"]["runs_by_stage"] == {"finetune": 3, "lora": 1}
    # without the layer-transfer and LoRA stages, only the fine-tuning runs are left
    small = full_scale_estimate(str(FIXTURES), sample=4, cfg=StudyConfig(
        data_dir=str(FIXTURES), model_name_or_path="m", layer_transfer_task=None, lora_task=None))
    assert small["runs"] == {"finetune": 54, "layer_transfer": 0, "lora": 0}
    assert {r["task"]: r["runs"] for r in small["rows"]}["mnli"] == 3
    assert abs(rows["mnli"]["tokens"] - 5 * {r["task"]: r for r in small["rows"]}["mnli"]["tokens"]) < 1e-3

    # the report says what was counted; an estimate cached before every stage was counted is recounted (its
    # measured throughput kept)
    out = tmp_path / "study"
    _fake_run(out, "full", "rte", 0, {"accuracy": 0.5})
    old = {k: v for k, v in est.items() if k != "runs"}
    old["measured"] = {"tokens_per_s": 1000.0, "batch": 8, "n_ctx": 128, "config": "12x768"}
    (out / "full_scale_estimate.json").write_text(json.dumps(old))
    rcfg = StudyConfig(data_dir=str(FIXTURES), output_dir=str(out), model_name_or_path="some/model",
                       layer_transfer_task=None, lora_task=None)
    again = _full_scale(rcfg.resolved(), out)
    assert again["runs"] == est["runs"] and again["measured"]["tokens_per_s"] == 1000.0
    text = write_report(rcfg, out).read_text().split("## The full-scale study")[1]
    assert "every run the command plans, 67 in all: 54 fine-tuning runs" in text
    assert "12 layer-transfer runs of MNLI (K = 0–11 pretrained blocks" in text
    assert "1 LoRA run of SST-2" in text
    assert "3 seeds for CoLA, MRPC, STS-B, RTE and Story Cloze" in text
    assert "**1,000 tokens/s on this machine**" in text


# ---------------------------------------------------------------------------------------------------------------------
# a given model in the zero-shot stage and its report
# ---------------------------------------------------------------------------------------------------------------------


def _zs_row(acc):
    return {"sst2": {"metrics": {"accuracy": acc}, "num_examples": 10, "heuristic": "h", "time_s": 0.1}}


def test_zero_shot_of_a_given_model_is_labelled_and_last(tmp_path, monkeypatch):
    import gpt1_hf.convert
    import gpt1_hf.task_models
    import gpt1_hf.zero_shot
    from gpt1_hf.configuration_gpt1 import GPT1Config
    from gpt1_hf.reproduce import GIVEN, _plot_zero_shot, stage_zero_shot

    model_dir = tmp_path / "model"
    GPT1Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2).save_pretrained(model_dir)
    monkeypatch.setattr(gpt1_hf.task_models, "load_tokenizer", lambda *a, **k: None)
    given = object()  # stands for the loaded given model
    monkeypatch.setattr(gpt1_hf.convert, "load_as_gpt1", lambda *a, **k: given)
    monkeypatch.setattr(gpt1_hf.zero_shot, "evaluate_zero_shot",
                        lambda task, model, *a, **k: {"metrics": {"accuracy": 0.6 if model is given else 0.5},
                                                      "num_examples": 10, "heuristic": "h"})
    out = tmp_path / "study"
    cfg = StudyConfig(data_dir=str(FIXTURES), output_dir=str(out), model_name_or_path=str(model_dir),
                      zero_shot_tasks=["sst2"], layer_transfer_task=None, lora_task=None,
                      full_scale_estimate=False).resolved()
    zs = stage_zero_shot(cfg, out)
    assert set(zs["points"]) == {"0", GIVEN} and zs["given_model"] == str(model_dir)
    assert zs["points"][GIVEN]["sst2"]["metrics"]["accuracy"] == 0.6

    # no pretraining checkpoints: no curve; the table's given-model row is labelled and after the random init
    rows, plotted = _plot_zero_shot(zs, tmp_path / "zs.png")
    assert [r["step"] for r in rows] == [0, GIVEN] and not plotted and not (tmp_path / "zs.png").exists()
    _fake_run(out, "full", "rte", 0, {"accuracy": 0.5})
    text = write_report(cfg, out).read_text()
    fig = text.split("## Figure 2 (right)")[1].split("## ")[0]
    assert "![zero-shot]" not in fig and "| -1 |" not in fig
    assert fig.index("| 0 | 50.0 |") < fig.index(f"| given model (`{model_dir}`) | 60.0 |")
    assert "so there is no curve over pretraining" in fig

    # an older folder's step -1 is the given model too; with pretraining checkpoints it still comes last
    old = {"points": {"-1": _zs_row(0.6), "0": _zs_row(0.5), "300": _zs_row(0.55), "100": _zs_row(0.52)}}
    rows, plotted = _plot_zero_shot(old, tmp_path / "zs.png")
    assert [r["step"] for r in rows] == [0, 100, 300, GIVEN] and plotted
    (out / "zero_shot.json").write_text(json.dumps(old))
    zs = stage_zero_shot(cfg, out)  # nothing to redo: the old key is renamed
    assert set(zs["points"]) == {"0", "100", "300", GIVEN}


# ---------------------------------------------------------------------------------------------------------------------
# wall times recorded while a stage runs; the pretraining budget is a total over sittings
# ---------------------------------------------------------------------------------------------------------------------


def _stage_times(out):
    return json.loads((out / "study_log.json").read_text())["sessions"][-1]["stages"]


def test_killed_stage_keeps_its_wall_time(tmp_path, monkeypatch):
    import time

    import gpt1_hf.reproduce as rp

    out = tmp_path / "study"
    monkeypatch.setattr(rp, "HEARTBEAT_S", 0.05)
    seen = {}

    def killed(cfg, out_, on_progress=None):
        time.sleep(0.4)
        seen["mid_stage"] = _stage_times(out_)["zero_shot"]  # written by the heartbeat while the stage runs
        raise KeyboardInterrupt

    monkeypatch.setattr(rp, "stage_zero_shot", killed)
    cfg = StudyConfig(data_dir=str(FIXTURES), output_dir=str(out), model_name_or_path="some/model",
                      stages=["zero_shot", "report"], progress_bar=False)
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg)
    assert seen["mid_stage"] >= 0.2
    assert _stage_times(out)["zero_shot"] >= 0.4 and "report" not in _stage_times(out)


def test_stage_time_is_written_after_each_run(tmp_path, monkeypatch):
    import time

    import gpt1_hf.reproduce as rp

    out = tmp_path / "study"
    monkeypatch.setattr(rp, "HEARTBEAT_S", 1000.0)  # only the per-run updates
    during = []

    def fake_run(run, num_threads):
        during.append(_stage_times(out).get("finetune"))
        time.sleep(0.2)
        return {"name": run["name"], "ok": True, "metrics": {}, "time_s": 0.2}

    monkeypatch.setattr(rp, "_run_one", fake_run)
    cfg = StudyConfig(data_dir=str(FIXTURES), output_dir=str(out), model_name_or_path="some/model",
                      stages=["finetune"], tasks=["rte", "sst2", "cola"], ablations=False, small_tasks=[], jobs=1,
                      progress_bar=False)
    run_study(cfg)
    assert len(during) == 3 and during[0] < 0.1 and 0.2 <= during[1] < during[2]
    assert _stage_times(out)["finetune"] >= 0.6


def test_pretraining_budget_is_a_total_over_sittings(tmp_path, monkeypatch, corpus):
    import gpt1_hf.pretraining
    from gpt1_hf.reproduce import pretrain_time_left

    cfg = tiny(tmp_path, corpus, budget_minutes=30.0, stages=["pretrain"])
    out = Path(cfg.output_dir)
    out.mkdir(parents=True)
    (out / "pretrain_plan.json").write_text(json.dumps({"max_steps": 100, "save_every_steps": 50}))
    # an earlier sitting that was killed after 10 minutes of pretraining
    (out / "study_log.json").write_text(json.dumps({"sessions": [{"command": "x", "stages": {"pretrain": 600.0}}]}))
    got = []
    monkeypatch.setattr(gpt1_hf.pretraining, "pretrain", lambda args: got.append(args.max_time) or {})
    run_study(cfg)
    assert got == [pytest.approx(30 * 60 * 1.15 - 600)]
    assert pretrain_time_left(cfg.resolved(), 0.0) == pytest.approx(30 * 60 * 1.15)
    assert pretrain_time_left(cfg.resolved(), 10 * 3600) == 1.0  # spent: one last update, then the final weights


# ---------------------------------------------------------------------------------------------------------------------
# --model_name_or_path selects the full preset
# ---------------------------------------------------------------------------------------------------------------------


def _script():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / "reproduce.py"
    spec = importlib.util.spec_from_file_location("reproduce_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_given_model_selects_the_full_preset():
    assert StudyConfig(data_dir="x", model_name_or_path="m").resolved().preset == "full"
    assert StudyConfig(data_dir="x", model_name_or_path="m", preset="cpu").resolved().preset == "cpu"
    assert StudyConfig(data_dir="x", budget_minutes=1).resolved().preset == "cpu"
    script = _script()
    parser = script.build_parser()
    full = script.config_from_args(parser.parse_args(["--data_dir", "d", "--model_name_or_path", "m"])).resolved()
    assert (full.preset, full.max_length, full.max_train_examples, full.learning_rate) == ("full", 512, None, 6.25e-5)
    cpu = script.config_from_args(parser.parse_args(["--data_dir", "d", "--model_name_or_path", "m",
                                                     "--preset", "cpu"])).resolved()
    assert (cpu.preset, cpu.max_length) == ("cpu", 96)
    mini = script.config_from_args(parser.parse_args(["--data_dir", "d", "--budget_minutes", "30"])).resolved()
    assert mini.preset == "cpu"
    assert "selects --preset full unless --preset is given" in " ".join(parser.format_help().split())


def test_committed_results_use_the_generators_table_layout(tmp_path):
    """docs/results.md (generated, edited by hand only to follow a layout change) has the generator's headers."""
    out = tmp_path / "study"
    _fake_run(out, "full", "rte", 0, {"accuracy": 0.5})
    cfg = StudyConfig(data_dir=str(FIXTURES), output_dir=str(out), model_name_or_path="some/model",
                      layer_transfer_task=None, lora_task=None, full_scale_estimate=False)
    text = write_report(cfg, out).read_text()
    committed = (Path(__file__).resolve().parent.parent / "docs" / "results.md").read_text()
    for table in ("## Table 2", "## Table 3", "## Table 4"):
        head = text.split(table)[1].split("\n\n")[1].splitlines()[:3]  # header, rule, paper row
        assert "\n".join(head) in committed, table


# ---------------------------------------------------------------------------------------------------------------------
# the report: a template (gpt1_hf/templates/results.md) filled with the data of a study folder
# ---------------------------------------------------------------------------------------------------------------------


def _fake_study(out, pretrained=True, estimate=True):
    """A study folder with every stage's output (no training): pretraining, zero-shot, every variant's runs, layer
    transfer, LoRA, the study log and a cached full-scale estimate."""
    for seed, acc in ((0, 0.50), (1, 0.56), (2, 0.53)):
        _fake_run(out, "full", "rte", seed, {"accuracy": acc})
        _fake_run(out, "no_pretrain", "rte", seed, {"accuracy": acc - 0.02})
        _fake_run(out, "no_aux", "rte", seed, {"accuracy": acc + 0.01})
    _fake_run(out, "full", "mnli", 0, {"accuracy": 0.428}, mm=0.432)
    _fake_run(out, "no_pretrain", "mnli", 0, {"accuracy": 0.36}, mm=0.35)
    _fake_run(out, "no_aux", "mnli", 0, {"accuracy": 0.42}, mm=0.43)
    _fake_run(out, "full", "sst2", 0, {"accuracy": 0.627})
    _fake_run(out, "no_pretrain", "sst2", 0, {"accuracy": 0.508})
    _fake_run(out, "no_aux", "sst2", 0, {"accuracy": 0.662})
    _fake_run(out, "full", "race", 0, {"accuracy": 0.272, "accuracy_middle": 0.271, "accuracy_high": 0.272})
    for k, acc in enumerate((0.344, 0.347, 0.411, 0.425)):
        _fake_run(out, f"transfer{k}", "mnli", 0, {"accuracy": acc}, mm=acc - 0.01)
    lora = out / "runs" / "lora" / "sst2" / "seed0"
    lora.mkdir(parents=True)
    (lora / "results.json").write_text(json.dumps({
        "task": "sst2", "seed": 0, "metrics": {"accuracy": 0.55}, "primary_metric": "accuracy", "wall_time_s": 33.0,
        "train_time_s": 24.0, "config": {"learning_rate": 1e-3},
        "model": {"config": {"n_layer": 4}, "num_parameters": 7_289_346,
                  "lora": {"r": 8, "alpha": 16, "trainable_parameters": 132_354, "total_parameters": 7_289_346}}}))
    machine = {"cpu": "AMD EPYC", "cores": 2, "torch": "2.13.0+cpu", "transformers": "5.24.0", "python": "3.11.7",
               "gpu": None}
    sessions = [{"command": "python scripts/reproduce.py --data_dir d --budget_minutes 30", "machine": machine,
                 "stages": {"pretrain": 2166.0, "zero_shot": 90.0, "finetune": 3228.0}},
                {"command": "python scripts/reproduce.py --data_dir d --budget_minutes 30 --stages report",
                 "machine": machine, "stages": {"report": 24.0}}]
    (out / "study_log.json").write_text(json.dumps({"sessions": sessions}))
    if pretrained:
        (out / "pretrain").mkdir(parents=True)
        (out / "pretrain" / "results.json").write_text(json.dumps({
            "corpus": {"documents": 71, "tokens": 11_400_000, "heldout_tokens": 113_920},
            "tokenizer": {"vocab_size": 16_004},
            "model": {"vocab_size": 16_004, "n_positions": 128, "n_embd": 256, "n_layer": 4, "n_head": 4},
            "num_parameters": 7_289_346, "initial_heldout": {"loss": 9.7, "perplexity": 16_794.2},
            "final_heldout": {"loss": 4.9, "perplexity": 133.94}, "global_step": 1_079,
            "tokens_seen": 1_079 * 4_096, "train_time_s": 2_016.0, "train_tokens_per_s": 1_079 * 4_096 / 2_016.0,
            "batch": {"tokens_per_update": 4_096}}))
        (out / "pretrain_plan.json").write_text(json.dumps({"measured_tokens_per_s": 4_701.3, "max_steps": 1_817}))
        row = {"sst2": {"metrics": {"accuracy": 0.484}}, "race": {"metrics": {"accuracy": 0.25}}}
        later = {"sst2": {"metrics": {"accuracy": 0.514}}, "race": {"metrics": {"accuracy": 0.238}}}
        (out / "zero_shot.json").write_text(json.dumps({"points": {"0": row, "1079": later, "302": row}}))
    if estimate:
        rows = [{"task": "mnli", "train_examples": 392_702, "mean_tokens": 39.2, "runs": 15, "tokens": 688e6,
                 "runs_by_stage": {"finetune": 3, "layer_transfer": 12}},
                {"task": "race", "train_examples": 87_866, "mean_tokens": 1419.4, "runs": 1, "tokens": 374e6,
                 "runs_by_stage": {"finetune": 1}}]
        (out / "full_scale_estimate.json").write_text(json.dumps({
            "rows": rows, "total_tokens": 1062e6, "sample": 300, "epochs": 3,
            "runs": {"finetune": 54, "layer_transfer": 12, "lora": 1},
            "multi_seed": {"cola": 3, "rte": 3}, "ablations": True, "layer_transfer_task": "mnli", "n_layer": 12,
            "lora_task": "sst2", "hours": {},
            "measured": {"tokens_per_s": 390.2, "batch": 8, "n_ctx": 128, "config": "12x768",
                         "mixed_precision": "bf16"}}))


def _report_cfg(out, docs, **kw):
    args = dict(data_dir=str(FIXTURES), output_dir=str(out), budget_minutes=30.0, n_layer=4, n_embd=256, n_head=4,
                n_ctx=128, vocab_size=16000, tasks=["mnli", "rte", "race", "sst2"], zero_shot_tasks=["sst2", "race"],
                zero_shot_examples=500, layer_transfer_task="mnli", lora_task="sst2", mixed_precision="bf16",
                jobs=2, write_docs=True, docs_dir=str(docs))
    args.update(kw)
    return StudyConfig(**args)


def test_report_is_the_template_filled_with_the_study_data(tmp_path):
    """Every section of the report from a study folder with every stage's output (no training): the text the report
    had before it became a template (gpt1_hf/templates/results.md) plus data (`report_data`)."""
    from gpt1_hf.reproduce import render_report, report_data, report_template

    out = tmp_path / "study"
    _fake_study(out)
    cfg = _report_cfg(out, tmp_path / "docs")
    target = write_report(cfg, out)
    text = target.read_text()
    assert target == tmp_path / "docs" / "results.md"
    expected = [
        "**What was run.** A 7.3M-parameter GPT-1 (4 layers, 256 wide, 4 heads, context 128, a 16,004-entry BPE "
        "vocabulary trained on the corpus with GPT-1's tokenizer pipeline) pretrained from scratch on 71 public-domain "
        "novels (11.4M tokens) for 1,079 updates of 4,096 tokens (**4.4M tokens seen**, 33.6 min, 2,192 tokens/s), "
        "then fine-tuned on every task of the paper with its recipe. GPT-1 itself has 117M parameters and saw about "
        "25B tokens (BooksCorpus, 100 epochs of 64 × 512): this study's model is 16× smaller and saw 5,657× fewer "
        "tokens, so the absolute numbers are far below the paper's; what it reproduces is the *study*: the same "
        "tables, ablations and analyses, computed end to end.",
        "Fine-tuning: 3 epochs, batch 32, lr 0.00025 with linear decay (warmup 0.2%), L3 = L2 + 0.5·L1, classifier "
        "dropout 0.1, weight decay 0.01, bf16 autocast; training sets subsampled to 5,000 examples (RACE: "
        "1,000), except RTE: their whole training sets; inputs cut to 96 tokens (160 for multiple choice; the long side is cut, never the extract token or an "
        "answer), evaluation on at most 2,000 dev examples (a fixed random subset, seed 0). RTE: mean ± std over 3 "
        "seeds; the other tasks: one seed. Dev-set numbers (the paper reports test numbers for most tasks).",
        "| ours (this study) | 42.8 | 43.2 | – | – | – | 53.0 ± 3.0 |",
        "| ours (this study) | – | 27.1 | 27.2 | 27.2 |",
        "(The paper's GLUE score, 72.8, needs the GLUE test server; it is not computed here.)",
        "| **ours: Transformer w/o pre-training** | – | – | 50.8 | – | – | – | 35.5 | – | 51.0 ± 3.0 |",
        "| paper: LSTM w/ aux LM | 69.1 | 30.3 | 90.5 | 83.2 | 71.8 | 68.1 | 73.7 | 81.1 | 54.6 |",
        "**Does pretraining help?** The pretrained model beats the no-pretraining ablation on **3 of 3** tasks "
        "(SST2, MNLI, RTE), i.e. on every task.",
        "**Does the auxiliary LM loss help?** With it, 1 of 3 tasks score higher (MNLI).",
        "![layer transfer](img/results_layer_transfer.png)\n\n| layers transferred | 0 | 1 | 2 | 3 | 4 |\n"
        "|---|---:|---:|---:|---:|---:|\n| mnli dev | 34.4 | 34.7 | 41.1 | 42.5 | 42.8 |\n"
        "| mnli mismatched | 33.4 | 33.7 | 40.1 | 41.5 | 43.2 |",
        "![zero-shot](img/results_zero_shot.png)\n\n| pretraining updates | race | sst2 |\n|---:|---:|---:|\n"
        "| 0 | 25.0 | 48.4 |\n| 302 | 25.0 | 48.4 |\n| 1,079 | 23.8 | 51.4 |",
        "Step 0 is the random initialisation. Chance: SST-2 50",
        "| LoRA r=8, α=16 (c_attn, c_proj, c_fc; `score` + special-token rows trained in full) | 132,354 (1.8%) | "
        "0.001 | 55.0 | 24 s | 33 s |",
        "* Fine-tuning: 21 runs, 1 min of run time in all (2 at a time).\n* Wall time per stage (summed over "
        "sittings): pretrain 36.1 min, zero_shot 1.5 min, finetune 53.8 min, report 0.4 min; total **92 min**.\n"
        "* Machine: AMD EPYC, 2 cores, no GPU; torch 2.13.0+cpu, transformers 5.24.0, python 3.11.7.",
        "every run the command plans, 67 in all: 54 fine-tuning runs (3 seeds for CoLA and RTE; the two Table 5 "
        "ablations on the GLUE tasks), 12 layer-transfer runs of MNLI (K = 0–11 pretrained blocks; K = 12 is its "
        "fine-tuning run) and 1 LoRA run of SST-2, counted at the cost of full fine-tuning):",
        "| race | 87,866 | 1419 | 1 | 374.0M |\n| **total** | | | | **1,062M** |",
        "runs at **390 tokens/s on this machine** (measured by the report stage), so the full-scale fine-tuning study "
        "needs about **756 hours (31.5 days) of this 2-core CPU** — not a CPU job. On a GPU the time is tokens × 6 × "
        "117M FLOPs / (MFU × peak): 0.5 hours on one H100 (989 dense bf16 TFLOP/s) at an assumed 40% MFU",
        "RACE (4 choices × up to 512 tokens) is 35% of it.\n\n<!-- FULLSCALE -->\n\n## How this was made",
        "```bash\npython scripts/reproduce.py --data_dir d --budget_minutes 30\n"
        "python scripts/reproduce.py --data_dir d --budget_minutes 30 --stages report\n```",
        f"Study folder: `{out}` (per-run `results.json`",
    ]
    for piece in expected:
        assert piece in text, piece
    assert "{" not in text.replace("{ours}", "") and "\n\n\n" not in text and " \n" not in text
    # the data is plain (it goes to JSON as it is), and the same data renders the same text
    data = report_data(cfg, out, target)
    assert json.loads(json.dumps(data)) == data
    assert render_report(data) == text
    assert data["estimate"]["cpu_hours"] == pytest.approx(1062e6 / 390.2 / 3600)
    # the template is package data, in blocks; another template renders the same data differently
    blocks = report_template()
    assert {"report", "what_pretrained", "budget_pretrain", "full_scale"} <= set(blocks)
    mine = {**blocks, "report": "{table2}\n\nseen: {budget_pretrain}"}
    assert render_report(data, mine).startswith("| | MNLI-m | MNLI-mm |")


def test_report_without_optional_data_says_not_run(tmp_path):
    """A study with only fine-tuning runs of a given model: no pretraining, zero-shot, estimate; LoRA/transfer off."""
    out = tmp_path / "study"
    _fake_study(out, pretrained=False, estimate=False)
    cfg = _report_cfg(out, tmp_path / "docs", model_name_or_path="some/model", full_scale_estimate=False,
                      lora_task=None, layer_transfer_task=None)
    text = write_report(cfg, out).read_text()
    assert "**What was run.** Fine-tuning of `some/model` on every task of the paper with its recipe.\n\n" \
           "Fine-tuning: 3 epochs" in text
    for section in ("Figure 2 (left)", "Figure 2 (right)", "LoRA vs full fine-tuning"):
        assert text.split(f"## {section}")[1].split("\n\n", 1)[1].split("##")[0].strip() == "Not run.", section
    assert "## Budget\n\n* Fine-tuning: 21 runs" in text  # no pretraining line
    assert "--write_docs\n```\n\n<!-- FULLSCALE -->" in text  # no estimate
    assert "\n\n\n" not in text


def test_report_keeps_both_hand_written_sections(tmp_path):
    out = tmp_path / "study"
    _fake_study(out)
    cfg = _report_cfg(out, tmp_path / "docs")
    target = write_report(cfg, out)
    text = target.read_text()
    for marker, words in (("DISCUSSION", "Why RTE is hard.\n\nSecond paragraph."), ("FULLSCALE", "A correction.")):
        text = text.replace(f"<!-- {marker} -->", f"<!-- {marker} -->\n{words}\n<!-- /{marker} -->")
    target.write_text(text)
    again = write_report(cfg, out).read_text()
    assert again == text
    assert again.count("Why RTE is hard.\n\nSecond paragraph.") == 1 and again.count("A correction.") == 1


def test_report_gives_pretraining_tokens_per_minute(tmp_path):
    """#16: the pretraining stage's tokens per minute (tokens seen / training minutes from pretrain/results.json)."""
    from gpt1_hf.reproduce import report_data

    out = tmp_path / "study"
    _fake_study(out)
    pre = json.loads((out / "pretrain" / "results.json").read_text())
    pre.update(tokens_seen=3_000_000, train_time_s=1_200.0)  # 20 minutes
    (out / "pretrain" / "results.json").write_text(json.dumps(pre))
    cfg = _report_cfg(out, tmp_path / "docs")
    target = write_report(cfg, out)
    assert report_data(cfg, out, target)["pretrain"]["tokens_per_minute"] == pytest.approx(150_000.0)
    budget = target.read_text().split("## Budget")[1].split("##")[0]
    assert "* Pretraining: 1,079 updates × 4,096 tokens = 3.0M tokens in 20.0 min, **150,000 tokens per minute** " \
           "(budget 30 min; the schedule was sized from 4,701 tokens/s measured before the run)." in budget
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["pretrain"] == {"tokens_seen": 3_000_000, "train_minutes": 20.0, "tokens_per_minute": 150_000.0}


def test_cpu_preset_trains_the_small_tasks_on_their_whole_sets(tmp_path):
    cfg = StudyConfig(data_dir=str(FIXTURES), output_dir=str(tmp_path)).resolved()
    runs = {(r["variant"], r["task"], r["seed"]): r["args"] for r in plan_runs(cfg, tmp_path, "finetune")}
    for task in ("cola", "mrpc", "stsb", "rte", "story_cloze"):
        assert runs[("full", task, 0)]["max_train_samples"] is None
    assert runs[("full", "sst2", 0)]["max_train_samples"] == 5000
    assert runs[("full", "race", 0)]["max_train_samples"] == 1000
    cut = replace(cfg, small_tasks_whole=False)
    cut_runs = {(r["variant"], r["task"], r["seed"]): r["args"] for r in plan_runs(cut, tmp_path, "finetune")}
    assert cut_runs[("full", "cola", 0)]["max_train_samples"] == 5000
    assert cut_runs[("full", "story_cloze", 0)]["max_train_samples"] == 1000


def test_finished_work_made_with_other_settings_is_refused(tmp_path):
    from gpt1_hf.reproduce import StudyMismatchError, _check_same_pretraining, _is_done

    cfg = StudyConfig(data_dir=str(FIXTURES), output_dir=str(tmp_path / "study")).resolved()
    run = next(r for r in plan_runs(cfg, tmp_path / "study", "finetune") if r["name"] == "full/sst2/seed0")
    folder = Path(run["args"]["output_dir"])
    folder.mkdir(parents=True)
    recorded = {**run["args"], "disable_tqdm": False, "num_threads": 1}  # incidental arguments may differ
    (folder / "results.json").write_text(json.dumps({"config": recorded}))
    assert _is_done(run)
    # the study folder moved: its own pretrained model's path changed, the runs still count
    moved = {**recorded, "model_name_or_path": "/elsewhere/study/pretrain"}
    (folder / "results.json").write_text(json.dumps({"config": moved}))
    assert _is_done(run)
    # the same data folder, given relative instead of absolute
    rel = {**recorded, "data_dir": os.path.relpath(recorded["data_dir"])}
    (folder / "results.json").write_text(json.dumps({"config": rel}))
    assert _is_done(run)
    (folder / "results.json").write_text(json.dumps({"config": {**recorded, "max_train_samples": 1500}}))
    with pytest.raises(StudyMismatchError, match=r"full/sst2/seed0 .*max_train_samples=1500 \(this study: 5000\)"):
        _is_done(run)
    # a given model is part of the run: another one is a mismatch
    given = replace(cfg, model_name_or_path=str(tmp_path))
    run = next(r for r in plan_runs(given, tmp_path / "study", "finetune") if r["name"] == "full/sst2/seed0")
    (folder / "results.json").write_text(json.dumps({"config": moved}))
    with pytest.raises(StudyMismatchError, match="model_name_or_path"):
        _is_done(run)

    plan = {"budget_minutes": 30.0, "tokens_per_update": 32 * 128}
    done = {"model": {"n_layer": 4, "n_embd": 256, "n_head": 4, "n_positions": 128}}
    _check_same_pretraining(cfg, plan, done, tmp_path)
    _check_same_pretraining(cfg, None, None, tmp_path)  # nothing made yet
    with pytest.raises(StudyMismatchError, match=r"budget_minutes=30.0 \(this study: 60\).*n_embd=256"):
        _check_same_pretraining(replace(cfg, budget_minutes=60, n_embd=512), plan, done, tmp_path)
