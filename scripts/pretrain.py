#!/usr/bin/env python
"""Pretrain GPT-1 with the language-modelling objective L1 (gpt1_hf.pretraining). See docs/pretraining.md.

    accelerate launch scripts/pretrain.py --train_files ../shared/data/pretrain_corpus/english_novels \
        --n_ctx 512 --global_batch_size 64 --max_train_tokens 50000000 --mixed_precision bf16 \
        --output_dir outputs/pretrain

The output folder is a GPT1LMHeadModel + tokenizer that `scripts/finetune.py --model_name_or_path` takes directly.
Defaults are the paper's: lr 2.5e-4, warmup 2000 updates (1% of a shorter run), cosine to 0, weight decay 0.01,
dropout 0.1, batch 64 x 512 tokens, a 12-layer 768-wide model.
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("corpus")
    g.add_argument("--train_files", nargs="*", default=[], help="text/jsonl files or folders")
    g.add_argument("--validation_files", nargs="*", default=[], help="held-out files (default: a slice of blocks)")
    g.add_argument("--dataset_name", default=None, help="Hub dataset (instead of files)")
    g.add_argument("--dataset_config", default=None)
    g.add_argument("--dataset_split", default="train")
    g.add_argument("--text_column", default="text")
    g.add_argument("--document_per", choices=["file", "line"], default="file",
                   help="text files: one document per file (books) or per line")
    g.add_argument("--validation_ratio", type=float, default=0.01, help="held-out fraction of the blocks")
    g.add_argument("--max_documents", type=int, default=None)
    g.add_argument("--num_proc", type=int, default=None, help="datasets.map workers")
    g.add_argument("--cache_dir", default=None, help="datasets cache (default: the HF datasets cache)")
    g = p.add_argument_group("tokenizer")
    g.add_argument("--tokenizer", dest="tokenizer_name_or_path", default=None,
                   help="existing GPT-1 tokenizer (default: the bundled GPT-1 BPE files)")
    g.add_argument("--train_tokenizer", action="store_true", help="train a new BPE vocabulary on the corpus")
    g.add_argument("--vocab_size", type=int, default=40000)
    g = p.add_argument_group("model")
    g.add_argument("--model_name_or_path", default=None, help="continue pretraining this checkpoint")
    g.add_argument("--n_ctx", type=int, default=512)
    g.add_argument("--n_embd", type=int, default=768)
    g.add_argument("--n_layer", type=int, default=12)
    g.add_argument("--n_head", type=int, default=12)
    g.add_argument("--n_inner", type=int, default=None, help="default: 4 x n_embd")
    g.add_argument("--dropout", type=float, default=0.1)
    g = p.add_argument_group("optimisation")
    g.add_argument("--learning_rate", type=float, default=2.5e-4)
    g.add_argument("--lr_scheduler_type", choices=["cosine", "linear", "constant"], default="cosine")
    g.add_argument("--warmup_steps", type=int, default=None, help="default: min(2000, 1%% of the updates)")
    g.add_argument("--warmup_ratio", type=float, default=None)
    g.add_argument("--weight_decay", type=float, default=0.01)
    g.add_argument("--max_grad_norm", type=float, default=1.0)
    g.add_argument("--per_device_batch_size", type=int, default=None)
    g.add_argument("--global_batch_size", type=int, default=64)
    g.add_argument("--gradient_accumulation_steps", type=int, default=None)
    g.add_argument("--eval_batch_size", type=int, default=None)
    g.add_argument("--num_train_epochs", type=int, default=100)
    g.add_argument("--mixed_precision", choices=["auto", "no", "bf16", "fp16"], default=None,
                   help="default: the accelerate config's (else no)")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--gradient_checkpointing", action="store_true")
    g.add_argument("--torch_compile", action="store_true")
    g.add_argument("--cpu", action="store_true")
    g = p.add_argument_group("budgets and checkpoints")
    g.add_argument("--max_steps", type=int, default=None)
    g.add_argument("--max_train_tokens", type=int, default=None)
    g.add_argument("--max_time", type=float, default=None, help="seconds for this invocation")
    g.add_argument("--eval_every_steps", type=int, default=None, help="default: every epoch")
    g.add_argument("--save_every_steps", type=int, default=1000,
                   help="a checkpoint every N updates (default 1000; 0: only at epoch ends and budget stops), so a "
                        "killed run loses at most N updates")
    g.add_argument("--save_total_limit", type=int, default=2)
    g.add_argument("--resume_from_checkpoint", default=None, help="'latest', 'auto' or a checkpoint folder")
    g.add_argument("--output_dir", default="outputs/pretrain")
    g.add_argument("--log_every_steps", type=int, default=10)
    g.add_argument("--no_progress_bar", action="store_true")
    g.add_argument("--no_plot", action="store_true")
    return p


def main(argv=None) -> int:
    from gpt1_hf.pretraining import PretrainArguments, pretrain

    ns = vars(build_parser().parse_args(argv))
    ns["progress_bar"] = not ns.pop("no_progress_bar")
    ns["plot"] = not ns.pop("no_plot")
    results = pretrain(PretrainArguments(**ns))
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        init, final = results["initial_heldout"] or {}, results["final_heldout"] or {}
        print(f"corpus: {results['corpus']['tokens']} tokens, {results['corpus']['train_blocks']} train / "
              f"{results['corpus']['heldout_blocks']} held-out blocks of {results['corpus']['n_ctx']}")
        print(f"held-out loss {init.get('loss', float('nan')):.4f} -> {final.get('loss', float('nan')):.4f} "
              f"(perplexity {final.get('perplexity', float('nan')):.2f}) after {results['global_step']} updates, "
              f"{results['tokens_seen']} tokens, {results['train_time_s']:.1f} s "
              f"({(results['train_tokens_per_s'] or 0):.0f} tokens/s); model in {ns['output_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
