"""GPT-1 configuration (Radford et al. 2018, "Improving Language Understanding by Generative Pre-Training").

Hub-portable: this file imports only `transformers` and is copied next to the weights by `save_pretrained`, so that
`AutoConfig.from_pretrained(repo, trust_remote_code=True)` works without `gpt1_hf` installed.

Defaults are the paper's (§4.1 "Model specifications"): a 12-layer decoder-only transformer with masked self-attention
heads (768-dimensional states, 12 heads), position-wise feed-forward networks of 3072 inner states (4 x 768), learned position
embeddings over 512 positions, GELU, dropout 0.1 on residuals, embeddings and attention, and N(0, 0.02) initialisation.
The vocabulary is GPT-1's 40,478 BPE entries followed by the fine-tuning special tokens (§3.3): start `_start_`,
delimiter `_delimiter_`, extract `_classify_`, plus a padding token that the model never attends to.
"""

from huggingface_hub.dataclasses import strict
from transformers.configuration_utils import PreTrainedConfig

BPE_VOCAB_SIZE = 40478  # entries of GPT-1's encoder_bpe_40000.json


@strict
class GPT1Config(PreTrainedConfig):
    r"""
    Args:
        vocab_size (`int`, defaults to 40482): BPE vocabulary (40,478) + `_start_`, `_delimiter_`, `_classify_`, `<pad>`.
        n_positions (`int`, defaults to 512): the longest sequence the model accepts (learned position embeddings).
        n_embd (`int`, defaults to 768): width of the residual stream.
        n_layer (`int`, defaults to 12): number of transformer blocks.
        n_head (`int`, defaults to 12): attention heads per block.
        n_inner (`int`, *optional*): inner width of the position-wise feed-forward network; None (the default) means
            4 x n_embd, the paper's ratio (3072 at 768).
        activation_function (`str`, defaults to `"gelu_new"`): any name of transformers' `ACT2FN`. The default is
            openai-gpt's name for the tanh approximation of GELU used by GPT-1 (so conversions keep the name); it is
            computed by one PyTorch kernel unless `gelu_kernel` is False.
        embd_pdrop / attn_pdrop / resid_pdrop (`float`, defaults to 0.1): dropout on the embeddings, on the
            attention probabilities and on each residual branch.
        clf_pdrop (`float`, defaults to 0.1): dropout before the classification / multiple-choice linear head.
        layer_norm_epsilon (`float`, defaults to 1e-5).
        initializer_range (`float`, defaults to 0.02): std of N(0, σ) for every weight matrix and embedding
            (biases zero, LayerNorm gains one).
        aux_lm_weight (`float`, defaults to 0.5): λ of L3 = L2 + λ·L1 (§3.2); 0 disables the auxiliary LM loss.
        start_token_id / delimiter_token_id / clf_token_id / pad_token_id (`int`): ids of the special tokens.
            `clf_token_id` marks the position whose final hidden state feeds the task head. Left unset, the four
            default to the last four ids of the vocabulary (40478..40481 for the paper's vocabulary).

    Fast paths (not architecture: each one can be switched off on a built model, and tests compare it with the
    reference it replaces; the attention kernel is chosen by `attn_implementation`, "gpt1_sdpa" by default):
        fast_dropout (`bool`, defaults to True): dropout masks from 16-bit slices of 64-bit random words on CPU
            (False: `F.dropout`).
        fused_lm_loss (`bool`, defaults to True): LM head + cross-entropy in chunks with the gradient computed in the
            same pass (False: logits, then `F.cross_entropy`).
        attention_recompute (`bool`, defaults to False): with `attn_implementation="gpt1_sdpa"`, the backward of the CPU
            dropout attention recomputes the probabilities instead of keeping them (less memory, slower).
        train_logits (`bool`, defaults to False): in training mode with labels, the LM head also returns the
            (batch, seq, vocab) logits (True), or only the loss (False; pass `logits_to_keep` to get some).
        gelu_kernel (`bool`, defaults to True): `"gelu_new"` computed as `F.gelu(x, approximate="tanh")`, one kernel
            (False: transformers' `NewGELUActivation`, the same formula written out in seven tensor operations).
        bf16_erf_gelu (`bool`, defaults to True): with `gelu_kernel`, bf16 tensors on CPU go through the erf GELU's
            kernel, 3-5x faster than PyTorch's CPU tanh-GELU and equal to the tanh form to within bf16's rounding
            (`kernels_gpt1.gelu_tanh` gives the measured errors; False: the tanh kernel). fp32 is never changed.
    """

    # transformers' Trainer hands only the logits to `compute_metrics` (not the separate losses or the cache)
    keys_to_ignore_at_inference = ["cache", "past_key_values", "clf_loss", "lm_loss"]

    model_type = "gpt1"
    attribute_map = {
        "hidden_size": "n_embd",
        "max_position_embeddings": "n_positions",
        "num_attention_heads": "n_head",
        "num_hidden_layers": "n_layer",
        "intermediate_size": "n_inner",
    }

    vocab_size: int = BPE_VOCAB_SIZE + 4
    n_positions: int = 512
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    embd_pdrop: float | int = 0.1
    attn_pdrop: float | int = 0.1
    resid_pdrop: float | int = 0.1
    clf_pdrop: float | int = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    aux_lm_weight: float | int = 0.5
    use_cache: bool = True
    start_token_id: int | None = None
    delimiter_token_id: int | None = None
    clf_token_id: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    tie_word_embeddings: bool = True
    fast_dropout: bool = True
    fused_lm_loss: bool = True
    attention_recompute: bool = False
    train_logits: bool = False
    gelu_kernel: bool = True
    bf16_erf_gelu: bool = True

    def __post_init__(self, **kwargs):
        if self.n_inner is None:
            self.n_inner = 4 * self.n_embd
        # Unset special ids default to the last four ids of the vocabulary, the layout of GPT1Tokenizer
        # (BPE entries, then _start_, _delimiter_, _classify_, <pad>): 40478..40481 for the paper's vocabulary.
        specials = ("start_token_id", "delimiter_token_id", "clf_token_id", "pad_token_id")
        if all(getattr(self, name) is None for name in specials) and self.vocab_size >= 4:
            for offset, name in enumerate(specials):
                setattr(self, name, self.vocab_size - 4 + offset)
        if self.bos_token_id is None:
            self.bos_token_id = self.start_token_id
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}).")
        for name in ("start_token_id", "delimiter_token_id", "clf_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"{name}={value} is outside the vocabulary [0, {self.vocab_size}); "
                    "set vocab_size to the tokenizer's length (len(tokenizer))."
                )
        if not 0.0 <= float(self.aux_lm_weight):
            raise ValueError(f"aux_lm_weight must be >= 0, got {self.aux_lm_weight}.")


__all__ = ["GPT1Config"]
