"""Registry of the GPT-1 fine-tuning tasks (Radford et al. 2018, Tables 2-4, plus WNLI).

The whole registry is ONE table of data (`TASKS`): each task is a frozen `TaskSpec` holding its input
transformation kind, label set, Hub source, the local file layouts it can be read from, the split
substitutions used when a split is missing locally, its metrics and the score the paper reports.
`gpt1_hf.data` reads any task from this data with a handful of generic readers (no code per task).

Input transformations (paper Figure 1; ``[s]``/``[d]``/``[e]`` = start, delimiter, extract/classify token):

* ``"single"``: ``[s] text [e]`` (CoLA, SST-2)
* ``"pair"``: ``[s] premise [d] hypothesis [e]`` (entailment: SNLI, MNLI, QNLI, RTE, SciTail, WNLI)
* ``"similarity"``: both orderings ``[s] a [d] b [e]`` and ``[s] b [d] a [e]`` (STS-B, QQP, MRPC)
* ``"multiple_choice"``: ``[s] context [d] answer_k [e]`` per choice (RACE: context = article + " " + question;
  Story Cloze: context = the four story sentences, choices = the two endings)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "TaskKind",
    "HubSource",
    "LocalLayout",
    "SplitSubstitution",
    "TaskSpec",
    "TASKS",
    "TASK_NAMES",
    "SPLITS",
    "get_task",
    "list_tasks",
    "task_to_dict",
    "task_from_dict",
    "task_of_results",
]

TaskKind = Literal["single", "pair", "similarity", "multiple_choice"]

#: split names accepted by `gpt1_hf.data.load_task_split` (MNLI adds "validation_mismatched"/"test_mismatched" and
#: "ax", the GLUE diagnostic set)
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class HubSource:
    """Where `datasets.load_dataset` finds the task on the Hugging Face Hub (online users)."""

    path: str
    config: str | None
    #: our split name -> Hub split name
    splits: dict[str, str]
    #: normalized field -> Hub column name (``text_a``, ``text_b``, ``label``, ``idx``; RACE: ``article``,
    #: ``question``, ``options``, ``label``, ``id``)
    columns: dict[str, str]
    #: extra raw label strings -> label values (e.g. SciTail's "entails"/"neutral")
    label_aliases: dict[str, str] = field(default_factory=dict)
    #: our split name -> Hub config, for splits that live in another config of the same dataset (MNLI's ``ax``: the
    #: GLUE diagnostic set, nyu-mll/glue config ``ax``); other splits use ``config``
    split_configs: dict[str, str] = field(default_factory=dict)
    #: True where a negative Hub label means "no gold label" (SNLI: such rows are dropped and counted); else it means
    #: "unlabeled" (GLUE test splits and the diagnostic set, whose rows are all kept with label -1)
    negative_label_is_no_gold: bool = False

    def config_for(self, split: str) -> str | None:
        """The Hub config holding ``split``."""
        return self.split_configs.get(split, self.config)


@dataclass(frozen=True)
class LocalLayout:
    """One way a task's files can be laid out on disk.

    ``format`` picks the generic reader in `gpt1_hf.data`:

    * ``"tsv"``: tab-separated, read with the `datasets` csv builder (the reader of your own files too), quoting
      disabled (``csv.QUOTE_NONE``) and ``utf-8-sig`` (MRPC BOM); header detected from the column names, else
      ``fieldnames`` (headerless CoLA / SciTail tsv_format)
    * ``"csv"``: comma-separated with RFC-4180 quoting and a header (Story Cloze original, MNLI pairID csv), the
      same `datasets` builder
    * ``"jsonl"``: one JSON object per line, through the `datasets` json builder (line by line where it cannot type a
      column)
    * ``"race_jsonl"``: one RACE passage per line ``{answers, options, questions, article, id}``
    * ``"race_passages"``: RACE's original per-passage JSON files (a glob of ``*.txt``)

    ``files`` maps a split to candidate paths relative to the task directory (first existing wins;
    ``{group}`` is replaced by each RACE group, globs allowed). ``fields`` maps a normalized field to
    candidate column names (first present wins); for Story Cloze ``context`` / ``choices`` list all the
    columns joined / collected. ``label_aliases`` maps extra raw label strings to label values.
    """

    name: str
    format: Literal["tsv", "csv", "jsonl", "race_jsonl", "race_passages"]
    files: dict[str, tuple[str, ...]]
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fieldnames: tuple[str, ...] | None = None
    label_aliases: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitSubstitution:
    """A deterministic split of an existing local split, used when ``missing`` has no local file.

    The ``source`` split's examples are permuted with ``numpy.random.RandomState(seed)`` (exactly like
    ``sklearn.model_selection.train_test_split(test_size=holdout, random_state=seed)``): the first
    ``holdout`` examples (a count, or a fraction rounded up) become ``holdout_split``, the rest ``rest_split``.
    If ``source`` is neither of the two, it is consumed and cannot be loaded on its own while the
    substitution is active (it would overlap the training data).
    """

    missing: str
    source: str
    holdout_split: str
    rest_split: str
    holdout: float | int
    seed: int
    reason: str


@dataclass(frozen=True)
class TaskSpec:
    """Everything the library needs to know about one task (data, not code)."""

    name: str
    kind: TaskKind
    description: str
    #: class names in model-output order (HF ``id2label``); None for regression (STS-B)
    label_names: tuple[str, ...] | None
    #: how each class is written in the task's files and GLUE submission files (same order as label_names)
    label_values: tuple[str, ...] | None
    hub: HubSource | None
    hub_note: str
    #: sub-directory names of a task folder under a common data root (e.g. ``shared/data/sst2``)
    local_dirs: tuple[str, ...]
    layouts: tuple[LocalLayout, ...]
    #: metric names computed by `gpt1_hf.metrics` (first = the one a results table reports for the task)
    metrics: tuple[str, ...]
    #: evaluate config of the bundled ``gpt1_metrics`` module
    metric_config: str
    #: score in the GPT-1 paper (percent, or x100 correlation), None where not reported (WNLI)
    paper_score: float | None
    paper_metric: str | None
    paper_table: int | None
    #: which text is cut first when an example is too long: "a" (premise / first sentence) or "b"
    truncate_side: Literal["a", "b"] = "a"
    #: raw labels meaning "no gold label": such rows are dropped and counted (SNLI / MultiNLI "-")
    drop_labels: tuple[str, ...] = ()
    #: (min, max) of regression targets
    label_range: tuple[float, float] | None = None
    #: RACE difficulty groups loaded for this task (``group`` column); () for other tasks
    groups: tuple[str, ...] = ()
    substitutions: tuple[SplitSubstitution, ...] = ()
    #: extra split names this task accepts beyond SPLITS
    extra_splits: tuple[str, ...] = ()
    #: GLUE submission file name (`gpt1_hf.data.write_predictions`), None for non-GLUE tasks
    glue_submission: str | None = None
    #: split -> GLUE submission file name where it differs from ``glue_submission`` (MNLI: the matched splits give
    #: ``MNLI-m.tsv``, the mismatched ones ``MNLI-mm.tsv``, the diagnostic set ``ax`` gives ``AX.tsv``)
    glue_submission_splits: dict[str, str] = field(default_factory=dict)
    #: splits predicted after training when ``predict_splits`` is not given (each skipped when it cannot be loaded)
    default_predict_splits: tuple[str, ...] = ("test",)
    notes: str = ""

    def __hash__(self) -> int:  # dict fields are not hashable; names are unique
        return hash(self.name)

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        """1 for regression; number of classes (choices for multiple choice) otherwise."""
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def num_choices(self) -> int | None:
        return len(self.label_names) if self.kind == "multiple_choice" and self.label_names else None

    @property
    def splits(self) -> tuple[str, ...]:
        return SPLITS + self.extra_splits

    def submission_file(self, split: str | None = None) -> str | None:
        """The GLUE submission file name for predictions on ``split`` (None for non-GLUE tasks)."""
        if split is not None and split in self.glue_submission_splits:
            return self.glue_submission_splits[split]
        return self.glue_submission

    def hub_split(self, split: str) -> str:
        """The Hub split name of our ``split`` (``mnli_mm`` "validation" -> "validation_mismatched")."""
        return self.hub.splits.get(split, split) if self.hub is not None else split

    @property
    def primary_metric(self) -> str:
        return self.paper_metric or self.metrics[0]

    @property
    def id2label(self) -> dict[int, str] | None:
        return None if self.label_names is None else dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int] | None:
        return None if self.label_names is None else {n: i for i, n in enumerate(self.label_names)}


# ----------------------------------------------------------------------------------------------------------
# Layout builders (plain data constructors shared by several rows of the table)
# ----------------------------------------------------------------------------------------------------------

_GLUE_TEST = ("test.tsv", "test_unlabeled.tsv")


def _glue_tsv(text_a, text_b=None, label=("label",), idx=("index",), files=None, fieldnames=None, aliases=None):
    fields = {"text_a": tuple(text_a), "label": tuple(label), "idx": tuple(idx)}
    if text_b is not None:
        fields["text_b"] = tuple(text_b)
    return LocalLayout(
        name="glue_tsv",
        format="tsv",
        files=files or {"train": ("train.tsv",), "validation": ("dev.tsv",), "test": _GLUE_TEST},
        fields=fields,
        fieldnames=fieldnames,
        label_aliases=aliases or {},
    )


def _jsonl(name, text_a, text_b, label, files, idx=("idx", "index"), aliases=None):
    return LocalLayout(
        name=name,
        format="jsonl",
        files=files,
        fields={"text_a": tuple(text_a), "text_b": tuple(text_b), "label": tuple(label), "idx": tuple(idx)},
        label_aliases=aliases or {},
    )


def _glue_hub(config, columns, splits=None):
    return HubSource(
        path="nyu-mll/glue",
        config=config,
        splits=splits or {"train": "train", "validation": "validation", "test": "test"},
        columns={**columns, "label": "label", "idx": "idx"},
    )


_NLI3 = ("entailment", "neutral", "contradiction")
_NLI2 = ("entailment", "not_entailment")
_PREMISE = ("premise", "sentence1")
_HYPOTHESIS = ("hypothesis", "sentence2")
_NLI_LABEL = ("label", "gold_label")


_AX_FILES = (
    "diagnostic_unlabeled.tsv",
    "diagnostic.tsv",
    "glue_diagnostic/diagnostic_unlabeled.tsv",
    "diagnostic/diagnostic.tsv",
    "../glue_diagnostic/diagnostic_unlabeled.tsv",
    "../diagnostic/diagnostic.tsv",
)


def _mnli_submissions(matched: bool) -> dict[str, str]:
    """GLUE file per split: MNLI-m.tsv for the matched splits, MNLI-mm.tsv for the mismatched ones, AX.tsv for ax."""
    m, mm = ("MNLI-m.tsv", "MNLI-mm.tsv") if matched else ("MNLI-mm.tsv", "MNLI-m.tsv")
    other = "mismatched" if matched else "matched"
    return {"validation": m, "test": m, f"validation_{other}": mm, f"test_{other}": mm, "ax": "AX.tsv"}


def _mnli_layouts(matched: bool):
    """MNLI local layouts; ``matched=False`` maps "validation"/"test" to the mismatched files (mnli_mm)."""
    m, mm = ("matched", "mismatched") if matched else ("mismatched", "matched")
    tsv_files = {
        "train": ("train.tsv",),
        "validation": (f"dev_{m}.tsv",),
        "test": (f"test_{m}.tsv", f"test_{m}_unlabeled.tsv"),
        f"validation_{mm}": (f"dev_{mm}.tsv",),
        f"test_{mm}": (f"test_{mm}.tsv", f"test_{mm}_unlabeled.tsv"),
        # the GLUE diagnostic set (AX, unlabeled; header index/sentence1/sentence2), predicted by an MNLI model: in
        # the MNLI folder, or beside it under the same data root (<root>/glue_diagnostic, GLUE's <root>/diagnostic)
        "ax": _AX_FILES,
    }
    jsonl_files = {
        "train": ("train.jsonl", "train_partial.jsonl", "multinli_1.0_train.jsonl"),
        "validation": (f"dev_{m}.jsonl", f"multinli_1.0_dev_{m}.jsonl"),
        f"validation_{mm}": (f"dev_{mm}.jsonl", f"multinli_1.0_dev_{mm}.jsonl"),
    }
    csv_files = {"validation": (f"dev_{m}_pairid.csv",), f"validation_{mm}": (f"dev_{mm}_pairid.csv",)}
    return (
        _glue_tsv(("sentence1",), ("sentence2",), label=("gold_label",), files=tsv_files),
        _jsonl("jsonl", _PREMISE, _HYPOTHESIS, _NLI_LABEL, jsonl_files, idx=("idx",)),
        LocalLayout(
            name="pairid_csv",
            format="csv",
            files=csv_files,
            fields={"text_a": ("sentence1",), "text_b": ("sentence2",), "label": ("label", "gold_label"), "idx": ()},
        ),
    )


def _mnli_hub(matched: bool):
    m, mm = ("matched", "mismatched") if matched else ("mismatched", "matched")
    hub = _glue_hub(
        "mnli",
        {"text_a": "premise", "text_b": "hypothesis"},
        splits={
            "train": "train",
            "validation": f"validation_{m}",
            "test": f"test_{m}",
            f"validation_{mm}": f"validation_{mm}",
            f"test_{mm}": f"test_{mm}",
            "ax": "test",
        },
    )
    return dataclasses.replace(hub, split_configs={"ax": "ax"})


_RACE_SPLIT_DIR = {"train": "train", "validation": "dev", "test": "test"}
_RACE_LAYOUTS = (
    LocalLayout(
        name="race_jsonl",
        format="race_jsonl",
        files={
            s: (f"{d}_{{group}}.jsonl", f"{d}_{{group}}_partial.jsonl", f"{d}/{{group}}.jsonl")
            for s, d in _RACE_SPLIT_DIR.items()
        },
    ),
    LocalLayout(
        name="race_original",
        format="race_passages",
        files={s: (f"RACE/{d}/{{group}}/*.txt", f"{d}/{{group}}/*.txt") for s, d in _RACE_SPLIT_DIR.items()},
    ),
)
_RACE_HUB_COLUMNS = {"article": "article", "question": "question", "options": "options", "label": "answer",
                     "id": "example_id"}


def _race(name, config, groups, score, description):
    return TaskSpec(
        name=name,
        kind="multiple_choice",
        description=description,
        label_names=("A", "B", "C", "D"),
        label_values=("A", "B", "C", "D"),
        hub=HubSource(
            path="ehovy/race",
            config=config,
            splits={"train": "train", "validation": "validation", "test": "test"},
            columns=_RACE_HUB_COLUMNS,
        ),
        hub_note="ehovy/race (configs all/middle/high), one row per question.",
        local_dirs=("race", "RACE"),
        layouts=_RACE_LAYOUTS,
        metrics=("accuracy",),
        metric_config="accuracy",
        paper_score=score,
        paper_metric="accuracy",
        paper_table=3,
        groups=groups,
        notes="Context = article + ' ' + question; truncation cuts the end of the article and keeps the question. "
        "Local RACE here: test split missing, train-high partial (15,137 of 18,728 passages).",
    )


_STORY_FIELDS = {
    "context": ("InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4"),
    "choices": ("RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2"),
    "label": ("AnswerRightEnding",),
    "id": ("InputStoryid",),
}

_SCITAIL_ALIASES = {"entails": "entailment", "neutral": "not_entailment"}

# ----------------------------------------------------------------------------------------------------------
# THE table
# ----------------------------------------------------------------------------------------------------------

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        # ---------------- natural language inference (paper Table 2) ----------------
        TaskSpec(
            name="snli",
            kind="pair",
            description="Stanford Natural Language Inference (Bowman et al. 2015), 3-way entailment.",
            label_names=_NLI3,
            label_values=_NLI3,
            hub=HubSource(
                path="stanfordnlp/snli",
                config=None,
                splits={"train": "train", "validation": "validation", "test": "test"},
                columns={"text_a": "premise", "text_b": "hypothesis", "label": "label"},
                negative_label_is_no_gold=True,
            ),
            hub_note="stanfordnlp/snli (label -1 = no gold label, dropped and counted).",
            local_dirs=("snli", "SNLI", "snli_1.0"),
            layouts=(
                _jsonl(
                    "jsonl",
                    _PREMISE,
                    _HYPOTHESIS,
                    _NLI_LABEL,
                    {
                        "train": ("train.jsonl", "train_partial.jsonl", "snli_1.0_train.jsonl"),
                        "validation": ("dev.jsonl", "snli_1.0_dev.jsonl"),
                        "test": ("test.jsonl", "snli_1.0_test.jsonl"),
                    },
                ),
                _glue_tsv(("sentence1",), ("sentence2",), label=("gold_label",)),
            ),
            metrics=("accuracy",),
            metric_config="accuracy",
            paper_score=89.9,
            paper_metric="accuracy",
            paper_table=2,
            drop_labels=("-",),
            notes="Rows with gold label '-' (no annotator majority) are dropped and counted.",
        ),
        TaskSpec(
            name="mnli",
            kind="pair",
            description="MultiNLI matched (Williams et al. 2018): validation = dev_matched.",
            label_names=_NLI3,
            label_values=_NLI3,
            hub=_mnli_hub(matched=True),
            hub_note="nyu-mll/glue config mnli (validation_matched / validation_mismatched).",
            local_dirs=("mnli", "MNLI", "multinli_1.0"),
            layouts=_mnli_layouts(matched=True),
            metrics=("accuracy",),
            metric_config="accuracy",
            paper_score=82.1,
            paper_metric="accuracy",
            paper_table=2,
            drop_labels=("-",),
            extra_splits=("validation_mismatched", "test_mismatched", "ax"),
            glue_submission="MNLI-m.tsv",
            glue_submission_splits=_mnli_submissions(matched=True),
            default_predict_splits=("test", "test_mismatched", "ax"),
        ),
        TaskSpec(
            name="mnli_mm",
            kind="pair",
            description="MultiNLI mismatched: same training data as mnli, validation = dev_mismatched.",
            label_names=_NLI3,
            label_values=_NLI3,
            hub=_mnli_hub(matched=False),
            hub_note="nyu-mll/glue config mnli (validation_mismatched / test_mismatched).",
            local_dirs=("mnli", "MNLI", "multinli_1.0"),
            layouts=_mnli_layouts(matched=False),
            metrics=("accuracy",),
            metric_config="accuracy",
            paper_score=81.4,
            paper_metric="accuracy",
            paper_table=2,
            drop_labels=("-",),
            extra_splits=("validation_matched", "test_matched", "ax"),
            glue_submission="MNLI-mm.tsv",
            glue_submission_splits=_mnli_submissions(matched=False),
            default_predict_splits=("test", "test_matched", "ax"),
        ),
        TaskSpec(
            name="qnli",
            kind="pair",
            description="Question NLI (GLUE, from SQuAD): does the sentence answer the question.",
            label_names=_NLI2,
            label_values=_NLI2,
            hub=_glue_hub("qnli", {"text_a": "question", "text_b": "sentence"}),
            hub_note="nyu-mll/glue config qnli.",
            local_dirs=("qnli", "QNLI"),
            layouts=(
                _glue_tsv(("question",), ("sentence",)),
                _jsonl(
                    "jsonl",
                    ("question",),
                    ("sentence",),
                    ("label",),
                    {"train": ("train.jsonl", "train_partial.jsonl"), "validation": ("dev.jsonl",)},
                ),
            ),
            metrics=("accuracy",),
            metric_config="accuracy",
            paper_score=88.1,
            paper_metric="accuracy",
            paper_table=2,
            truncate_side="b",
            glue_submission="QNLI.tsv",
            notes="Input [s] question [d] sentence [e]; the (longer) context sentence is cut first.",
        ),
        TaskSpec(
            name="rte",
            kind="pair",
            description="Recognizing Textual Entailment (GLUE: RTE 1,2,3,5).",
            label_names=_NLI2,
            label_values=_NLI2,
            hub=_glue_hub("rte", {"text_a": "sentence1", "text_b": "sentence2"}),
            hub_note="nyu-mll/glue config rte.",
            local_dirs=("rte", "RTE"),
            layouts=(_glue_tsv(("sentence1",), ("sentence2",)),),
            metrics=("accuracy",),
            metric_config="accuracy",
            paper_score=56.0,
            paper_metric="accuracy",
            paper_table=2,
            glue_submission="RTE.tsv",
        ),
        TaskSpec(
            name="scitail",
            kind="pair",
            description="SciTail (Khot et al. 2018): science-question entailment, 2-way.",
            label_names=_NLI2,
            label_values=_NLI2,
            hub=HubSource(
                path="allenai/scitail",
                config="tsv_format",
                splits={"train": "train", "validation": "validation", "test": "test"},
                columns={"text_a": "premise", "text_b": "hypothesis", "label": "label"},
                label_aliases=_SCITAIL_ALIASES,
            ),
            hub_note="allenai/scitail config tsv_format (labels 'entails'/'neutral').",
            local_dirs=("scitail", "SciTail", "SciTailV1.1"),
            layouts=(
                _jsonl(
                    "jsonl",
                    _PREMISE,
                    _HYPOTHESIS,
                    _NLI_LABEL,
                    {
                        "train": ("train.jsonl", "snli_format/scitail_1.0_train.txt"),
                        "validation": ("dev.jsonl", "snli_format/scitail_1.0_dev.txt"),
                        "test": ("test.jsonl", "snli_format/scitail_1.0_test.txt"),
                    },
                    aliases=_SCITAIL_ALIASES,
                ),
                LocalLayout(
                    name="tsv_format",
                    format="tsv",
                    files={
                        s: (f"scitail_1.0_{f}.tsv", f"tsv_format/scitail_1.0_{f}.tsv")
                        for s, f in (("train", "train"), ("validation", "dev"), ("test", "test"))
                    },
                    fields={"text_a": ("premise",), "text_b": ("hypothesis",), "label": ("label",), "idx": ()},
                    fieldnames=("premise", "hypothesis", "label"),
                    label_aliases=_SCITAIL_ALIASES,
                ),
            ),
            metrics=("accuracy",),
            metric_config="accuracy",
            paper_score=88.3,
            paper_metric="accuracy",
            paper_table=2,
            substitutions=(
                SplitSubstitution(
                    missing="train",
                    source="test",
                    holdout_split="validation",
                    rest_split="train",
                    holdout=0.2,
                    seed=42,
                    reason="SciTail train/dev are not available locally; the test split is divided 80/20 into "
                    "train/validation (seed 42) and is then not usable as a test set",
                ),
            ),
        ),
        TaskSpec(
            name="wnli",
            kind="pair",
            description="Winograd NLI (GLUE). Not reported in the GPT-1 paper.",
            label_names=("not_entailment", "entailment"),
            label_values=("0", "1"),
            hub=_glue_hub("wnli", {"text_a": "sentence1", "text_b": "sentence2"}),
            hub_note="nyu-mll/glue config wnli.",
            local_dirs=("wnli", "WNLI"),
            layouts=(_glue_tsv(("sentence1",), ("sentence2",)),),
            metrics=("accuracy",),
            metric_config="accuracy",
            paper_score=None,
            paper_metric=None,
            paper_table=None,
            glue_submission="WNLI.tsv",
        ),
        # ---------------- question answering & commonsense reasoning (paper Table 3) ----------------
        TaskSpec(
            name="story_cloze",
            kind="multiple_choice",
            description="Story Cloze Test spring 2016 (Mostafazadeh et al. 2016): pick the right story ending.",
            label_names=("1", "2"),
            label_values=("1", "2"),
            hub=None,
            hub_note="No public Hub copy (distributed only on request by the ROCStories authors): local files "
            "are required (data_dir).",
            local_dirs=("story_cloze", "storycloze", "ROCStories"),
            layouts=(
                LocalLayout(
                    name="csv",
                    format="csv",
                    files={
                        "validation": ("cloze_test_val__spring2016 - cloze_test_ALL_val.csv", "val_spring2016.csv"),
                        "test": ("cloze_test_test__spring2016 - cloze_test_ALL_test.csv", "test_spring2016.csv"),
                    },
                    fields=_STORY_FIELDS,
                ),
                LocalLayout(
                    name="tsv",
                    format="tsv",
                    files={"validation": ("val_spring2016.tsv",), "test": ("test_spring2016.tsv",)},
                    fields=_STORY_FIELDS,
                ),
            ),
            metrics=("accuracy",),
            metric_config="accuracy",
            paper_score=86.5,
            paper_metric="accuracy",
            paper_table=3,
            substitutions=(
                SplitSubstitution(
                    missing="train",
                    source="validation",
                    holdout_split="validation",
                    rest_split="train",
                    holdout=374,
                    seed=3535999445,
                    reason="Story Cloze has no labeled train split; as in the paper's code "
                    "(openai/finetune-transformer-lm) the spring-2016 validation set is split into 1,497 train / "
                    "374 validation stories (train_test_split, random_state=3535999445)",
                ),
            ),
            notes="Context = the four story sentences joined with ' '; choices = the two endings.",
        ),
        _race("race", "all", ("middle", "high"), 59.0, "RACE (Lai et al. 2017), middle + high school exams."),
        _race("race_middle", "middle", ("middle",), 62.9, "RACE-m: middle-school part of RACE."),
        _race("race_high", "high", ("high",), 57.4, "RACE-h: high-school part of RACE."),
        # ---------------- semantic similarity & classification (paper Table 4) ----------------
        TaskSpec(
            name="cola",
            kind="single",
            description="Corpus of Linguistic Acceptability (GLUE).",
            label_names=("unacceptable", "acceptable"),
            label_values=("0", "1"),
            hub=_glue_hub("cola", {"text_a": "sentence"}),
            hub_note="nyu-mll/glue config cola.",
            local_dirs=("cola", "CoLA"),
            layouts=(
                _glue_tsv(("sentence",), fieldnames=("source", "label", "original_author_mark", "sentence")),
            ),
            metrics=("matthews_correlation",),
            metric_config="matthews_correlation",
            paper_score=45.4,
            paper_metric="matthews_correlation",
            paper_table=4,
            glue_submission="CoLA.tsv",
            notes="train/dev TSVs have no header (source, label, author mark, sentence).",
        ),
        TaskSpec(
            name="sst2",
            kind="single",
            description="Stanford Sentiment Treebank, binary (GLUE).",
            label_names=("negative", "positive"),
            label_values=("0", "1"),
            hub=_glue_hub("sst2", {"text_a": "sentence"}),
            hub_note="nyu-mll/glue config sst2.",
            local_dirs=("sst2", "SST-2"),
            layouts=(_glue_tsv(("sentence",)),),
            metrics=("accuracy",),
            metric_config="accuracy",
            paper_score=91.3,
            paper_metric="accuracy",
            paper_table=4,
            glue_submission="SST-2.tsv",
        ),
        TaskSpec(
            name="mrpc",
            kind="similarity",
            description="Microsoft Research Paraphrase Corpus (GLUE).",
            label_names=("not_equivalent", "equivalent"),
            label_values=("0", "1"),
            hub=_glue_hub("mrpc", {"text_a": "sentence1", "text_b": "sentence2"}),
            hub_note="nyu-mll/glue config mrpc.",
            local_dirs=("mrpc", "MRPC"),
            layouts=(_glue_tsv(("#1 String",), ("#2 String",), label=("Quality",)),),
            metrics=("f1", "accuracy"),
            metric_config="accuracy_f1",
            paper_score=82.3,
            paper_metric="f1",
            paper_table=4,
            glue_submission="MRPC.tsv",
            notes="GLUE TSV headers start with a UTF-8 BOM.",
        ),
        TaskSpec(
            name="stsb",
            kind="similarity",
            description="Semantic Textual Similarity Benchmark (GLUE), regression 0-5.",
            label_names=None,
            label_values=None,
            hub=_glue_hub("stsb", {"text_a": "sentence1", "text_b": "sentence2"}),
            hub_note="nyu-mll/glue config stsb.",
            local_dirs=("stsb", "STS-B"),
            layouts=(_glue_tsv(("sentence1",), ("sentence2",), label=("score",)),),
            metrics=("pearson", "spearmanr"),
            metric_config="pearson_spearmanr",
            paper_score=82.0,
            paper_metric="pearson",
            paper_table=4,
            label_range=(0.0, 5.0),
            glue_submission="STS-B.tsv",
        ),
        TaskSpec(
            name="qqp",
            kind="similarity",
            description="Quora Question Pairs (GLUE): are the two questions duplicates.",
            label_names=("not_duplicate", "duplicate"),
            label_values=("0", "1"),
            hub=_glue_hub("qqp", {"text_a": "question1", "text_b": "question2"}),
            hub_note="nyu-mll/glue config qqp.",
            local_dirs=("qqp", "QQP"),
            layouts=(
                _glue_tsv(("question1",), ("question2",), label=("is_duplicate",), idx=("id",)),
                _jsonl(
                    "jsonl",
                    ("question1",),
                    ("question2",),
                    ("label", "is_duplicate"),
                    {"train": ("train.jsonl", "train_partial.jsonl"), "validation": ("dev.jsonl",)},
                    idx=("idx",),
                ),
            ),
            metrics=("f1", "accuracy"),
            metric_config="accuracy_f1",
            paper_score=70.3,
            paper_metric="f1",
            paper_table=4,
            substitutions=(
                SplitSubstitution(
                    missing="validation",
                    source="train",
                    holdout_split="validation",
                    rest_split="train",
                    holdout=0.1,
                    seed=42,
                    reason="QQP dev is not available locally; 10% of the local train file is held out "
                    "as validation (seed 42) and the rest is used for training",
                ),
            ),
            glue_submission="QQP.tsv",
        ),
    )
}

TASK_NAMES: tuple[str, ...] = tuple(TASKS)


def list_tasks() -> list[str]:
    """Names of all registered tasks, in table order."""
    return list(TASK_NAMES)


def get_task(name: str | TaskSpec) -> TaskSpec:
    """The `TaskSpec` named ``name`` (case-insensitive; ``-`` treated as ``_``); a TaskSpec is returned as is."""
    if isinstance(name, TaskSpec):
        return name
    key = str(name).strip().lower().replace("-", "_")
    aliases = {"sst_2": "sst2", "sts_b": "stsb", "mnli_m": "mnli", "mnli_matched": "mnli",
               "mnli_mismatched": "mnli_mm", "storycloze": "story_cloze", "race_m": "race_middle",
               "race_h": "race_high"}
    key = aliases.get(key, key)
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
    return TASKS[key]


def task_to_dict(spec: TaskSpec) -> dict:
    """A JSON-able copy of a `TaskSpec` (kept in results.json for a task built from your data, which no name
    looks up: the card and the Hub upload read it back with `task_from_dict`)."""
    return dataclasses.asdict(spec)


def task_from_dict(data: dict) -> TaskSpec:
    """The `TaskSpec` that `task_to_dict` wrote (tuples restored from JSON lists)."""
    values = dict(data)
    if values.get("hub"):
        values["hub"] = HubSource(**values["hub"])
    values["layouts"] = tuple(LocalLayout(**{k: tuple(v) if isinstance(v, list) else v for k, v in layout.items()})
                              for layout in values.get("layouts") or ())
    values["substitutions"] = tuple(SplitSubstitution(**s) for s in values.get("substitutions") or ())
    for name in ("label_names", "label_values", "local_dirs", "metrics", "drop_labels", "label_range", "groups",
                 "extra_splits", "default_predict_splits"):
        if isinstance(values.get(name), list):
            values[name] = tuple(values[name])
    return TaskSpec(**values)


def task_of_results(results: dict) -> TaskSpec:
    """The task of a run's results.json: its stored spec (your data), else the paper task of that name."""
    return task_from_dict(results["task_spec"]) if results.get("task_spec") else get_task(results["task"])
