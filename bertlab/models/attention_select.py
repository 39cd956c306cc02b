"""Which implementation of jax.nn.dot_product_attention a layer should ask for (issue 18).

bertlab.models.attention.fused_attention asks `choose`, a pure function of what is known at
trace time (platform, dtype, head size, dropout, mask kind, lengths), so the decision is
testable on a CPU, and `dot_product_attention` applies it with a clean fallback.

What jax 0.10.2 offers (read from jax/_src/nn/functions.py and
jax/_src/cudnn/fused_attention_stablehlo.py of that release):

- `implementation=None` is XLA today (the automatic choice is a TODO there); "xla" computes
  softmax(q k^T * scale + bias) with einsums, any dtype, any head size, `bias` and `mask`
  broadcast from 4-d, `local_window_size=(left, right)` both sides.
- "cudnn" (cuDNN flash attention, fused forward and backward) needs: a CUDA GPU with cuDNN
  found (else RuntimeError "cuDNN is not detected"); q/k/v in float16 or bfloat16 (fp8 has its
  own, narrower path) else NotImplementedError; head size a multiple of 8 and at most 128, or
  256 from Hopper (compute capability 9.0) on; in training with a bias, even query and key
  lengths; a bias whose last two dims are exactly (T, S) (a (B, 1, 1, S) padding bias is
  refused: "Bias must have same seq length as QKV"), batch and head dims 1 or full; a window
  only on the left (`local_window_size=(l, 0)`) unless causal, so BERT's two-sided window is
  refused; padding may also come as query/key_value_seq_lengths (right padding only).
- Neither path takes dropout: jax.nn.dot_product_attention has no dropout argument (the
  lower-level cuDNN call has a dropout_rate, not exposed). Attention dropout therefore keeps the
  explicit kernel, and the modern recipes' attention_dropout=0 takes the fused one.
- We never pass seq lengths: with them cuDNN treats a row with no real key differently from the
  explicit kernel (which gives such an all-padding row a uniform average, finite); a full-shape
  additive bias keeps the numbers identical, and costs B*T*S bf16 (8 MiB at batch 256, T 128).
"""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp

# What kind of mask the additive bias carries (bertlab.models.attention builds all of them):
#   none: no padding at all; padding: (B, 1, 1, S) per-key padding; packed: (B, 1, T, S)
#   block-diagonal; bias: anything else additive (ALiBi per head, a window folded in).
MASK_KINDS = ("none", "padding", "packed", "bias")
CUDNN_DTYPES = ("bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class AttentionCase:
    """Everything the choice depends on; all known when the layer is traced."""
    platform: str               # "cpu" | "tpu" | "cuda" | "rocm" (see device_facts)
    dtype: str                  # compute dtype of q, k, v
    head_dim: int
    has_dropout: bool           # attention dropout active in this call
    mask: str                   # one of MASK_KINDS
    query_len: int
    key_len: int
    training: bool = True       # the backward pass will run (cuDNN's bias rule differs)
    two_sided_window: bool = False  # a sliding window wanted as local_window_size=(w, w)
    compute_capability: tuple[int, int] | None = None  # (9, 0) on an H100
    cudnn_version: int | None = None  # e.g. 91000 for 9.10; None: not found


@dataclasses.dataclass(frozen=True)
class AttentionChoice:
    kernel: str                 # "explicit" (einsums + dropout) | "xla" | "cudnn"
    reason: str
    full_bias: bool = False     # broadcast the bias to (B, 1|N, T, S) first (cuDNN's rule)
    window_in_bias: bool = False  # pass the window as bias, not local_window_size


def choose(case: AttentionCase) -> AttentionChoice:
    """The fastest implementation that computes exactly this attention, with the reason."""
    if case.mask not in MASK_KINDS:
        raise ValueError(f"attention_select.choose: mask={case.mask!r}; one of {MASK_KINDS}")
    if case.has_dropout:
        return AttentionChoice("explicit", "attention dropout: jax.nn.dot_product_attention "
                                           "has no dropout")
    if case.platform != "cuda":
        return AttentionChoice("xla", f"platform {case.platform}: cuDNN is CUDA-only")
    if case.cudnn_version is None:
        return AttentionChoice("xla", "cuDNN not found by jaxlib")
    if case.dtype not in CUDNN_DTYPES:
        return AttentionChoice("xla", f"{case.dtype}: cuDNN flash attention takes "
                                      f"{'/'.join(CUDNN_DTYPES)}")
    capability = case.compute_capability or (0, 0)
    if capability < (8, 0):
        return AttentionChoice("xla", f"compute capability {capability}: cuDNN flash "
                                      f"attention needs 8.0 (Ampere) or later")
    largest = 256 if capability >= (9, 0) else 128
    if case.head_dim % 8 or case.head_dim > largest:
        return AttentionChoice("xla", f"head size {case.head_dim}: cuDNN needs a multiple of 8 "
                                      f"up to {largest}")
    biased = case.mask != "none" or case.two_sided_window
    if case.training and biased and (case.query_len % 2 or case.key_len % 2):
        return AttentionChoice("xla", f"lengths {case.query_len}x{case.key_len}: cuDNN's "
                                      f"backward with a bias needs even lengths")
    reason = "cuDNN flash attention"
    if case.two_sided_window:
        reason += "; two-sided window folded into the bias (cuDNN windows only the left side)"
    return AttentionChoice("cudnn", reason, full_bias=biased,
                           window_in_bias=case.two_sided_window)


def device_facts(device=None) -> dict:
    """platform / compute_capability / cudnn_version of a jax device, as AttentionCase wants."""
    device = device or jax.devices()[0]
    facts = {"platform": device.platform, "compute_capability": None, "cudnn_version": None}
    if device.platform != "gpu":
        return facts
    version = getattr(device.client, "platform_version", "").lower()
    facts["platform"] = "rocm" if "rocm" in version else "cuda"
    capability = getattr(device, "compute_capability", None)
    if capability:
        facts["compute_capability"] = tuple(int(x) for x in str(capability).split(".")[:2])
    try:
        from jax._src.lib import cuda_versions  # None on builds without CUDA
        facts["cudnn_version"] = cuda_versions.cudnn_get_version() if cuda_versions else None
    except Exception:  # a jaxlib without the query: let jax decide at trace time
        facts["cudnn_version"] = None
    return facts


_warned: set[str] = set()


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array,
                          choice: AttentionChoice, half_window: int | None = None) -> jax.Array:
    """jax.nn.dot_product_attention as `choice` says, q/k/v (B, T|S, N, D), bias additive
    (B|1, 1|N, 1|T, S) float32; falls back to XLA (warning once per reason) when cuDNN refuses
    the call at trace time. The explicit kernel (dropout) is the model's, not this function's.

    half_window: the two-sided window; with window_in_bias the caller has folded it already."""
    if choice.kernel == "explicit":
        raise ValueError("attention_select.dot_product_attention: the explicit kernel (attention "
                         "dropout) is bertlab.models.attention.explicit_attention")
    window = None if half_window is None or choice.window_in_bias else (half_window, half_window)
    if choice.kernel == "cudnn":
        full = bias
        if choice.full_bias:
            full = jnp.broadcast_to(bias, bias.shape[:2] + (q.shape[1], k.shape[1]))  # (B,1|N,T,S)
        try:
            return jax.nn.dot_product_attention(q, k, v, bias=full.astype(q.dtype),
                                                local_window_size=window, implementation="cudnn")
        except (NotImplementedError, ValueError, RuntimeError) as e:
            key = f"{type(e).__name__}: {e}"
            if key not in _warned:
                _warned.add(key)
                warnings.warn(f"cuDNN attention refused ({key}); using XLA's", RuntimeWarning)
    return jax.nn.dot_product_attention(q, k, v, bias=bias.astype(q.dtype),
                                        local_window_size=window, implementation="xla")
