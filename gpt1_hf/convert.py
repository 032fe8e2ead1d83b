"""Conversion between gpt1 and the other GPT-1 checkpoint formats.

Three formats hold the same network (post-LN, 12 x 768, learned positions, tied LM head):

* ``original``: OpenAI's release (openai/finetune-transformer-lm, ``model/``): ``params_shapes.json`` plus
  ``params_0.npy`` ... ``params_9.npy``, the 146 float32 arrays concatenated flat and split into 10 shards, next to
  the BPE files ``encoder_bpe_40000.json`` and ``vocab_40000.bpe``. Array 0 is the position embedding (512, 768),
  array 1 the token embedding (40478, 768), then 12 arrays per block in the TF variable creation order of the
  original ``block()``: ``attn/c_attn/w`` (1, 768, 2304), ``attn/c_attn/b``, ``attn/c_proj/w`` (1, 768, 768),
  ``attn/c_proj/b``, ``ln_1/g``, ``ln_1/b``, ``mlp/c_fc/w`` (1, 768, 3072), ``mlp/c_fc/b``, ``mlp/c_proj/w``
  (1, 3072, 768), ``mlp/c_proj/b``, ``ln_2/g``, ``ln_2/b``. Projections are TF ``conv1d`` kernels (1, in, out).
* ``openai-gpt``: transformers' ``OpenAIGPT*`` checkpoints (``openai-community/openai-gpt``): ``Conv1D`` weights
  (in, out), the 40,478 BPE rows only.
* ``gpt1``: this package: ``nn.Linear`` weights (out, in) and the vocabulary followed by ``_start_``,
  ``_delimiter_``, ``_classify_`` and ``<pad>``, whose embedding rows are drawn from N(0, 0.02) (seeded) as the
  paper and the original code do for the fine-tuning tokens.

Model objects: `openai_gpt_to_gpt1`, `gpt1_to_openai_gpt`, `original_to_gpt1`, `gpt1_to_original`.
Folders / Hub repos: `load_as_gpt1` (any format, for training scripts), `load_tokenizer_as_gpt1`,
`check_tokenizer_matches_model`, `checkpoint_n_layer`, `detect_checkpoint_format`, `convert_checkpoint` (what
``scripts/convert_checkpoint.py`` runs).
See docs/conversion.md.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .configuration_gpt1 import BPE_VOCAB_SIZE, GPT1Config
from .modeling_gpt1 import GPT1LMHeadModel, GPT1Model, GPT1PreTrainedModel

__all__ = [
    "NUM_SPECIAL_TOKENS",
    "FORMATS",
    "ORIGINAL_NUM_SHARDS",
    "openai_gpt_to_gpt1",
    "gpt1_to_openai_gpt",
    "gpt1_config_from_openai_gpt",
    "original_param_names",
    "read_original_arrays",
    "original_to_gpt1",
    "gpt1_to_original",
    "write_original_format",
    "check_bpe_files",
    "find_bpe_files",
    "detect_checkpoint_format",
    "load_as_gpt1",
    "load_tokenizer_as_gpt1",
    "check_tokenizer_matches_model",
    "checkpoint_n_layer",
    "convert_checkpoint",
]

NUM_SPECIAL_TOKENS = 4  # _start_, _delimiter_, _classify_, <pad>
FORMATS = ("original", "openai-gpt", "gpt1")
ORIGINAL_NUM_SHARDS = 10
ORIGINAL_SHAPES_FILE = "params_shapes.json"
ORIGINAL_BPE_FILES = ("encoder_bpe_40000.json", "vocab_40000.bpe")
OPENAI_GPT_BPE_FILES = ("vocab.json", "merges.txt")
_HUB_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "force_download", "proxies", "subfolder")
_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# Per block, in the TF variable creation order of the original `block()`: attn, ln_1, mlp, ln_2 (conv1d: w then b;
# norm: g then b). The gpt1 name of each, and whether it is a conv1d kernel (1, in, out) -> nn.Linear (out, in).
_ORIGINAL_BLOCK = (
    ("attn/c_attn/w", "attn.c_attn.weight", True),
    ("attn/c_attn/b", "attn.c_attn.bias", False),
    ("attn/c_proj/w", "attn.c_proj.weight", True),
    ("attn/c_proj/b", "attn.c_proj.bias", False),
    ("ln_1/g", "ln_1.weight", False),
    ("ln_1/b", "ln_1.bias", False),
    ("mlp/c_fc/w", "mlp.c_fc.weight", True),
    ("mlp/c_fc/b", "mlp.c_fc.bias", False),
    ("mlp/c_proj/w", "mlp.c_proj.weight", True),
    ("mlp/c_proj/b", "mlp.c_proj.bias", False),
    ("ln_2/g", "ln_2.weight", False),
    ("ln_2/b", "ln_2.bias", False),
)
# gpt1 activation_function -> openai-gpt afn, for the activations openai-gpt computes identically (its ACT_FNS:
# "gelu" is the tanh approximation = gpt1's "gelu_new"). Exact (erf) "gelu" and the others have no equivalent.
_GPT1_TO_OPENAI_AFN = {"gelu_new": "gelu", "relu": "relu", "silu": "silu", "swish": "swish"}
_ORIGINAL_HEAD = (("positions_embed", "positions_embed.weight"), ("tokens_embed", "tokens_embed.weight"))


# ----------------------------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------------------------


def _backbone_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's tensors keyed without the `transformer.` prefix, whatever head `model` is."""
    backbone = getattr(model, "transformer", model)
    return {k: v.detach().clone() for k, v in backbone.state_dict().items() if not k.endswith(".attn.bias")}


def _transpose_projections(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: (v.t().contiguous() if k.endswith(_TRANSPOSED) else v) for k, v in state_dict.items()}


def _special_rows(n_embd: int, std: float, seed: int, dtype: torch.dtype) -> torch.Tensor:
    """The four special-token embedding rows, N(0, std) from a seeded generator (the same for every format)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(NUM_SPECIAL_TOKENS, n_embd, generator=generator) * std).to(dtype)


def _load_backbone(target: GPT1PreTrainedModel, state: dict[str, torch.Tensor], what: str) -> GPT1PreTrainedModel:
    backbone = getattr(target, "transformer", target)
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{what} conversion mismatch: missing {missing}, unexpected {unexpected}")
    if hasattr(target, "lm_head"):
        target.tie_weights()
    return target


def _split_hub_kwargs(kwargs: dict) -> dict:
    """Remove and return the Hub download arguments (revision, token, ...) from `kwargs`."""
    return {k: kwargs.pop(k) for k in _HUB_KWARGS if k in kwargs}


# ----------------------------------------------------------------------------------------------------------------------
# transformers openai-gpt <-> gpt1 (model objects)
# ----------------------------------------------------------------------------------------------------------------------


def gpt1_config_from_openai_gpt(openai_config, vocab_size: int | None = None, **overrides) -> GPT1Config:
    kwargs = dict(
        vocab_size=vocab_size if vocab_size is not None else openai_config.vocab_size,
        n_positions=openai_config.n_positions,
        n_embd=openai_config.n_embd,
        n_layer=openai_config.n_layer,
        n_head=openai_config.n_head,
        n_inner=4 * openai_config.n_embd,
        activation_function={"gelu": "gelu_new"}.get(openai_config.afn, openai_config.afn),
        embd_pdrop=openai_config.embd_pdrop,
        attn_pdrop=openai_config.attn_pdrop,
        resid_pdrop=openai_config.resid_pdrop,
        layer_norm_epsilon=openai_config.layer_norm_epsilon,
        initializer_range=openai_config.initializer_range,
    )
    kwargs.update(overrides)
    return GPT1Config(**kwargs)


def openai_gpt_to_gpt1(
    model: nn.Module,
    add_special_tokens: bool | None = None,
    target_class: type[GPT1PreTrainedModel] | None = None,
    seed: int = 0,
    **config_overrides,
) -> GPT1PreTrainedModel:
    """Convert a transformers `OpenAIGPT*` model object into a gpt1 model with the same weights.

    add_special_tokens: append the four special-token rows (N(0, initializer_range), seeded); default: only when the
        source has exactly GPT-1's 40,478 BPE entries (the released checkpoint) and does not record that it already
        holds them (`config.n_special == 4`, written by `gpt1_to_openai_gpt`). Otherwise the vocabulary is kept and
        the last four ids serve as the special tokens.
    target_class: the gpt1 class to build (default: GPT1LMHeadModel if the source has an LM head, else GPT1Model).
        A task head gets the converted backbone and a freshly initialised task layer.
    """
    src_config = model.config
    if add_special_tokens is None:
        has_specials = getattr(src_config, "n_special", 0) == NUM_SPECIAL_TOKENS
        add_special_tokens = src_config.vocab_size == BPE_VOCAB_SIZE and not has_specials
    vocab_size = src_config.vocab_size + (NUM_SPECIAL_TOKENS if add_special_tokens else 0)
    config = gpt1_config_from_openai_gpt(src_config, vocab_size=vocab_size, **config_overrides)
    if target_class is None:
        target_class = GPT1LMHeadModel if hasattr(model, "lm_head") else GPT1Model

    state = _transpose_projections(_backbone_state_dict(model))
    state.pop("position_ids", None)
    if add_special_tokens:
        old = state["tokens_embed.weight"]
        new_rows = _special_rows(old.shape[1], config.initializer_range, seed, old.dtype)
        state["tokens_embed.weight"] = torch.cat([old, new_rows], dim=0)

    target = _load_backbone(target_class(config), state, "openai-gpt -> gpt1")
    return target.eval() if not model.training else target


def gpt1_to_openai_gpt(model: GPT1PreTrainedModel, drop_special_tokens: bool = False):
    """Convert a gpt1 model object into transformers' `OpenAIGPTLMHeadModel` (or `OpenAIGPTModel` for a backbone).

    drop_special_tokens: remove the last four embedding rows (back to the BPE-only vocabulary). When they are kept,
        the openai-gpt config records `n_special = 4`, so that converting back does not add them a second time.
    """
    from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel, OpenAIGPTModel

    cfg = model.config
    if cfg.activation_function not in _GPT1_TO_OPENAI_AFN:
        hint = (" (openai-gpt's 'gelu' is the tanh approximation, gpt1's 'gelu_new'; the exact erf GELU would be "
                "silently replaced by it)" if cfg.activation_function == "gelu" else "")
        raise ValueError(
            f"openai-gpt has no equivalent of activation_function={cfg.activation_function!r}{hint}; it supports "
            f"{', '.join(repr(k) for k in _GPT1_TO_OPENAI_AFN)} (gpt1 names). Keep this model in the gpt1 format."
        )
    if cfg.n_inner != 4 * cfg.n_embd:
        raise ValueError(f"openai-gpt fixes n_inner = 4 * n_embd; this model has n_inner={cfg.n_inner}.")
    vocab_size = cfg.vocab_size - (NUM_SPECIAL_TOKENS if drop_special_tokens else 0)
    openai_config = OpenAIGPTConfig(
        vocab_size=vocab_size,
        n_positions=cfg.n_positions,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        afn=_GPT1_TO_OPENAI_AFN[cfg.activation_function],
        embd_pdrop=cfg.embd_pdrop,
        attn_pdrop=cfg.attn_pdrop,
        resid_pdrop=cfg.resid_pdrop,
        layer_norm_epsilon=cfg.layer_norm_epsilon,
        initializer_range=cfg.initializer_range,
    )
    openai_config.n_special = 0 if drop_special_tokens else NUM_SPECIAL_TOKENS
    state = _transpose_projections(_backbone_state_dict(model))
    state["tokens_embed.weight"] = state["tokens_embed.weight"][:vocab_size]
    target = OpenAIGPTLMHeadModel(openai_config) if hasattr(model, "lm_head") else OpenAIGPTModel(openai_config)
    backbone = getattr(target, "transformer", target)
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith((".attn.bias", "position_ids"))]
    if missing or unexpected:
        raise ValueError(f"gpt1 -> openai-gpt conversion mismatch: missing {missing}, unexpected {unexpected}")
    if hasattr(target, "lm_head"):
        target.lm_head.weight = backbone.tokens_embed.weight
    return target.eval() if not model.training else target


# ----------------------------------------------------------------------------------------------------------------------
# OpenAI's original release (params_shapes.json + params_{0..9}.npy) <-> gpt1
# ----------------------------------------------------------------------------------------------------------------------


def original_param_names(n_layer: int) -> list[str]:
    """Names of the arrays of the original release, in file order (2 + 12 * n_layer; 146 for GPT-1)."""
    names = [name for name, _ in _ORIGINAL_HEAD]
    for i in range(n_layer):
        names += [f"h{i}/{tf_name}" for tf_name, _, _ in _ORIGINAL_BLOCK]
    return names


def _expected_original_shapes(n_positions, bpe_vocab, n_embd, n_layer, n_inner) -> list[list[int]]:
    block = {
        "attn/c_attn/w": [1, n_embd, 3 * n_embd],
        "attn/c_attn/b": [3 * n_embd],
        "attn/c_proj/w": [1, n_embd, n_embd],
        "mlp/c_fc/w": [1, n_embd, n_inner],
        "mlp/c_fc/b": [n_inner],
        "mlp/c_proj/w": [1, n_inner, n_embd],
    }
    shapes = [[n_positions, n_embd], [bpe_vocab, n_embd]]
    for _ in range(n_layer):
        shapes += [block.get(tf_name, [n_embd]) for tf_name, _, _ in _ORIGINAL_BLOCK]
    return shapes


def _read_shapes(shapes_path: Path) -> list[list[int]]:
    if not shapes_path.is_file():
        raise FileNotFoundError(f"{shapes_path} not found: an original GPT-1 checkpoint folder holds "
                                f"{ORIGINAL_SHAPES_FILE} and params_0.npy ... params_9.npy.")
    try:
        shapes = json.loads(shapes_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{shapes_path} is not valid JSON: {e}") from e
    if not isinstance(shapes, list) or not all(
        isinstance(s, list) and all(isinstance(d, int) and d >= 0 for d in s) for s in shapes
    ):
        raise ValueError(f"{shapes_path} must be a JSON list of shapes (lists of non-negative ints).")
    return shapes


def _check_original_shapes(shapes: list[list[int]], shapes_path: Path) -> dict:
    """Check the structure of the shapes list; return the dimensions it implies."""
    if len(shapes) < 2 or (len(shapes) - 2) % len(_ORIGINAL_BLOCK) != 0:
        raise ValueError(
            f"{shapes_path} lists {len(shapes)} arrays; the original format has 2 embeddings + "
            f"{len(_ORIGINAL_BLOCK)} arrays per block (146 for GPT-1's 12 blocks)."
        )
    if len(shapes[0]) != 2 or len(shapes[1]) != 2:
        raise ValueError(f"{shapes_path}: arrays 0 (positions_embed) and 1 (tokens_embed) must be 2-D, got "
                         f"{shapes[0]} and {shapes[1]}.")
    n_layer = (len(shapes) - 2) // len(_ORIGINAL_BLOCK)
    n_positions, n_embd = shapes[0]
    bpe_vocab = shapes[1][0]
    n_inner = shapes[8][2] if n_layer and len(shapes[8]) == 3 else 4 * n_embd
    expected = _expected_original_shapes(n_positions, bpe_vocab, n_embd, n_layer, n_inner)
    names = original_param_names(n_layer)
    for i, (got, want) in enumerate(zip(shapes, expected, strict=True)):
        if list(got) != want:
            raise ValueError(f"{shapes_path}: array {i} ({names[i]}) has shape {got}, expected {want} "
                             f"(n_embd={n_embd}, n_inner={n_inner}, from arrays 0 and 8).")
    return dict(n_positions=n_positions, bpe_vocab=bpe_vocab, n_embd=n_embd, n_layer=n_layer, n_inner=n_inner)


def read_original_arrays(folder: str | os.PathLike, num_shards: int = ORIGINAL_NUM_SHARDS):
    """Read an original-format folder exactly as openai/finetune-transformer-lm does; check it on the way.

    Returns (shapes, arrays, dims): the shapes list, the arrays in file order (float32, reshaped), and the dimensions
    the shapes imply (n_positions, bpe_vocab, n_embd, n_layer, n_inner). Raises naming the file at fault: missing
    params_shapes.json or shards (all missing ones named), unexpected extra shards, shards that are not 1-D float
    arrays, a total size that does not match the shapes, shapes that are not GPT-1's layout.
    """
    folder = Path(folder)
    shapes_path = folder / ORIGINAL_SHAPES_FILE
    shapes = _read_shapes(shapes_path)
    dims = _check_original_shapes(shapes, shapes_path)
    shard_paths = [folder / f"params_{n}.npy" for n in range(num_shards)]
    missing = [p.name for p in shard_paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{folder}: missing shard file(s) {', '.join(missing)} (the original format has "
                                f"{num_shards} shards params_0.npy ... params_{num_shards - 1}.npy).")
    extra = sorted(p.name for p in folder.glob("params_*.npy")
                   if re.fullmatch(r"params_\d+\.npy", p.name) and int(p.name[7:-4]) >= num_shards)
    if extra:
        raise ValueError(f"{folder}: found {', '.join(extra)} beyond the expected {num_shards} shards; "
                         f"pass num_shards= (--num_shards) if this checkpoint was split differently.")
    shards = []
    for p in shard_paths:
        try:
            arr = np.load(p, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - re-raised with the file name
            raise ValueError(f"{p} is not a readable .npy array: {e}") from e
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"{p} must be a 1-D float array (a slice of the flat parameters), got shape "
                             f"{arr.shape} dtype {arr.dtype}.")
        shards.append(arr)
    sizes = [int(np.prod(s)) for s in shapes]
    total, need = sum(a.size for a in shards), sum(sizes)
    if total != need:
        raise ValueError(f"{folder}: the shards hold {total:,} values but {shapes_path.name} describes {need:,} "
                         f"({len(shapes)} arrays); the shards and the shapes file do not belong together "
                         "(truncated or foreign shard?).")
    offsets = np.cumsum(sizes)
    flat = np.concatenate(shards, 0)
    arrays = [p.reshape(s).astype(np.float32, copy=False) for p, s in zip(np.split(flat, offsets)[:-1], shapes, strict=True)]
    return shapes, arrays, dims


def original_to_gpt1(
    folder: str | os.PathLike,
    target_class: type[GPT1PreTrainedModel] | None = None,
    add_special_tokens: bool = True,
    seed: int = 0,
    num_shards: int = ORIGINAL_NUM_SHARDS,
    **config_overrides,
) -> GPT1PreTrainedModel:
    """Build a gpt1 model from an original-release folder (params_shapes.json + params_0..9.npy).

    add_special_tokens: append the four special rows N(0, initializer_range) drawn with `seed` after the BPE rows
        (the original code drew its special rows with np.random.randn(n_special, n_embd) * 0.02 at the same place).
        False keeps the token embedding as stored (for a folder written by `gpt1_to_original(drop_special_tokens=False)`).
    n_head: cannot be read from the shapes; defaults to 12 (GPT-1) only for n_embd == 768, otherwise pass it.
    n_positions: a smaller value keeps the first n_positions position rows, like the original's `[:n_ctx]`.
    Other keyword arguments go to GPT1Config (dropout, num_labels, ...).
    """
    shapes, arrays, dims = read_original_arrays(folder, num_shards=num_shards)
    n_embd = dims["n_embd"]
    if "n_head" not in config_overrides:
        if n_embd != 768:
            raise ValueError(f"{folder}: the number of heads cannot be read from the shapes (n_embd={n_embd}); "
                             "pass n_head= (--n_head).")
        config_overrides["n_head"] = 12
    n_positions = config_overrides.pop("n_positions", dims["n_positions"])
    if n_positions > dims["n_positions"]:
        raise ValueError(f"n_positions={n_positions} exceeds the {dims['n_positions']} position rows of {folder}.")
    vocab_size = dims["bpe_vocab"] + (NUM_SPECIAL_TOKENS if add_special_tokens else 0)
    config = GPT1Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=dims["n_layer"],
                        n_inner=dims["n_inner"], **config_overrides)

    state = {"positions_embed.weight": torch.from_numpy(arrays[0][:n_positions].copy())}
    tokens = torch.from_numpy(arrays[1].copy())
    if add_special_tokens:
        tokens = torch.cat([tokens, _special_rows(n_embd, config.initializer_range, seed, tokens.dtype)], 0)
    state["tokens_embed.weight"] = tokens
    index = 2
    for i in range(dims["n_layer"]):
        for _, name, is_conv in _ORIGINAL_BLOCK:
            value = arrays[index]
            index += 1
            state[f"h.{i}.{name}"] = torch.from_numpy((value[0].T if is_conv else value).copy())
    target = _load_backbone((target_class or GPT1LMHeadModel)(config), state, "original -> gpt1")
    return target.eval()


def gpt1_to_original(
    model: GPT1PreTrainedModel,
    output_dir: str | os.PathLike,
    drop_special_tokens: bool = True,
    num_shards: int = ORIGINAL_NUM_SHARDS,
    vocab_file: str | os.PathLike | None = None,
    merges_file: str | os.PathLike | None = None,
) -> Path:
    """Write a gpt1 model in OpenAI's original format (float32 shards, as read by openai/finetune-transformer-lm).

    drop_special_tokens: write the BPE rows only (as released); False keeps the four special rows in array 1 (read
        back with `original_to_gpt1(..., add_special_tokens=False)`). BPE files, when given, are copied as
        encoder_bpe_40000.json / vocab_40000.bpe. Returns the folder.
    """
    cfg = model.config
    if cfg.n_inner is None or cfg.activation_function != "gelu_new":
        raise ValueError("the original format is GPT-1's architecture (gelu_new activation).")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    state = _backbone_state_dict(model)
    tokens = state["tokens_embed.weight"]
    if drop_special_tokens:
        tokens = tokens[: cfg.vocab_size - NUM_SPECIAL_TOKENS]
    arrays = [state["positions_embed.weight"], tokens]
    for i in range(cfg.n_layer):
        for _, name, is_conv in _ORIGINAL_BLOCK:
            value = state[f"h.{i}.{name}"]
            arrays.append(value.t()[None] if is_conv else value)
    arrays = [a.detach().to(torch.float32).cpu().numpy() for a in arrays]
    write_original_format(output_dir, arrays, num_shards=num_shards)
    if (vocab_file is None) != (merges_file is None):
        raise ValueError("pass both vocab_file and merges_file, or neither.")
    if vocab_file is not None:
        check_bpe_files(vocab_file, merges_file, tokens.shape[0] - (0 if drop_special_tokens else NUM_SPECIAL_TOKENS))
        shutil.copyfile(vocab_file, output_dir / ORIGINAL_BPE_FILES[0])
        shutil.copyfile(merges_file, output_dir / ORIGINAL_BPE_FILES[1])
    return output_dir


def write_original_format(output_dir: str | os.PathLike, arrays: Sequence[np.ndarray],
                          num_shards: int = ORIGINAL_NUM_SHARDS) -> None:
    """params_shapes.json + params_{n}.npy: the arrays concatenated flat (float32) and split into `num_shards`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    shapes = [list(map(int, a.shape)) for a in arrays]
    (output_dir / ORIGINAL_SHAPES_FILE).write_text(json.dumps(shapes))
    flat = np.concatenate([np.asarray(a, dtype=np.float32).reshape(-1) for a in arrays], 0)
    for n, shard in enumerate(np.array_split(flat, num_shards)):
        np.save(output_dir / f"params_{n}.npy", shard)


# ----------------------------------------------------------------------------------------------------------------------
# BPE files
# ----------------------------------------------------------------------------------------------------------------------


def check_bpe_files(vocab_file: str | os.PathLike, merges_file: str | os.PathLike, bpe_vocab_size: int) -> dict:
    """Check that a vocab (encoder json) / merges pair belongs together and matches `bpe_vocab_size` embedding rows
    (the rows before the four special tokens). Returns the encoder. Errors name the file and the sizes."""
    vocab_file, merges_file = Path(vocab_file), Path(merges_file)
    for p in (vocab_file, merges_file):
        if not p.is_file():
            raise FileNotFoundError(f"BPE file {p} not found.")
    try:
        encoder = json.loads(vocab_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"vocab file {vocab_file} is not valid JSON: {e}") from e
    if not isinstance(encoder, dict):
        raise ValueError(f"vocab file {vocab_file} must map tokens to ids (a JSON object).")
    if len(encoder) != bpe_vocab_size:
        raise ValueError(
            f"vocab file {vocab_file} has {len(encoder):,} entries but the model's token embedding has "
            f"{bpe_vocab_size:,} BPE rows (plus the special tokens): this vocabulary does not belong to this checkpoint."
        )
    ids = sorted(encoder.values())
    if ids != list(range(len(ids))):
        raise ValueError(f"vocab file {vocab_file}: ids must be 0..{len(ids) - 1} without gaps or repeats.")
    lines = merges_file.read_text(encoding="utf-8").split("\n")
    merges = [line for i, line in enumerate(lines) if line and not (i == 0 and line.startswith("#version"))]
    if len(merges) >= len(encoder):
        raise ValueError(f"merges file {merges_file} has {len(merges):,} merges, not fewer than the "
                         f"{len(encoder):,} entries of {vocab_file}: the pair does not belong together.")
    for n, line in enumerate(merges, 1):
        parts = line.split(" ")
        if len(parts) != 2 or "".join(parts) not in encoder:
            raise ValueError(f"merges file {merges_file}, merge {n} ({line!r}): its result is not an entry of "
                             f"{vocab_file}; the vocab/merges pair does not belong together.")
    return encoder


def cached_file_or_none(path_or_repo, filename, hub_kwargs) -> str | None:
    """``filename`` of a local folder or a Hub repo (the local cache, else a download), None when it has none."""
    local = Path(path_or_repo) / filename
    if Path(path_or_repo).is_dir():
        return str(local) if local.is_file() else None
    from transformers.utils import cached_file

    try:
        return cached_file(str(path_or_repo), filename, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False, **hub_kwargs)
    except OSError:
        return None


def find_bpe_files(path_or_repo, **hub_kwargs) -> tuple[str, str] | None:
    """(vocab_file, merges_file) of a checkpoint folder or Hub repo: the original names (encoder_bpe_40000.json,
    vocab_40000.bpe, also what GPT1Tokenizer saves) or transformers' (vocab.json, merges.txt). A folder holding only
    a tokenizer.json with a BPE model gets both files extracted into a temporary folder. None if nothing is found."""
    for names in (ORIGINAL_BPE_FILES, OPENAI_GPT_BPE_FILES):
        found = [cached_file_or_none(path_or_repo, name, hub_kwargs) for name in names]
        if all(found):
            return found[0], found[1]
    tok_json = cached_file_or_none(path_or_repo, "tokenizer.json", hub_kwargs)
    if tok_json:
        model = json.loads(Path(tok_json).read_text(encoding="utf-8")).get("model", {})
        if model.get("type") == "BPE" and isinstance(model.get("vocab"), dict):
            tmp = Path(tempfile.mkdtemp(prefix="gpt1_bpe_"))
            atexit.register(shutil.rmtree, tmp, True)
            merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
            specials = {"_start_", "_delimiter_", "_classify_", "<pad>"}
            vocab = {k: v for k, v in model["vocab"].items() if k not in specials}
            (tmp / ORIGINAL_BPE_FILES[0]).write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
            (tmp / ORIGINAL_BPE_FILES[1]).write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
            return str(tmp / ORIGINAL_BPE_FILES[0]), str(tmp / ORIGINAL_BPE_FILES[1])
    return None


def _gpt1_tokenizer_class():
    try:
        from .tokenization_gpt1 import GPT1Tokenizer
    except ImportError as e:  # pragma: no cover - the tokenizer ships with the package
        raise ImportError(f"gpt1_hf.tokenization_gpt1.GPT1Tokenizer is needed to build the tokenizer: {e}") from e
    return GPT1Tokenizer


def _build_gpt1_tokenizer(vocab_file, merges_file, bpe_vocab_size: int | None = None):
    if bpe_vocab_size is not None:
        check_bpe_files(vocab_file, merges_file, bpe_vocab_size)
    return _gpt1_tokenizer_class()(vocab_file=str(vocab_file), merges_file=str(merges_file))


# ----------------------------------------------------------------------------------------------------------------------
# Folders and Hub repos
# ----------------------------------------------------------------------------------------------------------------------


def _original_needs_special_rows(folder) -> bool:
    """Whether an original-format folder stores the BPE rows only (as released): decided by its BPE files when
    present (rows == entries), else by the row count (40,482 = GPT-1's BPE + the four special rows -> no)."""
    rows = _read_shapes(Path(folder) / ORIGINAL_SHAPES_FILE)[1][0]
    files = find_bpe_files(folder)
    if files is not None:
        entries = len(json.loads(Path(files[0]).read_text(encoding="utf-8")))
        return rows != entries + NUM_SPECIAL_TOKENS
    return rows != BPE_VOCAB_SIZE + NUM_SPECIAL_TOKENS


def detect_checkpoint_format(path_or_repo, **hub_kwargs) -> str:
    """"original" (a local folder with params_shapes.json), "openai-gpt" or "gpt1" (from config.json's model_type)."""
    if Path(path_or_repo).is_dir() and (Path(path_or_repo) / ORIGINAL_SHAPES_FILE).is_file():
        return "original"
    from transformers import PreTrainedConfig

    try:
        config_dict, _ = PreTrainedConfig.get_config_dict(str(path_or_repo), **hub_kwargs)
    except (OSError, ValueError) as e:  # ValueError: huggingface_hub's invalid repo id
        raise OSError(
            f"{path_or_repo}: no {ORIGINAL_SHAPES_FILE} (OpenAI's original release) and no loadable config.json "
            f"(a gpt1 or openai-gpt checkpoint): {e}"
        ) from e
    model_type = config_dict.get("model_type")
    if model_type is None:
        raise OSError(f"{path_or_repo}: no {ORIGINAL_SHAPES_FILE} (OpenAI's original release) and no config.json "
                      "with a model_type (a gpt1 or openai-gpt checkpoint).")
    if model_type == "openai-gpt":
        return "openai-gpt"
    if model_type == "gpt1":
        return "gpt1"
    raise ValueError(f"{path_or_repo}: model_type {model_type!r} is not a GPT-1 checkpoint "
                     "(expected 'gpt1', 'openai-gpt', or an original folder with params_shapes.json).")


def load_as_gpt1(
    path_or_repo: str | os.PathLike,
    target_class: type[GPT1PreTrainedModel] | None = None,
    *,
    seed: int = 0,
    add_special_tokens: bool | None = None,
    num_shards: int = ORIGINAL_NUM_SHARDS,
    **config_overrides,
) -> GPT1PreTrainedModel:
    """Load any GPT-1 checkpoint as a gpt1 model of `target_class` (default GPT1LMHeadModel).

    - a gpt1 folder or Hub repo: `target_class.from_pretrained(path_or_repo, **config_overrides)`;
    - a transformers openai-gpt folder or Hub repo (e.g. "openai-community/openai-gpt"): loaded with
      `OpenAIGPTLMHeadModel` and converted (`openai_gpt_to_gpt1`), the four special rows added with `seed`;
    - a local original-release folder (params_shapes.json + params_0..9.npy): `original_to_gpt1`, reading
      `num_shards` shards (10 in the release).

    A task head (GPT1ForSequenceClassification, ...) gets the pretrained backbone and a fresh task layer.
    `config_overrides` go to the config (num_labels, dropout, n_head for small original folders, ...); Hub arguments
    (revision, token, cache_dir, local_files_only, ...) are passed to the download.
    """
    target_class = target_class or GPT1LMHeadModel
    hub_kwargs = _split_hub_kwargs(config_overrides)
    fmt = detect_checkpoint_format(path_or_repo, **hub_kwargs)
    if fmt == "gpt1":
        if Path(path_or_repo).is_dir():  # NaN/inf weights (a diverged run) are refused, naming the file
            from .durable import check_finite_weights

            check_finite_weights(path_or_repo)
        return target_class.from_pretrained(path_or_repo, **hub_kwargs, **config_overrides)
    if fmt == "original":
        if add_special_tokens is None:
            add_special_tokens = _original_needs_special_rows(path_or_repo)
        return original_to_gpt1(path_or_repo, target_class=target_class, seed=seed,
                                add_special_tokens=add_special_tokens, num_shards=num_shards, **config_overrides)
    from transformers import OpenAIGPTLMHeadModel

    source = OpenAIGPTLMHeadModel.from_pretrained(str(path_or_repo), **hub_kwargs)
    return openai_gpt_to_gpt1(source, add_special_tokens=add_special_tokens, target_class=target_class, seed=seed,
                              **config_overrides)


def check_tokenizer_matches_model(tokenizer, vocab_size: int, source: str | os.PathLike | None = None):
    """Raise a ValueError unless ``len(tokenizer)`` fits a model with `vocab_size` embedding rows: equal (a GPT-1
    tokenizer, BPE entries + the four special tokens) or `vocab_size` - 4 (a BPE-only tokenizer such as transformers'
    OpenAIGPTTokenizer, whose ids are the first rows). Any other size means the vocab/merges pair belongs to another
    checkpoint: its ids would index the wrong (or missing) embedding rows. Returns the tokenizer."""
    n = len(tokenizer)
    if n not in (vocab_size, vocab_size - NUM_SPECIAL_TOKENS):
        where = f" ({source})" if source is not None else ""
        raise ValueError(
            f"the tokenizer{where} has {n:,} entries but the model's token embedding has {vocab_size:,} rows "
            f"(expected {vocab_size:,} = BPE + {NUM_SPECIAL_TOKENS} special tokens, or {vocab_size - NUM_SPECIAL_TOKENS:,} "
            "BPE entries): this vocabulary does not belong to this checkpoint; pass the checkpoint's own tokenizer."
        )
    return tokenizer


def load_tokenizer_as_gpt1(path_or_repo: str | os.PathLike, vocab_size: int | None = None, **hub_kwargs):
    """A GPT1Tokenizer for any GPT-1 checkpoint: a saved gpt1 tokenizer as is, otherwise built from the BPE files of
    the folder / repo (original names, vocab.json + merges.txt, or a tokenizer.json BPE model).

    vocab_size: the model's embedding rows (``model.config.vocab_size``); when given, a tokenizer of another size is
    a ValueError (`check_tokenizer_matches_model`)."""
    GPT1Tokenizer = _gpt1_tokenizer_class()
    config = cached_file_or_none(path_or_repo, "tokenizer_config.json", hub_kwargs)
    if config and "GPT1" in str(json.loads(Path(config).read_text(encoding="utf-8")).get("tokenizer_class", "")):
        tokenizer = GPT1Tokenizer.from_pretrained(str(path_or_repo), **hub_kwargs)
    else:
        files = find_bpe_files(path_or_repo, **hub_kwargs)
        if files is None:
            raise FileNotFoundError(f"{path_or_repo}: no GPT-1 BPE files found ({' + '.join(ORIGINAL_BPE_FILES)}, "
                                    f"{' + '.join(OPENAI_GPT_BPE_FILES)} or tokenizer.json); pass the tokenizer files.")
        tokenizer = GPT1Tokenizer(vocab_file=files[0], merges_file=files[1])
    if vocab_size is not None:
        check_tokenizer_matches_model(tokenizer, vocab_size, path_or_repo)
    return tokenizer


def checkpoint_n_layer(path_or_repo: str | os.PathLike, **hub_kwargs) -> int:
    """The number of transformer blocks of any GPT-1 checkpoint, without loading its weights: from
    params_shapes.json for an original-release folder (which has no config.json), else config.json's n_layer."""
    fmt = detect_checkpoint_format(path_or_repo, **hub_kwargs)
    if fmt == "original":
        shapes_path = Path(path_or_repo) / ORIGINAL_SHAPES_FILE
        return _check_original_shapes(_read_shapes(shapes_path), shapes_path)["n_layer"]
    from transformers import PreTrainedConfig

    config_dict, _ = PreTrainedConfig.get_config_dict(str(path_or_repo), **hub_kwargs)
    n_layer = config_dict.get("n_layer", config_dict.get("num_hidden_layers"))
    if not isinstance(n_layer, int):
        raise ValueError(f"{path_or_repo}: config.json has no n_layer.")
    return n_layer


def _bpe_rows(model: GPT1PreTrainedModel) -> int:
    return model.config.vocab_size - NUM_SPECIAL_TOKENS


def convert_checkpoint(
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    from_format: str | None = None,
    to_format: str = "gpt1",
    vocab_file: str | os.PathLike | None = None,
    merges_file: str | os.PathLike | None = None,
    seed: int = 0,
    add_special_tokens: bool | None = None,
    drop_special_tokens: bool | None = None,
    num_shards: int = ORIGINAL_NUM_SHARDS,
    save_tokenizer: bool = True,
    **config_overrides,
) -> Path:
    """Convert a checkpoint folder / repo between formats and save it (with its tokenizer) to `output_dir`.

    from_format: "original", "openai-gpt", "gpt1" or None (detected). to_format: "gpt1", "openai-gpt" or "original".
    vocab_file / merges_file: the BPE pair; default: found in the input. Their size is checked against the
    embedding. The gpt1 output gets a GPT1Tokenizer saved beside the model; openai-gpt gets an OpenAIGPTTokenizer
    (plus vocab.json / merges.txt); original gets encoder_bpe_40000.json / vocab_40000.bpe.
    add_special_tokens: whether the four special rows must be added on load (None: decided from the input, see
        `load_as_gpt1`; for openai-gpt inputs with BPE files, added when the rows equal the BPE entries).
    drop_special_tokens: for openai-gpt / original outputs, write the BPE rows only. None: openai-gpt keeps them
        (vocab_size 40,482, config.n_special = 4: lossless), original drops them (the release format).
    num_shards: the number of params_{n}.npy shards of the original format, read from an original input and
        written to an original output (10, as released).
    Other keyword arguments: Hub arguments and GPT1Config overrides (n_head for small original folders, ...).
    """
    hub_kwargs = _split_hub_kwargs(config_overrides)
    detected = detect_checkpoint_format(input_path, **hub_kwargs)
    if from_format is not None and from_format != detected:
        raise ValueError(f"{input_path} looks like a {detected!r} checkpoint, not {from_format!r}.")
    if to_format not in FORMATS:
        raise ValueError(f"unknown output format {to_format!r}; use one of {FORMATS}.")
    if (vocab_file is None) != (merges_file is None):
        raise ValueError("pass both the vocab file and the merges file, or neither.")
    if vocab_file is None and save_tokenizer:
        found = find_bpe_files(input_path, **hub_kwargs)
        vocab_file, merges_file = found if found else (None, None)

    if detected == "openai-gpt" and add_special_tokens is None and vocab_file is not None:
        # The BPE files tell whether the stored rows already include the specials.
        from transformers import PreTrainedConfig

        openai_vocab = PreTrainedConfig.get_config_dict(str(input_path), **hub_kwargs)[0]["vocab_size"]
        n_bpe = len(json.loads(Path(vocab_file).read_text(encoding="utf-8")))
        add_special_tokens = openai_vocab == n_bpe
    model = load_as_gpt1(input_path, GPT1LMHeadModel, seed=seed, add_special_tokens=add_special_tokens,
                         num_shards=num_shards, **hub_kwargs, **config_overrides)
    if vocab_file is not None:
        check_bpe_files(vocab_file, merges_file, _bpe_rows(model))

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if to_format == "gpt1":
        model.save_pretrained(output_dir)
        if vocab_file is not None:
            _build_gpt1_tokenizer(vocab_file, merges_file).save_pretrained(output_dir)
    elif to_format == "openai-gpt":
        gpt1_to_openai_gpt(model, drop_special_tokens=bool(drop_special_tokens)).save_pretrained(output_dir)
        if vocab_file is not None:
            from transformers import OpenAIGPTTokenizer

            OpenAIGPTTokenizer(vocab=str(vocab_file), merges=str(merges_file)).save_pretrained(output_dir)
            shutil.copyfile(vocab_file, output_dir / OPENAI_GPT_BPE_FILES[0])
            shutil.copyfile(merges_file, output_dir / OPENAI_GPT_BPE_FILES[1])
    else:
        drop = True if drop_special_tokens is None else drop_special_tokens
        gpt1_to_original(model, output_dir, drop_special_tokens=drop, num_shards=num_shards,
                         vocab_file=vocab_file, merges_file=merges_file)
    return output_dir
