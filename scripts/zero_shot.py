#!/usr/bin/env python
"""Zero-shot behaviours of a pretrained GPT-1 LM (paper §5, Figure 2 right): no fine-tuning.

    python scripts/zero_shot.py --model_name_or_path gpt1-base --data_dir ../shared/data \
        --tasks sst2,cola,race,story_cloze,wnli --split validation --output zero_shot.json

--model_name_or_path: any checkpoint `gpt1_hf.convert.load_as_gpt1` reads (gpt1 / openai-gpt folder or Hub repo, or
an original release folder). --data_dir: a root holding one folder per task (None: the Hugging Face Hub). Flags are
scripts/finetune.py's names for the same things; --help lists every option with its default. Heuristics and
thresholds: docs/zero_shot.md.
"""

# no `from __future__ import annotations`: the dataclass below must also work in a module loaded without a
# sys.modules entry (tests load the scripts by path), where string annotations cannot be resolved
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def _opt(default=None, help: str = ""):
    return field(default=default, metadata={"help": help})


@dataclass
class ZeroShotArguments:
    """The zero-shot evaluation's options (`gpt1_hf.zero_shot.evaluate_zero_shot`)."""

    model_name_or_path: str = field(metadata={"help": "checkpoint folder or Hub repo (gpt1, openai-gpt or original)"})
    tokenizer_name: str | None = _opt(None, "tokenizer folder / repo (default: --model_name_or_path)")
    tasks: str = _opt("sst2,cola,race,story_cloze,wnli", "comma-separated, from gpt1_hf.zero_shot.ZERO_SHOT_TASKS")
    data_dir: str | None = _opt(None, "root with one folder per task; default: the Hub")
    split: str = _opt("validation", "split to evaluate")
    max_eval_samples: int | None = _opt(None, "random subset of the split (seeded by --seed)")
    seed: int = _opt(0, "seed of the subsets")
    threshold: float | None = _opt(None, "CoLA / WNLI threshold (default: chosen on --threshold_split)")
    threshold_split: str = _opt("train", "split the CoLA / WNLI threshold is chosen on")
    threshold_examples: int = _opt(2000, "examples of --threshold_split used to choose the threshold")
    per_device_eval_batch_size: int = _opt(16, "examples per batch")
    max_length: int | None = _opt(None, "tokens per sequence (default: the model's n_positions)")
    bf16: bool = _opt(False, "bf16 autocast (log-softmax stays float32)")
    device: str | None = _opt(None, "torch device (default: cuda when available, else cpu)")
    output: str | None = _opt(None, "JSON file with metrics, thresholds and predictions")
    no_predictions: bool = _opt(False, "leave predictions and scores out of the JSON")


def parse_args(argv=None) -> ZeroShotArguments:
    from gpt1_hf.arguments import parse_cli
    from gpt1_hf.zero_shot import ZERO_SHOT_TASKS

    args = parse_cli(ZeroShotArguments, argv)
    unknown = [t for t in args.tasks.split(",") if t.strip() and t.strip() not in ZERO_SHOT_TASKS]
    if unknown:
        raise ValueError(f"--tasks: unknown zero-shot task(s) {unknown}; choose from {list(ZERO_SHOT_TASKS)}")
    return args


def load_tokenizer(path, vocab_size: int | None = None):
    """The saved tokenizer of a folder / repo if it has one (GPT1Tokenizer or any transformers tokenizer), else a
    GPT1Tokenizer built from the checkpoint's BPE files. With `vocab_size` (the model's embedding rows), a tokenizer
    whose size does not match is a ValueError (`gpt1_hf.convert.check_tokenizer_matches_model`)."""
    from gpt1_hf.convert import cached_file_or_none, check_tokenizer_matches_model, load_tokenizer_as_gpt1

    config = cached_file_or_none(path, "tokenizer_config.json", {})
    if config and "GPT1" not in str(json.loads(Path(config).read_text(encoding="utf-8")).get("tokenizer_class", "")):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        return tokenizer if vocab_size is None else check_tokenizer_matches_model(tokenizer, vocab_size, path)
    return load_tokenizer_as_gpt1(path, vocab_size=vocab_size)


def _clean(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def main(argv=None) -> int:
    import torch

    args = parse_args(argv)
    from gpt1_hf.convert import load_as_gpt1
    from gpt1_hf.zero_shot import evaluate_zero_shot

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_as_gpt1(args.model_name_or_path).to(device).eval()
    tokenizer = load_tokenizer(args.tokenizer_name or args.model_name_or_path, vocab_size=model.config.vocab_size)
    results = {"model": args.model_name_or_path, "split": args.split, "bf16": args.bf16, "tasks": {}}
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        start = time.perf_counter()
        out = evaluate_zero_shot(
            task, model, tokenizer, data_dir=args.data_dir, split=args.split, max_examples=args.max_eval_samples,
            seed=args.seed, threshold=args.threshold, threshold_split=args.threshold_split,
            threshold_examples=args.threshold_examples, batch_size=args.per_device_eval_batch_size, bf16=args.bf16,
            max_length=args.max_length,
        )
        out["seconds"] = round(time.perf_counter() - start, 2)
        if args.no_predictions:
            out.pop("predictions", None)
            out.pop("scores", None)
        results["tasks"][task] = out
        extra = f" threshold={out['threshold']:.4f} ({out['threshold_source']})" if "threshold" in out else ""
        print(f"{task}: {json.dumps(out.get('metrics', {}))} n={out['num_examples']}{extra} [{out['seconds']}s]")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(_clean(results), indent=1))
    return 0


if __name__ == "__main__":
    from gpt1_hf.cli import run_main

    sys.exit(run_main(main))
