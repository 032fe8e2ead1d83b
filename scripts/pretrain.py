#!/usr/bin/env python
"""Pretrain GPT-1 with the language-modelling objective L1 (gpt1_hf.pretraining). See docs/pretraining.md.

    accelerate launch scripts/pretrain.py --train_files ../shared/data/pretrain_corpus/english_novels \
        --block_size 512 --global_batch_size 64 --max_train_tokens 50000000 --mixed_precision bf16 \
        --output_dir outputs/pretrain --with_tracking

The output folder is a GPT1LMHeadModel + tokenizer that `scripts/finetune.py --model_name_or_path` takes directly.
Flags are those of transformers' run_clm_no_trainer.py where one exists (--help lists every option with its default).
Defaults are the paper's: lr 2.5e-4, warmup 2000 updates (1% of a shorter run), cosine to 0, weight decay 0.01,
dropout 0.1, batch 64 x 512 tokens, a 12-layer 768-wide model.
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    from gpt1_hf.arguments import PretrainArguments, parse_cli
    from gpt1_hf.pretraining import pretrain

    args = parse_cli(PretrainArguments, argv)
    results = pretrain(args)
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        init, final, corpus = results["initial_heldout"] or {}, results["final_heldout"] or {}, results["corpus"]
        print(f"corpus: {corpus['tokens']} tokens, {corpus['train_blocks']} train / {corpus['heldout_blocks']} "
              f"held-out blocks of {corpus['block_size']}")
        print(f"held-out loss {init.get('loss', float('nan')):.4f} -> {final.get('loss', float('nan')):.4f} "
              f"(perplexity {final.get('perplexity', float('nan')):.2f}) after {results['global_step']} updates, "
              f"{results['tokens_seen']} tokens, {results['train_time_s']:.1f} s "
              f"({(results['train_tokens_per_s'] or 0):.0f} tokens/s); model in {results['config']['output_dir']}")
    return 0


if __name__ == "__main__":
    from gpt1_hf.cli import run_main

    sys.exit(run_main(main))
