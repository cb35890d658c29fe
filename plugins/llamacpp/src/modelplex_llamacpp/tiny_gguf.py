"""Deterministic generator of a tiny random-weight GGUF chat model for fast tests.

The model is a 2-layer llama-architecture transformer (F32, ``n_embd`` 64, 4 heads,
``n_ff`` 128) with a SentencePiece-style vocabulary (byte fallback, printable ASCII
pieces, ChatML special tokens) and a ChatML chat template.  It needs no downloads:
only the ``gguf`` package and ``numpy``.  llama.cpp loads it in milliseconds and
generates thousands of tokens per second with it.

Its output is random babble made mostly of printable ASCII characters.  Channel 0 of
the residual stream carries a constant that the layers neither read nor write, so
column 0 of the output matrix acts as a per-token logit bias: non-printable tokens are
suppressed and the bias on the EOS token (``<|im_end|>``) sets how often generation
stops by itself.
"""

from __future__ import annotations

import os
import pathlib

__all__ = ["MODEL_NAME", "N_CTX", "N_EMBD", "write_tiny_gguf"]

MODEL_NAME = "tiny-random-llama"
N_EMBD = 64
N_HEAD = 4
N_FF = 128
N_LAYER = 2
N_CTX = 2048

# Logit biases (added through the constant residual channel).
_BIAS_SPACE = 2.5
_BIAS_LETTER = 0.5
_BIAS_OTHER_PRINTABLE = 0.0
_BIAS_EOS = 2.0
_BIAS_SUPPRESSED = -30.0
# Value of the constant channel in every token embedding, and the scale of the rest.
_CONST = 16.0
_EMBD_STD = 0.5
_NOISE_STD = 1.0  # std of the random output-matrix columns
_EOS_NOISE_STD = 0.1  # keeps the EOS logit close to its bias whatever the context

_SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _vocab() -> tuple[list[str], list[int], list[float]]:
    """Return (tokens, token types, logit biases) of the SentencePiece-style vocab."""
    from gguf import TokenType

    tokens = list(_SPECIALS)
    types = [int(TokenType.UNKNOWN)] + [int(TokenType.CONTROL)] * (len(_SPECIALS) - 1)
    biases = [_BIAS_SUPPRESSED] * len(_SPECIALS)
    biases[_SPECIALS.index("<|im_end|>")] = _BIAS_EOS
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(int(TokenType.BYTE))
        biases.append(_BIAS_SUPPRESSED)
    tokens.append("\u2581")  # SentencePiece's space
    types.append(int(TokenType.NORMAL))
    biases.append(_BIAS_SPACE)
    for code in range(0x21, 0x7F):
        ch = chr(code)
        tokens.append(ch)
        types.append(int(TokenType.NORMAL))
        biases.append(_BIAS_LETTER if ch.isalpha() else _BIAS_OTHER_PRINTABLE)
    return tokens, types, biases


def write_tiny_gguf(path: str | os.PathLike[str], *, seed: int = 0) -> pathlib.Path:
    """Write the tiny model to path (creating parent dirs) and return the path.

    The output is byte-for-byte deterministic for a given ``seed``.
    """
    import gguf
    import numpy as np

    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tokens, types, biases = _vocab()
    n_vocab = len(tokens)
    head_dim = N_EMBD // N_HEAD

    def normal(shape: tuple[int, ...], std: float) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(MODEL_NAME)
    writer.add_description("A tiny generated llama model for tests (random weights).")
    writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    writer.add_vocab_size(n_vocab)
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_pooling_type(gguf.PoolingType.MEAN)

    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * n_vocab)
    writer.add_token_types(types)
    writer.add_unk_token_id(_SPECIALS.index("<unk>"))
    writer.add_bos_token_id(_SPECIALS.index("<s>"))
    writer.add_eos_token_id(_SPECIALS.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_add_space_prefix(False)
    writer.add_chat_template(_CHATML_TEMPLATE)

    # numpy shapes are (out_features, in_features); GGUF stores dims reversed.
    embd = normal((n_vocab, N_EMBD), _EMBD_STD)
    embd[:, 0] = _CONST
    writer.add_tensor("token_embd.weight", embd)
    # Layers never read channel 0 (norm weight 0) nor write it (zero output rows).
    in_norm = np.ones(N_EMBD, dtype=np.float32)
    in_norm[0] = 0.0
    for i in range(N_LAYER):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", in_norm.copy())
        for name in ("attn_q", "attn_k", "attn_v"):
            writer.add_tensor(p + name + ".weight", normal((N_EMBD, N_EMBD), N_EMBD**-0.5))
        wo = normal((N_EMBD, N_EMBD), N_EMBD**-0.5)
        wo[0, :] = 0.0
        writer.add_tensor(p + "attn_output.weight", wo)
        writer.add_tensor(p + "ffn_norm.weight", in_norm.copy())
        writer.add_tensor(p + "ffn_gate.weight", normal((N_FF, N_EMBD), N_EMBD**-0.5))
        writer.add_tensor(p + "ffn_up.weight", normal((N_FF, N_EMBD), N_EMBD**-0.5))
        down = normal((N_EMBD, N_FF), N_FF**-0.5)
        down[0, :] = 0.0
        writer.add_tensor(p + "ffn_down.weight", down)
    # After the final RMS norm channel 0 is about sqrt(N_EMBD), as it dominates the
    # norm; scale it down to about 1 so it does not swamp the (mean-pooled) embeddings.
    out_norm = np.ones(N_EMBD, dtype=np.float32)
    out_norm[0] = N_EMBD**-0.5
    writer.add_tensor("output_norm.weight", out_norm)
    output = normal((n_vocab, N_EMBD), _NOISE_STD)
    output[_SPECIALS.index("<|im_end|>")] *= np.float32(_EOS_NOISE_STD / _NOISE_STD)
    output[:, 0] = np.asarray(biases, dtype=np.float32)
    writer.add_tensor("output.weight", output)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
