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
    import gpt1_hf.finetuning
    import gpt1_hf.zero_shot
    from gpt1_hf.configuration_gpt1 import GPT1Config
    from gpt1_hf.reproduce import GIVEN, _plot_zero_shot, stage_zero_shot

    model_dir = tmp_path / "model"
    GPT1Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2).save_pretrained(model_dir)
    monkeypatch.setattr(gpt1_hf.finetuning, "load_tokenizer", lambda *a, **k: None)
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
