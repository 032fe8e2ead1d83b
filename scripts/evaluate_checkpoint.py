#!/usr/bin/env python
"""Evaluate a fine-tuned GPT-1 checkpoint on one split of a task: metrics (labeled splits) and a prediction file
(the GLUE submission TSV for GLUE tasks). Named evaluate_checkpoint.py, not evaluate.py: a script called
evaluate.py would shadow the `evaluate` package it uses.

    python scripts/evaluate_checkpoint.py --model outputs/finetune-sst2 --task sst2 \
        --data_dir ../shared/data/sst2 --split validation --output_dir outputs/eval-sst2
"""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "--model_name_or_path", dest="model", required=True,
                   help="fine-tuned gpt1 checkpoint folder (output_dir of scripts/finetune.py, or its best/)")
    p.add_argument("--task", required=True)
    p.add_argument("--split", default="validation")
    p.add_argument("--data_dir", default=None, help="local task folder; default: the Hub")
    p.add_argument("--tokenizer", default=None, help="default: the checkpoint's tokenizer")
    p.add_argument("--max_examples", type=int, default=None)
    p.add_argument("--max_length", type=int, default=None, help="default: the model's n_positions")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--mixed_precision", choices=["auto", "no", "bf16", "fp16"], default=None,
                   help="default: the accelerate config's (else no)")
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max_examples subset")
    p.add_argument("--output_dir", default=None, help="write eval_<task>_<split>.json and predictions/ here")
    return p


def main(argv=None) -> int:
    from gpt1_hf.finetuning import evaluate_checkpoint

    ns = build_parser().parse_args(argv)
    report = evaluate_checkpoint(
        ns.model, ns.task, split=ns.split, data_dir=ns.data_dir, tokenizer_name_or_path=ns.tokenizer,
        max_examples=ns.max_examples, max_length=ns.max_length, batch_size=ns.batch_size,
        output_dir=ns.output_dir, mixed_precision=ns.mixed_precision, seed=ns.seed, cpu=ns.cpu,
    )
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        print(json.dumps({k: report[k] for k in ("task", "split", "num_examples", "truncated", "metrics")}, indent=2))
        if report.get("prediction_file"):
            print(f"predictions: {report['prediction_file']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
