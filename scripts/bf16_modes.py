#!/usr/bin/env python
"""bf16 autocast vs bf16 with fp32 master weights (gpt1_hf.precision) vs fp32, through the training loop itself
(`gpt1_hf.training.TrainingLoop`, random tokens, LM), interleaved in one process, 2 rounds; MFU of the bf16 / fp32 matmul
peak measured in the same run. The numbers behind `--bf16_implementation auto` (docs/benchmarks.md).

    python scripts/bf16_modes.py study   # the results study's pretraining shape: 4 x 256, context 128, 32 x 128 tokens
    python scripts/bf16_modes.py full    # GPT-1's full config, 1 x 512 tokens per update
"""

import argparse
import json
import sys
import tempfile

import torch

SHAPES = {  # model config, sequence length, examples per update, timed updates
    "study": (dict(vocab_size=16004, n_positions=128, n_embd=256, n_layer=4, n_head=4, n_inner=1024), 128, 32, 40),
    "full": (dict(vocab_size=40482, n_positions=512, n_embd=768, n_layer=12, n_head=12, n_inner=3072), 512, 1, 6),
}
MODES = (("bf16 autocast", "bf16", "autocast"), ("bf16 master weights", "bf16", "master_weights"),
         ("fp32", "no", "autocast"))


def _collate(features):
    ids = torch.tensor([f["input_ids"] for f in features])
    return {"input_ids": ids, "labels": ids}


def tokens_per_s(cfg: dict, seq: int, batch: int, steps: int, mixed_precision: str, impl: str) -> float:
    """Median tokens/s of the loop's updates (the first two, warm-up, left out)."""
    from gpt1_hf import GPT1Config, GPT1LMHeadModel
    from gpt1_hf.arguments import RunArguments
    from gpt1_hf.distributed import create_accelerator
    from gpt1_hf.training import TrainingLoop

    g = torch.Generator().manual_seed(0)
    data = [{"input_ids": torch.randint(0, cfg["vocab_size"] - 4, (seq,), generator=g).tolist()}
            for _ in range(batch * (steps + 2))]
    torch.manual_seed(0)
    model = GPT1LMHeadModel(GPT1Config(**cfg))
    args = RunArguments(output_dir=tempfile.mkdtemp(), learning_rate=2.5e-4, per_device_train_batch_size=batch,
                        global_batch_size=batch, num_train_epochs=1, max_train_steps=steps + 2, disable_tqdm=True,
                        logging_steps=1, weight_decay=0.01, max_grad_norm=1.0, lr_scheduler_type="cosine",
                        warmup_ratio=0.0, mixed_precision=mixed_precision, bf16_implementation=impl, cpu=True,
                        checkpointing_steps="100000")
    loop = TrainingLoop(model, args, data, _collate, create_accelerator(mixed_precision, cpu=True,
                                                                        bf16_implementation=impl))
    log = loop.fit().log_history[2:]
    return sorted(e["tokens_per_s"] for e in log)[len(log) // 2]


def main(argv=None) -> int:
    from gpt1_hf.benchmarking import case_peak, flops_per_token, machine_info
    from gpt1_hf.process_settings import keep_freed_memory

    keep_freed_memory()  # as scripts/pretrain.py runs (--keep_freed_memory)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", nargs="?", default="study", choices=sorted(SHAPES), help="the shape to measure")
    shape = parser.parse_args(argv).shape
    cfg, seq, batch, steps = SHAPES[shape]
    peak = case_peak({"ceiling": False, "reps": 5})
    fpt = flops_per_token(cfg, seq, cfg["vocab_size"])
    results: dict[str, list[float]] = {}
    for round_ in range(2):
        for name, mp, impl in MODES:
            tps = tokens_per_s(cfg, seq, batch, steps, mp, impl)
            results.setdefault(name, []).append(tps)
            pk = peak["bf16_tflops"] if mp == "bf16" else peak["fp32_tflops"]
            print(f"round {round_} {name}: {tps:,.0f} tok/s, MFU {100 * tps * fpt / (pk * 1e12):.1f}%", flush=True)
    print(json.dumps({"shape": shape, "machine": machine_info(), "peak": peak, "flops_per_token": fpt,
                      "tokens_per_s": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
