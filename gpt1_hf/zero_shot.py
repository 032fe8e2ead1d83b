"""Zero-shot behaviours of a pretrained GPT-1 language model (paper §5, "Zero-shot Behaviors", Figure 2 right).

No fine-tuning: each task is solved by a heuristic on the LM's probabilities (docs/zero_shot.md):

* SST-2: append the token "very" to the sentence and compare the LM probability of "positive" vs "negative" as the
  next word (`sst2_scores`).
* CoLA: the average token log-probability of the sentence, thresholded; the threshold is the one maximising MCC
  on (a sample of) the train split, and is reported (`cola_scores`, `best_threshold`).
* RACE, Story Cloze: the answer with the highest average token log-probability given the context
  (`multiple_choice_scores`).
* WNLI (Winograd, the paper's DPRD heuristic adapted to entailment pairs): the hypothesis is the premise's clause
  with the pronoun replaced by a candidate; the candidate is substituted into the premise and the average token
  log-probability of the rest of the clause is compared with the pronoun's (`wnli_scores`, `wnli_predictions`).

Scoring (`continuation_logprobs`, `next_token_logprobs`) is batched with right padding and an attention mask, under
`torch.no_grad`, optionally under bf16 autocast (log-softmax in float32), and applies the LM head only at the
positions that are scored. Context and continuation are tokenized separately (no special tokens: the pretrained LM
never saw them) and concatenated; an over-long input keeps the end of the context.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
from torch.nn import functional as F

__all__ = [
    "ZERO_SHOT_TASKS",
    "SST2_PROMPT_WORD",
    "SST2_LABEL_WORDS",
    "continuation_logprobs",
    "average_logprobs",
    "next_token_logprobs",
    "sst2_scores",
    "cola_scores",
    "multiple_choice_scores",
    "best_threshold",
    "wnli_substitution",
    "wnli_scores",
    "wnli_predictions",
    "evaluate_zero_shot",
]

logger = logging.getLogger(__name__)

ZERO_SHOT_TASKS = ("sst2", "cola", "race", "story_cloze", "wnli")
SST2_PROMPT_WORD = "very"
SST2_LABEL_WORDS = ("negative", "positive")  # label 0, label 1 (gpt1_hf.tasks: sst2 label_names)

HEURISTICS = {
    "sst2": 'append "very" to the sentence; predict positive iff P("positive" | sentence very) > P("negative" | ...)',
    "cola": "average token log-probability of the sentence > threshold (threshold maximising MCC on train)",
    "race": "answer with the highest average token log-probability given article + question",
    "story_cloze": "ending with the highest average token log-probability given the four-sentence story",
    "wnli": "substitute the hypothesis' candidate for the premise's pronoun; average log-probability of the rest of "
            "the clause minus the pronoun's; highest candidate per pronoun, else margin > threshold (on train)",
}


# ----------------------------------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------------------------------


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _autocast(device: torch.device, bf16: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def _max_positions(model, max_length: int | None) -> int:
    n = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None) or 512
    return min(n, max_length) if max_length else n


def _tokenize(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    texts = list(texts)
    if not texts:
        return []
    # verbose=False: the contexts are cut to the model's positions afterwards (no "indexing errors" to warn of)
    out = [list(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]
    # An empty text must give no tokens whatever the tokenizer does with "".
    return [ids if text.strip() else [] for ids, text in zip(out, texts, strict=True)]


def _pad_id(model, tokenizer) -> int:
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(model.config, "pad_token_id", None)):
        if value is not None and 0 <= value < model.config.vocab_size:
            return int(value)
    return 0


def _hidden_states(model, input_ids, attention_mask):
    """Final hidden states and the LM head, so that the head runs only where needed; None for other models."""
    backbone, head = getattr(model, "transformer", None), getattr(model, "lm_head", None)
    if backbone is None or head is None:
        return None, None
    out = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state, head


def _token_logprobs(model, input_ids, attention_mask, rows, positions, targets):
    """log P(targets | prefix) where row `rows[i]`'s position `positions[i]` predicts `targets[i]`."""
    hidden, head = _hidden_states(model, input_ids, attention_mask)
    if hidden is not None:
        logits = head(hidden[rows, positions])
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[rows, positions]
    return F.log_softmax(logits.float(), dim=-1).gather(-1, targets[:, None]).squeeze(-1)


def _batches(lengths: Sequence[int], batch_size: int):
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # similar lengths together: little padding
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@torch.no_grad()
def continuation_logprobs(
    model,
    tokenizer,
    contexts: Sequence[str],
    continuations: Sequence[str],
    batch_size: int = 16,
    bf16: bool = False,
    max_length: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of log P(continuation tokens | context, previous continuation tokens) and the number of tokens scored.

    Context and continuation are tokenized separately and concatenated (no special tokens). With an empty context
    the first continuation token has nothing to be predicted from and is not scored. Inputs longer than the model's
    n_positions (or `max_length`) keep the end of the context (and, if needed, the start of the continuation).
    Returns two float64 / int64 arrays of len(contexts).
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts for {len(continuations)} continuations")
    limit = _max_positions(model, max_length)
    ctx_ids, cont_ids = _tokenize(tokenizer, contexts), _tokenize(tokenizer, continuations)
    sequences, starts, truncated = [], [], 0
    for ctx, cont in zip(ctx_ids, cont_ids, strict=True):
        if len(ctx) + len(cont) > limit:
            truncated += 1
            cont = cont[: limit - 1] if ctx else cont[:limit]
            ctx = ctx[len(ctx) - (limit - len(cont)) :] if ctx else ctx
        sequences.append(ctx + cont)
        starts.append(max(len(ctx), 1))
    if truncated:
        logger.warning("%d of %d inputs were longer than %d tokens; kept the end of the context", truncated,
                       len(sequences), limit)

    sums = np.zeros(len(sequences), dtype=np.float64)
    counts = np.array([len(s) - st for s, st in zip(sequences, starts, strict=True)], dtype=np.int64).clip(min=0)
    device, pad = _device(model), _pad_id(model, tokenizer)
    for batch in _batches([len(s) for s in sequences], batch_size):
        batch = [i for i in batch if counts[i] > 0]
        if not batch:
            continue
        width = max(len(sequences[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        rows, positions, targets = [], [], []
        for r, i in enumerate(batch):
            seq = sequences[i]
            input_ids[r, : len(seq)] = torch.tensor(seq)
            attention_mask[r, : len(seq)] = 1
            for t in range(starts[i], len(seq)):  # position t - 1 predicts token t
                rows.append(r)
                positions.append(t - 1)
                targets.append(seq[t])
        rows_t = torch.tensor(rows, device=device)
        with _autocast(device, bf16):
            logprobs = _token_logprobs(model, input_ids.to(device), attention_mask.to(device), rows_t,
                                       torch.tensor(positions, device=device), torch.tensor(targets, device=device))
        per_row = torch.zeros(len(batch), dtype=torch.float64, device=device).index_add_(0, rows_t, logprobs.double())
        sums[batch] = per_row.cpu().numpy()
    return sums, counts


def average_logprobs(model, tokenizer, contexts, continuations, **kwargs) -> np.ndarray:
    """Average token log-probability of each continuation given its context (nan where no token is scored)."""
    sums, counts = continuation_logprobs(model, tokenizer, contexts, continuations, **kwargs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


@torch.no_grad()
def next_token_logprobs(
    model,
    tokenizer,
    contexts: Sequence[str],
    token_ids: Sequence[int],
    batch_size: int = 16,
    bf16: bool = False,
    max_length: int | None = None,
) -> np.ndarray:
    """(len(contexts), len(token_ids)) array of log P(next token = token_ids[k] | context). Contexts longer than the
    model accepts keep their end."""
    limit = _max_positions(model, max_length)
    sequences = [ids[-limit:] for ids in _tokenize(tokenizer, contexts)]
    if any(not s for s in sequences):
        raise ValueError("next_token_logprobs needs a non-empty context for every example")
    device, pad = _device(model), _pad_id(model, tokenizer)
    wanted = torch.tensor(list(token_ids), device=device)
    out = np.zeros((len(sequences), len(wanted)), dtype=np.float64)
    for batch in _batches([len(s) for s in sequences], batch_size):
        width = max(len(sequences[i]) for i in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, i in enumerate(batch):
            input_ids[r, : len(sequences[i])] = torch.tensor(sequences[i])
            attention_mask[r, : len(sequences[i])] = 1
        last = torch.tensor([len(sequences[i]) - 1 for i in batch], device=device)
        rows = torch.arange(len(batch), device=device)
        with _autocast(device, bf16):
            hidden, head = _hidden_states(model, input_ids.to(device), attention_mask.to(device))
            if hidden is not None:
                logits = head(hidden[rows, last])
            else:
                logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
                logits = logits[rows, last]
        out[batch] = F.log_softmax(logits.float(), dim=-1)[:, wanted].double().cpu().numpy()
    return out


# ----------------------------------------------------------------------------------------------------------------------
# Task heuristics
# ----------------------------------------------------------------------------------------------------------------------


def sst2_scores(model, tokenizer, sentences: Sequence[str], prompt_word: str = SST2_PROMPT_WORD,
                label_words: Sequence[str] = SST2_LABEL_WORDS, **kwargs) -> np.ndarray:
    """(N, len(label_words)) log P(word | sentence + " very"); the prediction is the argmax (label order).

    A word that is one token is read from a single next-token distribution; a word of several tokens is scored by
    the log-probability of the whole word (sum over its tokens)."""
    contexts = [f"{s} {prompt_word}" for s in sentences]
    word_ids = _tokenize(tokenizer, list(label_words))
    if all(len(ids) == 1 for ids in word_ids):
        return next_token_logprobs(model, tokenizer, contexts, [ids[0] for ids in word_ids], **kwargs)
    columns = [continuation_logprobs(model, tokenizer, contexts, [w] * len(contexts), **kwargs)[0] for w in label_words]
    return np.stack(columns, axis=1)


def cola_scores(model, tokenizer, sentences: Sequence[str], **kwargs) -> np.ndarray:
    """Average token log-probability of each sentence (its first token is not scored; nan for one-token sentences)."""
    return average_logprobs(model, tokenizer, [""] * len(sentences), list(sentences), **kwargs)


def multiple_choice_scores(model, tokenizer, contexts: Sequence[str], choices: Sequence[Sequence[str]],
                           **kwargs) -> np.ndarray:
    """(N, num_choices) average token log-probability of each choice given its context; argmax = prediction."""
    sizes = {len(c) for c in choices}
    if len(sizes) > 1:
        raise ValueError(f"examples have different numbers of choices: {sorted(sizes)}")
    k = sizes.pop() if sizes else 0
    flat_ctx = [ctx for ctx, cs in zip(contexts, choices, strict=True) for _ in cs]
    flat_choices = [c for cs in choices for c in cs]
    return average_logprobs(model, tokenizer, flat_ctx, flat_choices, **kwargs).reshape(len(contexts), k)


def _mcc(tp, tn, fp, fn):
    denom = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (tp * tn - fp * fn) / np.where(denom > 0, denom, 1), 0.0)


def best_threshold(scores, labels, metric: str = "matthews_correlation") -> float:
    """The threshold t maximising `metric` ("matthews_correlation" or "accuracy") of `score > t` -> label 1.

    Candidates are midpoints between consecutive distinct scores (and below the minimum); ties keep the lowest."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    labels = np.asarray(labels).astype(np.int64)
    finite = np.unique(scores[np.isfinite(scores)])
    if finite.size == 0:
        return 0.0
    candidates = np.concatenate([[finite[0] - 1.0], (finite[:-1] + finite[1:]) / 2, [finite[-1] + 1.0]])
    pred = scores[None, :] > candidates[:, None]
    pos = labels[None, :] == 1
    tp, tn = (pred & pos).sum(1), (~pred & ~pos).sum(1)
    fp, fn = (pred & ~pos).sum(1), (~pred & pos).sum(1)
    if metric == "accuracy":
        value = (tp + tn) / len(labels)
    elif metric == "matthews_correlation":
        value = _mcc(tp, tn, fp, fn)
    else:
        raise ValueError(f"unknown threshold metric {metric!r}")
    return float(candidates[int(np.argmax(value))])


# ----------------------------------------------------------------------------------------------------------------------
# WNLI (Winograd schemas as entailment pairs)
# ----------------------------------------------------------------------------------------------------------------------

_WORD = re.compile(r"\S+")
#: third-person pronouns a Winograd schema resolves (the word replaced by the candidate)
WNLI_PRONOUNS = frozenset("he she it they him her them his its their hers theirs himself herself itself themselves".split())


def _norm(word: str) -> str:
    return re.sub(r"^\W+|\W+$", "", word.lower())


def wnli_substitution(premise: str, hypothesis: str) -> dict | None:
    """Align a WNLI hypothesis with its premise: hypothesis = [prefix shared with the premise] + candidate + rest,
    where `rest` (the longest word suffix of the hypothesis found in the premise right after a third-person pronoun,
    `WNLI_PRONOUNS`) follows the pronoun in the premise (its last such occurrence).

    Returns {"candidate_context": premise up to the pronoun with the candidate substituted, "pronoun_context": the
    premise up to and including the pronoun, "rest": the hypothesis' rest, "candidate", "pronoun", "key": pronoun
    position (premise, word index)}; None when the hypothesis cannot be aligned this way.
    """
    a, b = _WORD.findall(premise), _WORD.findall(hypothesis)
    na, nb = [_norm(w) for w in a], [_norm(w) for w in b]
    for size in range(len(b) - 1, 0, -1):  # the rest leaves at least one word for the candidate
        tail = nb[-size:]
        starts = [j for j in range(1, len(a) - size + 1) if na[j : j + size] == tail and na[j - 1] in WNLI_PRONOUNS]
        if not starts:
            continue
        j = starts[-1]
        before = b[: len(b) - size]
        shared = 0  # words of the hypothesis that repeat the premise just before the pronoun ("Father gave" Timmy)
        for p in range(len(before) - 1, 0, -1):
            if p <= j - 1 and [_norm(w) for w in before[:p]] == na[j - 1 - p : j - 1]:
                shared = p
                break
        candidate = before[shared:]
        if not candidate:
            return None
        return {
            "candidate_context": " ".join(a[: j - 1] + candidate),
            "pronoun_context": " ".join(a[:j]),
            "rest": " ".join(b[-size:]),
            "candidate": " ".join(candidate),
            "pronoun": a[j - 1],
            "key": (premise, j - 1),
        }
    return None


def wnli_scores(model, tokenizer, premises: Sequence[str], hypotheses: Sequence[str], **kwargs) -> dict:
    """Per example: `candidate` = average log-prob of the rest after substituting the candidate, `pronoun` = the
    same with the premise's own pronoun, `margin` = candidate - pronoun, `key` = the pronoun it resolves.

    Examples that cannot be aligned (`wnli_substitution` is None) fall back to the average log-probability of the
    whole hypothesis given the premise (candidate) vs given nothing (pronoun); their key is unique."""
    subs = [wnli_substitution(p, h) for p, h in zip(premises, hypotheses, strict=True)]
    cand_ctx, pron_ctx, rests, keys = [], [], [], []
    for i, (sub, p, h) in enumerate(zip(subs, premises, hypotheses, strict=True)):
        if sub is None:
            cand_ctx.append(p)
            pron_ctx.append("")
            rests.append(h)
            keys.append(("unaligned", i))
        else:
            cand_ctx.append(sub["candidate_context"])
            pron_ctx.append(sub["pronoun_context"])
            rests.append(sub["rest"])
            keys.append(sub["key"])
    both = average_logprobs(model, tokenizer, cand_ctx + pron_ctx, rests + rests, **kwargs)
    candidate, pronoun = both[: len(rests)], both[len(rests) :]
    return {"candidate": candidate, "pronoun": pronoun, "margin": candidate - pronoun, "key": keys,
            "aligned": np.array([s is not None for s in subs])}


def wnli_predictions(scores: dict, threshold: float = 0.0) -> np.ndarray:
    """1 (entailment) / 0. Hypotheses resolving the same pronoun with different candidates compete: the one with the
    highest substituted score is entailed, the others are not. A lone hypothesis is entailed iff margin > threshold."""
    groups = defaultdict(list)
    for i, key in enumerate(scores["key"]):
        groups[key].append(i)
    margin = np.nan_to_num(scores["margin"], nan=-np.inf)
    candidate = np.nan_to_num(scores["candidate"], nan=-np.inf)
    pred = (margin > threshold).astype(np.int64)
    for members in groups.values():
        if len(members) > 1:
            best = max(members, key=lambda i: candidate[i])
            for i in members:
                pred[i] = int(i == best)
    return pred


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation on a task split
# ----------------------------------------------------------------------------------------------------------------------


def _labels(ds) -> np.ndarray:
    return np.asarray(ds["label"], dtype=np.int64)


def _threshold_from(task, model, tokenizer, data_dir, split, max_examples, seed, kwargs) -> float:
    from .data import load_task_split

    ds = load_task_split(task, split, data_dir=data_dir, max_examples=max_examples, seed=seed)
    labels = _labels(ds)
    if task == "cola":
        return best_threshold(cola_scores(model, tokenizer, ds["text_a"], **kwargs), labels)
    scores = wnli_scores(model, tokenizer, ds["text_a"], ds["text_b"], **kwargs)
    lone = np.array([sum(k == key for k in scores["key"]) == 1 for key in scores["key"]])
    if not lone.any():
        return 0.0
    return best_threshold(scores["margin"][lone], labels[lone], metric="accuracy")


def evaluate_zero_shot(
    task: str,
    model,
    tokenizer,
    data_dir=None,
    split: str = "validation",
    max_examples: int | None = None,
    seed: int = 0,
    threshold: float | None = None,
    threshold_split: str = "train",
    threshold_examples: int | None = 2000,
    batch_size: int = 16,
    bf16: bool = False,
    max_length: int | None = None,
) -> dict:
    """Run the zero-shot heuristic of `task` on one split; returns metrics, predictions and what was done.

    CoLA and WNLI need a threshold: `threshold` if given, else the one maximising MCC (CoLA) / accuracy (WNLI lone
    hypotheses) on `threshold_examples` random examples of `threshold_split` (reported in the result). Metrics come
    from `gpt1_hf.metrics.compute_task_metrics` (RACE: also per middle/high group); unlabeled splits get none.
    """
    from .data import load_task_split
    from .metrics import compute_task_metrics

    if task not in ZERO_SHOT_TASKS:
        raise ValueError(f"no zero-shot heuristic for {task!r}; choose from {ZERO_SHOT_TASKS}")
    from .convert import check_tokenizer_matches_model

    check_tokenizer_matches_model(tokenizer, model.config.vocab_size)  # another checkpoint's ids: garbage scores
    kwargs = dict(batch_size=batch_size, bf16=bf16, max_length=max_length)
    was_training = model.training
    model.eval()
    try:
        ds = load_task_split(task, split, data_dir=data_dir, max_examples=max_examples, seed=seed)
        result = {"task": task, "split": split, "num_examples": len(ds), "heuristic": HEURISTICS[task]}
        if task in ("cola", "wnli") and threshold is None:
            threshold = _threshold_from(task, model, tokenizer, data_dir, threshold_split, threshold_examples, seed,
                                        kwargs)
            result["threshold_source"] = f"{threshold_split} ({threshold_examples or 'all'} examples max, seed {seed})"
        elif task in ("cola", "wnli"):
            result["threshold_source"] = "given"
        if task == "sst2":
            scores = sst2_scores(model, tokenizer, ds["text_a"], **kwargs)
            predictions = scores.argmax(1)
        elif task == "cola":
            scores = cola_scores(model, tokenizer, ds["text_a"], **kwargs)
            predictions = (np.nan_to_num(scores, nan=-np.inf) > threshold).astype(np.int64)
        elif task == "wnli":
            details = wnli_scores(model, tokenizer, ds["text_a"], ds["text_b"], **kwargs)
            scores = details["margin"]
            predictions = wnli_predictions(details, threshold)
            result["num_aligned"] = int(details["aligned"].sum())
        else:
            scores = multiple_choice_scores(model, tokenizer, ds["context"], ds["choices"], **kwargs)
            predictions = np.nan_to_num(scores, nan=-np.inf).argmax(1)
        if threshold is not None and task in ("cola", "wnli"):
            result["threshold"] = float(threshold)
        labels = _labels(ds)
        if len(labels) and (labels >= 0).all():
            groups = ds["group"] if "group" in ds.column_names else None
            result["metrics"] = compute_task_metrics(task, predictions, labels, groups=groups)
        result["predictions"] = [int(p) for p in predictions]
        result["scores"] = np.asarray(scores, dtype=np.float64).tolist()
        return result
    finally:
        model.train(was_training)

