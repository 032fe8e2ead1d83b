#!/usr/bin/env python
"""Evaluate a fine-tuned GPT-1 checkpoint on one split of a task: metrics (labeled splits) and a prediction file
(the GLUE submission TSV for GLUE tasks). Named evaluate_checkpoint.py, not evaluate.py: a script called
evaluate.py would shadow the `evaluate` package it uses.

    python scripts/evaluate_checkpoint.py --model_name_or_path outputs/finetune-sst2 --task_name sst2 \
        --data_dir ../shared/data/sst2 --split validation --output_dir outputs/eval-sst2

Flags are scripts/finetune.py's names for the same things (--help lists them with their defaults).
"""

import json
import sys
from dataclasses import dataclass, field

from gpt1_hf.arguments import DataArguments, ExecutionArguments


@dataclass
class EvaluateArguments(ExecutionArguments, DataArguments):
    """`gpt1_hf.evaluation.evaluate_checkpoint`'s arguments: the data options of fine-tuning (a paper task, or your
    data: --validation_file / --test_file / --dataset_name ...) and where the model runs."""

    split: str = field(default="validation", metadata={"help": "split to evaluate (an unlabeled one gives "
                                                                "predictions only)"})


def main(argv=None) -> int:
    from gpt1_hf.arguments import parse_cli
    from gpt1_hf.evaluation import evaluate_checkpoint
    from gpt1_hf.process_settings import apply_process_settings
    from gpt1_hf.user_data import DataOptions

    args = parse_cli(EvaluateArguments, argv)
    apply_process_settings(args.num_threads, args.keep_freed_memory)
    if args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required: a fine-tuned gpt1 folder (scripts/finetune.py's "
                         "--output_dir, or its best/)")
    report = evaluate_checkpoint(
        args.model_name_or_path, args.task_name, split=args.split, data_dir=args.data_dir,
        tokenizer_name_or_path=args.tokenizer_name, max_examples=args.max_eval_samples, max_length=args.max_length,
        batch_size=args.per_device_eval_batch_size or 32, output_dir=args.output_dir,
        mixed_precision=args.mixed_precision, seed=args.seed, cpu=args.cpu, data=DataOptions.from_args(args),
        pad_to_multiple_of=args.pad_to_multiple_of,
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
