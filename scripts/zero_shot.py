#!/usr/bin/env python
"""Zero-shot behaviours of a pretrained GPT-1 LM (paper §5, Figure 2 right): no fine-tuning.

    python scripts/zero_shot.py --model gpt1-base --data_dir ../shared/data \
        --tasks sst2,cola,race,story_cloze,wnli --split validation --output zero_shot.json

--model: any checkpoint `gpt1_hf.convert.load_as_gpt1` reads (gpt1 / openai-gpt folder or Hub repo, or an original
release folder). --data_dir: a root holding one folder per task (None: the Hugging Face Hub). Heuristics and
thresholds: docs/zero_shot.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch


def parse_args(argv=None):
    from gpt1_hf.zero_shot import ZERO_SHOT_TASKS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder or Hub repo (gpt1, openai-gpt or original)")
    p.add_argument("--tokenizer", default=None, help="tokenizer folder / repo (default: --model)")
    p.add_argument("--tasks", default=",".join(ZERO_SHOT_TASKS), help=f"comma-separated, from {ZERO_SHOT_TASKS}")
    p.add_argument("--data_dir", default=None, help="root with one folder per task; default: the Hub")
    p.add_argument("--split", default="validation")
    p.add_argument("--max_examples", type=int, default=None, help="random subset of the split (seeded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=None, help="CoLA / WNLI threshold (default: chosen on train)")
    p.add_argument("--threshold_split", default="train")
    p.add_argument("--threshold_examples", type=int, default=2000)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_length", type=int, default=None, help="default: the model's n_positions")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (log-softmax stays float32)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--output", default=None, help="JSON file with metrics, thresholds and predictions")
    p.add_argument("--no_predictions", action="store_true", help="leave predictions and scores out of the JSON")
    return p.parse_args(argv)


def load_tokenizer(path, vocab_size: int | None = None):
    """The saved tokenizer of a folder / repo if it has one (GPT1Tokenizer or any transformers tokenizer), else a
    GPT1Tokenizer built from the checkpoint's BPE files. With `vocab_size` (the model's embedding rows), a tokenizer
    whose size does not match is a ValueError (`gpt1_hf.convert.check_tokenizer_matches_model`)."""
    from gpt1_hf.convert import _cached, check_tokenizer_matches_model, load_tokenizer_as_gpt1

    config = _cached(path, "tokenizer_config.json", {})
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
    args = parse_args(argv)
    from gpt1_hf.convert import load_as_gpt1
    from gpt1_hf.zero_shot import evaluate_zero_shot

    model = load_as_gpt1(args.model).to(args.device).eval()
    tokenizer = load_tokenizer(args.tokenizer or args.model, vocab_size=model.config.vocab_size)
    results = {"model": args.model, "split": args.split, "bf16": args.bf16, "tasks": {}}
    for task in [t.strip() for t in args.tasks.split(",") if t.strip()]:
        start = time.perf_counter()
        out = evaluate_zero_shot(
            task, model, tokenizer, data_dir=args.data_dir, split=args.split, max_examples=args.max_examples,
            seed=args.seed, threshold=args.threshold, threshold_split=args.threshold_split,
            threshold_examples=args.threshold_examples, batch_size=args.batch_size, bf16=args.bf16,
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
    sys.exit(main())
