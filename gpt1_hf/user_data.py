"""Bring your own data (issue #14): any Hub dataset or csv / tsv / json / jsonl / parquet files as a GPT-1 task.

`load_user_task(options)` reads the data with the `datasets` builders (``load_dataset("csv" | "json" | "parquet",
data_files=...)``, or ``load_dataset(dataset_name, config)``), builds a `gpt1_hf.tasks.TaskSpec` for it and returns,
per split, the NORMALIZED dataset of `gpt1_hf.data.load_task_split` (same columns, same features, the `LoadInfo` in
``dataset.info.description``) and its load-info dict, so `encode_dataset`, the collator, `compute_task_metrics` and
`describe_load_info` work on it unchanged.

Files: ``.csv`` (RFC-4180 quoting), ``.tsv`` (the csv builder with ``delimiter="\t"`` and ``quoting=csv.QUOTE_NONE``
as GLUE: a ``"`` anywhere in a field is text), ``.json`` (a list of objects, or JSON Lines), ``.jsonl``, ``.parquet``,
optionally ``.gz`` / ``.bz2`` / ``.xz`` / ``.zst`` compressed. csv / tsv keep ``NA``, ``None``, ``null`` as text (only
a blank field is missing).

Task kinds (``--task_type``; the paper's input transformations, Figure 1):

* ``classification`` with 1 text column -> ``"single"`` ``[s] text [e]``; with 2 -> ``"pair"``, the entailment
  transformation ``[s] a [d] b [e]``.
* ``similarity`` (2 text columns) -> ``"similarity"``: both orderings, summed by the model.
* ``multiple_choice`` -> ``"multiple_choice"``: ``[s] context [d] choice_k [e]`` per choice; ``--text_columns`` is
  ``[context]`` or ``[context, question]`` (context = context + " " + question, as for RACE: truncation cuts the end
  of the context, never the question, a choice or the extract token). Choices come from ``--choice_columns`` (one
  column per choice) or ``--choices_column`` (one list-valued column, e.g. ``["a", "b", "c"]``).

Columns, as in transformers' ``run_glue``: ``sentence1``/``sentence2`` when both exist, else the first 1 or 2 string
columns that are not the label column or an id column (``idx``, ``id``, ``index``, ``guid``); classification takes up
to 2, similarity exactly 2. Multiple choice without ``--text_columns``: the first such string column (+ ``question``
when present); without ``--choices_column`` / ``--choice_columns``: the one list-of-strings column, if exactly one.
``--label_column`` defaults to ``label``. The columns used are logged and kept in the load info.

Labels:

* Regression when the training label column has a float type (as ``run_glue``: a csv column ``0.0, 1.0`` is a
  float column) and the task is classification or similarity; the model gets ``num_labels=1``.
* Otherwise classes: ``--label_names`` (model-output order), else the ClassLabel names of a Hub dataset, else the
  sorted set of the labels seen in the training split (integers sorted numerically, strings alphabetically). A label
  in the data is a class name, or an integer class index 0..n-1 when no class name looks like an integer.
* Multiple choice: the label says which choice is right: a 0-based or 1-based position, a letter (``A``, ``B``...),
  the name of a ``--choice_columns`` column, or one of ``--label_names`` (one name per choice, in order).
* A validation / test label that is not a known class is an error naming it, the file and the known labels. A test
  file without the label column loads with label -1 (unlabeled). Hub ClassLabel -1 rows ("no gold label") are
  dropped from train / validation and counted (``num_dropped_no_gold``), kept as unlabeled in test.

Default metrics (``--metric`` overrides; the first one is the task's reported / primary metric):

* classification (single, pair, similarity with classes) and multiple choice: ``accuracy``
  (``f1`` is offered: binary F1 of class 1, i.e. ``label_names[1]``, for 2 classes; macro F1 for more classes;
  ``f1_macro`` always macro; ``matthews_correlation``);
* regression: ``pearson``, ``spearmanr``.

All are computed by `gpt1_hf.metrics.compute_task_metrics` through ``evaluate`` with the bundled offline module.

Errors are ValueErrors (FileNotFoundError for a missing file) in one message naming the flag, the file (and row) and
the fix: a missing column lists the file's columns and the flag to set (``--text_columns``, ``--label_column``,
``--choice_columns``, ``--choices_column``); an unknown label names the known ones and where they came from; an
empty file or split, an unknown suffix (listing the supported ones), and a ``--dataset_name`` that cannot be loaded
(offline, not found: suggests ``--train_file``; raised ``from None``, no traceback chain).

Presets: ``task_name`` (a paper task of `gpt1_hf.tasks.TASKS`) with files or ``dataset_name`` gives that task's
kind, label names (and label spellings), metrics, truncation side and GLUE submission name; its columns are the
Hub / local column names of the task (e.g. ``sentence``/``label`` for sst2, ``#1 String``/``Quality`` for MRPC)
unless ``--text_columns`` / ``--label_column`` name others. The paper tasks' own local layouts (``data_dir``) stay in
`gpt1_hf.data.load_task_split`.

Task name of a user task (``results.json``, card, file names): the preset name; else the Hub dataset's last path
part (+ ``_<config>``); else the training file's stem (its folder's name when the stem is generic such as
``train``); prefixed with ``custom_`` when that would clash with a paper task name. Always file-name safe.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from .data import LoadInfo, dataset_from_columns
from .tasks import HubSource, TaskSpec, get_task

__all__ = [
    "DataOptions",
    "TASK_TYPES",
    "FILE_FORMATS",
    "CLASSIFICATION_METRICS",
    "REGRESSION_METRICS",
    "DEFAULT_METRICS",
    "has_user_data",
    "check_data_options",
    "load_user_task",
]

logger = logging.getLogger(__name__)

TASK_TYPES = ("classification", "similarity", "multiple_choice")
#: file suffix -> (datasets builder, builder options). GLUE-style tsv: quoting off, so a `"` is read literally;
#: csv / tsv keep "NA", "None", "null" as text (pandas would make them missing and a label column float)
FILE_FORMATS: dict[str, tuple[str, dict]] = {
    ".csv": ("csv", {"keep_default_na": False}),
    ".tsv": ("csv", {"delimiter": "\t", "quoting": csv.QUOTE_NONE, "keep_default_na": False}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")
CLASSIFICATION_METRICS = ("accuracy", "f1", "f1_macro", "matthews_correlation")
REGRESSION_METRICS = ("pearson", "spearmanr")
DEFAULT_METRICS = {"classification": ("accuracy",), "regression": ("pearson", "spearmanr"),
                   "multiple_choice": ("accuracy",)}
_ID_COLUMNS = ("idx", "id", "index", "guid")
_HUB_VALIDATION = ("validation", "validation_matched", "dev", "valid", "val")
_GENERIC_STEMS = {"train", "training", "dev", "valid", "validation", "val", "test", "data", "dataset", "all"}


@dataclass
class DataOptions:
    """The data flags of ``scripts/finetune.py`` / ``evaluate_checkpoint.py`` (same names and meaning)."""

    dataset_name: str | None = None
    dataset_config_name: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    test_file: str | None = None
    task_type: str | None = None
    text_columns: list[str] | None = None
    choice_columns: list[str] | None = None
    choices_column: str | None = None
    label_column: str = "label"
    label_names: list[str] | None = None
    metric: list[str] | None = None
    task_name: str | None = None

    @classmethod
    def from_args(cls, args: Any) -> DataOptions:
        """The options from any object with attributes of the same names (e.g. ``FinetuneArguments``)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        if values.get("label_column") is None:
            values.pop("label_column", None)
        return cls(**values)

    def files(self) -> dict[str, str]:
        """split -> file, for the files given."""
        given = {"train": self.train_file, "validation": self.validation_file, "test": self.test_file}
        return {s: f for s, f in given.items() if f}


def has_user_data(options: DataOptions) -> bool:
    """True when the options name a data source of their own (files or a Hub dataset), i.e. `load_user_task`
    applies; False for a paper task alone (`gpt1_hf.data.load_task_split`)."""
    return bool(options.dataset_name or options.files())


def check_data_options(options: DataOptions) -> None:
    """Flag combinations that cannot work, raised before anything is read (call it when parsing arguments)."""
    if options.dataset_name and options.files():
        raise ValueError("give either --dataset_name or --train_file/--validation_file/--test_file, not both")
    if not has_user_data(options):
        raise ValueError("no data: pass --train_file/--validation_file/--test_file (csv, tsv, json, jsonl or "
                         "parquet) or --dataset_name (a Hugging Face Hub dataset)")
    if options.task_type is not None and options.task_type not in TASK_TYPES:
        raise ValueError(f"--task_type {options.task_type!r}: use one of {', '.join(TASK_TYPES)}")
    task_type = _task_type(options)
    n_text = len(options.text_columns or ())
    if options.text_columns is not None and not 1 <= n_text <= 2:
        what = "[context] or [context, question]" if task_type == "multiple_choice" else "1 or 2 columns"
        raise ValueError(f"--text_columns takes {what}, got {list(options.text_columns)}")
    if task_type == "similarity" and options.text_columns is not None and n_text != 2:
        raise ValueError(f"--task_type similarity needs 2 --text_columns, got {list(options.text_columns)}")
    if options.choice_columns and options.choices_column:
        raise ValueError("give --choice_columns (one column per choice) or --choices_column (one list column), "
                         "not both")
    if (options.choice_columns or options.choices_column) and task_type != "multiple_choice":
        raise ValueError("--choice_columns / --choices_column need --task_type multiple_choice")
    if options.choice_columns is not None and len(options.choice_columns) < 2:
        raise ValueError(f"--choice_columns needs at least 2 columns, got {list(options.choice_columns)}")
    if options.label_names is not None and len(set(options.label_names)) != len(options.label_names):
        raise ValueError(f"--label_names has duplicates: {list(options.label_names)}")
    for files_split, path in options.files().items():
        _file_format(path, files_split)
    _preset(options)


def _task_type(options: DataOptions) -> str:
    """--task_type, else the preset's kind, else classification."""
    if options.task_type:
        return options.task_type
    preset = get_task(options.task_name) if options.task_name else None
    if preset is not None:
        return {"single": "classification", "pair": "classification"}.get(preset.kind, preset.kind)
    return "classification"


def _preset(options: DataOptions) -> TaskSpec | None:
    """The paper task named by --task_name (None without one); its kind must agree with --task_type."""
    if not options.task_name:
        return None
    preset = get_task(options.task_name)
    expected = {"single": "classification", "pair": "classification"}.get(preset.kind, preset.kind)
    if options.task_type and options.task_type != expected:
        raise ValueError(f"--task_name {preset.name} is a {expected} task, but --task_type is {options.task_type}")
    return preset


def _file_format(path: str, split: str) -> tuple[str, dict, str]:
    """(datasets builder, its options, format name) of a data file, from its suffix."""
    name = os.path.basename(str(path)).lower()
    for comp in _COMPRESSIONS:
        if name.endswith(comp):
            name = name[: -len(comp)]
    suffix = os.path.splitext(name)[1]
    if suffix not in FILE_FORMATS:
        raise ValueError(f"--{split}_file {path}: unknown file type {suffix or '(none)'!r}; supported: "
                         f"{', '.join(FILE_FORMATS)} (optionally compressed: {', '.join(_COMPRESSIONS)})")
    builder, kwargs = FILE_FORMATS[suffix]
    return builder, dict(kwargs), suffix[1:]


# ======================================================================================================================
# Reading raw splits
# ======================================================================================================================


@dataclass
class _Raw:
    """One split as read by a datasets builder, with a readable name of where it came from."""

    split: str
    dataset: Any
    where: str
    flag: str  # the flag that gave it (--train_file ...), for error messages
    info: LoadInfo


def _read_file(path: str, split: str, task: str, cache_dir: str | None) -> _Raw:
    """One data file through the datasets builders; an empty or unreadable file is an error naming it."""
    import datasets

    flag = f"--{split}_file"
    builder, kwargs, fmt = _file_format(path, split)
    if not any(c in str(path) for c in "*?[") and not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path}: no such file")
    empty = ValueError(f"{flag} {path} is empty: it has no data rows; fill it or leave {flag} out")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise empty
    try:
        ds = datasets.load_dataset(builder, data_files={split: str(path)}, split=split, cache_dir=cache_dir, **kwargs)
    except ValueError as e:
        if "corresponds to no data" in str(e):
            raise empty from None
        raise ValueError(f"{flag} {path}: cannot read it as {fmt}: {e}") from None
    except datasets.exceptions.DatasetGenerationError as e:
        cause = e.__cause__ or e
        raise ValueError(f"{flag} {path}: cannot read it as {fmt}: {type(cause).__name__}: {cause}") from None
    if len(ds) == 0:
        raise empty
    info = LoadInfo(task=task, split=split, source="local", layout=fmt, files=[str(path)])
    return _Raw(split, ds, str(path), flag, info)


def _read_hub(options: DataOptions, splits: Sequence[str], task: str, cache_dir: str | None) -> dict[str, _Raw]:
    """The requested splits of a Hub dataset; any failure to load it is one ValueError suggesting --train_file."""
    import datasets

    name, config = options.dataset_name, options.dataset_config_name
    try:
        loaded = datasets.load_dataset(name, config, cache_dir=cache_dir)
    except Exception as e:  # offline, not found, gated, bad config: one clear line instead of a traceback chain
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(
            f"cannot load --dataset_name {name!r}{f' (config {config!r})' if config else ''}: {type(e).__name__}: "
            f"{first[:300]}. Offline, or not on the Hub? Load it once online (it is then cached), or pass your data "
            "as files: --train_file/--validation_file/--test_file (csv, tsv, json, jsonl or parquet)"
        ) from None
    out = {}
    for split in splits:
        candidates = _HUB_VALIDATION if split == "validation" else (split,)
        hub_split = next((c for c in candidates if c in loaded), None)
        if hub_split is None:
            continue
        ds = loaded[hub_split]
        where = f"{name}/{config or 'default'}[{hub_split}]"
        if len(ds) == 0:
            raise ValueError(f"--dataset_name {where} is empty: it has no rows")
        info = LoadInfo(task=task, split=split, source="hub", hub_path=name, hub_config=config, hub_split=hub_split)
        out[split] = _Raw(split, ds, where, "--dataset_name", info)
    if not out:
        raise ValueError(f"--dataset_name {name!r} has none of the splits {list(splits)} (it has {list(loaded)})")
    return out


def _read_raw(options: DataOptions, splits: Sequence[str], task: str, cache_dir: str | None) -> dict[str, _Raw]:
    if options.dataset_name:
        return _read_hub(options, splits, task, cache_dir)
    files = options.files()
    return {s: _read_file(files[s], s, task, cache_dir) for s in splits if s in files}


# ======================================================================================================================
# Columns
# ======================================================================================================================


def _dtype(ds, column: str) -> str:
    feature = ds.features.get(column)
    return getattr(feature, "dtype", None) or type(feature).__name__


def _is_text(ds, column: str) -> bool:
    return _dtype(ds, column) in ("string", "large_string")


def _is_text_list(ds, column: str) -> bool:
    feature = ds.features.get(column)
    inner = getattr(feature, "feature", None)
    return inner is not None and getattr(inner, "dtype", None) in ("string", "large_string")


def _missing_column(raw: _Raw, column: str, role: str, flag: str) -> ValueError:
    return ValueError(f"{raw.flag} {raw.where}: no {role} column {column!r}; the file has the columns "
                      f"{raw.dataset.column_names}: set {flag}")


def _preset_candidates(preset: TaskSpec | None) -> dict[str, list[str]]:
    """Normalized field -> column names the preset's data uses (Hub columns first, then its local layouts)."""
    out: dict[str, list[str]] = {}
    if preset is None:
        return out
    if preset.hub is not None:
        for norm, col in preset.hub.columns.items():
            out.setdefault(norm, []).append(col)
    for layout in preset.layouts:
        for norm, cols in layout.fields.items():
            out.setdefault(norm, []).extend(c for c in cols if c not in out.get(norm, []))
    return out


def _first_present(ds, candidates: Sequence[str]) -> str | None:
    return next((c for c in candidates if c in ds.column_names), None)


def _infer_text_columns(raw: _Raw, exclude: set[str], count: tuple[int, int]) -> list[str]:
    """run_glue's rule: sentence1/sentence2 if present, else the first string columns (label / ids excluded)."""
    cols = raw.dataset.column_names
    if count[1] == 2 and "sentence1" in cols and "sentence2" in cols:
        return ["sentence1", "sentence2"]
    texts = [c for c in cols if c not in exclude and c.lower() not in _ID_COLUMNS and _is_text(raw.dataset, c)]
    if len(texts) < count[0]:
        raise ValueError(f"{raw.flag} {raw.where}: found {len(texts)} text column(s) {texts} among the columns "
                         f"{cols}, need {count[0]}: set --text_columns")
    return texts[: count[1]]


def _resolve_columns(options: DataOptions, task_type: str, preset: TaskSpec | None, ref: _Raw) -> dict[str, Any]:
    """Which source column plays which role, decided on the reference (training) split."""
    cand = _preset_candidates(preset)
    label = list(dict.fromkeys([options.label_column] + cand.get("label", [])))
    idx = list(dict.fromkeys(cand.get("idx", []) + cand.get("id", []) + list(_ID_COLUMNS)))
    roles: dict[str, Any] = {"label": label, "idx": idx}
    label_col = _first_present(ref.dataset, label) or options.label_column
    if task_type == "multiple_choice":
        return {**roles, **_resolve_choice_columns(options, preset, cand, ref, label_col)}
    if options.text_columns:
        roles["text"] = list(options.text_columns)
    elif preset is not None:
        names = ("text_a", "text_b") if preset.kind in ("pair", "similarity") else ("text_a",)
        roles["text"] = [_first_present(ref.dataset, cand.get(n, [])) for n in names]
        if None in roles["text"]:
            n = names[roles["text"].index(None)]
            raise _missing_column(ref, " or ".join(cand.get(n, [n])), f"{preset.name} {n}", "--text_columns")
    else:
        count = (2, 2) if task_type == "similarity" else (1, 2)
        roles["text"] = _infer_text_columns(ref, {label_col}, count)
    return roles


def _resolve_choice_columns(options, preset, cand, ref: _Raw, label_col: str) -> dict[str, Any]:
    """Context / question / choices columns of a multiple-choice task."""
    ds = ref.dataset
    if options.choice_columns:
        choices = {"choice_columns": list(options.choice_columns)}
    elif options.choices_column:
        choices = {"choices_column": options.choices_column}
    elif preset is not None and _first_present(ds, cand.get("options", [])):
        choices = {"choices_column": _first_present(ds, cand["options"])}
    elif preset is not None and all(c in ds.column_names for c in cand.get("choices", ["?"])):
        choices = {"choice_columns": list(cand["choices"])}
    else:
        lists = [c for c in ds.column_names if _is_text_list(ds, c)]
        if len(lists) != 1:
            raise ValueError(f"{ref.flag} {ref.where}: which columns hold the choices? The file has the columns "
                             f"{ds.column_names}: set --choice_columns (one column per choice) or --choices_column "
                             "(one list column)")
        choices = {"choices_column": lists[0]}
    used = set(choices.get("choice_columns", [])) | {choices.get("choices_column"), label_col}
    if options.text_columns:
        context, question = [options.text_columns[0]], (list(options.text_columns) + [None])[1]
    elif preset is not None and all(c in ds.column_names for c in cand.get("context", ["?"])):
        context, question = list(cand["context"]), None  # Story Cloze: the story sentences, joined
    elif preset is not None and _first_present(ds, cand.get("article", [])):
        context, question = [_first_present(ds, cand["article"])], _first_present(ds, cand.get("question", []))
    else:
        context = _infer_text_columns(ref, used | {"question"}, (1, 1))
        question = "question" if "question" in ds.column_names and _is_text(ds, "question") else None
    return {**choices, "context": context, "question": question}


def _check_columns(raw: _Raw, roles: Mapping[str, Any]) -> None:
    """Every split has the columns chosen on the training split (the label only where labels are required)."""
    cols = raw.dataset.column_names
    for column in roles.get("text", []):
        if column not in cols:
            raise _missing_column(raw, column, "text", "--text_columns")
    for column in roles.get("context", []) + [roles.get("question")]:
        if column is not None and column not in cols:
            raise _missing_column(raw, column, "context/question", "--text_columns")
    for column in roles.get("choice_columns", []):
        if column not in cols:
            raise _missing_column(raw, column, "choice", "--choice_columns")
    column = roles.get("choices_column")
    if column is not None and column not in cols:
        raise _missing_column(raw, column, "choices (list)", "--choices_column")
    if _first_present(raw.dataset, roles["label"]) is None and raw.split != "test":
        raise _missing_column(raw, " or ".join(roles["label"]), "label", "--label_column")


# ======================================================================================================================
# Labels
# ======================================================================================================================


@dataclass
class _Labels:
    """How raw labels become targets: regression, or class names with a lookup from raw label keys to indices."""

    regression: bool
    names: tuple[str, ...] | None
    lookup: dict[str, int] = field(default_factory=dict)
    #: where the names came from, for error messages ("the training file x.csv", "--label_names", ...)
    origin: str = ""


def _is_missing(value) -> bool:
    """None, NaN or a blank string (an empty csv field)."""
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip())


def _key(value) -> str:
    """A raw label as a lookup key: 1, 1.0, "1" and " 1 " are all "1" (csv / json / parquet type the same data
    differently)."""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _is_int_like(text: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", text) is not None


def _raw_keys(raw: _Raw, column: str, drop: Sequence[str] = ()) -> list[str]:
    """Distinct label keys of a split (missing labels, ClassLabel -1 and "no gold label" markers left out)."""
    feature = raw.dataset.features[column]
    names = getattr(feature, "names", None)
    keys = []
    for value in raw.dataset.unique(column):
        if _is_missing(value) or (names is not None and int(value) < 0):
            continue
        key = names[int(value)] if names is not None else _key(value)
        if key not in drop:
            keys.append(key)
    return keys


def _sorted_labels(keys: Sequence[str]) -> tuple[str, ...]:
    """Integers numerically (2 before 10), anything else alphabetically."""
    keys = sorted(set(keys))
    if keys and all(_is_int_like(k) for k in keys):
        return tuple(sorted(keys, key=int))
    return tuple(keys)


def _lookup(names: Sequence[str], preset: TaskSpec | None = None, fold_case: bool = False) -> dict[str, int]:
    """Raw key -> class index: the names (and a preset's spellings); integer indices when no name is an integer."""
    out = {n: i for i, n in enumerate(names)}
    if preset is not None and preset.label_values is not None and tuple(names) == preset.label_names:
        for i, v in enumerate(preset.label_values):
            out.setdefault(v, i)
        for raw, value in _preset_aliases(preset).items():
            out.setdefault(raw, out[value])
    if not any(_is_int_like(n) for n in names):
        for i in range(len(names)):
            out.setdefault(str(i), i)
    if fold_case:
        out.update({k.lower(): v for k, v in list(out.items())})
    return out


def _preset_aliases(preset: TaskSpec) -> dict[str, str]:
    aliases = dict(preset.hub.label_aliases) if preset.hub is not None else {}
    for layout in preset.layouts:
        aliases.update(layout.label_aliases)
    return aliases


def _class_labels(options, preset, ref: _Raw | None, roles, train: bool) -> _Labels:
    """Regression or the class names of a classification / similarity task."""
    column = _first_present(ref.dataset, roles["label"]) if ref is not None else None
    feature = ref.dataset.features.get(column) if column else None
    is_float = column is not None and str(_dtype(ref.dataset, column)).startswith("float")
    if preset is not None and options.label_names is None:
        if preset.is_regression:
            return _Labels(True, None, origin=f"the {preset.name} preset")
        return _Labels(False, preset.label_names, _lookup(preset.label_names, preset), f"the {preset.name} preset")
    if options.label_names is not None:
        names = tuple(options.label_names)
        return _Labels(False, names, _lookup(names), "--label_names")
    if is_float:  # run_glue: a float label column means regression
        return _Labels(True, None, origin=f"the float labels of {ref.where}")
    if getattr(feature, "names", None):
        names = tuple(feature.names)
        return _Labels(False, names, _lookup(names), f"the class names of {ref.where}")
    if ref is None or column is None or not train:
        where = ref.where if ref is not None else "the data"
        raise ValueError(f"no training split to read the label names from ({where}): pass --label_names, in the "
                         "order of the model's classes (its config.id2label)")
    names = _sorted_labels(_raw_keys(ref, column, preset.drop_labels if preset else ()))
    if len(names) < 2 and ref.split == "train":
        raise ValueError(f"{ref.flag} {ref.where}: the label column {column!r} has {len(names)} distinct label(s) "
                         f"{list(names)}; classification needs at least 2 (or pass --label_names)")
    return _Labels(False, names, _lookup(names), f"the training labels of {ref.where}")


def _choice_labels(options, preset, ref: _Raw | None, roles, n_choices: int) -> _Labels:
    """Names of the choice positions of a multiple-choice task, and how the data's labels point to them."""
    given = options.label_names or (preset.label_names if preset is not None else None)
    if given is not None:
        if len(given) != n_choices:
            raise ValueError(f"{'--label_names' if options.label_names else preset.name} gives {len(given)} names "
                             f"{list(given)} for {n_choices} choices: give one name per choice, in order")
        use_preset = preset if options.label_names is None else None
        return _Labels(False, tuple(given), _lookup(given, use_preset, fold_case=True), "--label_names")
    column = _first_present(ref.dataset, roles["label"]) if ref is not None else None
    if column is None:
        zero = tuple(str(i) for i in range(n_choices))
        return _Labels(False, zero, _lookup(zero), "0-based choice positions")
    feature = ref.dataset.features[column]
    keys = set(_raw_keys(ref, column))
    if getattr(feature, "names", None) and len(feature.names) == n_choices:
        names, origin = tuple(feature.names), f"the class names of {ref.where}"
    elif keys and all(_is_int_like(k) for k in keys):
        values = {int(k) for k in keys}
        one_based = 0 not in values and n_choices in values
        names = tuple(str(i + one_based) for i in range(n_choices))
        origin = f"{'1' if one_based else '0'}-based choice positions in {ref.where}"
    elif keys and all(re.fullmatch(r"[A-Za-z]", k) for k in keys):
        names, origin = tuple(chr(ord("A") + i) for i in range(n_choices)), f"choice letters in {ref.where}"
    elif keys and keys <= set(roles.get("choice_columns", [])):
        names, origin = tuple(roles["choice_columns"]), f"choice column names in {ref.where}"
    else:
        raise ValueError(f"{ref.flag} {ref.where}: cannot tell which choice the labels {sorted(keys)[:8]} point to: "
                         "use choice positions (0-based or 1-based), letters A, B, ..., the --choice_columns names, "
                         "or pass --label_names (one name per choice, in order)")
    return _Labels(False, names, _lookup(names, fold_case=True), origin)


def _metrics(options: DataOptions, preset: TaskSpec | None, kind: str, regression: bool) -> tuple[str, ...]:
    """--metric, else the preset's metrics, else the defaults of the task kind (module docstring)."""
    allowed = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
    if options.metric:
        names = tuple(dict.fromkeys(options.metric))
        bad = [m for m in names if m not in allowed]
        if bad:
            what = "a regression" if regression else "a classification"
            raise ValueError(f"--metric {' '.join(bad)}: not available for {what} task; use {', '.join(allowed)}")
        return names
    if preset is not None:
        return preset.metrics
    if kind == "multiple_choice":
        return DEFAULT_METRICS["multiple_choice"]
    return DEFAULT_METRICS["regression" if regression else "classification"]


# ======================================================================================================================
# Normalized rows
# ======================================================================================================================


def _text(value, column: str, flag: str, where: str) -> str:
    if _is_missing(value) or not str(value).strip():
        raise ValueError(f"{where}: empty text in column {column!r} ({flag}); fill it or remove the row")
    return str(value).strip()


class _Targets:
    """Raw labels of one split -> targets, counting unlabeled and dropped rows."""

    def __init__(self, raw: _Raw, spec: TaskSpec, labels: _Labels, column: str | None):
        self.raw, self.spec, self.labels, self.column = raw, spec, labels, column
        self.values = list(raw.dataset[column]) if column is not None else None
        feature = raw.dataset.features.get(column) if column is not None else None
        self.class_names = getattr(feature, "names", None)
        self.required = raw.split != "test"
        self.unlabeled = 0
        self.dropped = 0

    def __call__(self, i: int, where: str) -> int | float | None:
        """The target of row ``i``: class index / score, -1 unlabeled, None to drop the row."""
        unlabeled = -1.0 if self.labels.regression else -1
        value = None if self.values is None else self.values[i]
        if self.values is None or (_is_missing(value) and not self.required):
            self.unlabeled += 1
            return unlabeled
        if _is_missing(value):
            raise ValueError(f"{where}: missing label in column {self.column!r}; training and validation rows need "
                             "one (fill it or remove the row)")
        if self.class_names is not None:
            if int(value) < 0:  # Hub convention: -1 = no gold label (dropped) / unlabeled test row (kept)
                if self.required:
                    self.dropped += 1
                    return None
                self.unlabeled += 1
                return unlabeled
            value = self.class_names[int(value)]
        key = _key(value)
        if key in self.spec.drop_labels:
            self.dropped += 1
            return None
        if self.labels.regression:
            return self._score(value, where)
        index = self.labels.lookup.get(key)
        if index is None and self.spec.kind == "multiple_choice":  # letters / choice names: any case
            index = self.labels.lookup.get(key.lower())
        if index is None:
            raise ValueError(f"{where}: label {value!r} is not one of the known labels {list(self.labels.names)} "
                             f"(from {self.labels.origin}); fix the label or pass --label_names with every class")
        return index

    def _score(self, value, where: str) -> float:
        try:
            score = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: label {value!r} is not a number ({self.spec.name} is a regression task)") from None
        lo, hi = self.spec.label_range or (-math.inf, math.inf)
        if not math.isfinite(score) or not lo <= score <= hi:
            raise ValueError(f"{where}: label {value!r} outside [{lo}, {hi}] of {self.spec.name}")
        return score


def _idx(raw: _Raw, roles) -> list:
    column = _first_present(raw.dataset, roles["idx"])
    return list(raw.dataset[column]) if column is not None else [None] * len(raw.dataset)


def _as_int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _normalize(raw: _Raw, spec: TaskSpec, roles, labels: _Labels) -> tuple[dict[str, list], _Targets]:
    """The normalized columns of `gpt1_hf.data` for one split, with errors naming the file and row."""
    ds = raw.dataset
    targets = _Targets(raw, spec, labels, _first_present(ds, roles["label"]))
    idx = _idx(raw, roles)
    out: dict[str, list] = {}
    if spec.kind == "multiple_choice":
        context = [list(ds[c]) for c in roles["context"]]
        question = list(ds[roles["question"]]) if roles.get("question") else None
        if roles.get("choices_column"):
            choices = list(ds[roles["choices_column"]])
        else:
            choices = [list(row) for row in zip(*(list(ds[c]) for c in roles["choice_columns"]), strict=True)]
        flag = "--choices_column" if roles.get("choices_column") else "--choice_columns"
        for i in range(len(ds)):
            where = f"{raw.flag} {raw.where}: row {i + 1}"
            label = targets(i, where)
            if label is None:
                continue
            row = choices[i] or []
            if len(row) != spec.num_choices:
                raise ValueError(f"{where}: {len(row)} choices, the task has {spec.num_choices} (every row needs "
                                 "the same number of choices)")
            text = " ".join(_text(col[i], name, "--text_columns", where) for col, name in zip(context, roles["context"], strict=True))
            q = _text(question[i], roles["question"], "--text_columns", where) if question is not None else None
            values = {"context": f"{text} {q}" if q else text,
                      "choices": [_text(c, f"choice {k}", flag, where) for k, c in enumerate(row)],
                      "label": label, "idx": _as_int(idx[i], i), "id": "" if idx[i] is None else str(idx[i])}
            if question is not None:
                values["question"] = q
            for k, v in values.items():
                out.setdefault(k, []).append(v)
        return out, targets
    names = ("text_a", "text_b")[: len(roles["text"])]
    texts = [list(ds[c]) for c in roles["text"]]
    for i in range(len(ds)):
        where = f"{raw.flag} {raw.where}: row {i + 1}"
        label = targets(i, where)
        if label is None:
            continue
        for name, col, column in zip(names, texts, roles["text"], strict=True):
            out.setdefault(name, []).append(_text(col[i], column, "--text_columns", where))
        out.setdefault("label", []).append(label)
        out.setdefault("idx", []).append(_as_int(idx[i], i))
    return out, targets


def _subsample(columns: dict[str, list], max_examples: int | None, seed: int) -> dict[str, list]:
    """A random subset of ``max_examples`` rows in the original order (as `load_task_split`)."""
    n = len(columns.get("label", ()))
    if max_examples is None or max_examples >= n:
        return columns
    chosen = sorted(int(i) for i in np.random.RandomState(seed).choice(n, size=max_examples, replace=False))
    return {k: [v[i] for i in chosen] for k, v in columns.items()}


# ======================================================================================================================
# Task spec and the public loader
# ======================================================================================================================


def _task_name(options: DataOptions, preset: TaskSpec | None) -> str:
    """A readable, file-name-safe task name (module docstring)."""
    if preset is not None:
        return preset.name
    if options.dataset_name:
        base = options.dataset_name.rstrip("/").split("/")[-1]
        if options.dataset_config_name:
            base = f"{base}_{options.dataset_config_name}"
    else:
        path = next(iter(options.files().values()))
        stem = re.sub(r"[_.-](train|training)$", "", os.path.basename(path).split(".")[0], flags=re.I)
        parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
        base = parent if stem.lower() in _GENERIC_STEMS and parent else stem
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("._-") or "custom"
    try:
        get_task(name)
    except ValueError:
        return name
    return f"custom_{name}"  # never mistaken for the paper's task of that name


def _kind(task_type: str, roles) -> str:
    if task_type == "classification":
        return "pair" if len(roles["text"]) == 2 else "single"
    return task_type


def _source_note(options: DataOptions, raws: Mapping[str, _Raw], roles) -> str:
    """Where the data came from and which columns were used, in one line (card, logs)."""
    shown = {k: v for k, v in roles.items() if k not in ("idx",) and v}
    shown["label"] = roles["label"][0]
    cols = ", ".join(f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in shown.items())
    if options.dataset_name:
        return f"Hub dataset {options.dataset_name} (config {options.dataset_config_name or 'default'}); columns {cols}"
    return "local files " + ", ".join(f"{s}={os.path.basename(r.where)}" for s, r in raws.items()) + f"; columns {cols}"


def _build_spec(options, preset, name, kind, labels: _Labels, metrics, note: str, raws) -> TaskSpec:
    hub = None
    if options.dataset_name:
        hub = HubSource(path=options.dataset_name, config=options.dataset_config_name,
                        splits={s: r.info.hub_split for s, r in raws.items()}, columns={})
    metric_config = "+".join(metrics)
    if preset is not None:
        names = labels.names
        same = names == preset.label_names
        return dataclasses.replace(
            preset, hub=hub, hub_note=note, local_dirs=(), layouts=(), substitutions=(), extra_splits=(),
            glue_submission_splits={}, default_predict_splits=("test",), metrics=metrics, metric_config=metric_config,
            label_names=names, label_values=preset.label_values if same else names,
            paper_metric=preset.paper_metric if preset.paper_metric in metrics else None,
            notes=f"{preset.name} preset on user data: {note}")
    what = {"single": "classification of one text", "pair": "classification of a text pair (entailment input)",
            "similarity": "similarity of a text pair (both orderings)", "multiple_choice": "multiple choice"}[kind]
    return TaskSpec(
        name=name, kind=kind, description=f"User task {name}: {'regression' if labels.regression else what}.",
        label_names=labels.names, label_values=labels.names, hub=hub, hub_note=note, local_dirs=(), layouts=(),
        metrics=metrics, metric_config=metric_config, paper_score=None, paper_metric=None, paper_table=None,
        notes=f"label names from {labels.origin}" if labels.names else "regression (num_labels=1)",
    )


def load_user_task(
    options: DataOptions,
    splits: Sequence[str] = ("train", "validation", "test"),
    max_samples: Mapping[str, int | None] | None = None,
    seed: int = 0,
    cache_dir: str | None = None,
) -> tuple[TaskSpec, dict[str, tuple[Any, dict]]]:
    """(TaskSpec, {split: (normalized datasets.Dataset, load-info dict)}) of the user's data.

    Only the requested ``splits`` that have a source (a file, or a Hub split; Hub "validation" also matches
    ``validation_matched``, ``dev``, ``valid``, ``val``) are returned. Column roles and label names are decided on
    the training split (read for its labels even when ``"train"`` is not requested). ``max_samples`` caps a split
    (random subset with ``seed``, original order kept). The load-info dict is ``asdict(LoadInfo)``: it is what
    `gpt1_hf.data.describe_load_info` prints and `gpt1_hf.data.get_load_info` reads back from the dataset.
    """
    check_data_options(options)
    preset = _preset(options)
    task_type = _task_type(options)
    name = _task_name(options, preset)
    wanted = list(dict.fromkeys(list(splits) + ["train"]))
    raws = _read_raw(options, wanted, name, cache_dir)
    if not any(s in raws for s in splits):
        raise ValueError(f"none of the splits {list(splits)} has data: pass --train_file/--validation_file/--test_file")
    ref = raws.get("train") or next(iter(raws.values()))
    roles = _resolve_columns(options, task_type, preset, ref)
    for raw in raws.values():
        _check_columns(raw, roles)
    if task_type == "multiple_choice":
        n_choices = len(roles.get("choice_columns") or ()) or len(ref.dataset[0][roles["choices_column"]] or ())
        if n_choices < 2:
            raise ValueError(f"{ref.flag} {ref.where}: row 1 has {n_choices} choice(s) in --choices_column "
                             f"{roles['choices_column']!r}; multiple choice needs at least 2")
        labels = _choice_labels(options, preset, ref, roles, n_choices)
    else:
        labels = _class_labels(options, preset, ref, roles, train=ref.split == "train")
    kind = _kind(task_type, roles)
    metrics = _metrics(options, preset, kind, labels.regression)
    note = _source_note(options, {s: r for s, r in raws.items() if s in splits or s == "train"}, roles)
    spec = _build_spec(options, preset, name, kind, labels, metrics, note, raws)
    logger.info("user task %s (%s, %s): %s", spec.name, spec.kind, "regression" if labels.regression else
                f"labels {list(labels.names)}", note)
    out = {}
    for split in splits:
        if split not in raws:
            continue
        raw = raws[split]
        columns, targets = _normalize(raw, spec, roles, labels)
        cap = (max_samples or {}).get(split)
        info = raw.info
        info.num_rows_read, info.num_dropped_no_gold = len(raw.dataset), targets.dropped
        info.unlabeled, info.max_examples, info.seed = targets.unlabeled > 0, cap, seed
        columns = _subsample(columns, cap, seed)
        info.num_examples = len(columns.get("label", ()))
        if targets.dropped:
            info.warnings.append(f"{spec.name} {split}: dropped {targets.dropped} rows without a gold label")
            logger.warning(info.warnings[-1])
        if info.num_examples == 0:
            raise ValueError(f"{raw.flag} {raw.where}: no usable rows (all {info.num_rows_read} rows were dropped)")
        out[split] = (dataset_from_columns(columns, spec, info), asdict(info))
    return spec, out
