"""A fine-tuning run's data: the task's training, evaluation and prediction splits -- a paper task's files
(`gpt1_hf.data`) or your own (`gpt1_hf.user_data`) -- loaded and encoded with the paper's input transformations
before anything trains, with what was read and done to each split (``info``, for ``results.json``).

Both `load_task_data` and `encode_user_data` return ``{"train", "eval", "predict": [(split, encoded)], "info",
"sizes", "truncated"}``; `data_fingerprint` is the short hash a checkpoint records of its training split.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from .tasks import TaskSpec
from .user_data import DataOptions

if TYPE_CHECKING:  # annotations only
    from .arguments import FinetuneArguments

logger = logging.getLogger(__name__)

__all__ = ["load_task_data", "read_user_data", "encode_user_data", "data_fingerprint", "report_data"]




def _load_split(spec, split, args, max_examples, tokenizer, max_length):
    """(raw, encoded, n_truncated, load info dict) of one split; the info (`gpt1_hf.data.LoadInfo`: files, partial
    sample, split substitution, rows dropped without a gold label) goes to ``results["data"]``."""
    from .data import encode_dataset, load_task_split

    raw, info = load_task_split(spec, split, data_dir=args.data_dir, max_examples=max_examples, seed=args.seed,
                                return_info=True)
    if len(raw) == 0:
        raise ValueError(f"task {spec.name} split {split!r} has no examples")
    encoded, n_truncated = encode_dataset(raw, spec, tokenizer, max_length=max_length)
    info = asdict(info)
    info["num_truncated"] = int(n_truncated)
    return raw, encoded, n_truncated, info


def report_data(data: dict[str, dict], is_main_process: bool) -> None:
    """One line per loaded split on stdout (main process): what was read and what was done to it."""
    from .data import describe_load_info

    if not is_main_process:
        return
    for info in data.values():
        print(f"data: {describe_load_info(info)}", flush=True)


def data_fingerprint(encoded) -> str:
    """A short hash of an encoded split (labels, lengths, token ids): what a checkpoint's run was trained on."""
    digest = hashlib.sha256()
    for column in ("labels", "length"):
        if column in encoded.column_names:
            digest.update(np.asarray(encoded[column], dtype=np.float64).tobytes())
    for ids in encoded["input_ids"][:: max(1, len(encoded) // 256)]:  # a sample of rows: cheap on big splits
        for row in ids if ids and isinstance(ids[0], (list, tuple)) else [ids]:  # multiple choice: a row a choice
            digest.update(np.asarray(row, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]



def load_task_data(spec: TaskSpec, args: FinetuneArguments, tokenizer, max_length: int) -> dict[str, Any]:
    """Training, evaluation and prediction splits, loaded and encoded before training: an explicit
    ``--predict_splits`` that cannot be loaded fails here, before anything is trained; a missing default is skipped."""
    _, train, train_trunc, train_info = _load_split(spec, args.train_split, args, args.max_train_samples, tokenizer,
                                                    max_length)
    _, evals, eval_trunc, eval_info = _load_split(spec, args.eval_split, args, args.max_eval_samples, tokenizer,
                                                  max_length)
    if any(float(x) < 0 for x in evals["labels"]):  # -1 marks unlabeled examples (test splits)
        raise ValueError(f"task {spec.name} split {args.eval_split!r} is unlabeled; evaluate on a labeled split")
    data = {"train": train, "eval": evals, "predict": [], "info": {args.train_split: train_info,
                                                                 args.eval_split: eval_info},
            "sizes": {"train": len(train), args.eval_split: len(evals)},
            "truncated": {args.train_split: train_trunc, args.eval_split: eval_trunc}}
    explicit = args.predict_splits is not None
    for split in dict.fromkeys(args.predict_splits if explicit else spec.default_predict_splits):
        if split in (args.eval_split, args.train_split):
            continue
        try:
            _, enc, n_trunc, info = _load_split(spec, split, args, None, tokenizer, max_length)
        except (FileNotFoundError, ValueError) as e:
            if explicit:
                raise ValueError(f"--predict_splits {split!r} cannot be loaded for task {spec.name}: {e}") from e
            (logger.info if isinstance(e, FileNotFoundError) else logger.warning)("no %s predictions: %s", split, e)
            continue
        data["predict"].append((split, enc))
        data["sizes"][split], data["truncated"][split], data["info"][split] = len(enc), n_trunc, info
    return data


def read_user_data(args: FinetuneArguments):
    """Your data (`gpt1_hf.user_data`): the task it defines and its raw splits."""
    from .user_data import load_user_task

    predict = args.predict_splits if args.predict_splits is not None else ["test"]
    splits = list(dict.fromkeys([args.train_split, args.eval_split, *predict]))
    spec, raw = load_user_task(DataOptions.from_args(args), splits=splits, seed=args.seed,
                               max_samples={args.train_split: args.max_train_samples,
                                            args.eval_split: args.max_eval_samples})
    for split, flag in ((args.train_split, "--train_file"), (args.eval_split, "--validation_file")):
        if split not in raw:
            raise ValueError(f"no {split} data for {spec.name}: pass {flag} (or a --dataset_name with a {split} "
                             "split)")
    if args.predict_splits is not None and (missing := [s for s in predict if s not in raw]):
        raise ValueError(f"--predict_splits {missing}: no such data for {spec.name} (pass --test_file)")
    return spec, raw


def encode_user_data(spec: TaskSpec, args: FinetuneArguments, raw: dict, tokenizer, max_length: int) -> dict:
    """The splits of your data encoded with the paper's input transformations; the same layout as `load_task_data`."""
    from .data import encode_dataset

    data: dict[str, Any] = {"predict": [], "info": {}, "sizes": {}, "truncated": {}}
    for split, (dataset, info) in raw.items():
        encoded, n_truncated = encode_dataset(dataset, spec, tokenizer, max_length=max_length)
        data["info"][split] = {**info, "num_truncated": int(n_truncated)}
        data["sizes"]["train" if split == args.train_split else split] = len(encoded)
        data["truncated"][split] = n_truncated
        if split == args.train_split:
            data["train"] = encoded
        elif split == args.eval_split:
            if any(float(x) < 0 for x in encoded["labels"]):
                raise ValueError(f"the {split} data of {spec.name} has rows without a label; evaluation needs them")
            data["eval"] = encoded
        else:
            data["predict"].append((split, encoded))
    return data
