#!/usr/bin/env python
"""Reproduce the paper's results study (Tables 2-5, Figure 2) in one resumable command (gpt1_hf.reproduce).

Miniature study on a 2-core CPU (under two hours: 99 minutes on an Intel Xeon with AMX; pretraining gets
--budget_minutes of it):

    python scripts/reproduce.py --data_dir ../shared/data --output_dir outputs/study --budget_minutes 30 --write_docs

Full-scale study with the real GPT-1 weights (no subsampling, 512-token inputs, the paper's lr); a given
--model_name_or_path selects --preset full unless --preset is given:

    python scripts/reproduce.py --model_name_or_path gpt1-base --data_dir <data> --write_docs

Stages (--stages, default all): pretrain, zero_shot, finetune, layer_transfer, lora, report. Every stage skips the
work it finds finished in --output_dir, so rerunning the same command after a kill continues where it stopped.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys


def _list(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def build_parser() -> argparse.ArgumentParser:
    from gpt1_hf.reproduce import PRESETS, STAGES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", required=True, help="root with one folder per task (the layout of shared/data)")
    p.add_argument("--output_dir", default="outputs/study")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="cpu: the miniature study (the default without --model_name_or_path); full: the paper's "
                        "scale (needs --model_name_or_path; the default with it)")
    p.add_argument("--stages", type=_list, default=list(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--tasks", type=_list, default=None, help="comma-separated tasks for Tables 2-4")
    p.add_argument("--model_name_or_path", default=None,
                   help="a real pretrained GPT-1 (gpt1 folder, openai-gpt checkpoint or Hub id): skips pretraining "
                        "and selects --preset full unless --preset is given")
    p.add_argument("--tokenizer", dest="tokenizer_name_or_path", default=None)
    g = p.add_argument_group("pretraining (preset values when not given)")
    g.add_argument("--corpus", nargs="*", default=None, help="files/folders (default: <data_dir>/pretrain_corpus)")
    g.add_argument("--budget_minutes", type=float, default=None, help="wall-clock budget of the pretraining stage")
    g.add_argument("--n_layer", type=int, default=None)
    g.add_argument("--n_embd", type=int, default=None)
    g.add_argument("--n_head", type=int, default=None)
    g.add_argument("--n_ctx", type=int, default=None)
    g.add_argument("--vocab_size", type=int, default=None, help="train a BPE vocabulary of this size (0: GPT-1's)")
    g.add_argument("--pretrain_learning_rate", type=float, default=None)
    g.add_argument("--pretrain_batch_size", type=int, default=None)
    g.add_argument("--zero_shot_points", type=int, default=6, help="pretraining checkpoints scored zero-shot")
    g.add_argument("--zero_shot_examples", type=int, default=500)
    g = p.add_argument_group("fine-tuning (preset values when not given)")
    g.add_argument("--max_train_examples", type=int, default=None)
    g.add_argument("--max_eval_examples", type=int, default=None)
    g.add_argument("--max_length", type=int, default=None)
    g.add_argument("--mc_max_train_examples", type=int, default=None)
    g.add_argument("--mc_max_length", type=int, default=None)
    g.add_argument("--subsample_small_tasks", dest="small_tasks_whole", action="store_false", default=None,
                   help="cut the small tasks to --max_train_examples too (default: their whole training sets)")
    g.add_argument("--learning_rate", type=float, default=None)
    g.add_argument("--num_train_epochs", type=int, default=None)
    g.add_argument("--seeds", type=int, default=None,
                   help="seeds of the small tasks (CoLA, MRPC, STS-B, RTE, Story Cloze)")
    g.add_argument("--no_ablations", dest="ablations", action="store_false")
    g.add_argument("--layer_transfer_task", default="mnli", help="'' to skip")
    g.add_argument("--lora_task", default="sst2", help="'' to skip")
    g.add_argument("--jobs", type=int, default=None, help="fine-tuning runs at a time (processes)")
    g.add_argument("--seed", type=int, default=0)
    p.add_argument("--write_docs", action="store_true", help="write docs/results.md and docs/img/results_*.png")
    p.add_argument("--no_progress_bar", dest="progress_bar", action="store_false")
    return p


def config_from_args(ns: argparse.Namespace):
    """The `StudyConfig` of parsed arguments (no --preset: StudyConfig picks full with a model, else cpu)."""
    from gpt1_hf.reproduce import StudyConfig

    values = {k: v for k, v in vars(ns).items() if v is not None}
    for k in ("layer_transfer_task", "lora_task"):
        values[k] = values.get(k) or None
    return StudyConfig(**values)


def main(argv=None) -> int:
    from gpt1_hf.reproduce import run_study

    ns = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config_from_args(ns)
    command = "python scripts/reproduce.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                   else sys.argv[1:]))
    report = run_study(cfg, command=command)
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
