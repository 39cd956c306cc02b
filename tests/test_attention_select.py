"""bertlab/models/attention_select.py: which jax.nn.dot_product_attention implementation a
layer asks for, and the clean fallback when cuDNN refuses (checked on the CPU, where it must)."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bertlab.models import attention_select as sel

# BERT-base on an H100 with cuDNN 9.10, bf16, padded batches, no attention dropout: the fast path.
H100 = sel.AttentionCase(platform="cuda", dtype="bfloat16", head_dim=64, has_dropout=False,
                         mask="padding", query_len=128, key_len=128, compute_capability=(9, 0),
                         cudnn_version=91000)


def pick(**changes) -> sel.AttentionChoice:
    return sel.choose(dataclasses.replace(H100, **changes))


def test_bert_base_bf16_on_a_hopper_takes_cudnn_with_a_full_bias():
    choice = sel.choose(H100)
    assert choice.kernel == "cudnn"
    assert choice.full_bias  # cuDNN refuses a (B, 1, 1, S) bias: it must be (.., T, S)
    assert not choice.window_in_bias


@pytest.mark.parametrize("changes, kernel, reason_part", [
    # dropout blocks both fused paths, whatever the device
    ({"has_dropout": True}, "explicit", "dropout"),
    ({"has_dropout": True, "platform": "cpu"}, "explicit", "dropout"),
    # not CUDA, or no cuDNN
    ({"platform": "cpu"}, "xla", "CUDA-only"),
    ({"platform": "tpu"}, "xla", "CUDA-only"),
    ({"platform": "rocm"}, "xla", "CUDA-only"),
    ({"cudnn_version": None}, "xla", "not found"),
    # float32 (TF32 on the GPU) is XLA's
    ({"dtype": "float32"}, "xla", "float32"),
    # Volta has no cuDNN flash attention
    ({"compute_capability": (7, 0)}, "xla", "Ampere"),
    # head sizes: multiples of 8, up to 128 before Hopper and 256 from it
    ({"head_dim": 60}, "xla", "multiple of 8"),
    ({"head_dim": 264}, "xla", "up to 256"),
    ({"head_dim": 192, "compute_capability": (8, 0)}, "xla", "up to 128"),
    # training with a bias needs even lengths; inference does not
    ({"query_len": 127, "key_len": 127}, "xla", "even lengths"),
    # ... so a classifier's [CLS]-only last layer (one query) fine-tunes on XLA
    ({"query_len": 1, "key_len": 128}, "xla", "even lengths"),
])
def test_fallbacks_name_their_reason(changes, kernel, reason_part):
    choice = pick(**changes)
    assert choice.kernel == kernel, choice
    assert reason_part in choice.reason, choice.reason


@pytest.mark.parametrize("changes", [
    {"dtype": "float16"},
    {"head_dim": 128, "compute_capability": (8, 0)},           # A100, BERT-large-like heads
    {"head_dim": 192},                                          # fine from Hopper on
    {"mask": "packed"},                                         # block-diagonal (B, 1, T, T)
    {"mask": "bias"},                                           # ALiBi: per-head additive
    {"query_len": 1, "key_len": 128, "training": False},       # [CLS]-only last layer, scoring
    {"query_len": 127, "key_len": 127, "training": False},      # odd lengths at inference
    {"query_len": 127, "key_len": 127, "mask": "none"},         # no bias: odd lengths are fine
])
def test_cudnn_where_it_applies(changes):
    assert pick(**changes).kernel == "cudnn"


def test_no_mask_passes_no_full_bias_and_a_two_sided_window_goes_into_the_bias():
    assert not pick(mask="none").full_bias
    windowed = pick(mask="none", two_sided_window=True)
    # cuDNN only windows the left side in jax 0.10.2: the window becomes part of the bias.
    assert windowed.kernel == "cudnn" and windowed.window_in_bias and windowed.full_bias
    # XLA takes local_window_size=(w, w) itself.
    assert not pick(dtype="float32", two_sided_window=True).window_in_bias


def test_unknown_mask_kind_is_an_error_naming_the_choices():
    with pytest.raises(ValueError, match="padding"):
        pick(mask="causal")


def test_device_facts_on_this_machine():
    facts = sel.device_facts()
    if jax.devices()[0].platform == "cpu":
        assert facts == {"platform": "cpu", "compute_capability": None, "cudnn_version": None}
        assert sel.choose(dataclasses.replace(H100, **facts)).kernel == "xla"


# ---- the numbers ---------------------------------------------------------------------------

def reference_attention(q, k, v, bias):
    """softmax(q k^T / sqrt(D) + bias) v in float64 numpy: (B, T, N, D) -> (B, T, N, D)."""
    q, k, v, bias = (np.asarray(x, np.float64) for x in (q, k, v, bias))
    scores = np.einsum("bqnd,bknd->bnqk", q, k) / np.sqrt(q.shape[-1]) + bias  # (B, N, T, S)
    scores -= scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bnqk,bknd->bqnd", probs, v)


def padded_inputs(dtype, batch=2, seq=8, heads=2, head_dim=16):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    q, k, v = (jax.random.normal(key, (batch, seq, heads, head_dim), dtype) for key in keys)
    lengths = np.array([seq, seq - 3])
    real = np.arange(seq)[None, :] < lengths[:, None]  # (B, S)
    bias = np.where(real, 0.0, -1e9).astype(np.float32)[:, None, None, :]  # (B, 1, 1, S)
    return q, k, v, jnp.asarray(bias)


@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_cudnn_refused_on_this_machine_falls_back_to_xla_with_the_same_numbers(dtype, tolerance):
    if jax.devices()[0].platform == "gpu":
        pytest.skip("on a GPU cuDNN may accept the call; this checks the refusal path")
    q, k, v, bias = padded_inputs(dtype)
    forced = sel.AttentionChoice("cudnn", "forced for the test", full_bias=True)
    sel._warned.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = jax.jit(lambda *a: sel.dot_product_attention(*a, choice=forced))(q, k, v, bias)
    assert any("using XLA" in str(w.message) for w in caught)
    np.testing.assert_allclose(np.asarray(out, np.float32), reference_attention(q, k, v, bias),
                               atol=tolerance, rtol=tolerance)


def test_xla_choice_with_a_two_sided_window_equals_the_window_as_bias():
    """On every real query. A padding query whose window holds only padding keys differs (XLA
    masks the window with a select, the bias adds a second -1e9): its output is never read."""
    q, k, v, bias = padded_inputs(jnp.float32, seq=12)
    half = 2
    distance = np.abs(np.arange(12)[:, None] - np.arange(12)[None, :])
    window_bias = np.where(distance <= half, 0.0, -1e9)[None, None]  # (1, 1, T, S)
    xla = sel.AttentionChoice("xla", "test")
    native = np.asarray(sel.dot_product_attention(q, k, v, bias, xla, half_window=half))
    expected = reference_attention(q, k, v, bias + window_bias)
    real = np.asarray(bias)[:, 0, 0, :] == 0  # (B, T): real tokens are the real queries too
    np.testing.assert_allclose(native[real], expected[real], atol=1e-5, rtol=1e-5)


def test_explicit_choice_is_not_this_functions_job():
    q, k, v, bias = padded_inputs(jnp.float32)
    with pytest.raises(ValueError, match="explicit_attention"):
        sel.dot_product_attention(q, k, v, bias, sel.AttentionChoice("explicit", "dropout"))
