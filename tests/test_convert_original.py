"""OpenAI's original release format (params_shapes.json + params_0..9.npy) <-> gpt1 <-> openai-gpt.

The real weights are not available here: every test writes SYNTHETIC shards of GPT-1's layout for a tiny config,
in the exact format openai/finetune-transformer-lm reads (the flat concatenation of the arrays split into 10 .npy
files). A NumPy re-implementation of the original TF model checks that the layout is read as the original code
used it (array order, conv1d kernels, QKV split, ln_1 before ln_2).
"""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt1_hf import GPT1ForSequenceClassification, GPT1LMHeadModel
from gpt1_hf.convert import (
    _expected_original_shapes,
    check_bpe_files,
    check_tokenizer_matches_model,
    checkpoint_n_layer,
    convert_checkpoint,
    detect_checkpoint_format,
    gpt1_to_openai_gpt,
    gpt1_to_original,
    load_as_gpt1,
    load_tokenizer_as_gpt1,
    original_param_names,
    original_to_gpt1,
    read_original_arrays,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_SHAPES = Path(__file__).parent / "fixtures" / "gpt1_bpe" / "params_shapes.json"  # copy of the release file (MIT)
TINY = dict(n_positions=16, bpe_vocab=20, n_embd=8, n_layer=2, n_inner=32, n_head=2)


def write_original_format(folder, arrays, num_shards=10):
    """What OpenAI released: params_shapes.json and the flat float32 concatenation split into `num_shards` files
    (written here independently of the library, to test its reader)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params_shapes.json").write_text(json.dumps([list(a.shape) for a in arrays]))
    flat = np.concatenate([a.astype(np.float32).ravel() for a in arrays])
    for n, shard in enumerate(np.array_split(flat, num_shards)):
        np.save(folder / f"params_{n}.npy", shard)


def synthetic_arrays(seed=0, n_positions=16, bpe_vocab=20, n_embd=8, n_layer=2, n_inner=32, **_):
    rng = np.random.RandomState(seed)
    shapes = _expected_original_shapes(n_positions, bpe_vocab, n_embd, n_layer, n_inner)
    # LayerNorm gains around 1, everything else ~N(0, 0.1): distinct values everywhere, so a swap shows.
    names = original_param_names(n_layer)
    return [(1 + 0.1 * rng.randn(*s) if n.endswith("/g") else 0.1 * rng.randn(*s)).astype(np.float32)
            for n, s in zip(names, shapes, strict=True)]


@pytest.fixture
def original_dir(tmp_path):
    arrays = synthetic_arrays(**TINY)
    write_original_format(tmp_path / "orig", arrays)
    return tmp_path / "orig", arrays


# ---------------------------------------------------------------------------------------------------------------
# A NumPy transcription of the original model (openai/finetune-transformer-lm train.py: model/block/attn/mlp/norm)
# ---------------------------------------------------------------------------------------------------------------


def reference_forward(arrays, token_ids, n_head, special_rows):
    pos, tok = arrays[0], np.concatenate([arrays[1], special_rows], 0)
    n_layer = (len(arrays) - 2) // 12

    def conv1d(x, w, b):  # rf == 1: matmul with w reshaped to (nx, nf)
        return x @ w.reshape(w.shape[-2], w.shape[-1]) + b

    def norm(x, g, b, e=1e-5):
        u = x.mean(-1, keepdims=True)
        s = ((x - u) ** 2).mean(-1, keepdims=True)
        return (x - u) / np.sqrt(s + e) * g + b

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))

    t = len(token_ids)
    h = tok[token_ids] + pos[np.arange(t)]
    for layer in range(n_layer):
        w = arrays[2 + 12 * layer: 2 + 12 * (layer + 1)]
        c = conv1d(h, w[0], w[1])
        q, k, v = np.split(c, 3, axis=-1)
        heads = lambda x: x.reshape(t, n_head, -1).transpose(1, 0, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        att = q @ k.transpose(0, 2, 1) / math.sqrt(v.shape[-1])
        mask = np.tril(np.ones((t, t)))
        att = att * mask + -1e9 * (1 - mask)
        att = np.exp(att - att.max(-1, keepdims=True))
        att = att / att.sum(-1, keepdims=True)
        a = (att @ v).transpose(1, 0, 2).reshape(t, -1)
        a = conv1d(a, w[2], w[3])
        n = norm(h + a, w[4], w[5])
        m = conv1d(gelu(conv1d(n, w[6], w[7])), w[8], w[9])
        h = norm(n + m, w[10], w[11])
    return h, h @ tok.T


def test_real_shapes_file_matches_the_layout():
    expected = _expected_original_shapes(512, 40478, 768, 12, 3072)
    assert len(expected) == len(original_param_names(12)) == 146
    assert json.loads(SHARED_SHAPES.read_text()) == expected


def test_original_to_gpt1_matches_the_original_model(original_dir):
    folder, arrays = original_dir
    model = original_to_gpt1(folder, n_head=TINY["n_head"], seed=5, attn_pdrop=0.0)
    assert model.config.vocab_size == TINY["bpe_vocab"] + 4
    assert model.config.clf_token_id == TINY["bpe_vocab"] + 2
    special = model.transformer.tokens_embed.weight[-4:].detach().numpy()
    assert 0.002 < special.std() < 0.05  # N(0, 0.02), not copied from anywhere
    ids = np.array([3, 7, 1, 19, 0, 12, 22, 5])  # 22 = _classify_
    h_ref, logits_ref = reference_forward(arrays, ids, TINY["n_head"], special)
    with torch.no_grad():
        out = model(torch.tensor(ids)[None], output_hidden_states=True)
    np.testing.assert_allclose(out.hidden_states[-1][0].numpy(), h_ref, atol=2e-5)
    np.testing.assert_allclose(out.logits[0].numpy(), logits_ref, atol=2e-5)
    # The stored arrays are used bit for bit.
    block0 = model.transformer.h[0]
    assert np.array_equal(block0.attn.c_attn.weight.detach().numpy(), arrays[2][0].T)
    assert np.array_equal(block0.ln_1.weight.detach().numpy(), arrays[6])
    assert np.array_equal(block0.ln_2.bias.detach().numpy(), arrays[13])
    assert np.array_equal(model.transformer.positions_embed.weight.detach().numpy(), arrays[0])


def test_special_rows_are_seeded_and_shared_with_openai_gpt_conversion(original_dir):
    folder, _ = original_dir
    a = original_to_gpt1(folder, n_head=2, seed=1).transformer.tokens_embed.weight
    b = original_to_gpt1(folder, n_head=2, seed=1).transformer.tokens_embed.weight
    c = original_to_gpt1(folder, n_head=2, seed=2).transformer.tokens_embed.weight
    assert torch.equal(a, b) and not torch.equal(a[-4:], c[-4:]) and torch.equal(a[:-4], c[:-4])


def _assert_same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def test_round_trip_original_gpt1_openai_gpt_gpt1_bitwise(original_dir, tmp_path):
    folder, arrays = original_dir
    gpt1_dir = convert_checkpoint(folder, tmp_path / "gpt1", from_format="original", n_head=2, seed=7)
    openai_dir = convert_checkpoint(gpt1_dir, tmp_path / "openai", from_format="gpt1", to_format="openai-gpt")
    assert detect_checkpoint_format(openai_dir) == "openai-gpt"
    back_dir = convert_checkpoint(openai_dir, tmp_path / "back", from_format="openai-gpt", to_format="gpt1")
    first = GPT1LMHeadModel.from_pretrained(gpt1_dir)
    last = GPT1LMHeadModel.from_pretrained(back_dir)
    _assert_same(first, last)
    assert first.config.vocab_size == last.config.vocab_size == 24
    assert np.array_equal(last.transformer.tokens_embed.weight[:20].detach().numpy(), arrays[1])
    assert np.array_equal(last.transformer.h[1].mlp.c_proj.weight.detach().numpy(), arrays[2 + 12 + 8][0].T)
    # ... and back to the original format: the very same arrays.
    orig_dir = convert_checkpoint(back_dir, tmp_path / "orig2", to_format="original")
    _, again, _ = read_original_arrays(orig_dir)
    assert all(np.array_equal(x, y) for x, y in zip(arrays, again, strict=True))


def test_round_trip_gpt1_original_gpt1_bitwise(tmp_path):
    torch.manual_seed(3)
    from gpt1_hf import GPT1Config

    model = GPT1LMHeadModel(GPT1Config(vocab_size=24, n_positions=16, n_embd=8, n_layer=2, n_head=2, n_inner=32))
    gpt1_to_original(model, tmp_path / "keep", drop_special_tokens=False)
    _assert_same(model, original_to_gpt1(tmp_path / "keep", n_head=2, add_special_tokens=False))
    # Through load_as_gpt1: 24 rows with no BPE files is not the released layout, so it asks for no new rows.
    _assert_same(model, load_as_gpt1(tmp_path / "keep", n_head=2, add_special_tokens=False))
    # Released layout (BPE rows only): the special rows come back from the same seed.
    seeded = original_to_gpt1(tmp_path / "keep", n_head=2, add_special_tokens=False)
    gpt1_to_original(seeded, tmp_path / "drop")
    assert json.loads((tmp_path / "drop" / "params_shapes.json").read_text())[1] == [20, 8]
    _assert_same(original_to_gpt1(tmp_path / "drop", n_head=2, seed=0),
                 original_to_gpt1(tmp_path / "drop", n_head=2, seed=0))


def test_n_positions_truncates_like_the_original_n_ctx(original_dir):
    folder, arrays = original_dir
    model = original_to_gpt1(folder, n_head=2, n_positions=8)
    assert model.config.n_positions == 8
    assert np.array_equal(model.transformer.positions_embed.weight.detach().numpy(), arrays[0][:8])
    with pytest.raises(ValueError, match="n_positions=32 exceeds the 16 position rows"):
        original_to_gpt1(folder, n_head=2, n_positions=32)


def test_load_as_gpt1_task_head_from_original(original_dir):
    folder, arrays = original_dir
    clf = load_as_gpt1(folder, GPT1ForSequenceClassification, n_head=2, num_labels=3)
    assert isinstance(clf, GPT1ForSequenceClassification) and clf.score.out_features == 3
    assert np.array_equal(clf.transformer.h[0].mlp.c_fc.bias.detach().numpy(), arrays[2 + 7])


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------


def test_missing_shards_are_named(original_dir):
    folder, _ = original_dir
    os.remove(folder / "params_3.npy")
    os.remove(folder / "params_9.npy")
    with pytest.raises(FileNotFoundError, match=r"missing shard file\(s\) params_3.npy, params_9.npy"):
        original_to_gpt1(folder, n_head=2)


def test_missing_shapes_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="params_shapes.json not found"):
        read_original_arrays(tmp_path)


def test_total_size_must_match_the_shapes(original_dir):
    folder, _ = original_dir
    np.save(folder / "params_4.npy", np.load(folder / "params_4.npy")[:-3])
    with pytest.raises(ValueError, match=r"shards hold 2,029 values but params_shapes.json describes 2,032"):
        original_to_gpt1(folder, n_head=2)


def test_extra_and_malformed_shards(original_dir):
    folder, _ = original_dir
    np.save(folder / "params_10.npy", np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="params_10.npy beyond the expected 10 shards"):
        read_original_arrays(folder)
    os.remove(folder / "params_10.npy")
    np.save(folder / "params_0.npy", np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"params_0.npy must be a 1-D float array"):
        read_original_arrays(folder)


def test_wrong_shapes_are_named(tmp_path):
    arrays = synthetic_arrays(**TINY)
    arrays[2 + 12 + 4] = np.ones(9, np.float32)  # h1/ln_1/g
    write_original_format(tmp_path, arrays)
    with pytest.raises(ValueError, match=r"array 18 \(h1/ln_1/g\) has shape \[9\], expected \[8\]"):
        read_original_arrays(tmp_path)
    write_original_format(tmp_path, synthetic_arrays(**TINY)[:-1])
    with pytest.raises(ValueError, match="lists 25 arrays"):
        read_original_arrays(tmp_path)


def test_n_head_must_be_given_for_non_gpt1_width(original_dir):
    with pytest.raises(ValueError, match="pass n_head"):
        original_to_gpt1(original_dir[0])


def tiny_bpe(folder, n_chars=8):
    """A small consistent vocab/merges pair: <unk>, letters, letters</w>, then merges of 'a b'-style pairs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz"[:n_chars]
    vocab = ["<unk>"] + list(letters) + [c + "</w>" for c in letters]
    merges = [f"{letters[i]} {letters[i + 1]}</w>" for i in range(n_chars - 1)]
    vocab += ["".join(m.split()) for m in merges]
    (folder / "encoder_bpe_40000.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "vocab_40000.bpe").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder / "encoder_bpe_40000.json", folder / "vocab_40000.bpe", len(vocab)


def test_bpe_pair_must_match_the_embedding(tmp_path, original_dir):
    vocab, merges, size = tiny_bpe(tmp_path / "bpe")
    assert size == 24
    check_bpe_files(vocab, merges, 24)
    with pytest.raises(ValueError, match=r"encoder_bpe_40000.json has 24 entries but the model's token embedding "
                                         r"has 20 BPE rows"):
        convert_checkpoint(original_dir[0], tmp_path / "out", n_head=2, vocab_file=vocab, merges_file=merges)
    other_vocab, _, _ = tiny_bpe(tmp_path / "other", n_chars=4)  # 12 entries
    (tmp_path / "other" / "encoder_bpe_40000.json").write_text(
        json.dumps({f"x{i}": i for i in range(24)}))
    with pytest.raises(ValueError, match=r"merge 1 \('a b</w>'\): its result is not an entry"):
        check_bpe_files(other_vocab, merges, 24)


def test_script_original_with_bpe_files_to_gpt1_folder_with_tokenizer(tmp_path):
    tokenization = pytest.importorskip("gpt1_hf.tokenization_gpt1")
    if not hasattr(tokenization, "GPT1Tokenizer"):
        pytest.skip("GPT1Tokenizer not available yet")
    import importlib.util

    vocab, merges, size = tiny_bpe(tmp_path / "orig")  # the BPE files sit in the release folder, as in model/
    arrays = synthetic_arrays(**{**TINY, "bpe_vocab": size})
    write_original_format(tmp_path / "orig", arrays)
    spec = importlib.util.spec_from_file_location("convert_script", REPO / "scripts" / "convert_checkpoint.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--from", "original", "--input", str(tmp_path / "orig"), "--output", str(tmp_path / "gpt1"),
                        "--n_head", "2"]) == 0
    model = GPT1LMHeadModel.from_pretrained(tmp_path / "gpt1")
    tok = tokenization.GPT1Tokenizer.from_pretrained(tmp_path / "gpt1")
    assert len(tok) == model.config.vocab_size == size + 4
    assert tok.convert_tokens_to_ids("_start_") == model.config.start_token_id == size
    assert np.array_equal(model.transformer.tokens_embed.weight[:size].detach().numpy(), arrays[1])
    # Back to the original format, BPE files included.
    assert script.main(["--from", "gpt1", "--to", "original", "--input", str(tmp_path / "gpt1"),
                        "--output", str(tmp_path / "orig2")]) == 0
    assert (tmp_path / "orig2" / "encoder_bpe_40000.json").read_text() == vocab.read_text()
    _, again, _ = read_original_arrays(tmp_path / "orig2")
    assert all(np.array_equal(x, y) for x, y in zip(arrays, again, strict=True))


def test_num_shards_reaches_the_reader_of_an_original_folder(tmp_path):
    """A checkpoint split into 5 shards: the error asks for --num_shards, and --num_shards 5 converts it."""
    import importlib.util

    arrays = synthetic_arrays(**TINY)
    write_original_format(tmp_path / "orig5", arrays, num_shards=5)
    with pytest.raises(FileNotFoundError, match="missing shard file"):
        convert_checkpoint(tmp_path / "orig5", tmp_path / "fail", n_head=2)
    out = convert_checkpoint(tmp_path / "orig5", tmp_path / "gpt1", from_format="original", n_head=2, num_shards=5)
    model = GPT1LMHeadModel.from_pretrained(out)
    assert np.array_equal(model.transformer.tokens_embed.weight[:20].detach().numpy(), arrays[1])
    assert np.array_equal(model.transformer.h[1].ln_2.bias.detach().numpy(), arrays[-1])
    _assert_same(model, load_as_gpt1(tmp_path / "orig5", n_head=2, num_shards=5))
    spec = importlib.util.spec_from_file_location("convert_script_5", REPO / "scripts" / "convert_checkpoint.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--from", "original", "--input", str(tmp_path / "orig5"), "--output", str(tmp_path / "cli"),
                        "--n_head", "2", "--num_shards", "5"]) == 0
    _assert_same(model, GPT1LMHeadModel.from_pretrained(tmp_path / "cli"))


def test_openai_gpt_refuses_activations_it_has_no_equivalent_for():
    from gpt1_hf import GPT1Config

    def tiny(act):
        return GPT1LMHeadModel(GPT1Config(vocab_size=24, n_positions=16, n_embd=8, n_layer=1, n_head=2, n_inner=32,
                                          activation_function=act))

    # exact (erf) GELU: openai-gpt's "gelu" is the tanh approximation, so converting would change the model
    with pytest.raises(ValueError, match=r"no equivalent of activation_function='gelu'.*tanh approximation"):
        gpt1_to_openai_gpt(tiny("gelu"))
    with pytest.raises(ValueError, match="no equivalent of activation_function='quick_gelu'"):
        gpt1_to_openai_gpt(tiny("quick_gelu"))
    assert gpt1_to_openai_gpt(tiny("gelu_new")).config.afn == "gelu"
    assert gpt1_to_openai_gpt(tiny("relu")).config.afn == "relu"
    # same outputs for the activations it converts
    torch.manual_seed(0)
    for act in ("gelu_new", "silu"):
        model = tiny(act).eval()
        ids = torch.tensor([[1, 5, 7, 3]])
        with torch.no_grad():
            torch.testing.assert_close(gpt1_to_openai_gpt(model)(ids).logits, model(ids).logits)


def test_checkpoint_n_layer_reads_original_folders(original_dir, tmp_path):
    """An original folder has no config.json (GPT1Config.from_pretrained would give the default 12 layers)."""
    folder, _ = original_dir
    assert checkpoint_n_layer(folder) == TINY["n_layer"] == 2
    gpt1_dir = convert_checkpoint(folder, tmp_path / "gpt1", n_head=2)
    assert checkpoint_n_layer(gpt1_dir) == 2
    with pytest.raises(OSError, match="no params_shapes.json"):
        checkpoint_n_layer(tmp_path / "nothing-here")


def test_tokenizer_size_must_match_the_model(tmp_path):
    tokenization = pytest.importorskip("gpt1_hf.tokenization_gpt1")
    vocab, merges, size = tiny_bpe(tmp_path / "bpe")  # 24 BPE entries -> a 28-entry GPT-1 tokenizer
    tok = load_tokenizer_as_gpt1(tmp_path / "bpe", vocab_size=size + 4)
    assert isinstance(tok, tokenization.GPT1Tokenizer) and len(tok) == size + 4
    check_tokenizer_matches_model(tok, size + 4)
    check_tokenizer_matches_model(tok, size + 8)  # a BPE-only tokenizer (e.g. OpenAIGPTTokenizer) of a gpt1 model
    with pytest.raises(ValueError, match=r"has 28 entries but the model's token embedding has 24 rows"):
        load_tokenizer_as_gpt1(tmp_path / "bpe", vocab_size=size)
    with pytest.raises(ValueError, match=r"does not belong to this checkpoint"):
        load_tokenizer_as_gpt1(tmp_path / "bpe", vocab_size=40482)
