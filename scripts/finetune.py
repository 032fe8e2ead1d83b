#!/usr/bin/env python
"""Fine-tune GPT-1 on a task of the paper with its recipe (gpt1_hf.finetuning). See docs/finetuning.md.

    # the embedded default: offline, a tiny GPT-1 from scratch on a bundled SST-2 sample, prints the dev accuracy
    python scripts/finetune.py

    # the paper's recipe on a pretrained checkpoint (gpt1 folder, Hub id, openai-gpt checkpoint or original release)
    accelerate launch scripts/finetune.py --task_name rte --model_name_or_path openai-community/openai-gpt \
        --data_dir ../shared/data/rte --mixed_precision bf16 --output_dir outputs/rte --with_tracking

Flags are those of transformers' run_glue_no_trainer.py where one exists; every option, its help and default:
--help. Unset options take the paper's values (lr 6.25e-5, batch 32, 3 epochs, linear decay with 0.2% warmup, aux LM
weight 0.5, classifier dropout 0.1, weight decay 0.01, clipping 1.0, max length 512) when a model is given, and the
embedded default's values when none is. A single .json argument is read as the arguments file.
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    from gpt1_hf.arguments import FinetuneArguments, parse_cli
    from gpt1_hf.finetuning import finetune

    results = finetune(parse_cli(FinetuneArguments, argv))
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        metrics = results["metrics"] or {}
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"{results['task']} {results['eval_split']} ({results['sizes'].get(results['eval_split'])} examples): "
              f"{shown}")
        print(f"{results['primary_metric']}: {metrics.get(results['primary_metric'], float('nan')):.4f}  "
              f"(wall time {results['wall_time_s']:.1f} s; results in {results['config']['output_dir']}/results.json)")
    return 0


if __name__ == "__main__":
    from gpt1_hf.cli import run_main

    sys.exit(run_main(main))
