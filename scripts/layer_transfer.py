#!/usr/bin/env python
"""Layer transfer (paper Figure 2 left): fine-tune with only the embeddings and the first K pretrained blocks kept
(the rest re-initialised), for each K, and plot the task metric against K.

    python scripts/layer_transfer.py --model_name_or_path outputs/pretrain --task_name rte \
        --data_dir ../shared/data/rte --layers 0,2,4,6,8,10,12 --output_dir outputs/layer-transfer-rte

Its own option is --layers; every other option is scripts/finetune.py's (`gpt1_hf.arguments.FinetuneArguments`, e.g.
--num_train_epochs, --mixed_precision; --help lists them all). Each K runs through gpt1_hf.finetuning.finetune in
this process (output in <output_dir>/K<k>); the sweep writes <output_dir>/layer_transfer.csv and layer_transfer.png.
"""

# no `from __future__ import annotations`: the dataclass below must also work in a module loaded without a
# sys.modules entry (tests load the scripts by path), where string annotations cannot be resolved
import csv
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LayerTransferArguments:
    """The sweep's own option (the fine-tuning options are `FinetuneArguments`; --output_dir is the sweep's folder)."""

    layers: str | None = field(default=None, metadata={"help": "comma-separated K values (default: 0..n_layer of "
                                                               "the checkpoint)"})


def parse(argv=None):
    """(LayerTransferArguments, FinetuneArguments) from the command line."""
    from transformers import HfArgumentParser

    from gpt1_hf.arguments import FinetuneArguments

    parser = HfArgumentParser((LayerTransferArguments, FinetuneArguments), description=__doc__)
    return parser.parse_args_into_dataclasses(sys.argv[1:] if argv is None else list(argv))


def plot(rows: list[dict], metric: str, path: Path, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["transfer_layers"] for r in rows], [r[metric] for r in rows], marker="o")
    ax.set_xlabel("number of layers transferred (K)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def sweep(layers, base_args, output_dir: Path) -> list[dict]:
    from gpt1_hf.finetuning import finetune

    rows = []
    for k in layers:
        args = dataclasses.replace(base_args, transfer_layers=k, output_dir=str(output_dir / f"K{k}"))
        results = finetune(args)
        row = {"transfer_layers": k, **(results["metrics"] or {}), "wall_time_s": results["wall_time_s"]}
        rows.append(row)
        print(f"K={k}: {json.dumps(results['metrics'])}", flush=True)
    return rows


def main(argv=None) -> int:
    from gpt1_hf.convert import checkpoint_n_layer
    from gpt1_hf.tasks import get_task

    sweep_args, base = parse(argv)
    if base.model_name_or_path is None:
        raise ValueError("--model_name_or_path (a pretrained checkpoint) is required for a layer-transfer sweep")
    if base.task_name is None:
        raise ValueError("--task_name is required for a layer-transfer sweep (e.g. --task_name rte)")
    output_dir = Path(base.output_dir or f"outputs/layer-transfer-{get_task(base.task_name).name}")
    output_dir.mkdir(parents=True, exist_ok=True)
    if sweep_args.layers:
        layers = [int(x) for x in sweep_args.layers.split(",") if x.strip()]
    else:
        # the checkpoint's own depth: config.json of a gpt1 / openai-gpt checkpoint, params_shapes.json of an
        # original-release folder (which has no config.json: GPT1Config.from_pretrained would give the default 12)
        try:
            n_layer = checkpoint_n_layer(base.model_name_or_path)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read the number of layers of {base.model_name_or_path} ({e}); pass --layers "
                             "K1,K2,...") from e
        layers = list(range(n_layer + 1))
    rows = sweep(layers, base, output_dir)
    spec = get_task(base.task_name)
    metric = spec.primary_metric
    fields = ["transfer_layers"] + sorted({k for r in rows for k in r} - {"transfer_layers"})
    with open(output_dir / "layer_transfer.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    plotted = plot(rows, metric, output_dir / "layer_transfer.png", f"{spec.name}: {metric} vs transferred layers")
    print(f"wrote {output_dir / 'layer_transfer.csv'}" + (f" and {output_dir / 'layer_transfer.png'}" if plotted else ""))
    return 0


if __name__ == "__main__":
    from gpt1_hf.cli import run_main

    sys.exit(run_main(main))
