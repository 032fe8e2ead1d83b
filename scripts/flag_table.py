#!/usr/bin/env python
"""The flag tables of docs/finetuning.md and docs/pretraining.md, generated from the argument dataclasses
(`gpt1_hf.arguments.FinetuneArguments` / `PretrainArguments`): flag, default, help.

    python scripts/flag_table.py finetune              # print the table
    python scripts/flag_table.py finetune --write_docs # replace it between the BEGIN/END FLAGS markers of the doc
    python scripts/flag_table.py pretrain --write_docs
"""

import argparse
import sys
from dataclasses import MISSING, fields
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = {"finetune": REPO / "docs" / "finetuning.md", "pretrain": REPO / "docs" / "pretraining.md"}
BEGIN = "<!-- BEGIN FLAGS: python scripts/flag_table.py {which} --write_docs -->"
END = "<!-- END FLAGS -->"
#: defaults computed in `resolved()` rather than read from a recipe dict
COMPUTED = {
    "finetune": {"output_dir": "`outputs/finetune-<task>`; embedded: `outputs/finetune-embedded-sst2`",
                 "data_dir": "the Hub; embedded: the bundled SST-2 sample",
                 "model_config": "unset; embedded: the tiny model (2 x 128, 4 heads, 64 positions)",
                 "from_scratch": "`False`; embedded: `True`"},
    "pretrain": {"num_warmup_steps": "min(2000, 1% of the updates) (paper: 2000)"},
}


def _value(value) -> str:
    if isinstance(value, str):
        return f"`{value}`" if value else "`\"\"`"
    if isinstance(value, list):
        return " ".join(f"`{v}`" for v in value) if value else "none"
    return f"`{value}`"


def _default(f, recipes: list[tuple[str, dict]], computed: dict[str, str]) -> str:
    if f.name in computed:
        return computed[f.name]
    default = f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
    if default is not None:
        return _value(default)
    given = [f"{name} {_value(values[f.name])}".strip() for name, values in recipes if f.name in values]
    return "; ".join(given) if given else "unset"


def flag_table(which: str) -> str:
    """The markdown table of every option of ``scripts/{which}.py``."""
    from gpt1_hf import arguments as A

    if which == "finetune":
        cls = A.FinetuneArguments
        recipes = [("paper:", A.FINETUNE_PAPER_DEFAULTS), ("embedded:", A.FINETUNE_EMBEDDED_DEFAULTS)]
    elif which == "pretrain":
        cls, recipes = A.PretrainArguments, [("", A.PRETRAIN_DEFAULTS)]
    else:
        raise ValueError(f"which must be finetune or pretrain, got {which!r}")
    rows = ["| flag | default | help |", "|---|---|---|"]
    for f in fields(cls):
        flag = f"`--{f.name}`" + (f" / `--no_{f.name}`" if f.default is True else "")
        text = " ".join(f.metadata.get("help", "").split()).replace("|", "\\|").replace("<", "&lt;")
        rows.append(f"| {flag} | {_default(f, recipes, COMPUTED[which]).replace('|', chr(92) + '|')} | {text} |")
    return "\n".join(rows)


def write_docs(which: str) -> Path:
    path = DOCS[which]
    text = path.read_text(encoding="utf-8")
    begin = BEGIN.format(which=which)
    if begin not in text or END not in text[text.index(begin):]:
        raise ValueError(f"{path} has no {begin} ... {END} block")
    head, rest = text.split(begin, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{begin}\n{flag_table(which)}\n{END}{tail}", encoding="utf-8")
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("which", choices=sorted(DOCS))
    p.add_argument("--write_docs", action="store_true", help="replace the table in the doc instead of printing it")
    ns = p.parse_args(argv)
    if ns.write_docs:
        print(f"wrote {write_docs(ns.which)}")
    else:
        print(flag_table(ns.which))
    return 0


if __name__ == "__main__":
    sys.exit(main())
