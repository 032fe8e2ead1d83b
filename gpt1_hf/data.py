"""Task data for GPT-1 fine-tuning: loading, input transformations, collation, length grouping, predictions.

* `load_task_split` reads any task of `gpt1_hf.tasks.TASKS` from local files (every layout listed in its
  `TaskSpec`) or from the Hugging Face Hub (``data_dir=None``) into a `datasets.Dataset` with normalized columns:

  - single / pair / similarity: ``text_a``, ``text_b`` (pair, similarity), ``label``, ``idx``
  - multiple choice: ``context``, ``choices``, ``label``, ``idx``, ``id`` (+ ``question`` and ``group`` for RACE)

  ``label`` is the class index (float score for STS-B); -1 marks unlabeled (test) examples.
  What was loaded (files, layout, split substitutions, dropped rows, partial files) is returned by
  ``return_info=True`` and readable later with `get_load_info`.
* `encode_example` / `encode_dataset` apply the paper's input transformations (Figure 1) with the
  tokenizer's ``start_token_id``, ``delimiter_token_id`` and ``classify_token_id``.
* `GPT1Collator` pads dynamically; `LengthGroupedSampler` / `length_grouped_indices` group similar lengths.
* `write_predictions` writes GLUE submission TSVs (``index<TAB>prediction``) or jsonl.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .tasks import LocalLayout, SplitSubstitution, TaskSpec, get_task

__all__ = [
    "LoadInfo",
    "load_task_split",
    "load_task",
    "dataset_from_columns",
    "get_load_info",
    "describe_load_info",
    "find_local_files",
    "encode_example",
    "encode_dataset",
    "GPT1Collator",
    "length_grouped_indices",
    "LengthGroupedSampler",
    "padding_waste",
    "write_predictions",
]

logger = logging.getLogger(__name__)

_INFO_PREFIX = "gpt1_hf load info: "


@dataclass
class LoadInfo:
    """What `load_task_split` loaded, and what it had to do about the data."""

    task: str
    split: str
    source: str  # "local" or "hub"
    layout: str | None = None
    files: list[str] = field(default_factory=list)
    hub_path: str | None = None
    hub_config: str | None = None
    hub_split: str | None = None
    num_rows_read: int = 0
    num_examples: int = 0
    #: rows dropped because their gold label is a "no gold label" marker (SNLI / MultiNLI "-", Hub -1)
    num_dropped_no_gold: int = 0
    #: True when the split was carved out of another split (see `substitution`)
    substituted: bool = False
    substitution: str | None = None
    #: substituted splits: the local split the examples were taken from, how many it had, and which part this is
    #: ("held-out" or "remaining")
    source_split: str | None = None
    source_examples: int | None = None
    substitution_part: str | None = None
    substitution_examples: int | None = None
    #: True when a file is a random sample of the official split (``*partial*`` files)
    partial: bool = False
    unlabeled: bool = False
    max_examples: int | None = None
    seed: int | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def describe_load_info(info: LoadInfo | Mapping) -> str:
    """One line saying what was loaded for a split and what was done to it (source, files, partial sample, split
    substitution, rows dropped without a gold label, random subset)."""
    d = asdict(info) if isinstance(info, LoadInfo) else dict(info)
    if d.get("source") == "hub":
        where = f"Hub {d.get('hub_path')}/{d.get('hub_config') or 'default'}[{d.get('hub_split')}]"
    else:
        where = "local " + (", ".join(os.path.basename(f) for f in d.get("files") or []) or "files")
        if len(d.get("files") or []) > 3:
            where = f"local {len(d['files'])} files ({os.path.basename(d['files'][0])}, ...)"
    parts = [f"{d.get('task')} {d.get('split')}: {d.get('num_examples')} examples from {where}"]
    if d.get("partial"):
        parts.append("PARTIAL file (a random sample of the official split)")
    if d.get("substituted"):
        own = ("the rest held out as another split" if d.get("source_split") == d.get("split")
               else "this split has no local file of its own")
        parts.append(f"SUBSTITUTED: the {d.get('substitution_part') or ''} {d.get('substitution_examples')} of "
                     f"{d.get('source_examples')} examples of the local {d.get('source_split')!r} split ({own})")
    if d.get("num_dropped_no_gold"):
        parts.append(f"DROPPED {d['num_dropped_no_gold']} rows without a gold label")
    if d.get("max_examples") is not None and d.get("num_examples") is not None and d.get("num_rows_read") and \
            d["max_examples"] <= d["num_examples"] < d["num_rows_read"]:
        parts.append(f"random subset (max_examples={d['max_examples']}, seed {d.get('seed')})")
    if d.get("unlabeled"):
        parts.append("unlabeled")
    return "; ".join(parts)


def load_info_is_notable(info: LoadInfo | Mapping) -> bool:
    """True when the split is not the plain official split (partial file, substitution or dropped rows)."""
    d = asdict(info) if isinstance(info, LoadInfo) else dict(info)
    return bool(d.get("partial") or d.get("substituted") or d.get("num_dropped_no_gold"))


def get_load_info(dataset) -> LoadInfo | None:
    """The `LoadInfo` stored by `load_task_split` in ``dataset.info.description`` (None if absent)."""
    desc = getattr(getattr(dataset, "info", None), "description", None) or ""
    if not desc.startswith(_INFO_PREFIX):
        return None
    return LoadInfo(**json.loads(desc[len(_INFO_PREFIX):]))


# ==========================================================================================================
# Local files
# ==========================================================================================================


def _natural_key(path: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", os.path.basename(path))]


def _task_dirs(spec: TaskSpec, data_dir: str | os.PathLike) -> list[Path]:
    root = Path(data_dir)
    dirs = [root] + [root / d for d in spec.local_dirs]
    return [d for d in dirs if d.is_dir()] or [root]


def _expand(base: Path, pattern: str) -> list[str]:
    full = str(base / pattern)
    if any(c in pattern for c in "*?["):
        return sorted(glob.glob(full), key=_natural_key)
    return [full] if os.path.isfile(full) else []


def _groups(spec: TaskSpec) -> tuple[str | None, ...]:
    return spec.groups or (None,)


def _expected_paths(spec: TaskSpec, split: str, data_dir) -> list[str]:
    out = []
    for base in [Path(data_dir)] + [Path(data_dir) / d for d in spec.local_dirs]:
        for layout in spec.layouts:
            for pattern in layout.files.get(split, ()):
                for group in _groups(spec):
                    out.append(str(base / pattern.format(group=group)))
    return list(dict.fromkeys(out))


def find_local_files(spec: TaskSpec | str, split: str, data_dir) -> tuple[LocalLayout, list[tuple[str, str | None]]] | None:
    """The first layout (in table order) whose file(s) for ``split`` exist under ``data_dir``.

    ``data_dir`` may be the task folder itself or a root holding it (``<root>/<task>``). Returns
    ``(layout, [(path, group), ...])`` (several paths for RACE groups / per-passage files) or None.
    """
    spec = get_task(spec)
    for base in _task_dirs(spec, data_dir):
        for layout in spec.layouts:
            patterns = layout.files.get(split, ())
            if not patterns:
                continue
            found: list[tuple[str, str | None]] = []
            complete = True
            for group in _groups(spec):
                paths: list[str] = []
                for pattern in patterns:
                    paths = _expand(base, pattern.format(group=group))
                    if paths:
                        break
                if not paths:
                    complete = False
                    break
                found.extend((p, group) for p in paths)
            if complete and found:
                return layout, found
    return None


class _Rows:
    """Raw rows of one file as (row number, dict) with the file name for error messages."""

    def __init__(self, path: str, layout: LocalLayout, group: str | None):
        self.path = path
        self.layout = layout
        self.group = group

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        try:
            yield from self._rows()
        except UnicodeDecodeError as e:  # decoded a chunk at a time: find the line from the bytes
            raise ValueError(_utf8_error_message(self.path, e)) from None

    def _rows(self) -> Iterator[tuple[int, dict]]:
        fmt = self.layout.format
        if fmt == "tsv":
            yield from self._delimited("\t", csv.QUOTE_NONE)
        elif fmt == "csv":
            yield from self._delimited(",", csv.QUOTE_MINIMAL)
        elif fmt == "jsonl":
            yield from self._json_lines()
        elif fmt == "race_jsonl":  # nested passages: one row per passage, read as it is
            yield from self._objects_per_line()
        elif fmt == "race_passages":
            with open(self.path, encoding="utf-8-sig") as f:
                text = f.read()
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.path}: row 1: invalid RACE passage JSON ({e})") from None
            yield 1, obj
        else:  # pragma: no cover - guarded by the Literal type of LocalLayout.format
            raise ValueError(f"unknown layout format {fmt!r}")

    def _delimited(self, delimiter: str, quoting: int) -> Iterator[tuple[int, dict]]:
        """The file through the `datasets` csv builder (pandas; the same reader as your own csv / tsv files), every
        cell a string. The first line decides the header: the layout's columns, else its ``fieldnames``."""
        import datasets

        names, has_header = self._header(delimiter, quoting)
        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()  # one line per split is printed by the caller, not a bar per file
        try:
            ds = datasets.load_dataset(
                "csv", data_files=self.path, split="train", delimiter=delimiter, quoting=quoting,
                header=0 if has_header else None, column_names=names, keep_default_na=False, encoding="utf-8-sig",
                features=datasets.Features({name: datasets.Value("string") for name in names}))
        except Exception as e:  # datasets wraps the parser's error: name the file and the line
            raise self._read_error(e, len(names)) from None
        finally:
            if bars:
                datasets.enable_progress_bars()
        offset = 2 if has_header else 1  # a short line reads as empty cells: the normalizer names the one it lacks
        for i, row in enumerate(ds):
            yield i + offset, row

    def _json_lines(self) -> Iterator[tuple[int, dict]]:
        """One JSON object per line through the `datasets` json builder (the reader of your own files too); keys a
        line does not have are left out of its row, as in the file."""
        import datasets

        bars = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        try:
            ds = datasets.load_dataset("json", data_files=self.path, split="train")
        except Exception:  # the builder's error names no line (or it could not type a column): read line by line
            yield from self._objects_per_line()
            return
        finally:
            if bars:
                datasets.enable_progress_bars()
        for i, row in enumerate(ds):
            yield i + 1, {k: v for k, v in row.items() if v is not None}

    def _objects_per_line(self) -> Iterator[tuple[int, dict]]:
        with open(self.path, encoding="utf-8-sig") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{self.path}: row {lineno}: invalid JSON ({e})") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"{self.path}: row {lineno}: expected a JSON object")
                yield lineno, obj

    def _header(self, delimiter: str, quoting: int) -> tuple[list[str], bool]:
        expected = {name for cands in self.layout.fields.values() for name in cands}
        _raise_csv_field_limit()
        with open(self.path, encoding="utf-8-sig", newline="") as f:
            first = next(csv.reader(f, delimiter=delimiter, quoting=quoting), [])
        cells = [c.strip() for c in first]
        if expected.intersection(cells):
            return cells, True
        if self.layout.fieldnames is None:
            raise ValueError(f"{self.path}: row 1: no header with the expected columns {sorted(expected)} (got "
                             f"{cells[:12]})")
        return list(self.layout.fieldnames), False

    def _read_error(self, error: BaseException, n_columns: int) -> Exception:
        cause = error
        while cause.__cause__ is not None or cause.__context__ is not None:
            if isinstance(cause, UnicodeDecodeError):
                break
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, UnicodeDecodeError):
            return ValueError(_utf8_error_message(self.path, cause))
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(cause))
        if found:
            return ValueError(f"{self.path}: row {found.group(2)}: expected {n_columns} columns, got "
                              f"{found.group(3)}")
        return ValueError(f"{self.path}: unreadable {self.layout.format.upper()} ({type(cause).__name__}: {cause}); "
                          "fix the file")


def _raise_csv_field_limit() -> None:
    """Long texts (RACE articles, pasted documents) exceed csv's default 128 KB field limit: allow any size."""
    import ctypes
    import sys

    csv.field_size_limit(min(sys.maxsize, 2 ** (8 * ctypes.sizeof(ctypes.c_long) - 1) - 1))


def _utf8_error_message(path: str, error: UnicodeDecodeError) -> str:
    """``<file> line N is not valid UTF-8 ...``: the first line whose bytes do not decode."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                return (f"{path} line {lineno} is not valid UTF-8 (byte {line[e.start]:#04x} at column {e.start + 1}): "
                        "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)")
    return f"{path} is not valid UTF-8 ({error}): save the file as UTF-8"


def _pick(row: Mapping, candidates: Sequence[str]) -> tuple[str | None, Any]:
    for name in candidates:
        if name in row:
            return name, row[name]
    return None, None


class _Normalizer:
    """Turns raw rows into normalized examples for one task, with row-precise errors."""

    def __init__(self, spec: TaskSpec, label_aliases: Mapping[str, str] | None = None, require_labels: bool = False):
        self.spec = spec
        #: a train / validation split: a row without a label column is an error, not an unlabeled (-1) example
        self.require_labels = require_labels
        self.aliases = dict(label_aliases or {})
        self.dropped = 0
        self.unlabeled = 0
        self.columns: dict[str, list] = {}
        self._lookup: dict[str, int] = {}
        if spec.label_values is not None:
            for i, v in enumerate(spec.label_values):
                self._lookup[v] = i
            for i, v in enumerate(spec.label_names):
                self._lookup.setdefault(v, i)
            for raw, value in self.aliases.items():
                self._lookup[raw] = self._lookup[value]

    # ---- labels ----
    def label(self, raw, where: str) -> int | float | None:
        """Class index / score; -1 for unlabeled; None for rows to drop (no gold label)."""
        spec = self.spec
        if raw is None:
            raise ValueError(f"{where}: missing label")
        if isinstance(raw, str):
            raw = raw.strip()
            if raw == "":
                raise ValueError(f"{where}: missing label")
            if raw in spec.drop_labels:
                return None
        if spec.is_regression:
            try:
                value = float(raw)
            except (TypeError, ValueError):
                raise ValueError(f"{where}: label {raw!r} is not a number ({spec.name} is a regression task)") from None
            lo, hi = spec.label_range or (-math.inf, math.inf)
            if not math.isfinite(value) or not lo <= value <= hi:
                raise ValueError(f"{where}: label {raw!r} outside the range [{lo}, {hi}] of {spec.name}")
            return value
        key = str(raw)
        if key in self._lookup:
            return self._lookup[key]
        raise ValueError(
            f"{where}: label {raw!r} is not in the label set of {spec.name} "
            f"{list(spec.label_values)} (names {list(spec.label_names)})"
        )

    @staticmethod
    def text(raw, name: str, where: str) -> str:
        if raw is None or not isinstance(raw, str) or not raw.strip():
            raise ValueError(f"{where}: empty or missing text field {name!r}")
        return raw.strip()

    def add(self, **values) -> None:
        for k, v in values.items():
            self.columns.setdefault(k, []).append(v)

    @staticmethod
    def idx(raw, position: int) -> int:
        try:
            return int(raw)
        except (TypeError, ValueError):
            return position

    def no_label(self, row: Mapping | None, candidates: Sequence[str], where: str) -> None:
        """Count an unlabeled row, or refuse it where labels are required (a misspelled label header would
        otherwise train on -1 targets)."""
        if self.require_labels and row is None:  # a RACE question without its answer
            raise ValueError(f"{where}: no answer; training and validation splits need labels: use the labeled file")
        if self.require_labels:
            raise ValueError(
                f"{where}: no label column: expected {' or '.join(repr(c) for c in candidates) or 'a label'}, the "
                f"file has the columns {list(row)}. Training and validation splits need labels: fix the header (a "
                "misspelled label column?) or point --data_dir at the labeled file"
            )
        self.unlabeled += 1

    # ---- classification / regression rows ----
    def add_text_row(self, row: Mapping, fields: Mapping[str, Sequence[str]], where: str, position: int) -> None:
        spec = self.spec
        out: dict[str, Any] = {}
        names = ("text_a", "text_b") if spec.kind in ("pair", "similarity") else ("text_a",)
        for norm in names:
            col, raw = _pick(row, fields.get(norm, ()))
            out[norm] = self.text(raw, col or "/".join(fields.get(norm, (norm,))), where)
        col, raw = _pick(row, fields.get("label", ()))
        if col is None:
            label = -1.0 if spec.is_regression else -1
            self.no_label(row, fields.get("label", ()), where)
        else:
            label = self.label(raw, where)
            if label is None:
                self.dropped += 1
                return
        _, raw_idx = _pick(row, fields.get("idx", ()))
        self.add(**out, label=label, idx=self.idx(raw_idx, position))

    # ---- Story Cloze style rows ----
    def add_choice_row(self, row: Mapping, fields: Mapping[str, Sequence[str]], where: str, position: int) -> None:
        parts = [self.text(row.get(c), c, where) for c in fields["context"]]
        choices = [self.text(row.get(c), c, where) for c in fields["choices"]]
        col, raw = _pick(row, fields.get("label", ()))
        if col is None:
            label = -1
            self.no_label(row, fields.get("label", ()), where)
        else:
            label = self.label(raw, where)
        _, raw_id = _pick(row, fields.get("id", ()))
        self.add(context=" ".join(parts), choices=choices, label=label, idx=position,
                 id="" if raw_id is None else str(raw_id))

    # ---- RACE passages ----
    def add_race_passage(self, obj: Mapping, where: str, group: str | None) -> None:
        for key in ("article", "questions", "options", "answers"):
            if key not in obj:
                raise ValueError(f"{where}: RACE passage without {key!r}")
        article = self.text(obj["article"], "article", where)
        qs, opts, answers = obj["questions"], obj["options"], obj["answers"]
        if not (len(qs) == len(opts) == len(answers)):
            raise ValueError(f"{where}: RACE passage has {len(qs)} questions, {len(opts)} option lists, "
                             f"{len(answers)} answers")
        pid = str(obj.get("id", ""))
        for q_i, (q, options, answer) in enumerate(zip(qs, opts, answers, strict=True)):
            self.add_race_question(article, q, options, answer, f"{where} question {q_i}", group, f"{pid}-{q_i}")

    def add_race_question(self, article, question, options, answer, where, group, qid) -> None:
        question = self.text(question, "question", where)
        options = [self.text(o, f"options[{i}]", where) for i, o in enumerate(options)]
        if answer in (None, ""):
            label = -1
            self.no_label(None, ("answer",), where)
        else:
            label = self.label(answer, where)
            if label >= len(options):
                raise ValueError(f"{where}: answer {answer!r} but only {len(options)} options")
        if group is None:
            group = "high" if str(qid).startswith("high") else "middle" if str(qid).startswith("middle") else ""
        self.add(context=f"{article} {question}", question=question, choices=options, label=label,
                 idx=len(self.columns.get("idx", ())), id=str(qid), group=group)


def _labels_required(split: str) -> bool:
    """Train / validation splits are scored or trained on; only test splits (and MNLI's ``ax``) may be unlabeled."""
    return not (split.startswith("test") or split == "ax")


def _read_local(spec: TaskSpec, split: str, data_dir, info: LoadInfo, require_labels: bool = False) -> dict[str, list]:
    found = find_local_files(spec, split, data_dir)
    if found is None:
        expected = _expected_paths(spec, split, data_dir)
        raise FileNotFoundError(
            f"no local file for task {spec.name!r} split {split!r} under {str(data_dir)!r}; expected one of: "
            + ", ".join(expected)
        )
    layout, paths = found
    norm = _Normalizer(spec, layout.label_aliases, require_labels=require_labels)
    rows_read = 0
    for path, group in paths:
        info.files.append(path)
        position = 0
        for lineno, row in _Rows(path, layout, group):
            where = f"{path}: row {lineno}"
            rows_read += 1
            if layout.format in ("race_jsonl", "race_passages"):
                norm.add_race_passage(row, where, group)
            elif spec.kind == "multiple_choice":
                norm.add_choice_row(row, layout.fields, where, position)
            else:
                norm.add_text_row(row, layout.fields, where, position)
            position += 1
    info.layout = layout.name
    info.num_rows_read += rows_read
    info.num_dropped_no_gold += norm.dropped
    info.unlabeled = info.unlabeled or norm.unlabeled > 0
    if any("partial" in os.path.basename(p) for p, _ in paths):
        info.partial = True
        _warn(info, f"{spec.name} {split}: {', '.join(p for p, _ in paths if 'partial' in os.path.basename(p))} "
              "is a random sample of the official split (partial)")
    return norm.columns


def _warn(info: LoadInfo, message: str) -> None:
    info.warnings.append(message)
    logger.warning(message)


# ==========================================================================================================
# Hub
# ==========================================================================================================


def _read_hub(spec: TaskSpec, split: str, info: LoadInfo) -> dict[str, list]:
    if spec.hub is None:
        raise ValueError(f"task {spec.name!r} has no Hugging Face Hub source: {spec.hub_note} Pass data_dir=...")
    if split not in spec.hub.splits:
        raise ValueError(f"task {spec.name!r} has no Hub split for {split!r} (has {sorted(spec.hub.splits)})")
    import datasets

    hub = spec.hub
    hub_split, hub_config = hub.splits[split], hub.config_for(split)
    info.hub_path, info.hub_config, info.hub_split = hub.path, hub_config, hub_split
    ds = datasets.load_dataset(hub.path, hub_config, split=hub_split)
    cols = hub.columns
    label_feature = ds.features.get(cols.get("label", ""), None)
    class_names = getattr(label_feature, "names", None)
    norm = _Normalizer(spec, hub.label_aliases)
    where_base = f"{hub.path}/{hub_config or 'default'}[{hub_split}]"
    for position, row in enumerate(ds):
        info.num_rows_read += 1
        where = f"{where_base}: row {position}"
        raw_label = row.get(cols.get("label", ""), None) if "label" in cols else None
        has_label = "label" in cols and cols["label"] in row
        if has_label and isinstance(raw_label, (int, float, np.number)) and not isinstance(raw_label, bool):
            if raw_label < 0:  # Hub convention: -1 = no label (GLUE test splits; SNLI pairs without gold label)
                if spec.drop_labels and hub.negative_label_is_no_gold:
                    norm.dropped += 1
                    continue
                has_label = False
            elif class_names is not None:
                raw_label = class_names[int(raw_label)]
        if spec.kind == "multiple_choice":
            norm.add_race_question(row[cols["article"]], row[cols["question"]], row[cols["options"]],
                                   raw_label if has_label else None, where, None, row.get(cols.get("id", ""), ""))
            continue
        mapped = {norm_name: row.get(col) for norm_name, col in cols.items() if norm_name != "label"}
        if has_label:
            mapped["label"] = raw_label
        fields = {k: (k,) for k in mapped}
        norm.add_text_row(mapped, fields, where, position)
    info.num_dropped_no_gold += norm.dropped
    info.unlabeled = norm.unlabeled > 0
    return norm.columns


# ==========================================================================================================
# Public loader
# ==========================================================================================================


def _features(spec: TaskSpec, columns: Mapping[str, list]):
    import datasets

    if spec.kind == "multiple_choice":
        feats = {
            "context": datasets.Value("string"),
            "choices": datasets.Sequence(datasets.Value("string")),
            "label": datasets.Value("int64"),
            "idx": datasets.Value("int64"),
            "id": datasets.Value("string"),
        }
        if "question" in columns:
            feats["question"] = datasets.Value("string")
        if "group" in columns:
            feats["group"] = datasets.Value("string")
        return datasets.Features(feats)
    feats = {"text_a": datasets.Value("string")}
    if spec.kind in ("pair", "similarity"):
        feats["text_b"] = datasets.Value("string")
    feats["label"] = datasets.Value("float32") if spec.is_regression else datasets.Value("int64")
    feats["idx"] = datasets.Value("int64")
    return datasets.Features(feats)


def _holdout_count(holdout: float | int, n: int) -> int:
    if isinstance(holdout, float) and 0.0 < holdout < 1.0:
        return int(math.ceil(holdout * n))
    return int(holdout)


def _take(columns: Mapping[str, list], indices: Iterable[int]) -> dict[str, list]:
    indices = list(indices)
    return {k: [v[i] for i in indices] for k, v in columns.items()}


def _active_substitution(spec: TaskSpec, split: str, data_dir) -> SplitSubstitution | None:
    for sub in spec.substitutions:
        if split in (sub.holdout_split, sub.rest_split, sub.source) and find_local_files(spec, sub.missing, data_dir) is None:
            return sub
    return None


def load_task_split(
    task: str | TaskSpec,
    split: str,
    data_dir: str | os.PathLike | None = None,
    max_examples: int | None = None,
    seed: int = 0,
    return_info: bool = False,
):
    """Load one split of a task as a `datasets.Dataset` with normalized columns (see module docstring).

    Args:
        task: task name (see `gpt1_hf.tasks.TASK_NAMES`) or `TaskSpec`.
        split: "train", "validation", "test" (MNLI: also "validation_mismatched"/"test_mismatched";
            mnli_mm: "validation_matched"/"test_matched").
        data_dir: the task's folder (or a root holding ``<task>/``); None loads from the Hugging Face Hub.
        max_examples: keep a random subset of this size (chosen with ``seed``, original order kept).
        seed: seed of the ``max_examples`` subsample (split substitutions use the fixed seed of the task table).
        return_info: also return the `LoadInfo`.

    Locally missing splits listed in the task's ``substitutions`` are carved deterministically out of an
    existing split (QQP validation, SciTail train/validation, Story Cloze train); this is logged as a warning
    and recorded in the info (``substituted``/``substitution``). Rows whose gold label is "-" are dropped and
    counted (``num_dropped_no_gold``). Bad labels, empty texts and missing files raise errors naming the file
    and row.
    """

    spec = get_task(task)
    if split not in spec.splits:
        raise ValueError(f"unknown split {split!r} for task {spec.name!r}; use one of {list(spec.splits)}")
    info = LoadInfo(task=spec.name, split=split, source="hub" if data_dir is None else "local",
                    max_examples=max_examples, seed=seed)
    if data_dir is None:
        columns = _read_hub(spec, split, info)
    else:
        sub = _active_substitution(spec, split, data_dir)
        if sub is None:
            columns = _read_local(spec, split, data_dir, info, require_labels=_labels_required(split))
        elif split not in (sub.holdout_split, sub.rest_split):
            raise ValueError(
                f"task {spec.name!r}: split {split!r} is not available under {str(data_dir)!r}: {sub.reason}"
            )
        else:
            source = _read_local(spec, sub.source, data_dir, info, require_labels=_labels_required(split))
            n = len(source.get("idx", ()))
            k = _holdout_count(sub.holdout, n)
            if not 0 < k < n:
                raise ValueError(f"task {spec.name!r}: cannot hold out {sub.holdout} of {n} {sub.source} examples")
            perm = np.random.RandomState(sub.seed).permutation(n)
            part = perm[:k] if split == sub.holdout_split else perm[k:]
            columns = _take(source, sorted(int(i) for i in part))
            info.substituted = True
            info.source_split, info.source_examples = sub.source, n
            info.substitution_part = "held-out" if split == sub.holdout_split else "remaining"
            info.substitution_examples = len(part)
            info.substitution = (
                f"{split} = {'held-out' if split == sub.holdout_split else 'remaining'} "
                f"{len(part)} of {n} examples of local split {sub.source!r} (seed {sub.seed}): {sub.reason}"
            )
            _warn(info, f"{spec.name}: {info.substitution}")
    n = len(columns.get("idx", ()))
    if max_examples is not None and max_examples < n:
        chosen = np.random.RandomState(seed).choice(n, size=max_examples, replace=False)
        columns = _take(columns, sorted(int(i) for i in chosen))
        n = max_examples
    if info.num_dropped_no_gold:
        _warn(info, f"{spec.name} {split}: dropped {info.num_dropped_no_gold} rows without a gold label")
    info.num_examples = n
    ds = dataset_from_columns(columns, spec, info)
    return (ds, info) if return_info else ds


def dataset_from_columns(columns: Mapping[str, list], spec: TaskSpec, info: LoadInfo):
    """A split's normalized columns as a `datasets.Dataset` of the task kind's features, carrying its `LoadInfo` (read
    back by `get_load_info`); shared by the paper tasks' loader and `gpt1_hf.user_data`."""
    import datasets

    features = _features(spec, columns)
    return datasets.Dataset.from_dict(
        {k: columns.get(k, []) for k in features},
        features=features,
        info=datasets.DatasetInfo(description=_INFO_PREFIX + info.to_json(), features=features),
        split=datasets.NamedSplit(info.split),
    )


def load_task(
    task: str | TaskSpec,
    data_dir: str | os.PathLike | None = None,
    splits: Sequence[str] = ("train", "validation", "test"),
    max_examples: int | Mapping[str, int] | None = None,
    seed: int = 0,
    skip_missing: bool = True,
):
    """A `datasets.DatasetDict` of several splits (splits that cannot be loaded are skipped, with a warning)."""
    import datasets

    out = {}
    for split in splits:
        cap = max_examples.get(split) if isinstance(max_examples, Mapping) else max_examples
        try:
            out[split] = load_task_split(task, split, data_dir=data_dir, max_examples=cap, seed=seed)
        except (FileNotFoundError, ValueError) as e:
            if not skip_missing or "not available" not in str(e) and not isinstance(e, FileNotFoundError):
                raise
            logger.warning("%s: skipping split %r: %s", get_task(task).name, split, e)
    return datasets.DatasetDict(out)


# ==========================================================================================================
# Input transformations
# ==========================================================================================================


def _special_ids(tokenizer) -> tuple[int, int, int]:
    ids = []
    for name in ("start_token_id", "delimiter_token_id", "classify_token_id"):
        value = getattr(tokenizer, name, None)
        if value is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no {name}")
        ids.append(int(value))
    return ids[0], ids[1], ids[2]


def _tokenize(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    if not texts:
        return []
    if callable(tokenizer):
        try:
            # verbose=False: the pieces are cut to max_length afterwards, so transformers' "longer than the maximum
            # sequence length ... indexing errors" warning would be false
            out = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
            return [list(map(int, ids)) for ids in out]
        except (TypeError, KeyError):
            pass
    return [list(map(int, tokenizer.encode(t, add_special_tokens=False))) for t in texts]


def _truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int], bool]:
    """Fit ``a + b`` into ``budget`` tokens by cutting the end of ``a`` first, then the end of ``b``."""
    if len(a) + len(b) <= budget:
        return a, b, False
    if len(b) <= budget:
        return a[: budget - len(b)], b, True
    return [], b[:budget], True


def _check_max_length(max_length: int, n_special: int) -> None:
    if max_length <= n_special:
        raise ValueError(f"max_length={max_length} leaves no room for text next to {n_special} special tokens")


def _encode_parts(spec: TaskSpec, tok: Mapping[str, list[int]], ids: tuple[int, int, int], max_length: int):
    """input_ids, length and truncated flag for one example from its tokenized parts."""
    s, d, e = ids
    if spec.kind == "single":
        _check_max_length(max_length, 2)
        a = tok["text_a"]
        cut = len(a) > max_length - 2
        seq = [s] + a[: max_length - 2] + [e]
        return seq, len(seq), cut
    if spec.kind in ("pair", "similarity"):
        _check_max_length(max_length, 3)
        a, b = tok["text_a"], tok["text_b"]
        if spec.truncate_side == "b":
            b, a, cut = _truncate_pair(b, a, max_length - 3)
        else:
            a, b, cut = _truncate_pair(a, b, max_length - 3)
        first = [s] + a + [d] + b + [e]
        if spec.kind == "pair":
            return first, len(first), cut
        return [first, [s] + b + [d] + a + [e]], len(first), cut
    # multiple choice: [s] article question [d] answer_k [e]
    _check_max_length(max_length, 3)
    budget = max_length - 3
    article, question, answers = tok["article"], tok["question"], tok["choices"]
    longest = max((len(x) for x in answers), default=0)
    cut = len(article) + len(question) + longest > budget
    room = budget - len(question) - longest
    seqs = []
    if room >= 0:
        context = article[:room] + question
        seqs = [[s] + context + [d] + ans + [e] for ans in answers]
    else:  # even question + longest answer do not fit: drop the article, then cut question, then answer
        for ans in answers:
            q, a, _ = _truncate_pair(question, ans, budget)
            seqs.append([s] + q + [d] + a + [e])
    return seqs, max((len(x) for x in seqs), default=0), cut


def _split_context(example: Mapping) -> tuple[str, str]:
    """(article, question) of a multiple-choice example (question is "" when the task has none)."""
    context = example["context"]
    question = example.get("question") or ""
    if question and context.endswith(question):
        return context[: len(context) - len(question)].rstrip(), question
    return context, ""


def _encode_batch(batch: Mapping[str, list], spec: TaskSpec, tokenizer, max_length: int) -> dict[str, list]:
    ids = _special_ids(tokenizer)
    n = len(batch["label"])
    if spec.kind == "multiple_choice":
        articles, questions = zip(*(_split_context({k: batch[k][i] for k in batch}) for i in range(n)), strict=True) if n else ((), ())
        flat = [c for choices in batch["choices"] for c in choices]
        tok_flat = _tokenize(tokenizer, flat)
        tok_art, tok_q = _tokenize(tokenizer, list(articles)), _tokenize(tokenizer, [q for q in questions])
        parts, pos = [], 0
        for i in range(n):
            c = len(batch["choices"][i])
            parts.append({"article": tok_art[i], "question": tok_q[i], "choices": tok_flat[pos: pos + c]})
            pos += c
    else:
        names = ("text_a", "text_b") if spec.kind in ("pair", "similarity") else ("text_a",)
        toks = {name: _tokenize(tokenizer, batch[name]) for name in names}
        parts = [{name: toks[name][i] for name in names} for i in range(n)]
    out = {"input_ids": [], "labels": [], "length": [], "truncated": []}
    for i in range(n):
        seq, length, cut = _encode_parts(spec, parts[i], ids, max_length)
        out["input_ids"].append(seq)
        out["length"].append(length)
        out["truncated"].append(cut)
        out["labels"].append(batch["label"][i])
    return out


def encode_example(example: Mapping, task: str | TaskSpec, tokenizer, max_length: int = 512) -> dict:
    """Token ids of one normalized example per the paper's input transformation for its task.

    Returns ``input_ids`` (list[int] for single/pair; 2 lists for similarity, both orderings; one list per
    choice for multiple choice), ``labels``, ``length`` (longest sequence) and ``truncated`` (bool).
    Truncation keeps the special tokens, cuts the long side first (text_a / premise; QNLI: the sentence;
    RACE: the end of the article, keeping the question; Story Cloze: the end of the context) and the other
    side only when that alone does not fit.
    """
    spec = get_task(task)
    batch = {k: [v] for k, v in example.items()}
    out = _encode_batch(batch, spec, tokenizer, max_length)
    return {k: v[0] for k, v in out.items()}


def encode_dataset(dataset, task: str | TaskSpec, tokenizer, max_length: int = 512, num_proc: int | None = None,
                   batch_size: int = 1000):
    """Encode a normalized dataset; returns ``(encoded, n_truncated)``.

    The encoded dataset has ``input_ids``, ``labels``, ``length`` and keeps ``idx`` (and ``group`` for RACE);
    text columns are removed.
    """
    spec = get_task(task)
    keep = {"idx", "group"}
    remove = [c for c in dataset.column_names if c not in keep]
    encoded = dataset.map(
        _encode_batch,
        batched=True,
        batch_size=batch_size,
        fn_kwargs={"spec": spec, "tokenizer": tokenizer, "max_length": max_length},
        remove_columns=remove,
        num_proc=num_proc,
        desc=f"encoding {spec.name}",
    )
    n_truncated = int(sum(encoded["truncated"])) if len(encoded) else 0
    encoded = encoded.remove_columns("truncated")
    if n_truncated:
        logger.warning("%s: %d of %d examples truncated to max_length=%d", spec.name, n_truncated, len(encoded),
                       max_length)
    return encoded, n_truncated


# ==========================================================================================================
# Collation and length grouping
# ==========================================================================================================


class GPT1Collator:
    """Right-pads a batch of encoded examples to its longest sequence.

    Works for the three input shapes: ``input_ids`` list[int] -> (B, T); similarity (2 orderings) -> (B, 2, T);
    multiple choice -> (B, C, T). Returns ``input_ids`` and ``attention_mask`` (LongTensor) and ``labels``
    (LongTensor, FloatTensor for regression; omitted when the features have none). The last non-padding
    position of each sequence is its classify token (``attention_mask.sum(-1) - 1``).

    Args:
        pad_token_id: id used for padding.
        pad_to_multiple_of: round the padded length up to a multiple of this, but not past `max_length`.
        pad_to_max_length: pad every batch to exactly this length (error if a sequence is longer).
        max_length: the longest padding may make a batch (the model's positions).
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, pad_to_max_length: int | None = None,
                 max_length: int | None = None):
        if pad_token_id is None:
            raise ValueError("GPT1Collator needs a pad_token_id")
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pad_to_max_length = pad_to_max_length
        self.max_length = max_length

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("GPT1Collator got an empty batch")
        seqs = [f["input_ids"] for f in features]
        seqs = [s.tolist() if hasattr(s, "tolist") else s for s in seqs]
        nested = [bool(len(s)) and isinstance(s[0], (list, tuple)) for s in seqs]
        if any(nested) and not all(nested):
            raise ValueError("GPT1Collator: batch mixes flat and nested (multi-sequence) input_ids")
        if nested[0]:
            counts = {len(s) for s in seqs}
            if len(counts) > 1:
                raise ValueError(
                    f"GPT1Collator: examples in one batch have different numbers of sequences/choices {sorted(counts)}"
                )
            flat = [list(x) for s in seqs for x in s]
        else:
            flat = [list(s) for s in seqs]
        longest = max((len(x) for x in flat), default=0)
        if self.pad_to_max_length is not None:
            if longest > self.pad_to_max_length:
                raise ValueError(f"GPT1Collator: sequence of length {longest} > pad_to_max_length={self.pad_to_max_length}")
            longest = self.pad_to_max_length
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            longest = max(longest, min(-(-longest // m) * m, self.max_length or float("inf")))
        ids = torch.full((len(flat), longest), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(flat), longest), dtype=torch.long)
        for i, x in enumerate(flat):
            ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
        if nested[0]:
            shape = (len(seqs), len(seqs[0]), longest)
            ids, mask = ids.view(shape), mask.view(shape)
        batch = {"input_ids": ids, "attention_mask": mask}
        key = "labels" if "labels" in features[0] else "label" if "label" in features[0] else None
        if key is not None:
            labels = [f[key] for f in features]
            is_float = any(isinstance(v, float) or (hasattr(v, "dtype") and "float" in str(v.dtype)) for v in labels)
            batch["labels"] = torch.tensor(labels, dtype=torch.float if is_float else torch.long)
        return batch


def length_grouped_indices(lengths: Sequence[int], batch_size: int, seed: int = 0,
                           mega_batch_mult: int | None = None) -> list[int]:
    """Index order that puts examples of similar length in the same batch (shuffled with ``seed``).

    Same scheme as transformers' ``LengthGroupedSampler``: a random permutation is cut into mega-batches
    of ``mega_batch_mult * batch_size`` examples, each sorted by decreasing length; the mega-batch holding
    the longest example goes first (so out-of-memory shows at the first step).
    """
    n = len(lengths)
    if n == 0:
        return []
    if mega_batch_mult is None:
        mega_batch_mult = max(1, min(n // (batch_size * 4), 50))
    perm = np.random.RandomState(seed).permutation(n)
    size = mega_batch_mult * batch_size
    megas = [sorted(perm[i: i + size].tolist(), key=lambda j: -lengths[j]) for i in range(0, n, size)]
    first = [lengths[m[0]] for m in megas]
    top = int(np.argmax(first))
    megas[0][0], megas[top][0] = megas[top][0], megas[0][0]
    return [i for m in megas for i in m]


class LengthGroupedSampler(torch.utils.data.Sampler):
    """Sampler yielding `length_grouped_indices`; call ``set_epoch`` to reshuffle (seed + epoch)."""

    def __init__(self, lengths: Sequence[int] | None = None, batch_size: int = 32, seed: int = 0,
                 dataset=None, length_column: str = "length", mega_batch_mult: int | None = None):
        if lengths is None:
            if dataset is None:
                raise ValueError("LengthGroupedSampler needs lengths or a dataset with a length column")
            lengths = dataset[length_column]
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.mega_batch_mult = mega_batch_mult

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        return iter(length_grouped_indices(self.lengths, self.batch_size, self.seed + self.epoch, self.mega_batch_mult))


def padding_waste(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> float:
    """Fraction of padded positions when batching ``order`` in chunks of ``batch_size``."""
    total = padded = 0
    for i in range(0, len(order), batch_size):
        chunk = [lengths[j] for j in order[i: i + batch_size]]
        total += max(chunk) * len(chunk)
        padded += max(chunk) * len(chunk) - sum(chunk)
    return padded / total if total else 0.0


# ==========================================================================================================
# Prediction files
# ==========================================================================================================


def write_predictions(task: str | TaskSpec, predictions, path: str | os.PathLike,
                      indices: Sequence[int] | None = None, split: str | None = None) -> Path:
    """Write predictions for a task and return the file path.

    GLUE tasks: the GLUE submission TSV ``index<TAB>prediction`` with the label as GLUE expects it
    (``entailment``/... for MNLI, QNLI, RTE; ``0``/``1`` for CoLA, SST-2, MRPC, QQP, WNLI; a float for
    STS-B). Other tasks: jsonl lines ``{"index": i, "prediction": value, "label_id": k}``.
    ``predictions`` are class indices, logits (argmax is taken) or scores; ``indices`` default to
    0..n-1. If ``path`` is an existing directory the GLUE file name (e.g. ``RTE.tsv``) or ``<task>.jsonl``
    is used inside it; the GLUE name depends on ``split`` where GLUE has one file per split (MNLI:
    ``MNLI-m.tsv`` for the matched splits, ``MNLI-mm.tsv`` for the mismatched ones, ``AX.tsv`` for ``ax``).
    """
    spec = get_task(task)
    preds = np.asarray(predictions.detach().cpu() if isinstance(predictions, torch.Tensor) else predictions)
    if spec.is_regression:
        preds = preds.reshape(len(preds), -1)[:, 0].astype(float) if preds.ndim > 1 else preds.astype(float)
    elif preds.ndim == 2:
        preds = preds.argmax(-1)
    elif preds.ndim != 1:
        raise ValueError(f"predictions of shape {preds.shape} for {spec.name}")
    if indices is None:
        indices = range(len(preds))
    indices = [int(i) for i in indices]
    if len(indices) != len(preds):
        raise ValueError(f"{len(indices)} indices for {len(preds)} predictions")
    path = Path(path)
    glue_name = spec.submission_file(split)
    if path.is_dir():
        path = path / (glue_name or f"{spec.name}.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        if glue_name:
            f.write("index\tprediction\n")
            for i, p in zip(indices, preds, strict=True):
                value = f"{float(p):.6g}" if spec.is_regression else spec.label_values[int(p)]
                f.write(f"{i}\t{value}\n")
        else:
            for i, p in zip(indices, preds, strict=True):
                rec = {"index": i}
                if spec.is_regression:
                    rec["prediction"] = float(p)
                else:
                    rec["prediction"] = spec.label_values[int(p)]
                    rec["label_id"] = int(p)
                f.write(json.dumps(rec) + "\n")
    return path
