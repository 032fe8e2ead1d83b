#!/usr/bin/env python
"""Convert GPT-1 checkpoints between OpenAI's original release, transformers' openai-gpt and gpt1.

    # OpenAI's release (params_shapes.json + params_0..9.npy + BPE files) -> gpt1 folder with tokenizer
    python scripts/convert_checkpoint.py --from original --input finetune-transformer-lm/model --output gpt1-base
    # transformers' openai-gpt (folder or Hub repo) -> gpt1
    python scripts/convert_checkpoint.py --from openai-gpt --input openai-community/openai-gpt --output gpt1-base
    # gpt1 -> openai-gpt (or original)
    python scripts/convert_checkpoint.py --from gpt1 --to openai-gpt --input gpt1-base --output openai-gpt-copy

A thin wrapper over `gpt1_hf.convert.convert_checkpoint`; see docs/conversion.md.
"""

from __future__ import annotations

import argparse
import sys

from gpt1_hf.convert import FORMATS, ORIGINAL_NUM_SHARDS, convert_checkpoint


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from", dest="from_format", choices=FORMATS, default=None,
                   help="input format (default: detected from the input)")
    p.add_argument("--to", dest="to_format", choices=FORMATS, default="gpt1", help="output format (default gpt1)")
    p.add_argument("--input", required=True, help="checkpoint folder, or Hub repo id (openai-gpt / gpt1)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--vocab_file", default=None,
                   help="BPE encoder json (encoder_bpe_40000.json / vocab.json); default: found in --input")
    p.add_argument("--merges_file", default=None, help="BPE merges (vocab_40000.bpe / merges.txt)")
    p.add_argument("--tokenizer", nargs=2, metavar=("VOCAB_FILE", "MERGES_FILE"), default=None,
                   help="shorthand for --vocab_file and --merges_file")
    p.add_argument("--no_tokenizer", action="store_true", help="do not save a tokenizer beside the model")
    p.add_argument("--seed", type=int, default=0, help="seed of the N(0, 0.02) special-token rows")
    p.add_argument("--add_special_tokens", choices=("auto", "yes", "no"), default="auto",
                   help="add the four special rows on load (auto: only when the input has the BPE rows only)")
    p.add_argument("--drop_special_tokens", choices=("auto", "yes", "no"), default="auto",
                   help="write the BPE rows only (auto: yes for --to original, no for --to openai-gpt)")
    p.add_argument("--n_head", type=int, default=None,
                   help="attention heads (original format only; it cannot be read from the shapes; default 12)")
    p.add_argument("--n_positions", type=int, default=None,
                   help="keep only the first N position embeddings (original format; like the original n_ctx)")
    p.add_argument("--num_shards", type=int, default=ORIGINAL_NUM_SHARDS, help="shards of the original format")
    p.add_argument("--revision", default=None, help="Hub revision of --input")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    vocab_file, merges_file = args.tokenizer if args.tokenizer else (args.vocab_file, args.merges_file)
    if args.no_tokenizer:
        vocab_file = merges_file = None
    tri = {"auto": None, "yes": True, "no": False}
    overrides = {k: v for k, v in (("n_head", args.n_head), ("n_positions", args.n_positions),
                                   ("revision", args.revision)) if v is not None}
    out = convert_checkpoint(
        args.input,
        args.output,
        from_format=args.from_format,
        to_format=args.to_format,
        vocab_file=vocab_file,
        merges_file=merges_file,
        seed=args.seed,
        add_special_tokens=tri[args.add_special_tokens],
        drop_special_tokens=tri[args.drop_special_tokens],
        num_shards=args.num_shards,
        save_tokenizer=not args.no_tokenizer,
        **overrides,
    )
    print(f"wrote {args.to_format} checkpoint to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
