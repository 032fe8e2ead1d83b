#!/usr/bin/env python
"""Evaluate a fine-tuned GPT-1 checkpoint on one split of a task: metrics (labeled splits) and a prediction file
(the GLUE submission TSV for GLUE tasks). Named evaluate_checkpoint.py, not evaluate.py: a script called
evaluate.py would shadow the `evaluate` package it uses.

    python scripts/evaluate_checkpoint.py --model_name_or_path outputs/finetune-sst2 --task_name sst2 \
        --data_dir ../shared/data/sst2 --split validation --output_dir outputs/eval-sst2

Flags are scripts/finetune.py's names for the same things (--help lists them with their defaults).
"""

# no `from __future__ import annotations`: the dataclass below must also work in a module loaded without a
# sys.modules entry (tests load the scripts by path), where string annotations cannot be resolved
import json
import sys
from dataclasses import dataclass, field
from typing import Literal


def _opt(default=None, help: str = ""):
    return field(default=default, metadata={"help": help})


@dataclass
class EvaluateArguments:
    """`gpt1_hf.finetuning.evaluate_checkpoint`'s arguments."""

    model_name_or_path: str = field(metadata={"help": "fine-tuned gpt1 checkpoint folder (output_dir of "
                                                      "scripts/finetune.py, or its best/)"})
    task_name: str = field(metadata={"help": "a task of gpt1_hf.tasks"})
    split: str = _opt("validation", "split to evaluate (an unlabeled one gives predictions only)")
    data_dir: str | None = _opt(None, "local task folder (or a root holding <task>/); default: the Hub")
    tokenizer_name: str | None = _opt(None, "tokenizer folder / Hub id (default: the checkpoint's tokenizer)")
    max_eval_samples: int | None = _opt(None, "random subset of the split (seeded by --seed)")
    max_length: int | None = _opt(None, "tokens per sequence (default: the model's n_positions)")
    per_device_eval_batch_size: int = _opt(32, "examples per process per evaluation batch")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] | None = _opt(
        None, "default: the accelerate config's (else no)")
    cpu: bool = _opt(False, "run on the CPU even when a GPU is present")
    seed: int = _opt(0, "seed of the --max_eval_samples subset")
    output_dir: str | None = _opt(None, "write eval_<task>_<split>.json and predictions/ here")


def main(argv=None) -> int:
    from gpt1_hf.arguments import parse_cli
    from gpt1_hf.finetuning import evaluate_checkpoint

    args = parse_cli(EvaluateArguments, argv)
    report = evaluate_checkpoint(
        args.model_name_or_path, args.task_name, split=args.split, data_dir=args.data_dir,
        tokenizer_name_or_path=args.tokenizer_name, max_examples=args.max_eval_samples, max_length=args.max_length,
        batch_size=args.per_device_eval_batch_size, output_dir=args.output_dir, mixed_precision=args.mixed_precision,
        seed=args.seed, cpu=args.cpu,
    )
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        print(json.dumps({k: report[k] for k in ("task", "split", "num_examples", "truncated", "metrics")}, indent=2))
        if report.get("prediction_file"):
            print(f"predictions: {report['prediction_file']}")
    return 0


if __name__ == "__main__":
    from gpt1_hf.cli import run_main

    sys.exit(run_main(main))
