#!/usr/bin/env python
"""Layer transfer (paper Figure 2 left): fine-tune with only the embeddings and the first K pretrained blocks kept
(the rest re-initialised), for each K, and plot the task metric against K.

    python scripts/layer_transfer.py --model_name_or_path outputs/pretrain --task rte \
        --data_dir ../shared/data/rte --layers 0,2,4,6,8,10,12 --output_dir outputs/layer-transfer-rte

Every other option is passed to scripts/finetune.py's parser (e.g. --num_train_epochs, --mixed_precision). Each K
runs through gpt1_hf.finetuning.finetune in this process (output in <output_dir>/K<k>); the sweep writes
<output_dir>/layer_transfer.csv and layer_transfer.png.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from pathlib import Path


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                add_help=True)
    p.add_argument("--layers", default=None, help="comma-separated K values (default: 0..n_layer)")
    p.add_argument("--sweep_output_dir", "--output_dir", dest="output_dir", default="outputs/layer-transfer")
    ns, rest = p.parse_known_args(argv)
    return ns, rest


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
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from finetune import arguments_from_cli

    from gpt1_hf.convert import checkpoint_n_layer
    from gpt1_hf.tasks import get_task

    ns, rest = parse(argv)
    base = arguments_from_cli(rest)
    if base.model_name_or_path is None:
        raise SystemExit("--model_name_or_path (a pretrained checkpoint) is required for a layer-transfer sweep")
    output_dir = Path(ns.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if ns.layers:
        layers = [int(x) for x in ns.layers.split(",") if x.strip()]
    else:
        # the checkpoint's own depth: config.json of a gpt1 / openai-gpt checkpoint, params_shapes.json of an
        # original-release folder (which has no config.json: GPT1Config.from_pretrained would give the default 12)
        try:
            n_layer = checkpoint_n_layer(base.model_name_or_path)
        except (OSError, ValueError) as e:
            raise SystemExit(f"cannot read the number of layers of {base.model_name_or_path} ({e}); pass --layers "
                             "K1,K2,...") from e
        layers = list(range(n_layer + 1))
    rows = sweep(layers, base, output_dir)
    spec = get_task(base.task)
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
    sys.exit(main())
